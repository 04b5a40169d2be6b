/* parrot._core kernel functions: the instruction set in use, the reference quantisers (used by the
 * converter), and each kernel run with a chosen instruction set so tests can compare every SIMD table with the
 * scalar reference. Long work releases the GIL. */
#include <string.h>
#include <time.h>

#include "kernels/attention.h"
#include "kernels/matmul.h"
#include "python/pynp.h"

/* ---- helpers */
static PyArrayObject *as_array(PyObject *o, int type, int ndim, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(o, type, 0, 0, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must be %d-D, got %d-D", what, ndim, PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static const pr_kernels *table(const char *isa) {
    pr_error e = {0};
    const pr_kernels *k = pr_kernels_get(isa, &e);
    if (!k) pr_py_raise(&e);
    return k;
}

static int dtype_id(const char *name) {
    static const int ids[] = {PR_F32, PR_F16, PR_BF16, PR_Q8_0, PR_Q4_0};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        if (!strcmp(name, pr_dtype_name(ids[i]))) return ids[i];
    PyErr_Format(PyExc_ValueError, "unknown dtype '%s' (f32, f16, bf16, q8_0, q4_0)", name);
    return -1;
}

/* bytes of one row of `cols` values, or -1 with ValueError if cols does not fit the dtype's blocks */
static Py_ssize_t row_bytes(int type, Py_ssize_t cols) {
    Py_ssize_t bs = (Py_ssize_t)pr_dtype_block_size(type);
    if (cols <= 0 || cols % bs) {
        PyErr_Format(PyExc_ValueError, "%zd columns cannot be stored as %s (rows must be a positive multiple of "
                     "%zd values)", cols, pr_dtype_name(type), bs);
        return -1;
    }
    return cols / bs * (Py_ssize_t)pr_dtype_block_bytes(type);
}

/* ---- kernel_isa(), kernel_isas() */
static PyObject *py_kernel_isa(PyObject *self, PyObject *noargs) {
    pr_error e = {0};
    const pr_kernels *k = pr_kernels_active(&e);
    if (!k) return pr_py_raise(&e);
    return PyUnicode_FromString(k->isa);
}

static PyObject *py_kernel_isas(PyObject *self, PyObject *noargs) {
    PyObject *s = PyUnicode_FromString(pr_kernels_available());
    if (!s) return NULL;
    PyObject *l = PyUnicode_Split(s, NULL, -1);
    Py_DECREF(s);
    return l;
}

/* ---- quantize(x: f32 rows × cols, dtype) -> uint8 rows × row_bytes, with the reference quantisers */
static PyObject *py_quantize(PyObject *self, PyObject *args) {
    PyObject *xo;
    const char *dname;
    if (!PyArg_ParseTuple(args, "Os", &xo, &dname)) return NULL;
    int type = dtype_id(dname);
    if (type < 0) return NULL;
    if (type != PR_Q8_0 && type != PR_Q4_0)
        return PyErr_Format(PyExc_ValueError, "quantize() makes q8_0 or q4_0, not %s", dname);
    PyArrayObject *x = as_array(xo, NPY_FLOAT32, 2, "x");
    if (!x) return NULL;
    npy_intp rows = PyArray_DIM(x, 0), cols = PyArray_DIM(x, 1);
    Py_ssize_t rb = row_bytes(type, cols);
    if (rb < 0) {
        Py_DECREF(x);
        return NULL;
    }
    npy_intp dims[2] = {rows, rb};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_UINT8);
    if (!out) {
        Py_DECREF(x);
        return NULL;
    }
    const float *src = PyArray_DATA(x);
    char *dst = PyArray_DATA(out);
    Py_BEGIN_ALLOW_THREADS
    for (npy_intp r = 0; r < rows; r++) {
        if (type == PR_Q8_0) pr_quantize_row_q8_0(src + r * cols, (block_q8_0 *)(dst + r * rb), cols);
        else pr_quantize_row_q4_0(src + r * cols, (block_q4_0 *)(dst + r * rb), cols);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(x);
    return (PyObject *)out;
}

/* A weight tensor viewed over a uint8 array of rows × row_bytes (file layout). q4_0 rows are rearranged into
 * the layout the kernels read (kernels/quant.h), in a copy that replaces *rawp. */
static int weight_view(PyArrayObject **rawp, int type, Py_ssize_t cols, pr_tensor *t) {
    PyArrayObject *raw = *rawp;
    Py_ssize_t rb = row_bytes(type, cols);
    if (rb < 0) return -1;
    if (PyArray_DIM(raw, 1) != rb) {
        PyErr_Format(PyExc_ValueError, "a %s row of %zd values is %zd bytes, the array has %zd", pr_dtype_name(type),
                     cols, rb, (Py_ssize_t)PyArray_DIM(raw, 1));
        return -1;
    }
    memset(t, 0, sizeof *t);
    t->name = "w";
    t->type = type;
    t->n_dims = 2;
    t->ne[0] = cols;
    t->ne[1] = PyArray_DIM(raw, 0);
    t->ne[2] = t->ne[3] = 1;
    if (type == PR_Q4_0) {
        PyArrayObject *laid = (PyArrayObject *)PyArray_NewCopy(raw, NPY_CORDER);
        if (!laid) return -1;
        for (npy_intp r = 0; r < PyArray_DIM(laid, 0); r++)
            pr_q4_0_to_superblocks((char *)PyArray_DATA(laid) + r * rb, (long)(cols / PR_QK));
        Py_DECREF(raw);
        *rawp = raw = laid;
    }
    t->nbytes = (size_t)PyArray_NBYTES(raw);
    t->data = PyArray_DATA(raw);
    return 0;
}

/* ---- dequantize(raw, dtype, cols) -> f32 rows × cols (any weight dtype) */
static PyObject *py_dequantize(PyObject *self, PyObject *args) {
    PyObject *ro;
    const char *dname;
    Py_ssize_t cols;
    if (!PyArg_ParseTuple(args, "Osn", &ro, &dname, &cols)) return NULL;
    int type = dtype_id(dname);
    if (type < 0) return NULL;
    PyArrayObject *raw = as_array(ro, NPY_UINT8, 2, "raw");
    if (!raw) return NULL;
    pr_tensor t;
    if (weight_view(&raw, type, cols, &t)) {
        Py_DECREF(raw);
        return NULL;
    }
    npy_intp dims[2] = {(npy_intp)t.ne[1], cols};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (out) pr_tensor_to_f32(&t, PyArray_DATA(out));
    Py_DECREF(raw);
    return (PyObject *)out;
}

/* ---- q4_0_superblocks(raw: uint8 [rows, row_bytes], cols) -> the rows as the model holds them (kernels/quant.h) */
static PyObject *py_q4_0_superblocks(PyObject *self, PyObject *args) {
    PyObject *ro;
    Py_ssize_t cols;
    if (!PyArg_ParseTuple(args, "On", &ro, &cols)) return NULL;
    PyArrayObject *raw = as_array(ro, NPY_UINT8, 2, "raw");
    pr_tensor t;
    if (!raw || weight_view(&raw, PR_Q4_0, cols, &t)) {
        Py_XDECREF(raw);
        return NULL;
    }
    return (PyObject *)raw;
}

/* ---- matmul(raw, dtype, cols, x, isa="best", threads=1, path="auto", repeat=0) -> y = x·Wᵀ (n × rows);
 * repeat > 0: the product runs that many times and the result is (y, the fastest run's seconds), timed in C
 * around the product alone (benchmarks: no q4_0 layout copy, thread start or Python call in the time) */
static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static PyObject *py_matmul(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"raw", "dtype", "cols", "x", "isa", "threads", "path", "repeat", NULL};
    PyObject *ro, *xo;
    const char *dname, *isa = "best", *pname = "auto";
    Py_ssize_t cols;
    int threads = 1, path, repeat = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsnO|sisi", kwlist, &ro, &dname, &cols, &xo, &isa, &threads, &pname,
                                     &repeat))
        return NULL;
    if (repeat < 0 || repeat > 100000) return PyErr_Format(PyExc_ValueError, "repeat must be 0..100000, got %d", repeat);
    if (!strcmp(pname, "auto")) path = PR_MM_AUTO;
    else if (!strcmp(pname, "tiles")) path = PR_MM_TILES;
    else if (!strcmp(pname, "panels")) path = PR_MM_PANELS;
    else if (!strcmp(pname, "gemm")) path = PR_MM_GEMM;
    else return PyErr_Format(PyExc_ValueError, "path must be 'auto', 'tiles', 'panels' or 'gemm', got '%s'", pname);
    int type = dtype_id(dname);
    const pr_kernels *k = type < 0 ? NULL : table(isa);
    if (!k) return NULL;
    if (threads < 1 || threads > 64) return PyErr_Format(PyExc_ValueError, "threads must be 1..64, got %d", threads);
    PyArrayObject *raw = as_array(ro, NPY_UINT8, 2, "raw"), *x = raw ? as_array(xo, NPY_FLOAT32, 2, "x") : NULL;
    PyArrayObject *y = NULL;
    pr_tensor t;
    pr_pool *pool = NULL;
    if (!x || weight_view(&raw, type, cols, &t)) goto done;
    if (PyArray_DIM(x, 1) != cols) {
        PyErr_Format(PyExc_ValueError, "x has %zd columns, the weight %zd", (Py_ssize_t)PyArray_DIM(x, 1), cols);
        goto done;
    }
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)t.ne[1]};
    y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!y) goto done;
    if (pr_pool_new(threads, &pool)) {
        Py_CLEAR(y);
        PyErr_NoMemory();
        goto done;
    }
    pr_blas_single_thread();
    const float *xp = PyArray_DATA(x);
    float *yp = PyArray_DATA(y);
    int n = (int)PyArray_DIM(x, 0);
    double best = 0;
    Py_BEGIN_ALLOW_THREADS
    for (int r = 0; r < (repeat ? repeat : 1); r++) {
        double t0 = seconds();
        pr_matmul_k(k, pool, &t, xp, n, yp, path);
        double dt = seconds() - t0;
        if (r == 0 || dt < best) best = dt;
    }
    Py_END_ALLOW_THREADS
