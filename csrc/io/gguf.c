/* GGUF reader. Every length, count and offset read from the file is checked against the bytes that remain
 * before it is used, so no content can make us read outside the mapping or allocate without bound. */
#include "io/gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kernels/quant.h"
#include "util/mem.h"

struct gguf_file {
    char *path;
    const uint8_t *map;
    uint64_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kvs;
    pr_tensor *tensors;
    char *names; /* NUL-terminated tensor names, packed */
    uint64_t alignment;
    uint64_t data_offset;
    uint8_t *owned; /* q8_0/q4_0 tensors moved out of the mapping (gguf_own_quantized), or NULL */
    size_t owned_size;
};

typedef struct {
    const gguf_file *f;
    uint64_t pos;
    pr_error *err;
} reader;

static int fail(reader *r, const char *what) {
    return pr_set_error(r->err, PR_ERR_FORMAT, "%s: invalid GGUF file: %s at byte offset %llu", r->f->path,
                        what, (unsigned long long)r->pos);
}

static int need(reader *r, uint64_t n, const char *what) {
    if (n > r->f->size - r->pos) {
        char buf[256];
        snprintf(buf, sizeof buf, "truncated (%s needs %llu bytes, %llu remain)", what, (unsigned long long)n,
                 (unsigned long long)(r->f->size - r->pos));
        return fail(r, buf);
    }
    return 0;
}

