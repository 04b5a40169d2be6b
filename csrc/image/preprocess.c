/* CLIP preprocessing as Parrot does it (docs/model.md §1): expand2square with the mean colour, the PIL
 * CLIPImageProcessor's shortest-edge BICUBIC resize and centre crop, rescale and normalise. */
#include <string.h>

#include "image/image.h"
#include "image/resample.h"
#include "util/mem.h"

/* Larger than any image the decoders accept, small enough that size² × 3 fits everywhere. */
#define MAX_SIZE 16384

void pr_image_pad_color(const float mean[3], uint8_t bg[3]) {
    for (int c = 0; c < 3; c++) {
        double v = (double)mean[c] * 255.0; /* Python: int(m * 255), truncation toward zero */
        bg[c] = (uint8_t)(v <= 0.0 ? 0 : v >= 255.0 ? 255 : (int)v);
    }
}

static void square_canvas(const uint8_t *rgb, int w, int h, const uint8_t bg[3], pr_canvas *cv) {
    int s = w > h ? w : h;
    cv->rgb = rgb;
    cv->w = w;
    cv->h = h;
    cv->cw = cv->ch = s;
    cv->ox = (s - w) / 2;
    cv->oy = (s - h) / 2;
    memcpy(cv->bg, bg, 3);
}

static int check_image(const pr_image *in, const char *who, pr_error *err) {
    if (!in || !in->rgb || in->w <= 0 || in->h <= 0)
        return pr_set_error(err, PR_ERR_ARG, "%s: empty input image", who);
    return 0;
}

int pr_image_resize_bicubic(const pr_image *in, int out_w, int out_h, pr_image *out, pr_error *err) {
    if (!out) return pr_set_error(err, PR_ERR_ARG, "pr_image_resize_bicubic: out is NULL");
    memset(out, 0, sizeof *out);
    if (check_image(in, "pr_image_resize_bicubic", err)) return PR_ERR_ARG;
    if (out_w <= 0 || out_h <= 0)
        return pr_set_error(err, PR_ERR_ARG, "pr_image_resize_bicubic: bad output size %dx%d", out_w, out_h);
    uint8_t *px = pr_alloc((size_t)out_w, (size_t)out_h, 3);
    if (!px) return pr_set_error(err, PR_ERR_NOMEM, "pr_image_resize_bicubic: out of memory for %dx%d", out_w, out_h);
    pr_canvas cv = {in->rgb, in->w, in->h, in->w, in->h, 0, 0, {0, 0, 0}};
    int rc = pr_canvas_resample(&cv, out_w, out_h, 0, 0, out_w, out_h, px, err);
    if (rc) {
        pr_free(px);
        return rc;
    }
    out->w = out_w;
    out->h = out_h;
    out->rgb = px;
    return 0;
}

int pr_clip_resize(const uint8_t *rgb, int w, int h, int size, int pad, const uint8_t bg[3], uint8_t *out,
                   pr_error *err) {
    if (!rgb || !out || w <= 0 || h <= 0)
        return pr_set_error(err, PR_ERR_ARG, "pr_clip_resize: empty input image (%dx%d)", w, h);
    if (size <= 0 || size > MAX_SIZE)
        return pr_set_error(err, PR_ERR_ARG, "pr_clip_resize: size %d outside 1..%d", size, MAX_SIZE);
    pr_canvas cv;
    if (pad) {
        square_canvas(rgb, w, h, bg, &cv);
    } else {
        pr_canvas plain = {rgb, w, h, w, h, 0, 0, {0, 0, 0}};
        cv = plain;
    }
    /* transformers' get_resize_output_image_size(default_to_square=False): the short edge becomes size,
     * the long one int(size * long / short) (exact integer product, one correctly rounded division) */
    int short_edge = cv.cw <= cv.ch ? cv.cw : cv.ch, long_edge = cv.cw <= cv.ch ? cv.ch : cv.cw;
    double long_new = (double)((int64_t)size * long_edge) / (double)short_edge;
    if (long_new > 2147483647.0)
        return pr_set_error(err, PR_ERR_ARG, "pr_clip_resize: %dx%d is too elongated to resize", w, h);
    int new_w, new_h;
    if (cv.cw <= cv.ch) {
        new_w = size;
        new_h = (int)long_new;
    } else {
        new_w = (int)long_new;
        new_h = size;
    }
    /* centre crop as transformers' center_crop: top = (H - size) // 2, left = (W - size) // 2 */
    return pr_canvas_resample(&cv, new_w, new_h, (new_w - size) / 2, (new_h - size) / 2, size, size, out, err);
}

int pr_clip_normalize(const uint8_t *pix, int size, const float mean[3], const float std[3], float *out,
                      pr_error *err) {
    if (!pix || !out || size <= 0 || size > MAX_SIZE)
        return pr_set_error(err, PR_ERR_ARG, "pr_clip_normalize: bad arguments (size %d)", size);
    for (int c = 0; c < 3; c++)
        if (!(std[c] != 0.0f))
            return pr_set_error(err, PR_ERR_ARG, "pr_clip_normalize: std[%d] is %g", c, (double)std[c]);
    /* transformers: rescale in float64 then cast to float32, normalise in float32 — a table per channel */
    float lut[3][256];
    for (int c = 0; c < 3; c++)
        for (int v = 0; v < 256; v++) {
            float x = (float)((double)v * (1.0 / 255.0));
            lut[c][v] = (x - mean[c]) / std[c];
        }
    size_t n = (size_t)size * size;
    float *r = out, *g = out + n, *b = out + 2 * n;
    for (size_t i = 0; i < n; i++) {
        r[i] = lut[0][pix[3 * i]];
        g[i] = lut[1][pix[3 * i + 1]];
        b[i] = lut[2][pix[3 * i + 2]];
    }
    return 0;
}

int pr_clip_preprocess(const uint8_t *rgb, int w, int h, int size, int pad, const float mean[3],
                       const float std[3], float *out, pr_error *err) {
    if (size <= 0 || size > MAX_SIZE)
        return pr_set_error(err, PR_ERR_ARG, "pr_clip_preprocess: size %d outside 1..%d", size, MAX_SIZE);
    uint8_t bg[3];
    pr_image_pad_color(mean, bg);
    uint8_t *pix = pr_alloc((size_t)size, (size_t)size, 3);
    if (!pix) return pr_set_error(err, PR_ERR_NOMEM, "pr_clip_preprocess: out of memory");
    int rc = pr_clip_resize(rgb, w, h, size, pad, bg, pix, err);
    if (rc == 0) rc = pr_clip_normalize(pix, size, mean, std, out, err);
    pr_free(pix);
    return rc;
}
