/* Pillow's antialiased BICUBIC resize of 8-bit RGB, reproduced bit for bit (ImagingResample in Pillow's
 * libImaging/Resample.c, studied, not copied):
 *   - per output pixel, a window of input pixels weighted by the cubic kernel (a = -0.5) stretched by the
 *     downscale factor (support 2·scale when shrinking), weights normalised to sum 1 in double;
 *   - weights turned into 22-bit fixed point, rounded half away from zero; sums start at 0.5 (1 << 21),
 *     the result is the sum >> 22 clipped to 0..255;
 *   - two passes with a uint8 image in between; the horizontal one first (over the rows the vertical one
 *     will read) unless the height shrinks by more than twice as many pixels as the width (the rule of
 *     newer Pillow, its PR 9549, pinned down by experiment and checked against Pillow in the tests); a
 *     pass whose size does not change is skipped.
 * The image may sit on a larger background "canvas" (the pad-to-square step): canvas rows and columns
 * outside the image are generated on the fly, so the padded image is never built, and the horizontal pass
 * over a pure-background row is computed once. Only an output window is computed (the centre crop). */
#include <math.h>
#include <string.h>

#include "image/resample.h"
#include "util/mem.h"

#define PRECISION_BITS 22 /* Pillow's 32 - 8 - 2: 8 bits of result, 2 bits of headroom */

static double bicubic(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
    if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
    return 0.0;
}

typedef struct coeffs {
    int ksize;      /* taps per output pixel (row stride of k) */
    int *bounds;    /* per output pixel: first input index, number of taps */
    int32_t *k;     /* out × ksize fixed-point weights */
} coeffs;

static void coeffs_free(coeffs *c) {
    pr_free(c->bounds);
    pr_free(c->k);
    c->bounds = NULL;
    c->k = NULL;
}

/* Weights for resampling in_size → out_size over the whole input (Pillow's box (0, in_size)). The box
 * edges are floats in Pillow, so the span is rounded to float first, as there. */
