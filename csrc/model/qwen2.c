/* The Qwen2 decoder (transformers' Qwen2ForCausalLM), one sequence per context:
 *
 *   h = embed(ids)                                   (or given input embeddings)
 *   for each layer:
 *     a = RMSNorm(h)·g1
 *     q, k, v = a·Wqᵀ + bq, a·Wkᵀ + bk, a·Wvᵀ + bv
 *     q, k = RoPE(q, pos), RoPE(k, pos)              (rotate-half, theta = rope_theta)
 *     h = h + softmax(q·Kᵀ/√d_head + causal mask)·V · Woᵀ     (GQA: head i reads kv head i / (H / H_kv))
 *     m = RMSNorm(h)·g2
 *     h = h + (silu(m·W_gateᵀ) ⊙ (m·W_upᵀ))·W_downᵀ
 *   logits = RMSNorm(h)·g · W_lm_headᵀ
 *
 * Positions continue from the cache: new rows get n_past, n_past+1, ...; the KV cache grows on demand up to
 * the context size, so a short chat does not reserve the whole context. It holds f32, or f16 (half the memory
 * and the reading time per decoded token) when the context is made with kv_type PR_F16.
 * Attention is fused (kernels/attention.c): no n × n score matrix is ever stored. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "model/model.h"
#include "util/mem.h"

#define PASS_ROWS_MAX 1024 /* positions per pass: bounds the activations' memory (~150 MB at 7B) while every
                           * weight panel the GEMM packs serves the whole prompt of a typical question (an image's
                           * 577 positions and its text); longer prompts run in equal passes */
