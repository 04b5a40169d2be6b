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
 * The image may sit on a larger background "canvas" of one colour (the pad-to-square step). The canvas is
 * never built: every sum splits exactly, as integers, into the taps that fall on the image and a background
 * term, colour × (Σ weights off the image). So work and memory follow the image and the output, never the
 * canvas — O(input pixels + output pixels + the filter windows), a 1×60000 image costs what its 60000 pixels
 * cost, not 60000². Only an output window is computed (the centre crop), and the weights are computed only
 * for it: vertical ones per output row on the fly, horizontal ones once and only for taps on the image.
 * After the horizontal pass every canvas column whose window misses the image is one value down the whole
 * column, and every background row is the same row: the vertical pass uses that too, and keeps only the
 * image rows its current window reads (a ring of rows). */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "image/resample.h"
#include "util/mem.h"

#define PRECISION_BITS 22 /* Pillow's 32 - 8 - 2: 8 bits of result, 2 bits of headroom */
#define HALF (1 << (PRECISION_BITS - 1))
/* Horizontal weights on the image are kept (4 bytes a tap) up to this many taps; beyond, they are computed
 * again for every row. Only a very wide image (over ~2^22 columns, so at most ~40 rows) goes past it, and then
 * recomputing costs about what the row's dot products cost. */
#define HPLAN_MAX_TAPS ((size_t)1 << 24)

static inline uint8_t clip8(int64_t s) {
    s >>= PRECISION_BITS;
    return (uint8_t)(s < 0 ? 0 : s > 255 ? 255 : s);
}

/* Pillow's filter for one axis, in_size → out_size. An unchanged size is the identity: Pillow skips that
 * pass, and a single tap of weight 1.0 gives the same bytes. */
typedef struct filter {
    int in_size, identity;
    double scale, support, ss; /* input pixels per output pixel, half window, 1 / filter scale */
    int ksize;                 /* taps per output at most */
    double *w;                 /* ksize scratch */
    int32_t *k;                /* ksize: the fixed-point weights of the output last asked for */
} filter;

static int filter_init(filter *f, int in_size, int out_size) {
    memset(f, 0, sizeof *f);
    f->in_size = in_size;
    f->identity = in_size == out_size;
    /* Pillow's box edges are floats, so the span is rounded to float first, as there */
    float in1 = (float)in_size;
    f->scale = (double)in1 / out_size;
    double filterscale = f->scale < 1.0 ? 1.0 : f->scale;
    f->support = 2.0 * filterscale;
    f->ss = 1.0 / filterscale;
    double ks = f->identity ? 1.0 : ceil(f->support) * 2 + 1;
    f->ksize = ks > (double)in_size ? in_size : (int)ks; /* no window is longer than the input */
    f->w = pr_alloc((size_t)f->ksize, sizeof(double), 1);
    f->k = pr_alloc((size_t)f->ksize, sizeof(int32_t), 1);
    return f->w && f->k ? 0 : PR_ERR_NOMEM;
}

static void filter_free(filter *f) {
    pr_free(f->w);
    pr_free(f->k);
    f->w = NULL;
    f->k = NULL;
}

/* The input window [*xmin, *xmin + *n) of output xx. */
static void filter_bounds(const filter *f, int xx, int *xmin, int *n) {
    if (f->identity) {
        *xmin = xx;
        *n = 1;
        return;
    }
    double center = (xx + 0.5) * f->scale;
    int lo = (int)(center - f->support + 0.5), hi = (int)(center + f->support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > f->in_size) hi = f->in_size;
    *xmin = lo;
    *n = hi - lo;
}

/* The window of output xx and its weights in f->k[0..n): normalised to sum 1 in double, then 22-bit fixed
 * point rounded half away from zero. Returns the sum of the fixed-point weights. */
