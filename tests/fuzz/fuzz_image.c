/* libFuzzer target: PNG/JPEG decoding and CLIP preprocessing (pad, Pillow-exact bicubic resize, crop,
 * normalise) of whatever decodes. An input starting with 'R' is raw pixels instead: its next bytes choose the
 * geometry (any aspect ratio, padded or not, any output size), which drives the resampler far past what small
 * encoded images reach. Run by scripts/fuzz.sh. */
#include <stdint.h>
#include <string.h>

#include "image/image.h"
#include "util/mem.h"

/* decoded images are kept small so that each run stays fast; the pixel limit itself is fuzzed too */
#define MAX_PIXELS (1u << 20)

static const float MEAN[3] = {0.48145466f, 0.4578275f, 0.40821073f};
static const float STD[3] = {0.26862954f, 0.26130258f, 0.27577711f};

static void preprocess(const uint8_t *rgb, int w, int h, int size) {
    pr_error err;
    float *out = pr_alloc((size_t)size * size, 3, sizeof(float));
    if (!out) return;
    pr_clip_preprocess(rgb, w, h, size, 1, MEAN, STD, out, &err);
    pr_clip_preprocess(rgb, w, h, size, 0, MEAN, STD, out, &err);
    pr_free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t len) {
    pr_error err;
    if (len >= 6 && data[0] == 'R') {
        /* raw: w = 1..4096, h = 1..4096 (capped by the bytes given), output size 1..128 */
        int w = 1 + ((data[1] << 8 | data[2]) & 4095), size = 1 + ((data[5] << 8 | data[4]) & 127);
        size_t npix = (len - 6) / 3;
        if (npix == 0) return 0;
        if ((size_t)w > npix) w = (int)npix;
        int h = 1 + (data[3] % (npix / (size_t)w));
        const uint8_t *rgb = data + 6;
        preprocess(rgb, w, h, size);
        pr_image in = {w, h, (uint8_t *)rgb, 1}, out = {0};
        if (pr_image_resize_bicubic(&in, size, 1 + data[4] % 128, &out, &err) == 0) pr_image_free(&out);
        return 0;
    }
    pr_image im = {0};
    uint64_t max_pixels = len && data[len - 1] == 0x42 ? 64 : MAX_PIXELS;
    if (pr_image_decode(data, len, NULL, max_pixels, &im, &err) != 0) return 0;
    preprocess(im.rgb, im.w, im.h, 1 + (int)(len % 64));
    pr_image_free(&im);
    return 0;
}