#define FEW_ROWS 8        /* passes of up to this many positions (decoding; a batch of sequences) run their
                           * products as fused jobs, reading each weight row once (matmul.c's FEW_ROWS) */
#define SLICE_ALIGN 16    /* threads' slices of weight rows start on multiples of this: a multiple of the
                           * kernels' 4-row tiles and of the 16-wide SIMD epilogues (silu_mul) */
#define CHUNK_MIN_BYTES (64 << 10) /* weight bytes of a fused job's smallest chunks: threads claim guided chunks
                                     * as they go (pool.h), shrinking to this size at the job's end, so a thread
                                     * that starts late or is preempted leaves only a small chunk to wait for;
                                     * smaller chunks would pay more per chunk (quantising x, the claim) */

/* The activations of one pass, kept in the context (llama2.c's RunState): grown to the largest pass seen and
 * kept, so decoding token after token allocates nothing. */
typedef struct pr_run_state {
    int rows;          /* positions every buffer has room for */
    float *x;          /* rows × d    the hidden state */
    float *a;          /* rows × d    a block's normed input, then its output */
    float *q;          /* rows × d */
    float *k, *v;      /* rows × kv   the new positions' keys and values, before the cache */
    float *o;          /* rows × d    attention output */
    float *g, *u;      /* rows × ff   MLP gate and up */
    float *rope;       /* rows × hd   cos then sin of each position's rotary angles (hd/2 each) */
    float *part;       /* FEW_ROWS × widest product: a fused job chunk's slice of a product, before scattering
                        * (at FEW_ROWS × its first row); only for passes of 2..FEW_ROWS rows */
    block_q8_0 *xq;    /* min(rows, FEW_ROWS) × max(d, ff)/32: a fused job's input quantised once for all its
                        * chunks (q8_0/q4_0 weights) */
} pr_run_state;

struct pr_context {
    pr_model *m;
    int n_ctx, n_past, cap;
    int kv_type;      /* PR_F32 or PR_F16 */
    size_t kv_elt;    /* bytes per cached value */
    void **k, **v;    /* per layer: n_head_kv × cap × d_head, head by head: decoding reads each kv head's
                       * positions as one contiguous stream (rows of all heads were 2 KB-strided reads at the
                       * 0.5B shape, which the hardware prefetchers follow poorly) */
    float *inv_freq;  /* d_head/2 RoPE frequencies */
    pr_run_state rs;
};

static void run_state_free(pr_run_state *r) {
    pr_free(r->x); pr_free(r->a); pr_free(r->q); pr_free(r->k); pr_free(r->v); pr_free(r->o);
    pr_free(r->g); pr_free(r->u); pr_free(r->rope); pr_free(r->part); pr_free(r->xq);
    memset(r, 0, sizeof *r);
}

/* Room for passes of `rows` positions. */
static int run_state_reserve(pr_context *c, int rows, pr_error *err) {
    pr_run_state *r = &c->rs;
    if (rows <= r->rows) return 0;
    const pr_config *cf = &c->m->cfg;
    size_t d = (size_t)cf->n_embd, hd = d / (size_t)cf->n_head, kv = hd * (size_t)cf->n_head_kv, ff = (size_t)cf->n_ff;
    size_t n = (size_t)rows;
    long widest = (long)(ff > d + 2 * kv ? ff : d + 2 * kv);
    if (widest < cf->n_vocab) widest = cf->n_vocab; /* the lm_head */
    run_state_free(r);
    r->x = pr_alloc(n, d, sizeof(float));
    r->a = pr_alloc(n, d, sizeof(float));
    r->q = pr_alloc(n, d, sizeof(float));
    r->k = pr_alloc(n, kv, sizeof(float));
    r->v = pr_alloc(n, kv, sizeof(float));
    r->o = pr_alloc(n, d, sizeof(float));
    r->g = pr_alloc(n, ff, sizeof(float));
    r->u = pr_alloc(n, ff, sizeof(float));
    r->rope = pr_alloc(n, hd, sizeof(float));
    r->part = rows > 1 ? pr_alloc(FEW_ROWS, (size_t)widest, sizeof(float)) : NULL;
    r->xq = pr_alloc(n < FEW_ROWS ? n : FEW_ROWS, ((ff > d ? ff : d) + PR_QK - 1) / PR_QK, sizeof(block_q8_0));
    if (!r->x || !r->a || !r->q || !r->k || !r->v || !r->o || !r->g || !r->u || !r->rope || (rows > 1 && !r->part) ||
        !r->xq) {
        run_state_free(r);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory for the activations of %d positions", rows);
    }
    r->rows = rows;
    return 0;
}

int pr_context_new_kv(pr_model *m, int n_ctx, int kv_type, pr_context **out, pr_error *err) {
    *out = NULL;
    if (n_ctx <= 0 || n_ctx > m->cfg.n_ctx_train)
        return pr_set_error(err, PR_ERR_ARG, "context size %d must be between 1 and the model's %d", n_ctx,
                            m->cfg.n_ctx_train);
    if (kv_type != PR_F32 && kv_type != PR_F16)
        return pr_set_error(err, PR_ERR_ARG, "KV cache type must be f32 or f16, got %s",
                            pr_dtype_name(kv_type) ? pr_dtype_name(kv_type) : "an unknown type");
    pr_context *c = calloc(1, sizeof *c);
    if (!c) return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    c->m = m;
    c->n_ctx = n_ctx;
    c->kv_type = kv_type;
    c->kv_elt = kv_type == PR_F16 ? sizeof(uint16_t) : sizeof(float);
    int L = m->cfg.n_layer, hd = m->cfg.n_embd / m->cfg.n_head;
    c->k = calloc((size_t)L, sizeof(void *));
    c->v = calloc((size_t)L, sizeof(void *));
    c->inv_freq = malloc((size_t)hd / 2 * sizeof(float));
    if (!c->k || !c->v || !c->inv_freq) {
        pr_context_free(c);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory");
    }
    /* as transformers: inv_freq = 1 / theta^(2i/d) in f32 */
    for (int i = 0; i < hd / 2; i++)
        c->inv_freq[i] = 1.0f / powf(m->cfg.rope_theta, (float)(2 * i) / (float)hd);
    *out = c;
    return 0;
}

void pr_context_free(pr_context *c) {
    if (!c) return;
    for (int l = 0; c->k && l < c->m->cfg.n_layer; l++) pr_free(c->k[l]);
    for (int l = 0; c->v && l < c->m->cfg.n_layer; l++) pr_free(c->v[l]);
    free(c->k);
    free(c->v);
    free(c->inv_freq);
    run_state_free(&c->rs);
    free(c);
}

int pr_context_n_ctx(const pr_context *c) { return c->n_ctx; }
pr_model *pr_context_model(const pr_context *c) { return c->m; }
int pr_context_n_past(const pr_context *c) { return c->n_past; }

int pr_context_truncate(pr_context *c, int n_past, pr_error *err) {
    if (n_past < 0 || n_past > c->n_past)
        return pr_set_error(err, PR_ERR_ARG, "cannot truncate a sequence of %d positions to %d", c->n_past, n_past);
    c->n_past = n_past;
    return 0;
}

/* Makes room for `need` cached positions. */
static int reserve(pr_context *c, int need, pr_error *err) {
    if (need <= c->cap) return 0;
    int cap = c->cap ? c->cap : 256;
    while (cap < need) cap *= 2;
    if (cap > c->n_ctx) cap = c->n_ctx;
    const pr_config *cf = &c->m->cfg;
    size_t hd = (size_t)(cf->n_embd / cf->n_head), kv = hd * cf->n_head_kv, head = hd * c->kv_elt;
    for (int l = 0; l < cf->n_layer; l++) {
        void *k = pr_alloc((size_t)cap, kv, c->kv_elt), *v = pr_alloc((size_t)cap, kv, c->kv_elt);
        if (!k || !v) {
            pr_free(k);
            pr_free(v);
            return pr_set_error(err, PR_ERR_NOMEM, "out of memory growing the KV cache to %d positions", cap);
        }
        for (int g = 0; c->k[l] && g < cf->n_head_kv; g++) { /* each head's positions to its new place */
            memcpy((char *)k + g * cap * head, (char *)c->k[l] + g * c->cap * head, (size_t)c->n_past * head);
            memcpy((char *)v + g * cap * head, (char *)c->v[l] + g * c->cap * head, (size_t)c->n_past * head);
        }
        pr_free(c->k[l]);
        pr_free(c->v[l]);
        c->k[l] = k;
        c->v[l] = v;
    }
    c->cap = cap;
    return 0;
}

int pr_embed_tokens(const pr_model *m, const int32_t *ids, int n, float *out, pr_error *err) {
    for (int i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= m->cfg.n_vocab)
            return pr_set_error(err, PR_ERR_ARG, "token id %d at position %d is outside the vocabulary (0..%d)",
                                ids[i], i, m->cfg.n_vocab - 1);
        pr_row_to_f32(m->w.tok_embd, ids[i], out + (size_t)i * m->cfg.n_embd);
    }
    return 0;
}

