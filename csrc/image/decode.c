/* Image decoding entry points: format detection by signature, file reading, the pixel limit. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "image/codec.h"
#include "util/mem.h"

static const uint8_t PNG_SIG[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

int pr_image_check_dims(uint64_t w, uint64_t h, const char *name, uint64_t max_pixels, pr_error *err) {
    if (w == 0 || h == 0)
        return pr_set_error(err, PR_ERR_IMAGE, "%s: image has zero size (%llux%llu)", name,
                            (unsigned long long)w, (unsigned long long)h);
    /* w, h < 2^32 for both formats, so the product cannot overflow */
    if (w * h > max_pixels)
        return pr_set_error(err, PR_ERR_IMAGE,
                            "%s: image is %llux%llu = %llu pixels, above the limit of %llu pixels "
                            "(a possible decompression bomb; raise max_pixels to accept it)",
                            name, (unsigned long long)w, (unsigned long long)h, (unsigned long long)(w * h),
                            (unsigned long long)max_pixels);
    return 0;
}

int pr_image_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                    pr_error *err) {
    if (!out) return pr_set_error(err, PR_ERR_ARG, "pr_image_decode: out is NULL");
    memset(out, 0, sizeof *out);
    if (!name) name = "<bytes>";
    if (max_pixels == 0) max_pixels = PR_IMAGE_DEFAULT_MAX_PIXELS;
    if (!data || len == 0) return pr_set_error(err, PR_ERR_IMAGE, "%s: empty image data (0 bytes)", name);
    if (len >= 8 && memcmp(data, PNG_SIG, 8) == 0) return pr_png_decode(data, len, name, max_pixels, out, err);
    if (len >= 3 && data[0] == 0xFF && data[1] == 0xD8 && data[2] == 0xFF)
        return pr_jpeg_decode(data, len, name, max_pixels, out, err);
    char head[3 * 8 + 1] = {0};
    size_t n = len < 8 ? len : 8;
    for (size_t i = 0; i < n; i++) snprintf(head + 3 * i, 4, "%02x%s", data[i], i + 1 < n ? " " : "");
    return pr_set_error(err, PR_ERR_IMAGE, "%s: not a PNG or JPEG image (%zu bytes, starting %s)", name, len,
                        head);
}

int pr_image_decode_file(const char *path, uint64_t max_pixels, pr_image *out, pr_error *err) {
    if (!out) return pr_set_error(err, PR_ERR_ARG, "pr_image_decode_file: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return pr_set_error(err, PR_ERR_ARG, "pr_image_decode_file: path is NULL");
    FILE *f = fopen(path, "rb");
    if (!f) {
        int e = errno;
        pr_set_error(err, PR_ERR_IO, "cannot open image '%s': %s", path, strerror(e));
        errno = e;
        return PR_ERR_IO;
    }
    /* read in chunks rather than trusting a size from stat, so pipes and growing files work too */
    size_t cap = 1 << 16, len = 0;
    uint8_t *buf = malloc(cap);
    int rc = 0, read_errno = 0;
    if (!buf) {
        fclose(f);
        return pr_set_error(err, PR_ERR_NOMEM, "cannot allocate a read buffer for '%s'", path);
    }
    for (;;) {
        if (len == cap) {
            uint8_t *nb = cap > SIZE_MAX / 2 ? NULL : realloc(buf, cap * 2);
            if (!nb) {
                rc = pr_set_error(err, PR_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", cap * 2, path);
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f)) {
                read_errno = errno;
                rc = pr_set_error(err, PR_ERR_IO, "cannot read image '%s': %s", path, strerror(read_errno));
            }
            break;
        }
    }
    fclose(f);
    if (rc == 0) rc = pr_image_decode(buf, len, path, max_pixels, out, err);
    free(buf);
    if (rc == PR_ERR_IO) errno = read_errno;
    return rc;
}

void pr_image_free(pr_image *im) {
    if (!im) return;
    pr_free(im->rgb);
    im->rgb = NULL;
    im->w = im->h = 0;
}
