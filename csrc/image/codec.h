/* Internal to the image room: the two decoders behind pr_image_decode. Both receive a name for messages,
 * a resolved pixel limit (never 0), and fill *out only on success. */
#ifndef PR_IMAGE_CODEC_H
#define PR_IMAGE_CODEC_H
#include "image/image.h"

int pr_png_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                  pr_error *err);
int pr_jpeg_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                   pr_error *err);

/* Refuses zero or too many pixels with the message shared by both decoders; 0 if acceptable. */
int pr_image_check_dims(uint64_t w, uint64_t h, const char *name, uint64_t max_pixels, pr_error *err);
/* The EXIF Orientation (1..8) of a TIFF structure, 1 when absent or unreadable. */
int pr_exif_orientation(const uint8_t *tiff, size_t n);
#endif