done:
    pr_pool_free(pool);
    Py_XDECREF(raw);
    Py_XDECREF(x);
    if (y && repeat) return Py_BuildValue("(Nd)", (PyObject *)y, best);
    return (PyObject *)y;
}

/* ---- matmul_fused(raws, dtype, cols, x, biases, act, res=None, isa="best", threads=1, path="auto")
 * -> act(x·[W_0; ...]ᵀ + [b_0, ...]) (+ res), res updated in place as the C code does */
static PyObject *py_matmul_fused(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"raws", "dtype", "cols", "x", "biases", "act", "res", "isa", "threads", "path", NULL};
    PyObject *ro, *xo, *bo, *reso = Py_None;
    const char *dname, *aname, *isa = "best", *pname = "auto";
    Py_ssize_t cols;
    int threads = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OsnOOs|Osis", kwlist, &ro, &dname, &cols, &xo, &bo, &aname, &reso,
                                     &isa, &threads, &pname))
        return NULL;
    int act = !strcmp(aname, "none") ? PR_ACT_NONE : !strcmp(aname, "quick_gelu") ? PR_ACT_QUICK_GELU
            : !strcmp(aname, "gelu") ? PR_ACT_GELU : -2;
    int path = !strcmp(pname, "auto") ? PR_MM_AUTO : !strcmp(pname, "gemm") ? PR_MM_GEMM
             : !strcmp(pname, "separate") ? PR_MM_PANELS : -1;
    if (act == -2 || path < 0) return PyErr_Format(PyExc_ValueError, "act must be none|quick_gelu|gelu and path auto|gemm|separate");
    int type = dtype_id(dname);
    const pr_kernels *k = type < 0 ? NULL : table(isa);
    if (!k) return NULL;
    if (!PyList_Check(ro) || !PyList_Check(bo) || PyList_GET_SIZE(ro) < 1 || PyList_GET_SIZE(ro) > 3 ||
        PyList_GET_SIZE(bo) != PyList_GET_SIZE(ro) || threads < 1 || threads > 64)
        return PyErr_Format(PyExc_ValueError, "raws and biases: lists of 1..3 (the same length); threads 1..64");
    int n_w = (int)PyList_GET_SIZE(ro);
    PyArrayObject *raw[3] = {0}, *bias[3] = {0}, *x = NULL, *res = NULL, *y = NULL;
    pr_tensor t[3], bt[3];
    const pr_tensor *W[3], *B[3];
    pr_pool *pool = NULL;
    long R = 0;
    for (int p = 0; p < n_w; p++) {
        if (!(raw[p] = as_array(PyList_GET_ITEM(ro, p), NPY_UINT8, 2, "raw")) || weight_view(&raw[p], type, cols, &t[p]))
            goto done;
        W[p] = &t[p];
        R += (long)t[p].ne[1];
        B[p] = NULL;
        if (PyList_GET_ITEM(bo, p) == Py_None) continue;
        if (!(bias[p] = as_array(PyList_GET_ITEM(bo, p), NPY_FLOAT32, 1, "bias"))) goto done;
        if (PyArray_DIM(bias[p], 0) != (npy_intp)t[p].ne[1]) {
            PyErr_SetString(PyExc_ValueError, "a bias needs one value per weight row");
            goto done;
        }
        bt[p] = (pr_tensor){.type = PR_F32, .n_dims = 1, .ne = {t[p].ne[1], 1, 1, 1}, .data = PyArray_DATA(bias[p])};
        B[p] = &bt[p];
    }
    if (!(x = as_array(xo, NPY_FLOAT32, 2, "x"))) goto done;
    if (PyArray_DIM(x, 1) != cols) {
        PyErr_SetString(PyExc_ValueError, "x's columns differ from the weights'");
        goto done;
    }
    npy_intp dims[2] = {PyArray_DIM(x, 0), (npy_intp)R};
    if (reso != Py_None) {
        if (!(res = as_array(reso, NPY_FLOAT32, 2, "res"))) goto done;
        if ((PyObject *)res != reso || !PyArray_ISWRITEABLE(res)) {
            PyErr_SetString(PyExc_ValueError, "res must be a writeable C-contiguous float32 array (updated in place)");
            goto done;
        }
        if (PyArray_DIM(res, 0) != dims[0] || PyArray_DIM(res, 1) != dims[1]) {
            PyErr_SetString(PyExc_ValueError, "res must be n × (the weights' rows together)");
            goto done;
        }
    }
    if (!(y = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32))) goto done;
    if (pr_pool_new(threads, &pool)) {
        Py_CLEAR(y);
        PyErr_NoMemory();
        goto done;
    }
    pr_blas_single_thread();
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pr_matmul_fused_k(k, pool, W, B, n_w, PyArray_DATA(x), (int)dims[0], PyArray_DATA(y), act,
                           res ? PyArray_DATA(res) : NULL, path);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_CLEAR(y);
        PyErr_NoMemory();
    }