#if defined(__GNUC__) && !defined(__clang__)
/* lets GCC if-convert the kernel's comparisons (FP exceptions are never looked at; the values are the same) */
__attribute__((optimize("no-trapping-math")))
#endif
static int64_t filter_taps(filter *f, int xx, int *xmin, int *n) {
    filter_bounds(f, xx, xmin, n);
    if (f->identity) {
        f->k[0] = 1 << PRECISION_BITS;
        return f->k[0];
    }
    /* three loops, the first and last branch-free so that compilers vectorise them; the sum in between stays
     * in Pillow's order (double addition is not associative). The cubic kernel (a = -0.5) is Pillow's
     * expression as written, both pieces computed and one selected. */
    const double a = -0.5, center = (xx + 0.5) * f->scale, ss = f->ss;
    const int x0 = *xmin, n_taps = *n;
    double *restrict w = f->w;
    int32_t *restrict k = f->k;
    for (int x = 0; x < n_taps; x++) {
        double t = fabs((x + x0 - center + 0.5) * ss);
        double near = ((a + 2.0) * t - (a + 3.0)) * t * t + 1, far = (((t - 5) * t + 8) * t - 4) * a;
        w[x] = t < 1.0 ? near : t < 2.0 ? far : 0.0;
    }
    double ww = 0.0;
    for (int x = 0; x < n_taps; x++) ww += w[x];
    const double norm = ww != 0.0 ? ww : 1.0; /* Pillow divides only by a non-zero sum; w / 1.0 == w */
    int32_t sum = 0; /* |Σ k| <= Σ |k|, a little over 2^22 */
    for (int x = 0; x < n_taps; x++) {
        double v = w[x] / norm;
        k[x] = (int32_t)(v * (1 << PRECISION_BITS) + copysign(0.5, v)); /* rounded half away from zero */
        sum += k[x];
    }
    return sum;
}

/* The horizontal pass for a window of outputs, reduced to the taps that fall on the image. The weights are
 * kept in a form compilers vectorise (pmaddwd / vpmaddwd): each 22-bit weight split as k = 256·hi + lo with
 * hi, lo in int16, so Σ p·k = 256·Σ p·hi + Σ p·lo exactly — the integer Pillow computes, in 16-bit
 * multiplies. Taps off the image contribute bg · (ksum - kimg). */
typedef struct hplan {
    int n;               /* window outputs */
    int a, b;            /* outputs [a, b) have taps on the image */
    int ca, cb;          /* the image columns (canvas coordinates) those taps read */
    int *first, *ntap;   /* per output: first canvas column of its taps on the image, how many */
    size_t *off;         /* per output: where its taps start in hi/lo (ntap rounded up to 8, zero-padded) */
    int16_t *hi, *lo;     /* NULL when there are more than HPLAN_MAX_TAPS: then f gives them row by row */
    filter *f;
    int x0;               /* output index of window output 0 */
    int64_t *ksum, *kimg; /* per output: Σ of all its weights, Σ of those on the image */
} hplan;

static void hplan_free(hplan *h) {
    pr_free(h->first);
    pr_free(h->ntap);
    pr_free(h->off);
    pr_free(h->hi);
    pr_free(h->lo);
    pr_free(h->ksum);
    pr_free(h->kimg);
    memset(h, 0, sizeof *h);
}

/* Outputs [x0, x0+n) of filter f over a canvas whose image columns are [ox, ox+w). */
static int hplan_make(filter *f, int x0, int n, int ox, int w, hplan *h) {
    memset(h, 0, sizeof *h);
    h->n = n;
    h->f = f;
    h->x0 = x0;
    h->first = pr_alloc((size_t)n, sizeof(int), 1);
    h->ntap = pr_alloc((size_t)n, sizeof(int), 1);
    h->off = pr_alloc((size_t)n, sizeof(size_t), 1);
    h->ksum = pr_alloc((size_t)n, sizeof(int64_t), 1);
    h->kimg = pr_alloc((size_t)n, sizeof(int64_t), 1);
    if (!h->first || !h->ntap || !h->off || !h->ksum || !h->kimg) return PR_ERR_NOMEM;
    h->a = n;
    h->ca = INT_MAX;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        int xmin, m;
        filter_bounds(f, x0 + i, &xmin, &m);
        int s = xmin > ox ? xmin : ox, e = xmin + m < ox + w ? xmin + m : ox + w;
        h->first[i] = s;
        h->ntap[i] = e > s ? e - s : 0;
        h->off[i] = total;
        total += ((size_t)h->ntap[i] + 7) & ~(size_t)7;
        if (e > s) {
            if (i < h->a) h->a = i;
            h->b = i + 1;
            if (s < h->ca) h->ca = s;
            if (e > h->cb) h->cb = e;
        }
    }
    if (h->b <= h->a) h->a = h->b = h->ca = h->cb = 0;
    int keep = total <= HPLAN_MAX_TAPS;
    if (keep) {
        h->hi = pr_calloc(total ? total : 1, sizeof(int16_t), 1);
        h->lo = pr_calloc(total ? total : 1, sizeof(int16_t), 1);
        if (!h->hi || !h->lo) return PR_ERR_NOMEM;
    }
    for (int i = 0; i < n; i++) {
        int xmin, m;
        h->ksum[i] = filter_taps(f, x0 + i, &xmin, &m);
        h->kimg[i] = 0;
        const int32_t *k = f->k + (h->first[i] - xmin);
        for (int t = 0; t < h->ntap[i]; t++) {
            h->kimg[i] += k[t];
            if (!keep) continue;
            /* normalised bicubic weights stay well inside (-2, 2), i.e. |k >> 8| < 2^15; refuse otherwise */
            if ((k[t] >> 8) < INT16_MIN || (k[t] >> 8) > INT16_MAX) return PR_ERR_ARG;
            h->hi[h->off[i] + t] = (int16_t)(k[t] >> 8);
            h->lo[h->off[i] + t] = (int16_t)(k[t] & 255);
        }
    }
    return 0;
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