/* The rows of a pass that belong to one sequence: rows row0 .. row0+n−1 are its positions n_past, n_past+1, ...
 * A pass holds one sequence's chunk (prefill, decode) or one row of each of several (batched decoding). */
typedef struct {
    pr_context *c;
    int row0, n;
} seq_rows;

/* Rotary factors of every row's position into r->rope: cos then sin of pos·inv_freq, hd/2 each. */
static void rope_factors(pr_run_state *r, const seq_rows *seqs, int n_seqs, int hd) {
    for (int s = 0; s < n_seqs; s++)
        for (int i = 0; i < seqs[s].n; i++) {
            float *cs = r->rope + (long)(seqs[s].row0 + i) * hd, *sn = cs + hd / 2;
            for (int j = 0; j < hd / 2; j++) {
                float ang = (float)(seqs[s].c->n_past + i) * seqs[s].c->inv_freq[j];
                cs[j] = cosf(ang);
                sn[j] = sinf(ang);
            }
        }
}

/* rotate-half RoPE of n_heads heads of x with one position's factors */
static void rope(float *x, int n_heads, int hd, const float *cs) {
    const float *sn = cs + hd / 2;
    for (int h = 0; h < n_heads; h++) {
        float *p = x + h * hd;
        for (int i = 0; i < hd / 2; i++) {
            float a = p[i], b = p[i + hd / 2];
            p[i] = a * cs[i] - b * sn[i];
            p[i + hd / 2] = b * cs[i] + a * sn[i];
        }
    }
}

/* ---- fused products for decoding: one pool job computes several products of the same input (q, k, v; or
 * gate and up) and the elementwise step after them, each thread on its slice of weight rows. Each slice is a
 * view of the weight run through pr_matmul on the calling thread, which for FEW_ROWS activation rows computes
 * every output as one dot product: results equal the unfused products exactly. */
enum { EPI_NONE, EPI_SILU_MUL, EPI_ADD_TO };

typedef struct {
    const pr_tensor *W;
    const pr_tensor *bias; /* added to y, or NULL */
    float *y;              /* n × W rows */
} fused_out;

typedef struct {
    const pr_run_state *rs;
    const float *x;        /* n × cols */
    const block_q8_0 *xq;  /* x quantised (rows cols/32 blocks apart) for q8_0/q4_0 weights, or NULL */
    int n, n_out;
    fused_out out[3];
    int same_rows; /* 1: the outputs have the same rows and each thread takes the same slice of every one;
                    * 0: the outputs' rows are laid end to end and sliced as one range */
    int epilogue;  /* EPI_SILU_MUL: y0 = silu(y0) ⊙ y1;  EPI_ADD_TO: res += y0 (same_rows) */
    float *res;
    long start[PR_GUIDED_MAX + 1]; /* chunk c: groups of SLICE_ALIGN rows [start[c], start[c+1]) */
} fused_job;