done:
    pr_pool_free(pool);
    for (int p = 0; p < 3; p++) {
        Py_XDECREF(raw[p]);
        Py_XDECREF(bias[p]);
    }
    Py_XDECREF(x);
    Py_XDECREF(res);
    return (PyObject *)y;
}

/* ---- quantize_act(x 1-D f32, isa) -> uint8 bytes of q8_0 blocks, with the table's activation quantiser */
static PyObject *py_quantize_act(PyObject *self, PyObject *args) {
    PyObject *xo;
    const char *isa;
    if (!PyArg_ParseTuple(args, "Os", &xo, &isa)) return NULL;
    const pr_kernels *k = table(isa);
    if (!k) return NULL;
    PyArrayObject *x = as_array(xo, NPY_FLOAT32, 1, "x");
    if (!x) return NULL;
    npy_intp n = PyArray_DIM(x, 0);
    Py_ssize_t rb = row_bytes(PR_Q8_0, n);
    PyArrayObject *out = NULL;
    if (rb >= 0) {
        npy_intp dims[1] = {rb};
        out = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_UINT8);
        if (out) k->quantize_q8_0(PyArray_DATA(x), PyArray_DATA(out), n);
    }
    Py_DECREF(x);
    return (PyObject *)out;
}

/* ---- elementwise(name, x, isa, u=None, m=0) -> (y, sum): silu_mul, quick_gelu, gelu, exp_sum, f16 (round trip
 * f32 → f16 → f32), bf16 (bf16 bit patterns in x's low 16 bits widened) */
