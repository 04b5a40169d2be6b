/* PNG → packed RGB with libpng, converted as Pillow's PngImagePlugin + convert('RGB') do (see image.h).
 * libpng reports errors by longjmp to the setjmp in png_run; png_run touches only the job it was given, so
 * everything the caller must free is reachable from the job afterwards. */
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <string.h>

#include "image/codec.h"
#include "util/mem.h"

typedef struct png_job {
    pr_codec_job c;        /* input, limit, outcome, pixels */
    size_t pos;            /* read position in c.data */
    int bit_depth, color_type;
    uint8_t lut[256 * 3];  /* palette; entries beyond PLTE stay black, as Pillow shows them */
    uint8_t *raw;          /* libpng's rows before conversion */
    png_bytep *rows;       /* row pointers into raw (interlaced images) */
} png_job;

static void on_error(png_structp png, png_const_charp msg) {
    png_job *j = png_get_error_ptr(png);
    snprintf(j->c.msg, sizeof j->c.msg, "%s", msg);
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary chunks, benign errors) do not stop Pillow either. */
static void on_warning(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

static void on_read(png_structp png, png_bytep dst, size_t n) {
    png_job *j = png_get_io_ptr(png);
    if (n > j->c.len - j->pos) {
        j->c.truncated = 1;
        png_error(png, "unexpected end of data");
    }
    memcpy(dst, j->c.data + j->pos, n);
    j->pos += n;
}

/* One row of libpng output (after packing to a byte per sample and 16→8 stripping, except 16-bit grey)
 * → w RGB pixels. */
static void convert_row(const png_job *j, const uint8_t *in, uint8_t *out) {
    uint32_t w = j->c.w;
    switch (j->color_type) {
    case PNG_COLOR_TYPE_GRAY:
        if (j->bit_depth == 16) {
            /* Pillow opens 16-bit grey as I;16, whose conversion to RGB saturates at 255 */
            for (uint32_t x = 0; x < w; x++) {
                uint8_t v = in[2 * x] ? 255 : in[2 * x + 1];
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
            }
        } else {
            /* 1-bit is Pillow's mode "1" (0/255); 2- and 4-bit unpack scaled by 85 and 17 */
            int scale = j->bit_depth == 1 ? 255 : j->bit_depth == 2 ? 85 : j->bit_depth == 4 ? 17 : 1;
            for (uint32_t x = 0; x < w; x++) {
                uint8_t v = (uint8_t)(in[x] * scale);
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = v;
            }
        }
        break;
    case PNG_COLOR_TYPE_RGB:
        memcpy(out, in, (size_t)w * 3);
        break;
    case PNG_COLOR_TYPE_PALETTE:
        for (uint32_t x = 0; x < w; x++) memcpy(out + 3 * x, j->lut + 3 * in[x], 3);
        break;
    case PNG_COLOR_TYPE_GRAY_ALPHA:  /* alpha dropped, not composited */
        for (uint32_t x = 0; x < w; x++) out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = in[2 * x];
        break;
    case PNG_COLOR_TYPE_RGB_ALPHA:
        for (uint32_t x = 0; x < w; x++) memcpy(out + 3 * x, in + 4 * x, 3);
        break;
    }
}

static int png_run(png_job *j, png_structp png, png_infop info) {
    if (setjmp(png_jmpbuf(png))) return -1;
    /* our own pixel limit governs, not libpng's default 1e6 × 1e6 */
    png_set_user_limits(png, 0x7fffffffU, 0x7fffffffU);
    png_read_info(png, info);
    png_uint_32 w, h;
    int bit_depth, color_type, interlace;
    png_get_IHDR(png, info, &w, &h, &bit_depth, &color_type, &interlace, NULL, NULL);
    j->c.w = w;
    j->c.h = h;
    j->bit_depth = bit_depth;
    j->color_type = color_type;
    if (pr_image_check_dims(w, h, j->c.name, j->c.max_pixels, j->c.err)) {
        j->c.refused = 1;
        return -1;
    }
    if (color_type == PNG_COLOR_TYPE_PALETTE) {
        png_colorp pal;
        int n = 0;
        if (!png_get_PLTE(png, info, &pal, &n)) {
            snprintf(j->c.msg, sizeof j->c.msg, "palette image without a PLTE chunk");
            return -1;
        }
        for (int i = 0; i < n && i < 256; i++) {
            j->lut[3 * i] = pal[i].red;
            j->lut[3 * i + 1] = pal[i].green;
            j->lut[3 * i + 2] = pal[i].blue;
        }
    }
    if (bit_depth < 8) png_set_packing(png);
    if (bit_depth == 16 && color_type != PNG_COLOR_TYPE_GRAY) png_set_strip_16(png);  /* keeps the high byte */
    int passes = png_set_interlace_handling(png);
    png_read_update_info(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);

    j->c.pixels = pr_alloc(w, h, 3);
    if (!j->c.pixels) {
        snprintf(j->c.msg, sizeof j->c.msg, "out of memory for %ux%u pixels", (unsigned)w, (unsigned)h);
        return -1;
    }
    size_t out_stride = (size_t)w * 3;
    if (passes > 1) {
        /* Adam7: libpng fills the rows over seven passes, so all rows must exist at once */
        j->raw = pr_alloc(rowbytes, h, 1);
        j->rows = pr_alloc(h, sizeof(png_bytep), 1);
        if (!j->raw || !j->rows) {
            snprintf(j->c.msg, sizeof j->c.msg, "out of memory for an interlaced %ux%u image", (unsigned)w,
                     (unsigned)h);
            return -1;
        }
        for (png_uint_32 y = 0; y < h; y++) j->rows[y] = j->raw + (size_t)y * rowbytes;
        png_read_image(png, j->rows);
        for (png_uint_32 y = 0; y < h; y++) convert_row(j, j->rows[y], j->c.pixels + y * out_stride);
    } else if (color_type == PNG_COLOR_TYPE_RGB && bit_depth == 8) {
        for (png_uint_32 y = 0; y < h; y++) png_read_row(png, j->c.pixels + y * out_stride, NULL);
    } else {
        j->raw = pr_alloc(rowbytes, 1, 1);
        if (!j->raw) {
            snprintf(j->c.msg, sizeof j->c.msg, "out of memory for a row of %zu bytes", rowbytes);
            return -1;
        }
        for (png_uint_32 y = 0; y < h; y++) {
            png_read_row(png, j->raw, NULL);
            convert_row(j, j->raw, j->c.pixels + y * out_stride);
        }
    }
    /* Like Pillow, the chunks after the image data (up to IEND) are not required. */
    return 0;
}

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Walks the chunk list before libpng does: a chunk (up to and including the image data) whose declared
 * length runs past the end of the data is refused here, so no declared length is ever allocated (libpng
 * allocates a text chunk's length before reading it). Chunks after the image data are not required (as by
 * Pillow), so there a bad length just ends the walk. Also finds the first eXIf chunk's orientation. */
static int png_scan(const uint8_t *data, size_t len, const char *name, int *orientation, pr_error *err) {
    size_t pos = 8;
    int seen_idat = 0;
    *orientation = 1;
    while (len - pos >= 8) {
        uint32_t n = be32(data + pos);
        const uint8_t *type = data + pos + 4;
        int idat = memcmp(type, "IDAT", 4) == 0;
        if (seen_idat && !idat) seen_idat = 2; /* past the image data */
        if (idat) seen_idat = seen_idat ? seen_idat : 1;
        if ((uint64_t)n + 4 > len - pos - 8) {
            if (seen_idat == 2) return 0;
            char tag[5];
            for (int i = 0; i < 4; i++) tag[i] = type[i] >= 0x20 && type[i] < 0x7f ? (char)type[i] : '?';
            tag[4] = 0;
            return pr_set_error(err, PR_ERR_IMAGE, "%s: truncated or corrupt PNG: chunk '%s' at byte offset %zu "
                                "declares %lu bytes but only %zu remain", name, tag, pos, (unsigned long)n,
                                len - pos - 8);
        }
        if (memcmp(type, "eXIf", 4) == 0 && *orientation == 1) *orientation = pr_exif_orientation(type + 4, n);
        if (memcmp(type, "IEND", 4) == 0) return 0;
        pos += (size_t)n + 12;
    }
    return 0;
}

int pr_png_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                  pr_error *err) {
    int orientation;
    if (png_scan(data, len, name, &orientation, err)) return PR_ERR_IMAGE;
    /* IHDR is the first chunk: refuse zero sizes with our own words (libpng only says "Invalid IHDR data") */
    if (len >= 24 && memcmp(data + 12, "IHDR", 4) == 0) {
        uint32_t w = (uint32_t)data[16] << 24 | (uint32_t)data[17] << 16 | (uint32_t)data[18] << 8 | data[19];
        uint32_t h = (uint32_t)data[20] << 24 | (uint32_t)data[21] << 16 | (uint32_t)data[22] << 8 | data[23];
        if (w == 0 || h == 0) return pr_image_check_dims(w, h, name, max_pixels, err);
    }
    png_job *j = pr_calloc(1, sizeof *j, 1);
    if (!j) return pr_set_error(err, PR_ERR_NOMEM, "%s: out of memory", name);
    j->c = (pr_codec_job){.data = data, .len = len, .name = name, .max_pixels = max_pixels, .err = err};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, j, on_error, on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_read_struct(png ? &png : NULL, NULL, NULL);
        pr_free(j);
        return pr_set_error(err, PR_ERR_NOMEM, "%s: out of memory creating the PNG reader", name);
    }
    png_set_read_fn(png, j, on_read);

    /* read the header first so the pixel limit is checked before anything large is allocated */
    int failed = png_run(j, png, info) != 0;
    png_destroy_read_struct(&png, &info, NULL);
    int rc = pr_codec_finish(&j->c, failed, "PNG", "unknown libpng error", orientation, out);
    pr_free(j->raw);
    pr_free(j->rows);
    pr_free(j);
    return rc;
}