static void fused_slice(const fused_job *f, const fused_out *o, long r0, long r1, float *part) {
    const pr_tensor *W = o->W;
    size_t ldw = (size_t)(W->ne[0] / (int64_t)pr_dtype_block_size(W->type)) * pr_dtype_block_bytes(W->type);
    long rows = (long)W->ne[1], m = r1 - r0;
    pr_tensor view = *W;
    view.ne[1] = m;
    view.data = (const char *)W->data + (size_t)r0 * ldw;
    view.nbytes = (size_t)m * ldw;
    if (f->xq && (W->type == PR_Q8_0 || W->type == PR_Q4_0)) { /* pr_matmul's few-rows path, x quantised once */
        long nb = (long)W->ne[0] / PR_QK;
        (W->type == PR_Q8_0 ? pr_kern()->gemm_q8_0 : pr_kern()->gemm_q4_0)(view.data, (long)ldw, m, f->xq,
                                                                           nb * (long)sizeof(block_q8_0), f->n, nb,
                                                                           o->y + r0, rows);
    } else if (f->n == 1) {
        pr_matmul(NULL, &view, f->x, 1, o->y + r0);
    } else {
        pr_matmul(NULL, &view, f->x, f->n, part);
        for (int i = 0; i < f->n; i++) memcpy(o->y + (long)i * rows + r0, part + (long)i * m, (size_t)m * sizeof(float));
    }
    if (o->bias)
        for (int i = 0; i < f->n; i++)
            for (long r = r0; r < r1; r++) o->y[(long)i * rows + r] += pr_f32(o->bias)[r];
}

/* rows of a fused job's outputs: laid end to end, or those of each when they have the same */
static long fused_rows(const fused_job *f) {
    long total = 0;
    for (int p = 0; p < f->n_out; p++) total = f->same_rows ? (long)f->out[p].W->ne[1] : total + (long)f->out[p].W->ne[1];
    return total;
}

static void fused_task(void *arg, int chunk, int n_chunks) {
    const fused_job *f = arg;
    long total = fused_rows(f);
    long s0 = f->start[chunk] * SLICE_ALIGN, s1 = f->start[chunk + 1] * SLICE_ALIGN < total ? f->start[chunk + 1] * SLICE_ALIGN : total;
    if (s1 <= s0) return;
    float *part = f->n > 1 ? f->rs->part + (size_t)FEW_ROWS * (size_t)s0 : NULL;
    long base = 0;
    for (int p = 0; p < f->n_out; p++) {
        long rows = (long)f->out[p].W->ne[1], r0 = s0 > base ? s0 - base : 0, r1 = s1 - base < rows ? s1 - base : rows;
        if (r1 > r0) fused_slice(f, &f->out[p], r0, r1, part);
        if (!f->same_rows) base += rows;
    }
    long rows = (long)f->out[0].W->ne[1];
    for (int i = 0; f->epilogue != EPI_NONE && i < f->n; i++) {
        float *y0 = f->out[0].y + (long)i * rows + s0;
        if (f->epilogue == EPI_SILU_MUL) pr_kern()->silu_mul(y0, f->out[1].y + (long)i * rows + s0, s1 - s0);
        else
            for (long r = 0; r < s1 - s0; r++) f->res[(long)i * rows + s0 + r] += y0[r];
    }
}

/* the biases and the epilogue of a long pass's products, each thread on its share of the outputs (on multiples
 * of 16 values: the SIMD epilogues split their work the same way whatever the thread count) */
static void epilogue_task(void *arg, int ith, int nth) {
    const fused_job *f = arg;
    long e0, e1;
    for (int p = 0; p < f->n_out; p++) { /* same_rows: out[1]'s share of silu_mul is the one it adds its bias to */
        const fused_out *o = &f->out[p];
        long rows = (long)o->W->ne[1];
        pr_split_aligned(f->n * rows, 16, ith, nth, &e0, &e1);
        pr_add_bias_range(o->bias, o->y, rows, e0, e1);
    }
    pr_split_aligned(f->n * (long)f->out[0].W->ne[1], 16, ith, nth, &e0, &e1);
    if (f->epilogue == EPI_SILU_MUL) pr_kern()->silu_mul(f->out[0].y + e0, f->out[1].y + e0, e1 - e0);
    if (f->epilogue == EPI_ADD_TO)
        for (long e = e0; e < e1; e++) f->res[e] += f->out[0].y[e];
}

