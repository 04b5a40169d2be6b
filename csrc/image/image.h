/* image.h — PNG/JPEG decoding to packed RGB and CLIP preprocessing, both exact to Pillow.
 *
 * Decoding gives what Pillow's `Image.open(f).convert('RGB')` gives, pixel for pixel:
 *   PNG  grey 1/2/4/8-bit scaled to 0..255 (×255, ×85, ×17, ×1); grey 16-bit saturates at 255 (Pillow's
 *        I;16 → RGB clips, it does not scale); RGB/RGBA/grey+alpha 16-bit keep the high byte; alpha and tRNS
 *        are dropped, never composited; palette indices beyond the PLTE entries are black; interlacing is
 *        undone; gAMA/iCCP/sBIT are ignored.
 *   JPEG greyscale replicated, YCbCr/RGB through libjpeg's colour conversion (islow IDCT, fancy upsampling,
 *        libjpeg's defaults, as Pillow uses them), CMYK/YCCK read as Adobe-inverted CMYK (Pillow always
 *        assumes Adobe polarity) and turned into RGB with Pillow's cmyk2rgb arithmetic.
 * Refused with PR_ERR_IMAGE and a message naming the file ("<bytes>" for memory input) and the problem:
 * empty, truncated, corrupt or non-PNG/JPEG data, unsupported variants (12-bit JPEG, 2-component JPEG...),
 * zero dimensions, more than max_pixels pixels, progressive JPEGs with an absurd number of scans. Before
 * either library sees the data, every PNG chunk length (up to the image data) and JPEG segment length (up to
 * the first scan) is checked against the bytes that remain, so a declared length never becomes an allocation.
 * The EXIF Orientation (JPEG APP1 "Exif", PNG eXIf) is reported in pr_image.orientation, not applied.
 * libpng/libjpeg errors longjmp back here; nothing calls exit() and every error path frees what it took.
 *
 * Preprocessing is Parrot's (docs/model.md §1): pad to a square with the mean colour, Pillow's antialiased BICUBIC
 * resize on uint8 (fixed-point, horizontal pass first, exactly ImagingResample's arithmetic), centre crop,
 * scale by 1/255 in double, normalise in float32 — bit-identical to Pillow + the PIL CLIPImageProcessor.
 */
#ifndef PR_IMAGE_H
#define PR_IMAGE_H
#include <stddef.h>
#include <stdint.h>

#include "parrot.h"

/* Pillow's Image.MAX_IMAGE_PIXELS (its decompression-bomb guard). */
#define PR_IMAGE_DEFAULT_MAX_PIXELS 178956970ULL
/* Image files larger than this are refused before they are read (256 MiB). */
#define PR_IMAGE_DEFAULT_MAX_BYTES (256ULL << 20)

/* A decoded image: h rows of w packed RGB pixels (3 bytes each), no row padding. Free with pr_image_free. */
typedef struct pr_image {
    int w, h;
    uint8_t *rgb;
    int orientation; /* EXIF Orientation 1..8 found in the file (1 when absent); never applied here */
} pr_image;

/* Decodes PNG or JPEG data (told apart by their signatures). name is used in error messages (NULL gives
 * "<bytes>"). max_pixels: refuse images with more pixels; 0 means PR_IMAGE_DEFAULT_MAX_PIXELS, UINT64_MAX
 * means no limit. On success *out owns a new buffer; on failure *out is zeroed. */
int pr_image_decode(const uint8_t *data, size_t len, const char *name, uint64_t max_pixels, pr_image *out,
                    pr_error *err);
/* Reads the file and decodes it. Only a regular file of at most max_bytes bytes is read (0 means
 * PR_IMAGE_DEFAULT_MAX_BYTES, UINT64_MAX no limit); a directory, device, FIFO or larger file is PR_ERR_IMAGE
 * naming the path, before anything is read (a FIFO is opened without waiting for a writer). A file that
 * cannot be opened or read gives PR_ERR_IO with errno set to the cause; everything else is as
 * pr_image_decode, with the path in the messages. */
int pr_image_decode_file(const char *path, uint64_t max_pixels, uint64_t max_bytes, pr_image *out,
                         pr_error *err);
void pr_image_free(pr_image *im);

/* The pad colour of docs/model.md §1: tuple(int(m*255) for m in mean). */
void pr_image_pad_color(const float mean[3], uint8_t bg[3]);

/* Pillow's im.resize((out_w, out_h), Image.BICUBIC, reducing_gap=None) on an RGB image, bit for bit. */
int pr_image_resize_bicubic(const pr_image *in, int out_w, int out_h, pr_image *out, pr_error *err);

/* The uint8 pixels CLIP sees: if pad, pad to square with bg (pr_image_pad_color(mean)); resize so the
 * shortest edge is `size` (the long edge to int(size*long/short), as transformers computes it); centre-crop
 * size×size (top = (H-size)//2, left = (W-size)//2). out: size×size×3. The padded canvas is never built:
 * time and memory are linear in the image and output sizes (resample.c), whatever the aspect ratio. */
int pr_clip_resize(const uint8_t *rgb, int w, int h, int size, int pad, const uint8_t bg[3], uint8_t *out,
                   pr_error *err);
/* size×size×3 uint8 → 3×size×size float32 CHW: x = (float)(v * (1/255.0)); (x - mean[c]) / std[c] in
 * float32, the order of operations of transformers' rescale + normalize. */
int pr_clip_normalize(const uint8_t *pix, int size, const float mean[3], const float std[3], float *out,
                      pr_error *err);
/* pr_clip_resize with bg from mean, then pr_clip_normalize. out: 3×size×size float32. */
int pr_clip_preprocess(const uint8_t *rgb, int w, int h, int size, int pad, const float mean[3],
                       const float std[3], float *out, pr_error *err);
#endif
