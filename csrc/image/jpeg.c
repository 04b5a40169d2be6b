/* JPEG → packed RGB with libjpeg(-turbo), decoded as Pillow's JpegImagePlugin decodes it (see image.h).
 * libjpeg's error_exit longjmps back to jpeg_run; the job lives on the heap and jpeg_run changes nothing
 * but the job, so after a longjmp the caller still sees every buffer it has to free. */
#include <setjmp.h>
#include <stdio.h> /* jpeglib.h needs FILE */
#include <string.h>

#include <jerror.h>
#include <jpeglib.h>

#include "image/codec.h"
#include "util/mem.h"

/* Real progressive files have about ten scans; thousands of tiny scans make decoding take minutes. */
#define MAX_SCANS 1000

typedef struct jpeg_job {
    struct jpeg_decompress_struct cinfo;
    struct jpeg_error_mgr jerr;
    struct jpeg_source_mgr src;
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    pr_codec_job c;  /* input, limit, outcome, pixels (kept past jpeg_destroy_decompress) */
    uint8_t *line;   /* one CMYK scanline */
} jpeg_job;

static jpeg_job *job_of(j_common_ptr cinfo) { return (jpeg_job *)cinfo->client_data; }

static void on_error_exit(j_common_ptr cinfo) {
    jpeg_job *j = job_of(cinfo);
    char text[JMSG_LENGTH_MAX];
    cinfo->err->format_message(cinfo, text);
    if (!j->c.msg[0]) snprintf(j->c.msg, sizeof j->c.msg, "%s", text);
    longjmp(j->jmp, 1);
}

/* Warnings (e.g. "Corrupt JPEG data: extraneous bytes") do not stop Pillow either; nothing is printed. */
static void on_output_message(j_common_ptr cinfo) { (void)cinfo; }

static void src_init(j_decompress_ptr cinfo) { (void)cinfo; }

/* The whole file is in the buffer from the start, so a request for more means the data ended early. */
static boolean src_fill(j_decompress_ptr cinfo) {
    job_of((j_common_ptr)cinfo)->c.truncated = 1;
    ERREXIT(cinfo, JERR_INPUT_EOF);
    return FALSE;
}

static void src_skip(j_decompress_ptr cinfo, long n) {
    struct jpeg_source_mgr *s = cinfo->src;
    if (n <= 0) return;
    if ((size_t)n > s->bytes_in_buffer) src_fill(cinfo);
    s->next_input_byte += n;
    s->bytes_in_buffer -= (size_t)n;
}

static void src_term(j_decompress_ptr cinfo) { (void)cinfo; }

static void on_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > MAX_SCANS) {
        snprintf(job_of(cinfo)->c.msg, sizeof job_of(cinfo)->c.msg,
                 "progressive JPEG with more than %d scans refused", MAX_SCANS);
        longjmp(job_of(cinfo)->jmp, 1);
    }
}

/* Pillow reads 4-component JPEGs as "CMYK;I" (Adobe-inverted) and then applies cmyk2rgb:
 * R = (255-K) - round((C·(255-K))/255) with its MULDIV255 rounding, on the un-inverted C and K. */
static inline uint8_t cmyk_channel(uint8_t raw_c, uint8_t raw_k) {
    int c = 255 - raw_c, nk = raw_k; /* C = 255 - stored, 255 - K = stored K */
    int t = c * nk + 128;
    return (uint8_t)(nk - (((t >> 8) + t) >> 8));
}