/* f's input quantised into r->xq, once for every chunk of a fused job, where its weights are q8_0/q4_0 */
static const block_q8_0 *quantize_input(const pr_run_state *r, const float *x, int n, const pr_tensor *W) {
    if (W->type != PR_Q8_0 && W->type != PR_Q4_0) return NULL;
    long cols = (long)W->ne[0];
    for (int i = 0; i < n; i++) pr_kern()->quantize_q8_0(x + (long)i * cols, r->xq + (long)i * (cols / PR_QK), cols);
    return r->xq;
}

/* y_p = x·W_pᵀ (+ b_p) for up to three weights, then the epilogue, in one pool job (n ≤ FEW_ROWS) or as
 * separate products (longer passes, where the products are compute-bound and use the pool themselves). */
static void products(pr_model *m, const pr_run_state *r, fused_job *f) {
    if (f->n <= FEW_ROWS) {
        f->xq = quantize_input(r, f->x, f->n, f->out[0].W);
        size_t bytes = 0;
        for (int p = 0; p < f->n_out; p++) bytes += f->out[p].W->nbytes;
        long groups = (fused_rows(f) + SLICE_ALIGN - 1) / SLICE_ALIGN;
        long min_groups = (long)(CHUNK_MIN_BYTES / (bytes / (size_t)groups + 1)) + 1;
        f->rs = r;
        pr_pool_run_chunks(m->pool, fused_task, f, pr_split_guided(groups, pr_pool_size(m->pool), min_groups, f->start));
        return;
    }
    for (int p = 0; p < f->n_out; p++) pr_matmul(m->pool, f->out[p].W, f->x, f->n, f->out[p].y);
    if (f->epilogue != EPI_NONE || f->out[0].bias) pr_pool_run(m->pool, epilogue_task, f);
}

/* ---- the element-wise steps between products, each thread on its share of the pass's rows (a long pass: on
 * one thread they would leave the other cores idle; a few rows run on the calling thread, adding no pool job) */
enum { ROWS_NORM, ROWS_ROPE_KV };

typedef struct {
    const pr_config *cf;
    pr_run_state *r;
    const seq_rows *seqs;
    int n_seqs, n, layer, step;
    const pr_tensor *norm; /* ROWS_NORM: a = RMSNorm(x)·norm */
} rows_job;

/* Kv heads [g0, g1) of one position's new keys and values (kn, vn: all heads' hd values side by side) into
 * the layer-l cache, head by head. */
static void kv_put(pr_context *c, int l, long pos, const float *kn, const float *vn, long g0, long g1, long hd) {
    for (long g = g0; g < g1; g++) {
        size_t at = ((size_t)g * (size_t)c->cap + (size_t)pos) * (size_t)hd * c->kv_elt;
        if (c->kv_type == PR_F16) {
            pr_kern()->f32_to_f16(kn + g * hd, (uint16_t *)((char *)c->k[l] + at), hd);
            pr_kern()->f32_to_f16(vn + g * hd, (uint16_t *)((char *)c->v[l] + at), hd);
        } else {
            memcpy((char *)c->k[l] + at, kn + g * hd, (size_t)hd * sizeof(float));
            memcpy((char *)c->v[l] + at, vn + g * hd, (size_t)hd * sizeof(float));
        }
    }
}

static void rows_task(void *arg, int ith, int nth) {
    const rows_job *j = arg;
    const pr_config *cf = j->cf;
    pr_run_state *r = j->r;
    long d = cf->n_embd, hd = d / cf->n_head, kv = hd * cf->n_head_kv, i0, i1;
    pr_split_range(j->n, ith, nth, &i0, &i1);
    if (j->step == ROWS_NORM) {
        for (long i = i0; i < i1; i++) pr_rmsnorm(r->a + i * d, r->x + i * d, j->norm, d, cf->rms_eps);
        return;
    }
    for (int s = 0; s < j->n_seqs; s++) { /* RoPE on q and k, then the new keys and values into the caches */
        const seq_rows *q = &j->seqs[s];
        pr_context *c = q->c;
        long a = i0 > q->row0 ? i0 : q->row0, b = i1 < q->row0 + q->n ? i1 : q->row0 + q->n;
        for (long i = a; i < b; i++) {
            rope(r->q + i * d, cf->n_head, (int)hd, r->rope + i * hd);
            rope(r->k + i * kv, cf->n_head_kv, (int)hd, r->rope + i * hd);
            kv_put(c, j->layer, c->n_past + i - q->row0, r->k + i * kv, r->v + i * kv, 0, cf->n_head_kv, hd);
        }
    }
}

static void rows_step(pr_model *m, rows_job *j, int step, const pr_tensor *norm) {
    j->step = step;
    j->norm = norm;
    pr_pool_run(j->n > FEW_ROWS ? m->pool : NULL, rows_task, j);
}

