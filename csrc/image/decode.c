/* Image decoding entry points: format detection by signature, bounded file reading, the pixel limit, EXIF
 * orientation. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

int pr_codec_finish(pr_codec_job *c, int failed, const char *format, const char *unknown, int orientation,
                    pr_image *out) {
    int rc = 0;
    if (failed) {
        if (c->refused)
            rc = PR_ERR_IMAGE;
        else if (c->truncated)
            rc = pr_set_error(c->err, PR_ERR_IMAGE, "%s: truncated %s (data ends after %zu bytes)", c->name, format,
                              c->len);
        else
            rc = pr_set_error(c->err, PR_ERR_IMAGE, "%s: corrupt or unsupported %s: %s", c->name, format,
                              c->msg[0] ? c->msg : unknown);
    }
    if (rc) {
        pr_free(c->pixels);
        c->pixels = NULL;
        return rc;
    }
    out->w = (int)c->w;
    out->h = (int)c->h;
    out->rgb = c->pixels;
    out->orientation = orientation;
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

/* A TIFF structure (the payload of a JPEG "Exif\0\0" APP1 segment or a PNG eXIf chunk): the Orientation
 * tag (0x0112) of IFD0 if it is 1..8, else 1. Every offset is checked against n. */
int pr_exif_orientation(const uint8_t *t, size_t n) {
    if (n < 8 || !((t[0] == 'I' && t[1] == 'I') || (t[0] == 'M' && t[1] == 'M'))) return 1;
    int le = t[0] == 'I';
#define U16(p) (le ? (uint32_t)(p)[0] | (uint32_t)(p)[1] << 8 : (uint32_t)(p)[0] << 8 | (uint32_t)(p)[1])
#define U32(p) (le ? U16(p) | U16((p) + 2) << 16 : U16(p) << 16 | U16((p) + 2))
    if (U16(t + 2) != 42) return 1;
    uint32_t ifd = U32(t + 4);
    if (ifd > n - 2) return 1;
    uint32_t count = U16(t + ifd);
    for (uint32_t i = 0; i < count; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e + 12 > n) break;
        if (U16(t + e) != 0x0112) continue;
        uint32_t type = U16(t + e + 2), v = type == 3 ? U16(t + e + 8) : type == 4 ? U32(t + e + 8) : 0;
        return v >= 1 && v <= 8 ? (int)v : 1;
    }
#undef U16
#undef U32
    return 1;
}

int pr_image_decode_file(const char *path, uint64_t max_pixels, uint64_t max_bytes, pr_image *out,
                         pr_error *err) {
    if (!out) return pr_set_error(err, PR_ERR_ARG, "pr_image_decode_file: out is NULL");
    memset(out, 0, sizeof *out);
    if (!path) return pr_set_error(err, PR_ERR_ARG, "pr_image_decode_file: path is NULL");
    if (max_bytes == 0) max_bytes = PR_IMAGE_DEFAULT_MAX_BYTES;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below like any non-regular file */
    int fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        pr_set_error(err, PR_ERR_IO, "cannot open image '%s': %s", path, strerror(e));
        errno = e;
        return PR_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        pr_set_error(err, PR_ERR_IO, "cannot stat image '%s': %s", path, strerror(e));
        errno = e;
        return PR_ERR_IO;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        const char *kind = S_ISDIR(st.st_mode) ? "a directory" : S_ISFIFO(st.st_mode) ? "a pipe"
                         : S_ISCHR(st.st_mode) || S_ISBLK(st.st_mode) ? "a device" : "not a regular file";
        return pr_set_error(err, PR_ERR_IMAGE, "%s: not an image file (%s); only regular files are read", path,
                            kind);
    }
    if ((uint64_t)st.st_size > max_bytes) {
        close(fd);
        return pr_set_error(err, PR_ERR_IMAGE, "%s: file is %llu bytes, above the limit of %llu bytes for an "
                            "image (raise max_bytes to accept it)", path, (unsigned long long)st.st_size,
                            (unsigned long long)max_bytes);
    }
    /* the size from fstat is a hint (the file may change); never read more than max_bytes + 1 */
    size_t cap = (size_t)st.st_size + 1, len = 0;
    uint8_t *buf = malloc(cap);
    int rc = 0, read_errno = 0;
    if (!buf) {
        close(fd);
        return pr_set_error(err, PR_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", cap, path);
    }
    for (;;) {
        if (len == cap) {
            if ((uint64_t)len > max_bytes) {
                rc = pr_set_error(err, PR_ERR_IMAGE, "%s: file grew past the limit of %llu bytes for an image",
                                  path, (unsigned long long)max_bytes);
                break;
            }
            uint64_t limit = max_bytes == UINT64_MAX ? UINT64_MAX : max_bytes + 1;
            if (cap > SIZE_MAX / 2) {
                rc = pr_set_error(err, PR_ERR_NOMEM, "cannot allocate more than %zu bytes to read '%s'", cap, path);
                break;
            }
            size_t ncap = (uint64_t)cap * 2 > limit ? (size_t)limit : cap * 2;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                rc = pr_set_error(err, PR_ERR_NOMEM, "cannot allocate %zu bytes to read '%s'", ncap, path);
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t got = read(fd, buf + len, cap - len);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) {
            read_errno = errno;
            rc = pr_set_error(err, PR_ERR_IO, "cannot read image '%s': %s", path, strerror(read_errno));
            break;
        }
        if (got == 0) break;
        len += (size_t)got;
    }
    close(fd);
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