static int rd_u32(reader *r, uint32_t *v, const char *what) {
    if (need(r, 4, what)) return PR_ERR_FORMAT;
    memcpy(v, r->f->map + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(reader *r, uint64_t *v, const char *what) {
    if (need(r, 8, what)) return PR_ERR_FORMAT;
    memcpy(v, r->f->map + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(reader *r, gguf_str *s, const char *what) {
    uint64_t n;
    if (rd_u64(r, &n, what)) return PR_ERR_FORMAT;
    if (need(r, n, what)) return PR_ERR_FORMAT;
    s->ptr = (const char *)r->f->map + r->pos;
    s->len = n;
    r->pos += n;
    return 0;
}

static uint64_t scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

/* Reads a little-endian scalar of type t at p into the kv's widened value. */
static void load_scalar(uint32_t t, const uint8_t *p, gguf_kv *kv) {
    switch (t) {
    case GGUF_U8: kv->v.u = p[0]; break;
    case GGUF_BOOL: kv->v.u = p[0] != 0; break;
    case GGUF_I8: kv->v.i = (int8_t)p[0]; break;
    case GGUF_U16: { uint16_t x; memcpy(&x, p, 2); kv->v.u = x; break; }
    case GGUF_I16: { int16_t x; memcpy(&x, p, 2); kv->v.i = x; break; }
    case GGUF_U32: { uint32_t x; memcpy(&x, p, 4); kv->v.u = x; break; }
    case GGUF_I32: { int32_t x; memcpy(&x, p, 4); kv->v.i = x; break; }
    case GGUF_U64: { uint64_t x; memcpy(&x, p, 8); kv->v.u = x; break; }
    case GGUF_I64: { int64_t x; memcpy(&x, p, 8); kv->v.i = x; break; }
    case GGUF_F32: { float x; memcpy(&x, p, 4); kv->v.f = x; break; }
    case GGUF_F64: { double x; memcpy(&x, p, 8); kv->v.f = x; break; }
    default: break;
    }
}

static int read_kv(reader *r, gguf_kv *kv) {
    if (rd_str(r, &kv->key, "metadata key")) return PR_ERR_FORMAT;
    if (rd_u32(r, &kv->type, "metadata value type")) return PR_ERR_FORMAT;
    if (kv->type == GGUF_STRING) return rd_str(r, &kv->v.s, "metadata string");
    if (kv->type == GGUF_ARRAY) {
        if (rd_u32(r, &kv->arr_type, "array element type")) return PR_ERR_FORMAT;
        if (rd_u64(r, &kv->arr_n, "array length")) return PR_ERR_FORMAT;
        if (kv->arr_type == GGUF_STRING) {
            /* each string takes at least 8 bytes: bound the count before allocating */
            if (kv->arr_n > (r->f->size - r->pos) / 8) return fail(r, "string array longer than the file");
            kv->arr_strs = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof(gguf_str));
            if (!kv->arr_strs) return pr_set_error(r->err, PR_ERR_NOMEM, "out of memory reading %s", r->f->path);
            for (uint64_t i = 0; i < kv->arr_n; i++)
                if (rd_str(r, &kv->arr_strs[i], "string array element")) return PR_ERR_FORMAT;
            return 0;
        }
        uint64_t es = scalar_size(kv->arr_type);
        if (!es) return fail(r, "unsupported array element type");
        uint64_t bytes;
        if (__builtin_mul_overflow(es, kv->arr_n, &bytes)) return fail(r, "array length overflows");
        if (need(r, bytes, "array data")) return PR_ERR_FORMAT;
        kv->arr_data = r->f->map + r->pos;
        r->pos += bytes;
        return 0;
    }
    uint64_t es = scalar_size(kv->type);
    if (!es) return fail(r, "unknown metadata value type");
    if (need(r, es, "metadata value")) return PR_ERR_FORMAT;
    load_scalar(kv->type, r->f->map + r->pos, kv);
    r->pos += es;
    return 0;
}

void gguf_close(gguf_file *f) {
    if (!f) return;
    if (f->kvs) {
        for (uint64_t i = 0; i < f->n_kv; i++) free(f->kvs[i].arr_strs);
        free(f->kvs);
    }
    free(f->tensors);
    free(f->names);
    if (f->map && f->map != MAP_FAILED) munmap((void *)f->map, f->size);
    if (f->owned) munmap(f->owned, f->owned_size);
    free(f->path);
    free(f);
}

int gguf_own_quantized(gguf_file *f, int (*should_stop)(void), pr_error *err) {
    const size_t huge = 2u << 20, align = 64;
    size_t total = 0;
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if ((f->tensors[i].type == PR_Q4_0 || f->tensors[i].type == PR_Q8_0) && f->tensors[i].ne[0] % PR_QK == 0)
            total += (f->tensors[i].nbytes + align - 1) / align * align;
    if (!total) return 0;
    /* owned memory, on 2 MiB pages where the kernel gives them (fewer TLB misses while decoding streams every
     * weight once per token: benchmarks/RESULTS.md); q4_0 rows rearranged on the way (kernels/quant.h) */
    size_t len = (total + huge - 1) / huge * huge + huge;
    uint8_t *map = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (map == MAP_FAILED)
        return pr_set_error(err, PR_ERR_NOMEM, "%s: no memory for the q8_0/q4_0 tensors (%zu bytes)", f->path, total);
    f->owned = map;
    f->owned_size = len;
    uint8_t *dst = (uint8_t *)(((uintptr_t)map + huge - 1) & ~(uintptr_t)(huge - 1));
    madvise(dst, total, MADV_HUGEPAGE);
    long page = sysconf(_SC_PAGESIZE);
    for (uint64_t i = 0; i < f->n_tensors; i++) {
        pr_tensor *t = &f->tensors[i];
        if ((t->type != PR_Q4_0 && t->type != PR_Q8_0) || t->ne[0] % PR_QK) continue;
        if (should_stop && should_stop()) return pr_set_error(err, PR_ERR_INTERRUPTED, "interrupted");
        memcpy(dst, t->data, t->nbytes);
        if (t->type == PR_Q4_0) {
            long nb = (long)(t->ne[0] / PR_QK);
            size_t row = (size_t)nb * sizeof(block_q4_0);
            for (size_t r = 0; r + row <= t->nbytes; r += row) pr_q4_0_to_superblocks(dst + r, nb);
        }
        /* the file's pages of this tensor are not read again: unmap them, so the process holds the tensor once
         * (they stay in the page cache, reclaimable, and make the next load of the file fast) */
        uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) & ~(uintptr_t)(page - 1);
        uintptr_t hi = ((uintptr_t)t->data + t->nbytes) & ~(uintptr_t)(page - 1);
        if (hi > lo) madvise((void *)lo, hi - lo, MADV_DONTNEED);
        t->data = dst;
        dst += (t->nbytes + align - 1) / align * align;
    }
    mprotect(f->owned, f->owned_size, PROT_READ);
    return 0;
}

int gguf_str_eq(gguf_str s, const char *c) {
    size_t n = strlen(c);
    return s.ptr && s.len == n && memcmp(s.ptr, c, n) == 0;
}

const gguf_kv *gguf_find(const gguf_file *f, const char *key) {
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (gguf_str_eq(f->kvs[i].key, key)) return &f->kvs[i];
    return NULL;
}

static int parse(gguf_file *f, pr_error *err) {
    reader r = {f, 0, err};
    uint32_t magic;
    if (f->size < 4 || memcmp(f->map, "GGUF", 4) != 0)
        return pr_set_error(err, PR_ERR_FORMAT, "%s: not a GGUF file (bad magic at byte offset 0)", f->path);
    r.pos = 4;
    (void)magic;
    if (rd_u32(&r, &f->version, "version")) return PR_ERR_FORMAT;
    if (f->version < 2 || f->version > 3)
        return pr_set_error(err, PR_ERR_FORMAT, "%s: unsupported GGUF version %u (expected 2 or 3)", f->path,
                            f->version);
    if (rd_u64(&r, &f->n_tensors, "tensor count") || rd_u64(&r, &f->n_kv, "metadata count"))
        return PR_ERR_FORMAT;
    /* a key/value takes >= 12 bytes and a tensor info >= 24: bound counts by the bytes that remain */
    if (f->n_kv > (f->size - r.pos) / 12) return fail(&r, "metadata count larger than the file can hold");
    if (f->n_tensors > (f->size - r.pos) / 24) return fail(&r, "tensor count larger than the file can hold");
    f->kvs = calloc(f->n_kv ? f->n_kv : 1, sizeof(gguf_kv));
    f->tensors = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(pr_tensor));
    if (!f->kvs || !f->tensors) return pr_set_error(err, PR_ERR_NOMEM, "out of memory reading %s", f->path);
    for (uint64_t i = 0; i < f->n_kv; i++)
        if (read_kv(&r, &f->kvs[i])) return PR_ERR_FORMAT;

    f->alignment = 32;
    const gguf_kv *al = gguf_find(f, "general.alignment");
    if (al) {
        if (al->type != GGUF_U32 || al->v.u == 0 || (al->v.u & (al->v.u - 1)) || al->v.u > 65536)
            return pr_set_error(err, PR_ERR_FORMAT, "%s: general.alignment must be a power of two u32",
                                f->path);
        f->alignment = al->v.u;
    }

    gguf_str *names = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(gguf_str));
    uint64_t *offsets = calloc(f->n_tensors ? f->n_tensors : 1, sizeof(uint64_t));
    if (!names || !offsets) {
        free(names); free(offsets);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory reading %s", f->path);
    }
    int rc = 0;
    uint64_t names_bytes = 0;
    for (uint64_t i = 0; i < f->n_tensors && !rc; i++) {
        pr_tensor *t = &f->tensors[i];
        uint32_t nd, type;
        uint64_t tensor_start = r.pos;
        if ((rc = rd_str(&r, &names[i], "tensor name"))) break;
        if (names[i].len == 0 || names[i].len > 256) { rc = fail(&r, "tensor name empty or longer than 256"); break; }
        names_bytes += names[i].len + 1;
        if ((rc = rd_u32(&r, &nd, "tensor dimension count"))) break;
        if (nd < 1 || nd > PR_MAX_DIMS) { rc = fail(&r, "tensor has an unsupported number of dimensions"); break; }
        t->n_dims = (int)nd;
        uint64_t nel = 1;
        for (uint32_t d = 0; d < PR_MAX_DIMS; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd && !rc; d++) {
            uint64_t ne;
            if ((rc = rd_u64(&r, &ne, "tensor dimension"))) break;
            /* every element count and byte size below is checked in 64 bits: none may wrap */
            if (ne == 0 || ne > ((uint64_t)1 << 40) || __builtin_mul_overflow(nel, ne, &nel) || nel > INT64_MAX)
                rc = fail(&r, "tensor dimension is zero or too large");
            t->ne[d] = (int64_t)ne;
        }
        if (rc) break;
        if ((rc = rd_u32(&r, &type, "tensor type"))) break;
        if ((rc = rd_u64(&r, &offsets[i], "tensor data offset"))) break;
        t->type = (int)type;
        size_t bs = pr_dtype_block_size(type), bb = pr_dtype_block_bytes(type);
        if (!bs) {
            rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor '%.*s' (info at byte offset %llu) has unsupported "
                              "type id %u", f->path, (int)names[i].len, names[i].ptr,
                              (unsigned long long)tensor_start, type);
            break;
        }
        if (t->ne[0] % bs) {
            rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor '%.*s': row length %lld is not a multiple of the "
                              "%s block size %zu", f->path, (int)names[i].len, names[i].ptr, (long long)t->ne[0],
                              pr_dtype_name(type), bs);
            break;
        }
        uint64_t nbytes;
        if (__builtin_mul_overflow(nel / bs, (uint64_t)bb, &nbytes) || nbytes > (uint64_t)SIZE_MAX ||
            nbytes > f->size) {
            rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor '%.*s' (info at byte offset %llu): %llu elements of "
                              "%s need more bytes than the file has (%llu)", f->path, (int)names[i].len,
                              names[i].ptr, (unsigned long long)tensor_start, (unsigned long long)nel,
                              pr_dtype_name(type), (unsigned long long)f->size);
            break;
        }
        t->nbytes = (size_t)nbytes;
    }
    if (!rc) {
        f->names = malloc(names_bytes ? names_bytes : 1);
        if (!f->names) rc = pr_set_error(err, PR_ERR_NOMEM, "out of memory reading %s", f->path);
    }
    if (!rc) {
        uint64_t data = (r.pos + f->alignment - 1) / f->alignment * f->alignment;
        f->data_offset = data;
        if (data > f->size && f->n_tensors)
            rc = pr_set_error(err, PR_ERR_FORMAT, "%s: truncated: tensor data section would start at byte offset "
                              "%llu but the file has %llu bytes", f->path, (unsigned long long)data,
                              (unsigned long long)f->size);
        char *np = f->names;
        for (uint64_t i = 0; i < f->n_tensors && !rc; i++) {
            pr_tensor *t = &f->tensors[i];
            memcpy(np, names[i].ptr, names[i].len);
            np[names[i].len] = 0;
            t->name = np;
            np += names[i].len + 1;
            if (memchr(t->name, 0, names[i].len)) {
                rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor name contains a NUL byte", f->path);
                break;
            }
            for (uint64_t j = 0; j < i; j++)
                if (strcmp(f->tensors[j].name, t->name) == 0) {
                    rc = pr_set_error(err, PR_ERR_FORMAT, "%s: duplicate tensor '%s'", f->path, t->name);
                    break;
                }
            if (rc) break;
            if (offsets[i] % f->alignment)
                rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor '%s' data offset %llu is not aligned to %llu",
                                  f->path, t->name, (unsigned long long)offsets[i],
                                  (unsigned long long)f->alignment);
            else if (offsets[i] > f->size - data || t->nbytes > f->size - data - offsets[i])
                rc = pr_set_error(err, PR_ERR_FORMAT, "%s: tensor '%s' (%zu bytes at byte offset %llu) extends "
                                  "past the end of the file (%llu bytes); the file is truncated or corrupt",
                                  f->path, t->name, t->nbytes, (unsigned long long)(data + offsets[i]),
                                  (unsigned long long)f->size);
            else
                t->data = f->map + data + offsets[i];
        }
    }
    free(names);
    free(offsets);
    return rc;
}