static PyObject *py_elementwise(PyObject *self, PyObject *args) {
    const char *name, *isa;
    PyObject *xo, *uo = Py_None;
    float m = 0;
    if (!PyArg_ParseTuple(args, "sOs|Of", &name, &xo, &isa, &uo, &m)) return NULL;
    const pr_kernels *k = table(isa);
    if (!k) return NULL;
    PyArrayObject *x = (PyArrayObject *)PyArray_FROMANY(xo, NPY_FLOAT32, 1, 1, NPY_ARRAY_ENSURECOPY | NPY_ARRAY_IN_ARRAY);
    if (!x) return NULL;
    npy_intp n = PyArray_DIM(x, 0);
    float *xp = PyArray_DATA(x), sum = 0;
    PyArrayObject *u = NULL;
    if (!strcmp(name, "silu_mul")) {
        u = as_array(uo, NPY_FLOAT32, 1, "u");
        if (!u || PyArray_DIM(u, 0) != n) {
            if (u) PyErr_SetString(PyExc_ValueError, "u must have x's length");
            Py_XDECREF(u);
            Py_DECREF(x);
            return NULL;
        }
        k->silu_mul(xp, PyArray_DATA(u), n);
        Py_DECREF(u);
    } else if (!strcmp(name, "quick_gelu") || !strcmp(name, "gelu")) {
        k->bias_act_res(xp, n, 1, n, NULL, name[0] == 'q' ? PR_ACT_QUICK_GELU : PR_ACT_GELU, NULL);
    } else if (!strcmp(name, "exp_sum")) {
        sum = k->exp_sum(xp, n, m);
    } else if (!strcmp(name, "f16") || !strcmp(name, "bf16")) {
        uint16_t *h = PyMem_Malloc((size_t)(n ? n : 1) * sizeof(uint16_t));
        if (!h) {
            Py_DECREF(x);
            return PyErr_NoMemory();
        }
        if (name[0] == 'f') {
            k->f32_to_f16(xp, h, n);
            k->f16_to_f32(h, xp, n);
        } else {
            for (npy_intp i = 0; i < n; i++) h[i] = pr_f32_to_bf16(xp[i]);
            k->bf16_to_f32(h, xp, n);
        }
        PyMem_Free(h);
    } else {
        Py_DECREF(x);
        return PyErr_Format(PyExc_ValueError, "unknown element-wise kernel '%s'", name);
    }
    return Py_BuildValue("(Nf)", x, sum);
}

