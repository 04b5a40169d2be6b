/* Internal to the image room: the two decoders behind pr_image_decode. Both receive a name for messages,
 * a resolved pixel limit (never 0), and fill *out only on success. */
#ifndef PR_IMAGE_CODEC_H
#define PR_IMAGE_CODEC_H
#include "image/image.h"

/* What both decoders keep about one decoding: the input, its limit, how the library run ended, the result.
 * Each decoder's job struct holds one. */
typedef struct {
    const uint8_t *data;
    size_t len;
    const char *name;    /* for messages */
    uint64_t max_pixels;
    pr_error *err;
    int truncated;       /* the library asked for bytes past the end */
    int refused;         /* we refused the image ourselves; err is already filled */
    char msg[264];       /* the library's error text (libjpeg's are up to 200 bytes) or ours */
    uint32_t w, h;
    uint8_t *pixels;     /* the packed RGB result, w × h × 3 */
} pr_codec_job;

/* The ending both decoders share, once the library is done (failed: its run stopped early): the error in
 * our words (truncated, or corrupt/unsupported with the library's text, `unknown` if it gave none), else the
 * pixels handed to *out. On failure the pixels are freed. format ("PNG", "JPEG") names the file kind. */
int pr_codec_finish(pr_codec_job *c, int failed, const char *format, const char *unknown, int orientation,
                    pr_image *out);

int pr_png_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                  pr_error *err);
int pr_jpeg_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                   pr_error *err);

/* Refuses zero or too many pixels with the message shared by both decoders; 0 if acceptable. */
int pr_image_check_dims(uint64_t w, uint64_t h, const char *name, uint64_t max_pixels, pr_error *err);
/* The EXIF Orientation (1..8) of a TIFF structure, 1 when absent or unreadable. */
int pr_exif_orientation(const uint8_t *tiff, size_t n);
#endif