/* Attention of one sequence's rows (their q, the layer-l cache up to them) into r->o. */
static pr_attn seq_attention(const pr_config *cf, const seq_rows *q, const pr_run_state *r, int l) {
    long d = cf->n_embd, hd = d / cf->n_head;
    pr_context *c = q->c;
    return (pr_attn){.q = r->q + (long)q->row0 * d, .k = c->k[l], .v = c->v[l], .kv_type = c->kv_type,
                     .out = r->o + (long)q->row0 * d, .ldq = d, .ldkv = hd, .ldh = (long)c->cap * hd, .ldo = d,
                     .n_q = q->n,
                     .n_kv = c->n_past + q->n, .n_head = cf->n_head, .n_head_kv = cf->n_head_kv, .hd = (int)hd,
                     .causal = 1};
}

/* ---- decoding's attention block as one pool job: each chunk takes whole kv heads with their query heads, so
 * the q, k, v rows of its heads, their rotation, their cache columns and their attention need nothing from
 * other chunks — one job instead of the qkv product and the attention job. Every value is computed as on the
 * unfused path (the same dot products, the direct attention path), so results are bit-identical. */
typedef struct {
    pr_model *m;
    const pr_run_state *rs;
    const pr_llm_layer *L;
    int l;
    const seq_rows *seqs;
    int n_seqs, n;
    const block_q8_0 *xq; /* the normed input quantised (q8_0/q4_0 weights), or NULL */
    int failed; /* set (atomically) by a thread that could not get scratch memory */
    long start[PR_GUIDED_MAX + 1]; /* chunk c: kv heads [start[c], start[c+1]) */
} attn_block_job;

/* Whether a pass takes attn_block_task: few rows, each sequence's on the direct attention path, and heads
 * that start on slice boundaries. */
static int fuse_attention(const pr_config *cf, const seq_rows *seqs, int n_seqs, int n) {
    if (n > FEW_ROWS || (cf->n_embd / cf->n_head) % SLICE_ALIGN) return 0;
    for (int s = 0; s < n_seqs; s++)
        if (seqs[s].n > PR_ATTN_FEW_QUERIES) return 0;
    return 1;
}

static void attn_block_task(void *arg, int chunk, int n_chunks) {
    const attn_block_job *j = arg;
    const pr_config *cf = &j->m->cfg;
    const pr_llm_layer *L = j->L;
    const pr_run_state *r = j->rs;
    long d = cf->n_embd, hd = d / cf->n_head, kv = hd * cf->n_head_kv, group = cf->n_head / cf->n_head_kv;
    long g0 = j->start[chunk], g1 = j->start[chunk + 1];
    long h0 = g0 * group, h1 = g1 * group;
    float *part = j->n > 1 ? r->part + (size_t)FEW_ROWS * (size_t)(h0 * hd) : NULL;
    fused_job f = {.rs = r, .x = r->a, .xq = j->xq, .n = j->n};
    fused_out q = {L->wq, L->bq, r->q}, k = {L->wk, L->bk, r->k}, v = {L->wv, L->bv, r->v};
    fused_slice(&f, &q, h0 * hd, h1 * hd, part);
    fused_slice(&f, &k, g0 * hd, g1 * hd, part);
    fused_slice(&f, &v, g0 * hd, g1 * hd, part);
    for (int i = 0; i < j->n; i++) {
        rope(r->q + i * d + h0 * hd, (int)(h1 - h0), (int)hd, r->rope + i * hd);
        rope(r->k + i * kv + g0 * hd, (int)(g1 - g0), (int)hd, r->rope + i * hd);
    }
    for (int s = 0; s < j->n_seqs; s++) {
        const seq_rows *q = &j->seqs[s];
        for (int i = 0; i < q->n; i++)
            kv_put(q->c, j->l, q->c->n_past + i, r->k + (q->row0 + i) * kv, r->v + (q->row0 + i) * kv, g0, g1, hd);
        pr_attn at = seq_attention(cf, &j->seqs[s], r, j->l);
        if (pr_attention_heads(pr_kern(), &at, (int)h0, (int)h1)) {
            __atomic_store_n(&((attn_block_job *)arg)->failed, 1, __ATOMIC_RELAXED);
            return;
        }
    }
}

/* One pass of the n rows of r->x (n ≤ r->rows) through the decoder layers, updated in place to the final hidden
 * states. Each sequence's rows take its next positions and go into its KV cache; products read the weights once
 * for all rows. The caller has reserved the caches. */