/* ---- attention(q, k, v, n_head, n_head_kv, causal, kv_f16=False, isa="best", threads=1)
 * q: n_q × (n_head·hd), k, v: n_kv × (n_head_kv·hd) f32 -> n_q × (n_head·hd) */
static PyObject *py_attention(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"q", "k", "v", "n_head", "n_head_kv", "causal", "kv_f16", "isa", "threads", NULL};
    PyObject *qo, *ko, *vo;
    int n_head, n_head_kv, causal, kv_f16 = 0, threads = 1;
    const char *isa = "best";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OOOiip|psi", kwlist, &qo, &ko, &vo, &n_head, &n_head_kv, &causal,
                                     &kv_f16, &isa, &threads))
        return NULL;
    const pr_kernels *kt = table(isa);
    if (!kt) return NULL;
    PyArrayObject *q = as_array(qo, NPY_FLOAT32, 2, "q"), *k = q ? as_array(ko, NPY_FLOAT32, 2, "k") : NULL;
    PyArrayObject *v = k ? as_array(vo, NPY_FLOAT32, 2, "v") : NULL, *out = NULL;
    uint16_t *kh = NULL, *vh = NULL;
    pr_pool *pool = NULL;
    if (!v) goto done;
    long nq = (long)PyArray_DIM(q, 0), nkv = (long)PyArray_DIM(k, 0), d = (long)PyArray_DIM(q, 1);
    if (n_head < 1 || n_head_kv < 1 || n_head % n_head_kv || d % n_head || nq < 1 || nkv < nq ||
        PyArray_DIM(k, 1) != d / n_head * n_head_kv || PyArray_DIM(v, 0) != nkv || PyArray_DIM(v, 1) != PyArray_DIM(k, 1)) {
        PyErr_SetString(PyExc_ValueError, "attention: inconsistent shapes or head counts");
        goto done;
    }
    long kvd = (long)PyArray_DIM(k, 1);
    npy_intp dims[2] = {nq, d};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) goto done;
    pr_attn a = {.q = PyArray_DATA(q), .k = PyArray_DATA(k), .v = PyArray_DATA(v), .kv_type = PR_F32,
                 .out = PyArray_DATA(out), .ldq = d, .ldkv = kvd, .ldo = d, .n_q = (int)nq, .n_kv = (int)nkv,
                 .n_head = n_head, .n_head_kv = n_head_kv, .hd = (int)(d / n_head), .causal = causal};
    if (kv_f16) {
        kh = PyMem_Malloc((size_t)(nkv * kvd) * sizeof(uint16_t));
        vh = PyMem_Malloc((size_t)(nkv * kvd) * sizeof(uint16_t));
        if (!kh || !vh) {
            Py_CLEAR(out);
            PyErr_NoMemory();
            goto done;
        }
        kt->f32_to_f16(PyArray_DATA(k), kh, nkv * kvd);
        kt->f32_to_f16(PyArray_DATA(v), vh, nkv * kvd);
        a.k = kh, a.v = vh, a.kv_type = PR_F16;
    }
    if (pr_pool_new(threads < 1 ? 1 : threads, &pool)) {
        Py_CLEAR(out);
        PyErr_NoMemory();
        goto done;
    }
    pr_blas_single_thread();
    pr_error e = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pr_attention(kt, pool, &a, &e);
    Py_END_ALLOW_THREADS
    if (rc) {
        Py_CLEAR(out);
        pr_py_raise(&e);
    }