/* One canvas row through the horizontal pass, outputs [a, b) only: `row` holds the packed RGB pixels of
 * image columns [ca, cb). planes (used when the weights are kept): 3 × plane_len int16 scratch,
 * plane_len >= cb - ca + 8 and zero past cb - ca, so that 8-rounded tap runs reading past the image meet
 * zero pixels (and past an output's own taps, zero weights). */
static void hrow(const hplan *h, const uint8_t *restrict row, const uint8_t bg[3], int16_t *restrict planes,
                 size_t plane_len, uint8_t *restrict out) {
    int16_t *p[3] = {planes, planes + plane_len, planes + 2 * plane_len};
    for (int x = 0; h->hi && x < h->cb - h->ca; x++) {
        p[0][x] = row[3 * x];
        p[1][x] = row[3 * x + 1];
        p[2][x] = row[3 * x + 2];
    }
    for (int i = h->a; i < h->b; i++) {
        int x = h->first[i] - h->ca;
        int64_t off_image = h->ksum[i] - h->kimg[i];
        if (!h->hi) { /* weights not kept: compute them again */
            int xmin, m;
            filter_taps(h->f, h->x0 + i, &xmin, &m);
            const int32_t *k = h->f->k + (h->first[i] - xmin);
            for (int c = 0; c < 3; c++) {
                int64_t s = HALF + bg[c] * off_image;
                for (int t = 0; t < h->ntap[i]; t++) s += (int64_t)row[3 * (x + t) + c] * k[t];
                *out++ = clip8(s);
            }
            continue;
        }
        /* 8-rounded runs vectorise; a short run is cheaper exact */
        int taps = h->ntap[i] < 8 ? h->ntap[i] : (h->ntap[i] + 7) & ~7;
        const int16_t *hi = h->hi + h->off[i], *lo = h->lo + h->off[i];
        for (int c = 0; c < 3; c++) *out++ = clip8(HALF + dot_split(p[c] + x, hi, lo, taps) + bg[c] * off_image);
    }
}

/* Vertical pass of one output row over `rows` (n rows of `width` bytes, weights k) plus a background term:
 * out[q] = clip8(½ + base[q]·kbase + Σ rows[y][q]·k[y]); base may be NULL (no background). */