int gguf_open(const char *path, gguf_file **out, pr_error *err) {
    *out = NULL;
    gguf_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        free(f);
        return pr_set_error(err, PR_ERR_NOMEM, "out of memory opening %s", path);
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        gguf_close(f);
        return pr_set_error(err, PR_ERR_IO, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        gguf_close(f);
        return pr_set_error(err, PR_ERR_IO, "%s: not a regular file", path);
    }
    f->size = (uint64_t)st.st_size;
    if (f->size < 24) {
        close(fd);
        int rc = pr_set_error(err, PR_ERR_FORMAT, "%s: not a GGUF model file (only %llu bytes)", path,
                              (unsigned long long)f->size);
        gguf_close(f);
        return rc;
    }
    f->map = mmap(NULL, f->size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (f->map == MAP_FAILED) {
        int e = errno;
        f->map = NULL;
        gguf_close(f);
        return pr_set_error(err, PR_ERR_IO, "%s: cannot map: %s", path, strerror(e));
    }
    int rc = parse(f, err);
    if (rc) {
        gguf_close(f);
        return rc;
    }
    *out = f;
    return 0;
}

const char *gguf_path(const gguf_file *f) { return f->path; }
int gguf_n_kv(const gguf_file *f) { return (int)f->n_kv; }
const gguf_kv *gguf_kv_at(const gguf_file *f, int i) { return &f->kvs[i]; }
int gguf_n_tensors(const gguf_file *f) { return (int)f->n_tensors; }
const pr_tensor *gguf_tensor_at(const gguf_file *f, int i) { return &f->tensors[i]; }

const pr_tensor *gguf_find_tensor(const gguf_file *f, const char *name) {
    for (uint64_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

int gguf_type_is_int(uint32_t t) {
    return t == GGUF_U8 || t == GGUF_I8 || t == GGUF_U16 || t == GGUF_I16 || t == GGUF_U32 || t == GGUF_I32 ||
           t == GGUF_U64 || t == GGUF_I64;
}
static int is_signed(uint32_t t) { return t == GGUF_I8 || t == GGUF_I16 || t == GGUF_I32 || t == GGUF_I64; }

static int missing(const gguf_file *f, const char *key, pr_error *err) {
    return pr_set_error(err, PR_ERR_FORMAT, "%s: missing metadata key '%s'", f->path, key);
}
static int wrong_type(const gguf_file *f, const char *key, const char *want, pr_error *err) {
    return pr_set_error(err, PR_ERR_FORMAT, "%s: metadata key '%s' should be %s", f->path, key, want);
}

int gguf_get_int(const gguf_file *f, const char *key, int required, int64_t dflt, int64_t *out, pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) {
        *out = dflt;
        return required ? missing(f, key, err) : 0;
    }
    if (!gguf_type_is_int(kv->type)) return wrong_type(f, key, "an integer", err);
    if (!is_signed(kv->type) && kv->v.u > (uint64_t)INT64_MAX) return wrong_type(f, key, "a small integer", err);
    *out = is_signed(kv->type) ? kv->v.i : (int64_t)kv->v.u;
    return 0;
}

int gguf_get_float(const gguf_file *f, const char *key, int required, double dflt, double *out, pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) {
        *out = dflt;
        return required ? missing(f, key, err) : 0;
    }
    if (kv->type == GGUF_F32 || kv->type == GGUF_F64) *out = kv->v.f;
    else if (gguf_type_is_int(kv->type)) *out = is_signed(kv->type) ? (double)kv->v.i : (double)kv->v.u;
    else return wrong_type(f, key, "a number", err);
    return 0;
}

int gguf_get_bool(const gguf_file *f, const char *key, int required, int dflt, int *out, pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) {
        *out = dflt;
        return required ? missing(f, key, err) : 0;
    }
    if (kv->type != GGUF_BOOL) return wrong_type(f, key, "a bool", err);
    *out = (int)kv->v.u;
    return 0;
}

