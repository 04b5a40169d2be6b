/* Fused multi-head attention, softmax(q·Kᵀ/√d)·V, without materialising the L × L score matrix. */
#ifndef PR_KERNELS_ATTENTION_H
#define PR_KERNELS_ATTENTION_H
#include "kernels/kernels.h"
#include "kernels/pool.h"
#include "parrot.h"

typedef struct pr_attn {
    const float *q;     /* n_q rows, ldq floats apart; head h at q + h·hd */
    const void *k, *v;  /* n_kv rows, ldkv elements apart; kv head g at + g·ldh; PR_F32 or PR_F16 */
    int kv_type;
    float *out;         /* n_q rows, ldo floats apart; head h at out + h·hd */
    long ldq, ldkv, ldo;
    long ldh;           /* elements between kv heads: 0 = hd (the heads side by side in a row); a cache stored
                         * head by head (ldkv = hd) keeps each head's rows contiguous for decoding */
    int n_q, n_kv, n_head, n_head_kv, hd; /* query head h reads kv head h / (n_head / n_head_kv) */
    int causal;         /* 1: query i sees keys 0 .. n_kv − n_q + i (the queries are the last n_q positions) */
} pr_attn;

/* Runs on the pool; each (head, block of queries) is one job keeping a running max and sum (online softmax)
 * over tiles of keys. 0, or PR_ERR_NOMEM with err filled. */
int pr_attention(const pr_kernels *k, pr_pool *pool, const pr_attn *a, pr_error *err);
/* Up to this many queries take a direct path: per (head, query), scores against the cache as stored, softmax,
 * weighted sum of values. */
#define PR_ATTN_FEW_QUERIES 4
/* The direct path for heads [h0, h1) only, on the calling thread (a pool job's share); every output equals
 * pr_attention's bit for bit. n_q ≤ PR_ATTN_FEW_QUERIES. 0, or −1 when out of scratch memory. */
int pr_attention_heads(const pr_kernels *k, const pr_attn *a, int h0, int h1);
#endif