static int forward(pr_model *m, pr_run_state *r, const seq_rows *seqs, int n_seqs, int n, pr_error *err) {
    const pr_config *cf = &m->cfg;
    long d = cf->n_embd, hd = d / cf->n_head;
    const pr_kernels *K = pr_kern();
    float *x = r->x;
    rope_factors(r, seqs, n_seqs, (int)hd);
    rows_job rj = {.cf = cf, .r = r, .seqs = seqs, .n_seqs = n_seqs, .n = n};
    for (int l = 0; l < cf->n_layer; l++) {
        if (pr_should_abort()) return pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
        const pr_llm_layer *L = &m->w.layers[l];
        rj.layer = l;
        rows_step(m, &rj, ROWS_NORM, L->attn_norm);
        if (fuse_attention(cf, seqs, n_seqs, n)) {
            attn_block_job ab = {.m = m, .rs = r, .L = L, .l = l, .seqs = seqs, .n_seqs = n_seqs, .n = n,
                                 .xq = quantize_input(r, r->a, n, L->wq)};
            pr_pool_run_chunks(m->pool, attn_block_task, &ab,
                               pr_split_guided(cf->n_head_kv, pr_pool_size(m->pool), 1, ab.start));
            if (ab.failed) return pr_set_error(err, PR_ERR_NOMEM, "out of memory for attention scratch");
        } else {
            fused_job qkv = {.x = r->a, .n = n, .n_out = 3, .out = {{L->wq, L->bq, r->q}, {L->wk, L->bk, r->k},
                                                                    {L->wv, L->bv, r->v}}};
            products(m, r, &qkv);
            rows_step(m, &rj, ROWS_ROPE_KV, NULL);
            for (int s = 0; s < n_seqs; s++) {
                pr_attn at = seq_attention(cf, &seqs[s], r, l);
                int rc = pr_attention(K, m->pool, &at, err);
                if (rc) return rc;
            }
        }
        fused_job wo = {.x = r->o, .n = n, .n_out = 1, .out = {{L->wo, NULL, r->a}}, .same_rows = 1,
                        .epilogue = EPI_ADD_TO, .res = x};
        products(m, r, &wo); /* x += o·Woᵀ */

        rows_step(m, &rj, ROWS_NORM, L->ffn_norm);
        fused_job gate_up = {.x = r->a, .n = n, .n_out = 2, .out = {{L->w_gate, NULL, r->g}, {L->w_up, NULL, r->u}},
                             .same_rows = 1, .epilogue = EPI_SILU_MUL};
        products(m, r, &gate_up); /* g = silu(a·W_gateᵀ) ⊙ a·W_upᵀ */
        fused_job down = {.x = r->g, .n = n, .n_out = 1, .out = {{L->w_down, NULL, r->a}}, .same_rows = 1,
                          .epilogue = EPI_ADD_TO, .res = x};
        products(m, r, &down); /* x += g·W_downᵀ */
    }
    return 0;
}

/* logits = hn·W_lm_headᵀ for n rows of final normed hidden states (a fused job of chunks for a few rows) */
static void lm_head(pr_model *m, const pr_run_state *r, const float *hn, int n, float *logits) {
    fused_job f = {.x = hn, .n = n, .n_out = 1, .out = {{m->w.lm_head, NULL, logits}}, .same_rows = 1};
    products(m, r, &f);
}

/* Runs n positions given as embeddings (embd) or token ids (ids) through the decoder, a chunk at a time. */
static int decode(pr_context *c, const float *embd, const int32_t *ids, int n, float *logits, int all_logits,
                  pr_error *err) {
    pr_model *m = c->m;
    const pr_config *cf = &m->cfg;
    long d = cf->n_embd;
    if (n <= 0) return pr_set_error(err, PR_ERR_ARG, "nothing to decode (0 positions)");
    if (c->n_past + n > c->n_ctx)
        return pr_set_error(err, PR_ERR_CONTEXT, "sequence of %d positions does not fit: %d already cached, "
                            "context size %d", n, c->n_past, c->n_ctx);
    if (ids)
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= cf->n_vocab)
                return pr_set_error(err, PR_ERR_ARG, "token id %d at position %d is outside the vocabulary (0..%d)",
                                    ids[i], i, cf->n_vocab - 1);
    int passes = (n + PASS_ROWS_MAX - 1) / PASS_ROWS_MAX, chunk = (n + passes - 1) / passes;
    int rc = reserve(c, c->n_past + n, err);
    if (!rc) rc = run_state_reserve(c, chunk, err);
    if (rc) return rc;
    float *x = c->rs.x, *hn = c->rs.a;
    int start_past = c->n_past;
    for (int s = 0; s < n && !rc; s += chunk) {
        int nc = n - s < chunk ? n - s : chunk;
        if (ids) pr_embed_tokens(m, ids + s, nc, x, err);
        else memcpy(x, embd + (long)s * d, (size_t)nc * d * sizeof(float));
        seq_rows one = {c, 0, nc};
        rc = forward(m, &c->rs, &one, 1, nc, err);
        if (rc) break;
        c->n_past += nc;
        if (!logits) continue;
        if (all_logits) {
            for (int i = 0; i < nc; i++) pr_rmsnorm(hn + i * d, x + i * d, m->w.out_norm, d, cf->rms_eps);
            lm_head(m, &c->rs, hn, nc, logits + (long)s * cf->n_vocab);
        } else if (s + nc == n) {
            pr_rmsnorm(hn, x + (long)(nc - 1) * d, m->w.out_norm, d, cf->rms_eps);
            lm_head(m, &c->rs, hn, 1, logits);
        }
    }
    if (rc) c->n_past = start_past; /* a failed pass leaves the sequence as it was */
    return rc;
}