int gguf_get_str(const gguf_file *f, const char *key, int required, gguf_str dflt, gguf_str *out,
                 pr_error *err) {
    const gguf_kv *kv = gguf_find(f, key);
    if (!kv) {
        *out = dflt;
        return required ? missing(f, key, err) : 0;
    }
    if (kv->type != GGUF_STRING) return wrong_type(f, key, "a string", err);
    *out = kv->v.s;
    return 0;
}

double gguf_arr_float(const gguf_kv *kv, uint64_t i) {
    gguf_kv tmp = {0};
    load_scalar(kv->arr_type, kv->arr_data + i * scalar_size(kv->arr_type), &tmp);
    if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64) return tmp.v.f;
    return is_signed(kv->arr_type) ? (double)tmp.v.i : (double)tmp.v.u;
}

int64_t gguf_arr_int(const gguf_kv *kv, uint64_t i) {
    gguf_kv tmp = {0};
    load_scalar(kv->arr_type, kv->arr_data + i * scalar_size(kv->arr_type), &tmp);
    if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64) {
        /* a float outside int64's range (or NaN) in a hostile file: converting it is undefined behaviour, so
         * return INT64_MIN, which every caller rejects as an id or type (found by fuzz_gguf) */
        double x = tmp.v.f;
        return x >= -9.2e18 && x <= 9.2e18 ? (int64_t)x : INT64_MIN;
    }
    return is_signed(kv->arr_type) ? tmp.v.i : (int64_t)tmp.v.u;
}