done:
    pr_pool_free(pool);
    PyMem_Free(kh);
    PyMem_Free(vh);
    Py_XDECREF(q);
    Py_XDECREF(k);
    Py_XDECREF(v);
    return (PyObject *)out;
}

/* ---- attn_f16(q, k, v, p, scale, isa) -> (s, o): the decode attention kernels for one query head; k and v
 * uint16 f16 bit patterns, n × ld each, of which the first hd = len(q) ≤ ld values of a row are the head's;
 * s = scale·(k_t·q), o = Σ_t p[t]·v_t */
static PyObject *py_attn_f16(PyObject *self, PyObject *args) {
    PyObject *qo, *ko, *vo, *po;
    float scale;
    const char *isa;
    if (!PyArg_ParseTuple(args, "OOOOfs", &qo, &ko, &vo, &po, &scale, &isa)) return NULL;
    const pr_kernels *kt = table(isa);
    if (!kt) return NULL;
    PyArrayObject *q = as_array(qo, NPY_FLOAT32, 1, "q"), *k = q ? as_array(ko, NPY_UINT16, 2, "k") : NULL;
    PyArrayObject *v = k ? as_array(vo, NPY_UINT16, 2, "v") : NULL, *p = v ? as_array(po, NPY_FLOAT32, 1, "p") : NULL;
    PyObject *res = NULL;
    if (!p) goto done;
    npy_intp hd = PyArray_DIM(q, 0), n = PyArray_DIM(k, 0), ld = PyArray_DIM(k, 1);
    if (n < 1 || hd < 1 || hd > ld || PyArray_DIM(v, 0) != n || PyArray_DIM(v, 1) != ld || PyArray_DIM(p, 0) != n) {
        PyErr_SetString(PyExc_ValueError, "attn_f16: k and v must be n × ld (n ≥ 1, ld ≥ len(q) ≥ 1), p n long");
        goto done;
    }
    PyArrayObject *so = (PyArrayObject *)PyArray_SimpleNew(1, &n, NPY_FLOAT32);
    PyArrayObject *oo = so ? (PyArrayObject *)PyArray_SimpleNew(1, &hd, NPY_FLOAT32) : NULL;
    if (oo) {
        kt->attn_scores_f16(PyArray_DATA(k), ld, n, PyArray_DATA(q), hd, scale, PyArray_DATA(so));
        kt->attn_values_f16(PyArray_DATA(p), PyArray_DATA(v), ld, n, hd, PyArray_DATA(oo));
        res = Py_BuildValue("(NN)", so, oo);
    } else {
        Py_XDECREF(so);
    }
done:
    Py_XDECREF(q);
    Py_XDECREF(k);
    Py_XDECREF(v);
    Py_XDECREF(p);
    return res;
}

/* ---- peak(kind, isa, threads, iters) -> (operations, seconds): the table's multiply-add peak loop on every
 * thread of a pool at once (benchmarks' machine limit; kind 0 f32 FMA, 1 bf16 dot, 2 int8 dot) */
typedef struct {
    const pr_kernels *k;
    int kind;
    long iters;
    double ops[64];
} peak_job;

static void peak_task(void *arg, int ith, int nth) {
    peak_job *j = arg;
    j->ops[ith] = j->k->peak(j->kind, j->iters);
}

