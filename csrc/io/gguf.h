/* GGUF reader: maps a file read-only and validates its whole structure against the file size before any
 * tensor data is touched. Strings are views into the mapping (not NUL-terminated); tensor names are copied
 * and NUL-terminated. */
#ifndef PR_IO_GGUF_H
#define PR_IO_GGUF_H
#include <stdint.h>

#include "parrot.h"

enum gguf_type {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5, GGUF_F32 = 6,
    GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10, GGUF_I64 = 11, GGUF_F64 = 12,
    GGUF_NTYPES = 13,
};

typedef struct gguf_str {
    const char *ptr;
    uint64_t len;
} gguf_str;

typedef struct gguf_kv {
    gguf_str key;
    uint32_t type;
    union {
        uint64_t u;
        int64_t i;
        double f;
        gguf_str s;
    } v;                     /* scalar value (integers widened, bool as 0/1, floats as double) */
    uint32_t arr_type;       /* GGUF_ARRAY: element type */
    uint64_t arr_n;          /* GGUF_ARRAY: element count */
    const uint8_t *arr_data; /* GGUF_ARRAY of numbers: first element (little-endian, unaligned) */
    gguf_str *arr_strs;      /* GGUF_ARRAY of strings: arr_n views */
} gguf_kv;

typedef struct gguf_file gguf_file;

int gguf_open(const char *path, gguf_file **out, pr_error *err);
void gguf_close(gguf_file *f);
/* Moves every q8_0/q4_0 tensor into owned memory on 2 MiB pages (q4_0 rows into the layout the kernels
 * read: kernels/quant.h's superblocks) and drops its pages of the file mapping; once, right after
 * opening, before any tensor is used. should_stop (may be NULL) is asked before each tensor: a non-zero answer
 * stops with PR_ERR_INTERRUPTED (the copy of a 7B file takes seconds); the file must then be closed. */
int gguf_own_quantized(gguf_file *f, int (*should_stop)(void), pr_error *err);

const char *gguf_path(const gguf_file *f);
int gguf_n_kv(const gguf_file *f);
/* 1 for the integer value types (GGUF_U8 .. GGUF_I64) */
int gguf_type_is_int(uint32_t t);
const gguf_kv *gguf_kv_at(const gguf_file *f, int i);
const gguf_kv *gguf_find(const gguf_file *f, const char *key);
int gguf_n_tensors(const gguf_file *f);
const pr_tensor *gguf_tensor_at(const gguf_file *f, int i);
const pr_tensor *gguf_find_tensor(const gguf_file *f, const char *name);

/* Typed lookups: return 0 and set *out, or a PR_ERR_FORMAT naming the key and file when the key is missing
 * (only if required; otherwise *out = dflt and 0) or has the wrong type. */
int gguf_get_int(const gguf_file *f, const char *key, int required, int64_t dflt, int64_t *out, pr_error *err);
int gguf_get_float(const gguf_file *f, const char *key, int required, double dflt, double *out, pr_error *err);
int gguf_get_bool(const gguf_file *f, const char *key, int required, int dflt, int *out, pr_error *err);
/* String value: view into the map; *out = dflt (may be NULL) when missing and not required. */
int gguf_get_str(const gguf_file *f, const char *key, int required, gguf_str dflt, gguf_str *out,
                 pr_error *err);
/* 1 if s equals the C string c */
int gguf_str_eq(gguf_str s, const char *c);
/* Element i of a numeric array as double / int64 (caller checks bounds and arr_type). */
double gguf_arr_float(const gguf_kv *kv, uint64_t i);
int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i);
#endif
