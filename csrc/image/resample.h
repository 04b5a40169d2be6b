/* Internal to the image room: Pillow-exact bicubic resampling of an image placed on a background canvas. */
#ifndef PR_IMAGE_RESAMPLE_H
#define PR_IMAGE_RESAMPLE_H
#include "image/image.h"

/* An image of w×h packed RGB pixels pasted at (ox, oy) on a cw×ch canvas of colour bg. */
typedef struct pr_canvas {
    const uint8_t *rgb;
    int w, h;
    int cw, ch;
    int ox, oy;
    uint8_t bg[3];
} pr_canvas;

/* Pillow's canvas.resize((out_w, out_h), BICUBIC, reducing_gap=None), of which only the window
 * [x0, x0+win_w) × [y0, y0+win_h) is computed and written to out (win_w×win_h×3, packed). */
int pr_canvas_resample(const pr_canvas *cv, int out_w, int out_h, int x0, int y0, int win_w, int win_h,
                       uint8_t *out, pr_error *err);
#endif