static int coeffs_make(int in_size, int out_size, coeffs *c) {
    memset(c, 0, sizeof *c);
    float in0 = 0.0f, in1 = (float)in_size;
    double scale = (double)(in1 - in0) / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->bounds = pr_alloc((size_t)out_size, 2, sizeof(int));
    c->k = pr_alloc((size_t)out_size, (size_t)c->ksize, sizeof(int32_t));
    double *w = pr_alloc((size_t)c->ksize, sizeof(double), 1);
    if (!c->bounds || !c->k || !w) {
        pr_free(w);
        coeffs_free(c);
        return PR_ERR_NOMEM;
    }
    double ss = 1.0 / filterscale;
    for (int xx = 0; xx < out_size; xx++) {
        double center = in0 + (xx + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        double ww = 0.0;
        for (int x = 0; x < xmax; x++) {
            w[x] = bicubic((x + xmin - center + 0.5) * ss);
            ww += w[x];
        }
        int32_t *k = c->k + (size_t)xx * c->ksize;
        for (int x = 0; x < c->ksize; x++) {
            double v = x < xmax ? (ww != 0.0 ? w[x] / ww : w[x]) : 0.0;
            k[x] = v < 0 ? (int32_t)(-0.5 + v * (1 << PRECISION_BITS)) : (int32_t)(0.5 + v * (1 << PRECISION_BITS));
        }
        c->bounds[2 * xx] = xmin;
        c->bounds[2 * xx + 1] = xmax;
    }
    pr_free(w);
    return 0;
}

static inline uint8_t clip8(int32_t s) {
    s >>= PRECISION_BITS;
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

/* The horizontal pass in a form compilers vectorise (pmaddwd / vpmaddwd): the row split into three int16
 * planes, each 22-bit weight split as k = 256·hi + lo with hi, lo in int16, so that
 * Σ p·k = 256·Σ p·hi + Σ p·lo exactly — the same integer Pillow computes, in 16-bit multiplies. */
typedef struct hsplit {
    int kpad;       /* taps per output rounded up to a multiple of 8, zero weights beyond the window */
    int16_t *hi;    /* out × kpad */
    int16_t *lo;    /* out × kpad */
} hsplit;

static int hsplit_make(const coeffs *c, int out_size, hsplit *h) {
    h->kpad = (c->ksize + 7) & ~7;
    h->hi = pr_calloc((size_t)out_size, (size_t)h->kpad, sizeof(int16_t));
    h->lo = pr_calloc((size_t)out_size, (size_t)h->kpad, sizeof(int16_t));
    if (!h->hi || !h->lo) return PR_ERR_NOMEM;
    for (int xx = 0; xx < out_size; xx++)
        for (int x = 0; x < c->bounds[2 * xx + 1]; x++) {
            int32_t k = c->k[(size_t)xx * c->ksize + x];
            /* normalised bicubic weights stay well inside (-2, 2), i.e. |k >> 8| < 2^15; refuse otherwise */
            if ((k >> 8) < INT16_MIN || (k >> 8) > INT16_MAX) return PR_ERR_ARG;
            h->hi[(size_t)xx * h->kpad + x] = (int16_t)(k >> 8);
            h->lo[(size_t)xx * h->kpad + x] = (int16_t)(k & 255);
        }
    return 0;
}

static void hsplit_free(hsplit *h) {
    pr_free(h->hi);
    pr_free(h->lo);
    h->hi = h->lo = NULL;
}

/* Σ p·k for 8-aligned n as 256·Σ p·hi + Σ p·lo (two int16 dot products in one pass over p). */
static inline int32_t dot_split(const int16_t *restrict p, const int16_t *restrict hi, const int16_t *restrict lo,
                                int n) {
    int32_t sh = 0, sl = 0;
    for (int i = 0; i < n; i++) {
        sh += p[i] * hi[i];
        sl += p[i] * lo[i];
    }
    return 256 * sh + sl;
}

static void deinterleave(const uint8_t *restrict in, int16_t *restrict r, int16_t *restrict g,
                         int16_t *restrict b, int n) {
    for (int x = 0; x < n; x++) {
        r[x] = in[3 * x];
        g[x] = in[3 * x + 1];
        b[x] = in[3 * x + 2];
    }
}

/* Output pixels [x0, x0+n) of one row; `in` holds in_n pixels starting at input column in_first (every
 * window of the outputs lies inside). planes: 3 × plane_len int16 scratch, plane_len >= in_n + kpad, so
 * that 8-rounded windows reading past the row end only meet zero weights. */
static void hpass_row(const uint8_t *restrict in, int in_first, int in_n, uint8_t *restrict out, const coeffs *c,
                      const hsplit *h, int x0, int n, int16_t *restrict planes, size_t plane_len) {
    int16_t *pr = planes, *pg = planes + plane_len, *pb = planes + 2 * plane_len;
    deinterleave(in, pr, pg, pb, in_n);
    const int32_t half = 1 << (PRECISION_BITS - 1);
    for (int xx = x0; xx < x0 + n; xx++) {
        int xmin = c->bounds[2 * xx] - in_first, taps = (c->bounds[2 * xx + 1] + 7) & ~7;
        const int16_t *hi = h->hi + (size_t)xx * h->kpad, *lo = h->lo + (size_t)xx * h->kpad;
        out[0] = clip8(half + dot_split(pr + xmin, hi, lo, taps));
        out[1] = clip8(half + dot_split(pg + xmin, hi, lo, taps));
        out[2] = clip8(half + dot_split(pb + xmin, hi, lo, taps));
        out += 3;
    }
}

/* Where the vertical pass reads its rows: the horizontal pass's output (rows first.. of tmp), or the canvas
 * itself when the vertical pass runs first. */
typedef struct row_source {
    const uint8_t *tmp;  /* non-NULL: rows of the temporary image */
    size_t stride;
    int first;
    const pr_canvas *cv; /* else: canvas rows, columns from col0 */
    int col0;
    uint8_t *rowbuf;     /* canvas-wide scratch with background columns filled */
    const uint8_t *bgrow;
} row_source;

static const uint8_t *canvas_row(const pr_canvas *cv, int y, uint8_t *buf);

static const uint8_t *source_row(const row_source *s, int y) {
    if (s->tmp) return s->tmp + (size_t)(y - s->first) * s->stride;
    const uint8_t *r = canvas_row(s->cv, y, s->rowbuf);
    return (r ? r : s->bgrow) + (size_t)s->col0 * 3;
}

/* Output rows [y0, y0+n), `width` bytes each, into out. */
static void vpass(const row_source *src, uint8_t *out, size_t out_stride, size_t width, const coeffs *c, int y0,
                  int n, int32_t *restrict acc) {
    for (int yy = y0; yy < y0 + n; yy++) {
        const int32_t *k = c->k + (size_t)yy * c->ksize;
        int ymin = c->bounds[2 * yy], taps = c->bounds[2 * yy + 1];
        for (size_t i = 0; i < width; i++) acc[i] = 1 << (PRECISION_BITS - 1);
        for (int y = 0; y < taps; y++) {
            const uint8_t *restrict row = source_row(src, ymin + y);
            int32_t ky = k[y];
            for (size_t i = 0; i < width; i++) acc[i] += row[i] * ky;
        }
        uint8_t *o = out + (size_t)(yy - y0) * out_stride;
        for (size_t i = 0; i < width; i++) o[i] = clip8(acc[i]);
    }
}

/* Canvas row y as packed RGB: the image row itself when the canvas adds no columns, else composed in buf
 * (whose background columns were filled once by the caller). NULL for a pure-background row. */
static const uint8_t *canvas_row(const pr_canvas *cv, int y, uint8_t *buf) {
    if (y < cv->oy || y >= cv->oy + cv->h) return NULL;
    const uint8_t *src = cv->rgb + (size_t)(y - cv->oy) * cv->w * 3;
    if (cv->cw == cv->w) return src;
    memcpy(buf + (size_t)cv->ox * 3, src, (size_t)cv->w * 3);
    return buf;
}

static void fill_bg(uint8_t *row, int n, const uint8_t bg[3]) {
    for (int x = 0; x < n; x++) memcpy(row + 3 * x, bg, 3);
}

int pr_canvas_resample(const pr_canvas *cv, int out_w, int out_h, int x0, int y0, int win_w, int win_h,
                       uint8_t *out, pr_error *err) {
    if (cv->w <= 0 || cv->h <= 0 || cv->cw < cv->w || cv->ch < cv->h || cv->ox < 0 || cv->oy < 0 ||
        cv->ox + cv->w > cv->cw || cv->oy + cv->h > cv->ch || out_w <= 0 || out_h <= 0 || x0 < 0 || y0 < 0 ||
        win_w <= 0 || win_h <= 0 || x0 + win_w > out_w || y0 + win_h > out_h)
        return pr_set_error(err, PR_ERR_ARG,
                            "resample: bad geometry (image %dx%d at %d,%d on %dx%d, output %dx%d, window %dx%d at "
                            "%d,%d)",
                            cv->w, cv->h, cv->ox, cv->oy, cv->cw, cv->ch, out_w, out_h, win_w, win_h, x0, y0);
    int need_h = out_w != cv->cw, need_v = out_h != cv->ch;
    /* Pillow (since its PR 9549) runs the vertical pass first when the height shrinks by more than twice as
     * many pixels as the width does; the uint8 rounding between the passes makes the order visible. */
    int vertical_first = need_h && need_v && out_h < cv->ch && (cv->ch - out_h) > 2 * (cv->cw - out_w);
    coeffs ch = {0}, cvv = {0};
    hsplit hs = {0};
    uint8_t *tmp = NULL, *rowbuf = NULL, *bgrow = NULL, *bgout = NULL;
    int32_t *acc = NULL;
    int16_t *planes = NULL;
    size_t out_stride = (size_t)win_w * 3, plane_len = 0;
    int rc = 0;

    if ((need_v && coeffs_make(cv->ch, out_h, &cvv)) || (need_h && coeffs_make(cv->cw, out_w, &ch))) goto nomem;
    rowbuf = pr_alloc((size_t)cv->cw, 3, 1);
    bgrow = pr_alloc((size_t)cv->cw, 3, 1);
    if (!rowbuf || !bgrow) goto nomem;
    fill_bg(rowbuf, cv->cw, cv->bg);
    fill_bg(bgrow, cv->cw, cv->bg);
    /* input columns the horizontal pass reads for the window's output columns */
    int col0 = need_h ? ch.bounds[2 * x0] : x0;
    int col1 = need_h ? ch.bounds[2 * (x0 + win_w - 1)] + ch.bounds[2 * (x0 + win_w - 1) + 1] : x0 + win_w;
    if (need_h) {
        if ((rc = hsplit_make(&ch, out_w, &hs)) == PR_ERR_ARG) {
            rc = pr_set_error(err, PR_ERR_ARG, "resample: filter weight out of range for %d → %d", cv->cw, out_w);
            goto done;
        }
        if (rc) goto nomem;
        plane_len = (size_t)(col1 - col0) + (size_t)hs.kpad;
        planes = pr_calloc(plane_len, 3, sizeof(int16_t));
        if (!planes) goto nomem;
    }

    if (vertical_first) {
        /* vertical pass straight from the canvas over the needed columns, then the horizontal pass */
        size_t tmp_stride = (size_t)(col1 - col0) * 3;
        tmp = pr_alloc((size_t)win_h, tmp_stride, 1);
        acc = pr_alloc(tmp_stride, sizeof(int32_t), 1);
        if (!tmp || !acc) goto nomem;
        row_source src = {NULL, 0, 0, cv, col0, rowbuf, bgrow};
        vpass(&src, tmp, tmp_stride, tmp_stride, &cvv, y0, win_h, acc);
        for (int y = 0; y < win_h; y++)
            hpass_row(tmp + (size_t)y * tmp_stride, col0, col1 - col0, out + (size_t)y * out_stride, &ch, &hs, x0,
                      win_w, planes, plane_len);
        goto done;
    }

    /* horizontal pass first, over the canvas rows the vertical pass will read (the window's rows if none) */
    int first = need_v ? cvv.bounds[2 * y0] : y0;
    int last = need_v ? cvv.bounds[2 * (y0 + win_h - 1)] + cvv.bounds[2 * (y0 + win_h - 1) + 1] : y0 + win_h;
    uint8_t *dst = out;
    if (need_v) {
        tmp = pr_alloc((size_t)(last - first), out_stride, 1);
        if (!tmp) goto nomem;
        dst = tmp;
    }
    for (int y = first; y < last; y++) {
        uint8_t *t = dst + (size_t)(y - first) * out_stride;
        const uint8_t *src = canvas_row(cv, y, rowbuf);
        if (!need_h) {
            memcpy(t, (src ? src : bgrow) + (size_t)x0 * 3, out_stride);
        } else if (src) {
            hpass_row(src + (size_t)col0 * 3, col0, col1 - col0, t, &ch, &hs, x0, win_w, planes, plane_len);
        } else {
            if (!bgout) { /* every background row gives the same horizontal result: compute it once */
                bgout = pr_alloc(out_stride, 1, 1);
                if (!bgout) goto nomem;
                hpass_row(bgrow + (size_t)col0 * 3, col0, col1 - col0, bgout, &ch, &hs, x0, win_w, planes,
                          plane_len);
            }
            memcpy(t, bgout, out_stride);
        }
    }
    if (need_v) {
        acc = pr_alloc(out_stride, sizeof(int32_t), 1);
        if (!acc) goto nomem;
        row_source src = {tmp, out_stride, first, NULL, 0, NULL, NULL};
        vpass(&src, out, out_stride, out_stride, &cvv, y0, win_h, acc);
    }
    goto done;
nomem:
    rc = pr_set_error(err, PR_ERR_NOMEM, "resample: out of memory (%dx%d → %dx%d)", cv->cw, cv->ch, out_w, out_h);
done:
    coeffs_free(&ch);
    coeffs_free(&cvv);
    hsplit_free(&hs);
    pr_free(planes);
    pr_free(tmp);
    pr_free(rowbuf);
    pr_free(bgrow);
    pr_free(bgout);
    pr_free(acc);
    return rc;
}