static void vrow(const uint8_t *const *rows, const int32_t *k, int n, const uint8_t *base, int64_t kbase,
                 size_t width, int32_t *restrict acc, uint8_t *restrict out) {
    for (size_t q = 0; q < width; q++) acc[q] = (int32_t)(HALF + (base ? base[q] * kbase : 0));
    for (int y = 0; y < n; y++) {
        const uint8_t *restrict r = rows[y];
        int32_t ky = k[y];
        for (size_t q = 0; q < width; q++) acc[q] += r[q] * ky;
    }
    for (size_t q = 0; q < width; q++) out[q] = clip8(acc[q]);
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
    /* Padding is only ever to a square resized to a square, which shrinks both ways alike: never vertical
     * first. The vertical-first path below reads the image directly. */
    if (vertical_first && (cv->cw != cv->w || cv->ch != cv->h))
        return pr_set_error(err, PR_ERR_ARG, "resample: a padded canvas must be resized horizontally first");
    filter fh = {0}, fv = {0};
    hplan hp = {0};
    uint8_t *bgh = NULL, *ring = NULL, *vout = NULL;
    const uint8_t **rows = NULL;
    int32_t *acc = NULL;
    int16_t *planes = NULL;
    size_t out_stride = (size_t)win_w * 3, in_stride = (size_t)cv->w * 3;
    int rc = 0;

    if (filter_init(&fh, cv->cw, out_w) || filter_init(&fv, cv->ch, out_h)) goto nomem;
    if ((rc = hplan_make(&fh, x0, win_w, cv->ox, cv->w, &hp)) == PR_ERR_ARG) {
        rc = pr_set_error(err, PR_ERR_ARG, "resample: filter weight out of range for %d → %d", cv->cw, out_w);
        goto done;
    }
    if (rc) goto nomem;
    size_t span = (size_t)(hp.cb - hp.ca), plane_len = span + 8, width = (size_t)(hp.b - hp.a) * 3;
    planes = pr_calloc(hp.hi ? plane_len : 1, 3, sizeof(int16_t)); /* unused when the weights are not kept */
    /* every row off the image, and every column whose window misses it, is bgh after the horizontal pass */
    bgh = pr_alloc(out_stride, 1, 1);
    rows = pr_alloc((size_t)fv.ksize, sizeof *rows, 1);
    acc = pr_alloc((span > (size_t)win_w ? span : (size_t)win_w) * 3, sizeof(int32_t), 1);
    if (!planes || !bgh || !rows || !acc) goto nomem;
    for (int i = 0; i < win_w; i++)
        for (int c = 0; c < 3; c++) bgh[3 * i + c] = clip8(HALF + cv->bg[c] * hp.ksum[i]);

    if (vertical_first) {
        /* per output row: the vertical pass over the image columns the window needs, then the horizontal */
        vout = pr_alloc(span, 3, 1);
        if (!vout) goto nomem;
        for (int j = 0; j < win_h; j++) {
            int ymin, m;
            filter_taps(&fv, y0 + j, &ymin, &m);
            for (int t = 0; t < m; t++) rows[t] = cv->rgb + (size_t)(ymin + t) * in_stride + (size_t)hp.ca * 3;
            vrow(rows, fv.k, m, NULL, 0, span * 3, acc, vout);
            hrow(&hp, vout, cv->bg, planes, plane_len, out + (size_t)j * out_stride + (size_t)hp.a * 3);
        }
        goto done;
    }

    /* horizontal first: the image rows a vertical window reads live in a ring, computed once each */
    int cap = 0;
    for (int j = 0; j < win_h; j++) {
        int ymin, m;
        filter_bounds(&fv, y0 + j, &ymin, &m);
        int s = ymin > cv->oy ? ymin : cv->oy, e = ymin + m < cv->oy + cv->h ? ymin + m : cv->oy + cv->h;
        if (e - s > cap) cap = e - s;
    }
    if (cap > 0 && width > 0) {
        ring = pr_alloc((size_t)cap, width, 1);
        if (!ring) goto nomem;
    }
    int next = 0; /* the next image row (canvas coordinates) the ring has not seen */
    for (int j = 0; j < win_h; j++) {
        int ymin, m;
        int64_t ksum = filter_taps(&fv, y0 + j, &ymin, &m), kimg = 0;
        int s = ymin > cv->oy ? ymin : cv->oy, e = ymin + m < cv->oy + cv->h ? ymin + m : cv->oy + cv->h;
        uint8_t *o = out + (size_t)j * out_stride;
        /* columns whose window misses the image: the same value all the way down */
        for (size_t q = 0; q < (size_t)hp.a * 3; q++) o[q] = clip8(HALF + bgh[q] * ksum);
        for (size_t q = (size_t)hp.b * 3; q < out_stride; q++) o[q] = clip8(HALF + bgh[q] * ksum);
        if (!width) continue;
        if (next < s) next = s;
        for (; next < e; next++)
            hrow(&hp, cv->rgb + (size_t)(next - cv->oy) * in_stride + (size_t)(hp.ca - cv->ox) * 3, cv->bg, planes,
                 plane_len, ring + (size_t)(next % cap) * width);
        for (int y = s; y < e; y++) {
            rows[y - s] = ring + (size_t)(y % cap) * width;
            kimg += fv.k[y - ymin];
        }
        /* the image rows' taps, plus background rows (bgh) for the rest of the window */
        vrow(rows, e > s ? fv.k + (s - ymin) : fv.k, e > s ? e - s : 0, bgh + (size_t)hp.a * 3, ksum - kimg,
             width, acc, o + (size_t)hp.a * 3);
    }
    goto done;
nomem:
    rc = pr_set_error(err, PR_ERR_NOMEM, "resample: out of memory (%dx%d → %dx%d)", cv->cw, cv->ch, out_w, out_h);
done:
    filter_free(&fh);
    filter_free(&fv);
    hplan_free(&hp);
    pr_free(planes);
    pr_free(bgh);
    pr_free(ring);
    pr_free(vout);
    pr_free(rows);
    pr_free(acc);
    return rc;
}