static int jpeg_run(jpeg_job *j) {
    struct jpeg_decompress_struct *ci = &j->cinfo;
    if (setjmp(j->jmp)) return -1;
    jpeg_create_decompress(ci);
    ci->client_data = j;
    ci->src = &j->src;
    j->src.next_input_byte = j->c.data;
    j->src.bytes_in_buffer = j->c.len;
    j->src.init_source = src_init;
    j->src.fill_input_buffer = src_fill;
    j->src.skip_input_data = src_skip;
    j->src.resync_to_restart = jpeg_resync_to_restart;
    j->src.term_source = src_term;
    j->progress.progress_monitor = on_progress;
    ci->progress = &j->progress;

    jpeg_read_header(ci, TRUE);
    if (pr_image_check_dims(ci->image_width, ci->image_height, j->c.name, j->c.max_pixels, j->c.err)) {
        j->c.refused = 1;
        return -1;
    }
    if (ci->data_precision != 8) {
        snprintf(j->c.msg, sizeof j->c.msg, "%d-bit JPEG samples are not supported", ci->data_precision);
        return -1;
    }
    int cmyk = 0;
    switch (ci->num_components) {
    case 1: /* greyscale: libjpeg replicates it into RGB, as Pillow's L → RGB does */
    case 3: ci->out_color_space = JCS_RGB; break;
    case 4: ci->out_color_space = JCS_CMYK; cmyk = 1; break; /* YCCK is turned into CMYK by libjpeg */
    default:
        snprintf(j->c.msg, sizeof j->c.msg, "JPEG with %d colour components is not supported", ci->num_components);
        return -1;
    }
    jpeg_start_decompress(ci);
    size_t w = ci->output_width, h = ci->output_height, stride = w * 3;
    j->c.w = ci->output_width;
    j->c.h = ci->output_height;
    j->c.pixels = pr_alloc(w, h, 3);
    if (cmyk) j->line = pr_alloc(w, 4, 1);
    if (!j->c.pixels || (cmyk && !j->line)) {
        snprintf(j->c.msg, sizeof j->c.msg, "out of memory for %zux%zu pixels", w, h);
        return -1;
    }
    while (ci->output_scanline < h) {
        size_t y = ci->output_scanline;
        if (cmyk) {
            JSAMPROW row = j->line;
            if (jpeg_read_scanlines(ci, &row, 1) != 1) break;
            uint8_t *o = j->c.pixels + y * stride;
            for (size_t x = 0; x < w; x++) {
                const uint8_t *p = j->line + 4 * x;
                o[3 * x] = cmyk_channel(p[0], p[3]);
                o[3 * x + 1] = cmyk_channel(p[1], p[3]);
                o[3 * x + 2] = cmyk_channel(p[2], p[3]);
            }
        } else {
            JSAMPROW rows[8];
            size_t n = h - y < 8 ? h - y : 8;
            for (size_t i = 0; i < n; i++) rows[i] = j->c.pixels + (y + i) * stride;
            if (jpeg_read_scanlines(ci, rows, (JDIMENSION)n) == 0) break;
        }
    }
    if (ci->output_scanline < h) {
        snprintf(j->c.msg, sizeof j->c.msg, "decoder stopped at row %u of %zu", ci->output_scanline, h);
        return -1;
    }
    /* No jpeg_finish_decompress: the pixels are complete, whatever follows them is not needed. */
    return 0;
}

/* Walks the marker segments from SOI to the first scan before libjpeg does: a segment whose declared length
 * runs past the end of the data is refused here. Also finds the first "Exif" APP1's orientation. Anything
 * that is not a well-formed marker ends the walk and is left to libjpeg's own errors. */
static int jpeg_scan(const uint8_t *data, size_t len, const char *name, int *orientation, pr_error *err) {
    size_t pos = 2;
    *orientation = 1;
    while (pos + 4 <= len && data[pos] == 0xFF) {
        uint8_t m = data[pos + 1];
        if (m == 0xFF) { /* fill byte */
            pos++;
            continue;
        }
        if (m == 0xDA || m == 0xD9) return 0; /* start of scan, end of image */
        if ((m >= 0xD0 && m <= 0xD7) || m == 0x01 || m == 0xD8) { /* markers without a length */
            pos += 2;
            continue;
        }
        size_t n = (size_t)data[pos + 2] << 8 | data[pos + 3];
        if (n < 2 || n > len - pos - 2)
            return pr_set_error(err, PR_ERR_IMAGE, "%s: truncated or corrupt JPEG: segment 0xFF%02X at byte offset "
                                "%zu declares %zu bytes but only %zu remain", name, m, pos, n, len - pos - 2);
        const uint8_t *seg = data + pos + 4;
        if (m == 0xE1 && *orientation == 1 && n - 2 >= 6 && memcmp(seg, "Exif\0\0", 6) == 0)
            *orientation = pr_exif_orientation(seg + 6, n - 2 - 6);
        pos += 2 + n;
    }
    return 0;
}

int pr_jpeg_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                   pr_error *err) {
    int orientation;
    if (jpeg_scan(data, len, name, &orientation, err)) return PR_ERR_IMAGE;
    jpeg_job *j = pr_calloc(1, sizeof *j, 1);
    if (!j) return pr_set_error(err, PR_ERR_NOMEM, "%s: out of memory", name);
    j->c = (pr_codec_job){.data = data, .len = len, .name = name, .max_pixels = max_pixels, .err = err};
    j->cinfo.err = jpeg_std_error(&j->jerr);
    j->jerr.error_exit = on_error_exit;
    j->jerr.output_message = on_output_message;
    j->cinfo.client_data = j;

    int failed = jpeg_run(j) != 0;
    jpeg_destroy_decompress(&j->cinfo);
    int rc = pr_codec_finish(&j->c, failed, "JPEG", "unknown libjpeg error", orientation, out);
    pr_free(j->line);
    pr_free(j);
    return rc;
}