static PyObject *py_peak(PyObject *self, PyObject *args) {
    int kind, threads;
    const char *isa;
    long iters;
    if (!PyArg_ParseTuple(args, "isil", &kind, &isa, &threads, &iters)) return NULL;
    const pr_kernels *k = table(isa);
    if (!k) return NULL;
    if (threads < 1 || threads > 64) return PyErr_Format(PyExc_ValueError, "threads must be 1..64, got %d", threads);
    if (iters < 1) return PyErr_Format(PyExc_ValueError, "iters must be positive, got %ld", iters);
    if (!k->peak) return Py_BuildValue("(dd)", 0.0, 1.0);
    peak_job j = {k, kind, iters, {0}};
    pr_pool *pool;
    if (pr_pool_new(threads, &pool)) return PyErr_NoMemory();
    double dt;
    Py_BEGIN_ALLOW_THREADS
    dt = seconds();
    pr_pool_run(pool, peak_task, &j);
    dt = seconds() - dt;
    Py_END_ALLOW_THREADS
    pr_pool_free(pool);
    double ops = 0;
    for (int i = 0; i < threads; i++) ops += j.ops[i];
    return Py_BuildValue("(dd)", ops, dt);
}

static PyMethodDef kernel_methods[] = {
    {"peak", py_peak, METH_VARARGS,
     "peak(kind, isa, threads, iters) -> (operations, seconds) of the table's multiply-add peak loop "
     "(kind 0 f32 FMA, 1 bf16 dot, 2 int8 dot; (0, 1) if the table has none) on `threads` threads"},
    {"kernel_isa", py_kernel_isa, METH_NOARGS,
     "kernel_isa() -> str: the instruction set in use (PARROT_ISA or the best of this CPU)"},
    {"kernel_isas", py_kernel_isas, METH_NOARGS, "kernel_isas() -> list[str]: instruction sets available here"},
    {"quantize", py_quantize, METH_VARARGS,
     "quantize(x: float32 [rows, cols], dtype 'q8_0'|'q4_0') -> uint8 [rows, row_bytes] (ggml blocks)"},
    {"dequantize", py_dequantize, METH_VARARGS,
     "dequantize(raw: uint8 [rows, row_bytes], dtype, cols) -> float32 [rows, cols]"},
    {"q4_0_superblocks", py_q4_0_superblocks, METH_VARARGS,
     "q4_0_superblocks(raw: uint8 [rows, row_bytes] in the file's layout, cols) -> a copy laid out as the model holds it"},
    {"matmul", (PyCFunction)(void (*)(void))py_matmul, METH_VARARGS | METH_KEYWORDS,
     "matmul(raw, dtype, cols, x, isa='best', threads=1, path='auto'|'tiles'|'panels'|'gemm', repeat=0) -> x·Wᵀ, W "
     "given as uint8 rows of its dtype; repeat > 0: (x·Wᵀ, the fastest of `repeat` runs of the product in seconds)"},
    {"matmul_fused", (PyCFunction)(void (*)(void))py_matmul_fused, METH_VARARGS | METH_KEYWORDS,
     "matmul_fused(raws, dtype, cols, x, biases, act, res=None, isa='best', threads=1, path='auto'|'gemm'|'separate')"
     " -> act(x·[W_0; ...]ᵀ + biases), added into res (updated in place) when given"},
    {"quantize_act", py_quantize_act, METH_VARARGS,
     "quantize_act(x: float32 [n], isa) -> uint8 q8_0 blocks from the table's activation quantiser"},
    {"elementwise", py_elementwise, METH_VARARGS,
     "elementwise(name, x, isa, u=None, m=0.0) -> (y, sum) for silu_mul, quick_gelu, gelu, exp_sum, f16, bf16"},
    {"attention", (PyCFunction)(void (*)(void))py_attention, METH_VARARGS | METH_KEYWORDS,
     "attention(q, k, v, n_head, n_head_kv, causal, kv_f16=False, isa='best', threads=1) -> out"},
    {"attn_f16", py_attn_f16, METH_VARARGS,
     "attn_f16(q, k, v, p, scale, isa) -> (scale·(k_t·q) for every row t, Σ_t p[t]·v_t): the decode attention "
     "kernels on f16 rows (uint16 bit patterns, n × ld, the first len(q) values of each row)"},
    {NULL, NULL, 0, NULL},
};

int pr_py_kernels_init(PyObject *m) { return PyModule_AddFunctions(m, kernel_methods); }