int pr_decode_embd(pr_context *c, const float *embd, int n, float *logits, int all_logits, pr_error *err) {
    return decode(c, embd, NULL, n, logits, all_logits, err);
}

int pr_decode_tokens(pr_context *c, const int32_t *ids, int n, float *logits, int all_logits, pr_error *err) {
    return decode(c, NULL, ids, n, logits, all_logits, err);
}

int pr_decode_batch(pr_context *const *ctxs, const int32_t *tokens, int n_seq, float *logits, pr_error *err) {
    if (n_seq <= 0) return pr_set_error(err, PR_ERR_ARG, "nothing to decode (0 sequences)");
    pr_model *m = ctxs[0]->m;
    const pr_config *cf = &m->cfg;
    long d = cf->n_embd;
    for (int s = 0; s < n_seq; s++) {
        pr_context *c = ctxs[s];
        if (c->m != m) return pr_set_error(err, PR_ERR_ARG, "sequence %d belongs to another model", s);
        for (int t = 0; t < s; t++)
            if (ctxs[t] == c) return pr_set_error(err, PR_ERR_ARG, "sequences %d and %d are the same context", t, s);
        if (tokens[s] < 0 || tokens[s] >= cf->n_vocab)
            return pr_set_error(err, PR_ERR_ARG, "token id %d of sequence %d is outside the vocabulary (0..%d)",
                                tokens[s], s, cf->n_vocab - 1);
        if (c->n_past + 1 > c->n_ctx)
            return pr_set_error(err, PR_ERR_CONTEXT, "sequence %d is full: %d positions cached, context size %d", s,
                                c->n_past, c->n_ctx);
    }
    /* every cache first, so a failure leaves every sequence as it was */
    int rc = 0;
    for (int s = 0; s < n_seq && !rc; s++) rc = reserve(ctxs[s], ctxs[s]->n_past + 1, err);
    pr_run_state *r = &ctxs[0]->rs;
    if (!rc) rc = run_state_reserve(ctxs[0], n_seq < FEW_ROWS ? n_seq : FEW_ROWS, err);
    /* groups of FEW_ROWS sequences: each product then computes every output as the same dot product a lone
     * sequence's does, so batched results equal one-at-a-time results exactly */
    seq_rows seqs[FEW_ROWS];
    int advanced = 0;
    for (int s0 = 0; s0 < n_seq && !rc; s0 += FEW_ROWS) {
        int g = n_seq - s0 < FEW_ROWS ? n_seq - s0 : FEW_ROWS;
        for (int i = 0; i < g; i++) {
            seqs[i] = (seq_rows){ctxs[s0 + i], i, 1};
            pr_embed_tokens(m, tokens + s0 + i, 1, r->x + i * d, err);
        }
        if ((rc = forward(m, r, seqs, g, g, err))) break;
        for (int i = 0; i < g; i++) ctxs[s0 + i]->n_past++;
        advanced += g;
        if (!logits) continue;
        for (int i = 0; i < g; i++) pr_rmsnorm(r->a + i * d, r->x + i * d, m->w.out_norm, d, cf->rms_eps);
        lm_head(m, r, r->a, g, logits + (long)s0 * cf->n_vocab);
    }
    if (rc) /* the failed group did not advance; take the earlier groups' step back too */
        for (int s = 0; s < advanced; s++) ctxs[s]->n_past--;
    return rc;
}
