/* parrot._core.Model and parrot._core.Context: the model file, its forward passes, and one sequence's KV
 * cache. Long work runs with the GIL released; in the main thread a SIGINT during such work interrupts it
 * (the C core checks between layers) and surfaces as KeyboardInterrupt. */
#include <signal.h>
#include <string.h>
#include <time.h>

#include "io/gguf.h"
#include "kernels/pool.h"
#include "python/pynp.h"
#include "python/py_text.h"

typedef struct {
    PyObject_HEAD
    pr_model *m;
    PyObject *path;
} ModelObject;

typedef struct {
    PyObject_HEAD
    ModelObject *model;
    pr_context *c;
} ContextObject;

/* An image's features (pr_image_features), owned by this object; it keeps its model alive. */
typedef struct {
    PyObject_HEAD
    ModelObject *model;
    pr_image_features *f;
} FeaturesObject;

static PyTypeObject ModelType, ContextType, FeaturesType;

/* ---- SIGINT around long calls: our handler asks the core to stop, then chains to Python's handler */
static struct sigaction previous_sigint;
static int sigint_installed;

static void on_sigint(int sig) {
    pr_interrupt_request();
    if (previous_sigint.sa_flags & SA_SIGINFO) {
        /* Python's handler is a plain handler; nothing to chain in this form */
    } else if (previous_sigint.sa_handler != SIG_DFL && previous_sigint.sa_handler != SIG_IGN) {
        previous_sigint.sa_handler(sig);
    }
}

/* Called with the GIL held, before releasing it. Only the main thread touches the handler. */
static int long_call_begin(void) {
    if (!PyGILState_Check()) return 0;
    PyObject *threading = PyImport_ImportModule("threading");
    int is_main = 0;
    if (threading) {
        PyObject *cur = PyObject_CallMethod(threading, "current_thread", NULL);
        PyObject *main = PyObject_CallMethod(threading, "main_thread", NULL);
        is_main = cur && main && cur == main;
        Py_XDECREF(cur);
        Py_XDECREF(main);
        Py_DECREF(threading);
    }
    PyErr_Clear();
    if (!is_main || sigint_installed) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigint;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, &previous_sigint) != 0) return 0;
    sigint_installed = 1;
    return 1;
}

static void long_call_end(int installed) {
    if (installed) {
        sigaction(SIGINT, &previous_sigint, NULL);
        sigint_installed = 0;
        /* A SIGINT that lands after the work finished has already reached Python's handler (chained above),
         * which raises KeyboardInterrupt once; the core's flag must not outlive the call, or the next call
         * would stop at once with a second KeyboardInterrupt for the same Ctrl-C. raise_error() reads the
         * call's own error code, not the flag. */
        pr_interrupt_clear();
    }
}

/* After a failed call: an interruption becomes KeyboardInterrupt (or whatever Python's SIGINT handler
 * raises), everything else the mapped parrot error. */
static PyObject *raise_error(pr_error *e) {
    if (e->code == PR_ERR_INTERRUPTED) {
        pr_interrupt_clear();
        if (PyErr_CheckSignals() < 0) return NULL;
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return NULL;
    }
    return pr_py_raise(e);
}

#define RUN_LONG(stmt)                                                                                  \
    do {                                                                                                \
        int inst_ = long_call_begin();                                                                  \
        Py_BEGIN_ALLOW_THREADS stmt;                                                                    \
        Py_END_ALLOW_THREADS long_call_end(inst_);                                                      \
    } while (0)

/* ---- Model */

static int Model_init(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"path", "threads", NULL};
    PyObject *path_obj;
    int threads = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|i", kwlist, PyUnicode_FSConverter, &path_obj, &threads))
        return -1;
    if (self->m) {
        Py_DECREF(path_obj);
        PyErr_SetString(PyExc_RuntimeError, "Model is already initialised");
        return -1;
    }
    const char *path = PyBytes_AS_STRING(path_obj);
    pr_error e = {0};
    pr_model *m = NULL;
    int rc;
    RUN_LONG(rc = pr_model_load(path, threads, &m, &e)); /* seconds for a large quantised file: Ctrl-C stops it */
    if (rc) {
        Py_DECREF(path_obj);
        raise_error(&e);
        return -1;
    }
    self->m = m;
    self->path = PyUnicode_DecodeFSDefault(path);
    Py_DECREF(path_obj);
    return self->path ? 0 : -1;
}

static void Model_dealloc(ModelObject *self) {
    pr_model_free(self->m);
    Py_XDECREF(self->path);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_model(ModelObject *self) {
    if (!self->m) {
        PyErr_SetString(PyExc_RuntimeError, "Model is not initialised");
        return -1;
    }
    return 0;
}

#define SET_ITEM(d, k, v)                                                                               \
    do {                                                                                                \
        PyObject *v_ = (v);                                                                             \
        if (!v_ || PyDict_SetItemString(d, k, v_) < 0) {                                                \
            Py_XDECREF(v_);                                                                             \
            Py_DECREF(d);                                                                               \
            return NULL;                                                                                \
        }                                                                                               \
        Py_DECREF(v_);                                                                                  \
    } while (0)

static PyObject *Model_config(ModelObject *self, void *closure) {
    if (check_model(self)) return NULL;
    const pr_config *c = pr_model_config(self->m);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    SET_ITEM(d, "vocab_size", PyLong_FromLong(c->n_vocab));
    SET_ITEM(d, "hidden_size", PyLong_FromLong(c->n_embd));
    SET_ITEM(d, "num_hidden_layers", PyLong_FromLong(c->n_layer));
    SET_ITEM(d, "num_attention_heads", PyLong_FromLong(c->n_head));
    SET_ITEM(d, "num_key_value_heads", PyLong_FromLong(c->n_head_kv));
    SET_ITEM(d, "intermediate_size", PyLong_FromLong(c->n_ff));
    SET_ITEM(d, "max_position_embeddings", PyLong_FromLong(c->n_ctx_train));
    SET_ITEM(d, "rms_norm_eps", PyFloat_FromDouble(c->rms_eps));
    SET_ITEM(d, "rope_theta", PyFloat_FromDouble(c->rope_theta));
    SET_ITEM(d, "tie_word_embeddings", PyBool_FromLong(c->tied_embeddings));
    SET_ITEM(d, "eos_token_id", PyLong_FromLong(c->eos_id));
    SET_ITEM(d, "im_start_id", PyLong_FromLong(c->im_start_id));
    SET_ITEM(d, "im_end_id", PyLong_FromLong(c->im_end_id));
    SET_ITEM(d, "endoftext_id", PyLong_FromLong(c->endoftext_id));
    SET_ITEM(d, "has_vision", PyBool_FromLong(c->has_vision));
    if (c->has_vision) {
        SET_ITEM(d, "image_size", PyLong_FromLong(c->v_image_size));
        SET_ITEM(d, "patch_size", PyLong_FromLong(c->v_patch_size));
        SET_ITEM(d, "vision_hidden_size", PyLong_FromLong(c->v_embd));
        SET_ITEM(d, "vision_intermediate_size", PyLong_FromLong(c->v_ff));
        SET_ITEM(d, "vision_layers", PyLong_FromLong(c->v_layer));
        SET_ITEM(d, "vision_heads", PyLong_FromLong(c->v_head));
        SET_ITEM(d, "vision_layers_run", PyLong_FromLong(c->n_layer_run));
        SET_ITEM(d, "vision_act", PyUnicode_FromString(c->v_act == PR_ACT_QUICK_GELU ? "quick_gelu" : "gelu"));
        SET_ITEM(d, "vision_eps", PyFloat_FromDouble(c->v_eps));
        SET_ITEM(d, "image_mean", Py_BuildValue("(ddd)", c->image_mean[0], c->image_mean[1], c->image_mean[2]));
        SET_ITEM(d, "image_std", Py_BuildValue("(ddd)", c->image_std[0], c->image_std[1], c->image_std[2]));
        SET_ITEM(d, "mm_vision_select_layer", PyLong_FromLong(c->select_layer));
        SET_ITEM(d, "mm_vision_select_feature",
                 PyUnicode_FromString(c->select_feature == PR_FEAT_PATCH ? "patch" : "cls_patch"));
        SET_ITEM(d, "image_tokens", PyLong_FromLong(c->n_img_tokens));
        static const char *proj[] = {"mlp2x_gelu", "linear", "identity"};
        SET_ITEM(d, "mm_projector_type", PyUnicode_FromString(proj[c->projector_type]));
        SET_ITEM(d, "use_moe", PyBool_FromLong(c->use_moe));
        SET_ITEM(d, "use_moe_residual", PyBool_FromLong(c->use_moe_residual));
        SET_ITEM(d, "num_experts", PyLong_FromLong(c->n_expert));
        SET_ITEM(d, "moe_intermediate_size", PyLong_FromLong(c->moe_ff));
        SET_ITEM(d, "moe_weight", PyFloat_FromDouble(c->moe_weight));
        SET_ITEM(d, "moe_top_k", PyLong_FromLong(c->moe_top_k));
    }
    return d;
}

static PyObject *Model_get_path(ModelObject *self, void *closure) {
    if (check_model(self)) return NULL;
    Py_INCREF(self->path);
    return self->path;
}

static PyObject *Model_get_tokenizer(ModelObject *self, void *closure) {
    if (check_model(self)) return NULL;
    const struct pr_tokenizer *t = pr_model_tokenizer(self->m);
    if (!t) Py_RETURN_NONE;
    return pr_py_tokenizer_wrap(t, (PyObject *)self);
}

static PyObject *Model_get_threads(ModelObject *self, void *closure) {
    if (check_model(self)) return NULL;
    return PyLong_FromLong(pr_model_n_threads(self->m));
}

static PyObject *Model_get_pool_runs(ModelObject *self, void *closure) {
    if (check_model(self)) return NULL;
    return PyLong_FromUnsignedLong(pr_model_pool_runs(self->m));
}

static PyObject *Model_tensors(ModelObject *self, PyObject *noargs) {
    if (check_model(self)) return NULL;
    int n = pr_model_n_tensors(self->m);
    PyObject *list = PyList_New(n);
    if (!list) return NULL;
    for (int i = 0; i < n; i++) {
        const pr_tensor *t = pr_model_tensor_at(self->m, i);
        PyObject *shape = PyTuple_New(t->n_dims);
        if (!shape) {
            Py_DECREF(list);
            return NULL;
        }
        /* numpy order (slowest first), as the HF checkpoint had it */
        for (int d = 0; d < t->n_dims; d++)
            PyTuple_SET_ITEM(shape, d, PyLong_FromLongLong(t->ne[t->n_dims - 1 - d]));
        PyObject *item = Py_BuildValue("(ssNn)", t->name, pr_dtype_name(t->type), shape, (Py_ssize_t)t->nbytes);
        if (!item) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, i, item);
    }
    return list;
}

/* ---- read_tensors(names, repeat) -> (bytes, seconds, xor): the benchmarks' read-bandwidth bound over the
 * model's own weight memory. A decoded token reads each of its weights once; how fast this machine can read
 * exactly those bytes, where the loader put them, is the bound decode speed is held to (a probe over another
 * buffer can land in faster or slower memory). The model's thread count reads, each thread a 64-byte-aligned
 * share of every tensor, 8 independent 64-bit XOR chains (no arithmetic worth the name: memory is the limit).
 * `xor` folds every 8-byte word of every tensor (a short last word zero-padded), so a caller can check that
 * every byte was read. `seconds` is the fastest of `repeat` passes. */
typedef struct {
    const unsigned char **ptr;
    const size_t *len;
    int n;
    uint64_t x[64];
} read_job;

static uint64_t xor_words(const unsigned char *p, size_t n) {
    uint64_t a[8] = {0};
    size_t i = 0;
    for (; i + 64 <= n; i += 64)
        for (int k = 0; k < 8; k++) {
            uint64_t w;
            memcpy(&w, p + i + 8 * k, 8);
            a[k] ^= w;
        }
    for (; i < n; i += 8) {
        uint64_t w = 0;
        memcpy(&w, p + i, n - i < 8 ? n - i : 8);
        a[0] ^= w;
    }
    return a[0] ^ a[1] ^ a[2] ^ a[3] ^ a[4] ^ a[5] ^ a[6] ^ a[7];
}

static void read_task(void *arg, int ith, int nth) {
    read_job *j = arg;
    uint64_t x = 0;
    for (int t = 0; t < j->n; t++) {
        size_t n = j->len[t], lo = n / 64 * (size_t)ith / (size_t)nth * 64,
               hi = ith == nth - 1 ? n : n / 64 * (size_t)(ith + 1) / (size_t)nth * 64;
        x ^= xor_words(j->ptr[t] + lo, hi - lo);
    }
    j->x[ith] = x;
}

static PyObject *Model_read_tensors(ModelObject *self, PyObject *args) {
    PyObject *names;
    int repeat;
    if (check_model(self)) return NULL;
    if (!PyArg_ParseTuple(args, "Oi", &names, &repeat)) return NULL;
    if (repeat < 1) return PyErr_Format(PyExc_ValueError, "repeat must be positive, got %d", repeat);
    if (PyUnicode_Check(names) || PyBytes_Check(names))
        return PyErr_Format(PyExc_TypeError, "names must be a sequence of tensor names, not one %s",
                            Py_TYPE(names)->tp_name);
    PyObject *seq = PySequence_Fast(names, "names must be a sequence of tensor names");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int nt = pr_model_n_tensors(self->m);
    const unsigned char **ptr = PyMem_Calloc((size_t)n + 1, sizeof *ptr);
    size_t *len = PyMem_Calloc((size_t)n + 1, sizeof *len), total = 0;
    PyObject *res = NULL;
    pr_pool *pool = NULL;
    if (!ptr || !len) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *name = PyUnicode_AsUTF8(PySequence_Fast_GET_ITEM(seq, i));
        if (!name) goto done;
        int k = 0;
        while (k < nt && strcmp(pr_model_tensor_at(self->m, k)->name, name)) k++;
        if (k == nt) {
            PyErr_Format(PyExc_KeyError, "no tensor named '%s' in the model", name);
            goto done;
        }
        const pr_tensor *t = pr_model_tensor_at(self->m, k);
        ptr[i] = t->data;
        len[i] = t->nbytes;
        total += t->nbytes;
    }
    int threads = pr_model_n_threads(self->m) < 64 ? pr_model_n_threads(self->m) : 64;
    if (pr_pool_new(threads, &pool)) {
        PyErr_NoMemory();
        goto done;
    }
    read_job j = {ptr, len, (int)n, {0}};
    double best = 1e300;
    for (int r = 0; r < repeat; r++) {
        struct timespec t0, t1;
        Py_BEGIN_ALLOW_THREADS
        clock_gettime(CLOCK_MONOTONIC, &t0);
        pr_pool_run(pool, read_task, &j);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        Py_END_ALLOW_THREADS
        double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
        if (dt < best) best = dt;
        if (PyErr_CheckSignals() < 0) goto done; /* Ctrl-C between passes (one pass: one read of the bytes) */
    }
    uint64_t x = 0;
    for (int i = 0; i < threads; i++) x ^= j.x[i];
    res = Py_BuildValue("(ndK)", (Py_ssize_t)total, best, (unsigned long long)x);
done:
    if (pool) pr_pool_free(pool);
    PyMem_Free(ptr);
    PyMem_Free(len);
    Py_DECREF(seq);
    return res;
}

/* One metadata value as a Python object; arrays longer than max_array become ("array", n). */
static PyObject *kv_value(const gguf_kv *kv, Py_ssize_t max_array) {
    switch (kv->type) {
    case GGUF_STRING: return PyUnicode_DecodeUTF8(kv->v.s.ptr, (Py_ssize_t)kv->v.s.len, "replace");
    case GGUF_BOOL: return PyBool_FromLong((long)kv->v.u);
    case GGUF_F32: case GGUF_F64: return PyFloat_FromDouble(kv->v.f);
    case GGUF_I8: case GGUF_I16: case GGUF_I32: case GGUF_I64: return PyLong_FromLongLong(kv->v.i);
    case GGUF_ARRAY: {
        if ((Py_ssize_t)kv->arr_n > max_array) return Py_BuildValue("(sK)", "array", (unsigned long long)kv->arr_n);
        PyObject *l = PyList_New((Py_ssize_t)kv->arr_n);
        if (!l) return NULL;
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            PyObject *v;
            if (kv->arr_type == GGUF_STRING)
                v = PyUnicode_DecodeUTF8(kv->arr_strs[i].ptr, (Py_ssize_t)kv->arr_strs[i].len, "replace");
            else if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64)
                v = PyFloat_FromDouble(gguf_arr_float(kv, i));
            else
                v = PyLong_FromLongLong(gguf_arr_int(kv, i));
            if (!v) {
                Py_DECREF(l);
                return NULL;
            }
            PyList_SET_ITEM(l, (Py_ssize_t)i, v);
        }
        return l;
    }
    default: return PyLong_FromUnsignedLongLong(kv->v.u);
    }
}

static PyObject *Model_metadata(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"max_array", NULL};
    Py_ssize_t max_array = 64;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|n", kwlist, &max_array)) return NULL;
    if (check_model(self)) return NULL;
    const gguf_file *f = pr_model_gguf(self->m);
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const gguf_kv *kv = gguf_kv_at(f, i);
        PyObject *key = PyUnicode_DecodeUTF8(kv->key.ptr, (Py_ssize_t)kv->key.len, "replace");
        PyObject *val = key ? kv_value(kv, max_array) : NULL;
        if (!val || PyDict_SetItem(d, key, val) < 0) {
            Py_XDECREF(key);
            Py_XDECREF(val);
            Py_DECREF(d);
            return NULL;
        }
        Py_DECREF(key);
        Py_DECREF(val);
    }
    return d;
}

/* Contiguous array of the given type and ndim, or an exception naming `what`. */
static PyArrayObject *as_array(PyObject *o, int type, int ndim, const char *what) {
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(o, type, 0, 0, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    if (PyArray_NDIM(a) != ndim) {
        PyErr_Format(PyExc_ValueError, "%s must have %d dimension(s), got shape with %d", what, ndim,
                     PyArray_NDIM(a));
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static PyObject *Model_embed(ModelObject *self, PyObject *arg) {
    if (check_model(self)) return NULL;
    PyArrayObject *ids = as_array(arg, NPY_INT32, 1, "ids");
    if (!ids) return NULL;
    const pr_config *c = pr_model_config(self->m);
    npy_intp n = PyArray_DIM(ids, 0), dims[2] = {n, c->n_embd};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(ids);
        return NULL;
    }
    pr_error e = {0};
    int rc = pr_embed_tokens(self->m, PyArray_DATA(ids), (int)n, PyArray_DATA(out), &e);
    Py_DECREF(ids);
    if (rc) {
        Py_DECREF(out);
        return pr_py_raise(&e);
    }
    return (PyObject *)out;
}

static int require_vision(ModelObject *self) {
    if (check_model(self)) return -1;
    if (!pr_model_config(self->m)->has_vision) {
        PyErr_Format(PyExc_ValueError, "%U has no vision tower (it was converted from a text-only checkpoint)",
                     self->path);
        return -1;
    }
    return 0;
}

/* pixels (3, S, S) float32 checked against the model, or NULL with an exception */
static PyArrayObject *pixels_array(ModelObject *self, PyObject *arg) {
    const pr_config *c = pr_model_config(self->m);
    PyArrayObject *px = as_array(arg, NPY_FLOAT32, 3, "pixels");
    if (!px) return NULL;
    npy_intp *s = PyArray_DIMS(px);
    if (s[0] != 3 || s[1] != c->v_image_size || s[2] != c->v_image_size) {
        PyErr_Format(PyExc_ValueError, "pixels must have shape (3, %d, %d), got (%zd, %zd, %zd)", c->v_image_size,
                     c->v_image_size, (Py_ssize_t)s[0], (Py_ssize_t)s[1], (Py_ssize_t)s[2]);
        Py_DECREF(px);
        return NULL;
    }
    return px;
}

/* encode_image (project=1) or vision_features (project=0) */
static PyObject *run_vision(ModelObject *self, PyObject *arg, int project) {
    if (require_vision(self)) return NULL;
    const pr_config *c = pr_model_config(self->m);
    PyArrayObject *px = pixels_array(self, arg);
    if (!px) return NULL;
    npy_intp dims[2] = {c->n_img_tokens, project ? c->n_embd : c->v_embd};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) {
        Py_DECREF(px);
        return NULL;
    }
    pr_error e = {0};
    int rc;
    float *in = PyArray_DATA(px), *o = PyArray_DATA(out);
    if (project) RUN_LONG(rc = pr_encode_image(self->m, in, o, &e));
    else RUN_LONG(rc = pr_vision_features(self->m, in, o, &e));
    Py_DECREF(px);
    if (rc) {
        Py_DECREF(out);
        return raise_error(&e);
    }
    return (PyObject *)out;
}

static PyObject *Model_encode_image(ModelObject *self, PyObject *arg) { return run_vision(self, arg, 1); }
static PyObject *Model_vision_features(ModelObject *self, PyObject *arg) { return run_vision(self, arg, 0); }

static PyObject *Model_encode_features(ModelObject *self, PyObject *arg) {
    if (require_vision(self)) return NULL;
    PyArrayObject *px = pixels_array(self, arg);
    if (!px) return NULL;
    FeaturesObject *fo = PyObject_New(FeaturesObject, &FeaturesType);
    if (!fo) {
        Py_DECREF(px);
        return NULL;
    }
    fo->f = NULL;
    Py_INCREF(self);
    fo->model = self;
    pr_error e = {0};
    int rc;
    float *in = PyArray_DATA(px);
    RUN_LONG(rc = pr_image_encode(self->m, in, &fo->f, &e));
    Py_DECREF(px);
    if (rc) {
        Py_DECREF(fo);
        return raise_error(&e);
    }
    return (PyObject *)fo;
}

static PyObject *Model_project(ModelObject *self, PyObject *arg) {
    if (require_vision(self)) return NULL;
    const pr_config *c = pr_model_config(self->m);
    PyArrayObject *f = as_array(arg, NPY_FLOAT32, 2, "vision features");
    if (!f) return NULL;
    if (PyArray_DIM(f, 1) != c->v_embd || PyArray_DIM(f, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "vision features must have shape (n, %d), n >= 1", c->v_embd);
        Py_DECREF(f);
        return NULL;
    }
    npy_intp dims[2] = {PyArray_DIM(f, 0), c->n_embd};
    PyArrayObject *out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    pr_error e = {0};
    int rc = 0;
    if (out) {
        float *in = PyArray_DATA(f), *o = PyArray_DATA(out);
        int n = (int)dims[0];
        RUN_LONG(rc = pr_project(self->m, in, n, o, &e));
    }
    Py_DECREF(f);
    if (!out) return NULL;
    if (rc) {
        Py_DECREF(out);
        return raise_error(&e);
    }
    return (PyObject *)out;
}

/* features array n × d, checked against the model */
static PyArrayObject *features(ModelObject *self, PyObject *o, const char *what) {
    PyArrayObject *a = as_array(o, NPY_FLOAT32, 2, what);
    if (a && PyArray_DIM(a, 1) != pr_model_config(self->m)->n_embd) {
        PyErr_Format(PyExc_ValueError, "%s must have %d columns (the hidden size), got %zd", what,
                     pr_model_config(self->m)->n_embd, (Py_ssize_t)PyArray_DIM(a, 1));
        Py_DECREF(a);
        return NULL;
    }
    if (a && PyArray_DIM(a, 0) < 1) {
        PyErr_Format(PyExc_ValueError, "%s has no rows", what);
        Py_DECREF(a);
        return NULL;
    }
    return a;
}

static int require_moe(ModelObject *self) {
    if (require_vision(self)) return -1;
    if (!pr_model_config(self->m)->use_moe) {
        PyErr_Format(PyExc_ValueError, "%U does not use the MoE (use_moe is false)", self->path);
        return -1;
    }
    return 0;
}

static PyObject *Model_moe_routing(ModelObject *self, PyObject *args) {
    PyObject *xo, *to;
    if (!PyArg_ParseTuple(args, "OO", &xo, &to)) return NULL;
    if (require_moe(self)) return NULL;
    PyArrayObject *x = features(self, xo, "image features"), *t = x ? features(self, to, "text embeddings") : NULL;
    if (!t) {
        Py_XDECREF(x);
        return NULL;
    }
    npy_intp dims[1] = {pr_model_config(self->m)->n_expert};
    PyArrayObject *w = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_FLOAT32);
    pr_error e = {0};
    int rc = w ? pr_moe_routing(self->m, PyArray_DATA(x), PyArray_DATA(t), (int)PyArray_DIM(t, 0), PyArray_DATA(w), &e) : 0;
    Py_DECREF(x);
    Py_DECREF(t);
    if (!w) return NULL;
    if (rc) {
        Py_DECREF(w);
        return pr_py_raise(&e);
    }
    return (PyObject *)w;
}

static PyObject *Model_moe_experts(ModelObject *self, PyObject *arg) {
    if (require_moe(self)) return NULL;
    PyArrayObject *x = features(self, arg, "image features");
    if (!x) return NULL;
    const pr_config *c = pr_model_config(self->m);
    npy_intp dims[3] = {c->n_expert, PyArray_DIM(x, 0), c->n_embd};
    PyArrayObject *y = (PyArrayObject *)PyArray_SimpleNew(3, dims, NPY_FLOAT32);
    if (!y) {
        Py_DECREF(x);
        return NULL;
    }
    pr_error e = {0};
    int rc, n = (int)PyArray_DIM(x, 0);
    float *xi = PyArray_DATA(x), *yo = PyArray_DATA(y);
    RUN_LONG(rc = pr_moe_experts(self->m, xi, n, yo, &e));
    Py_DECREF(x);
    if (rc) {
        Py_DECREF(y);
        return raise_error(&e);
    }
    return (PyObject *)y;
}

static PyObject *Model_moe_combine(ModelObject *self, PyObject *args) {
    PyObject *xo, *yo, *wo;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &yo, &wo)) return NULL;
    if (require_vision(self)) return NULL;
    const pr_config *c = pr_model_config(self->m);
    PyArrayObject *x = features(self, xo, "image features"), *y = NULL, *w = NULL, *out = NULL;
    if (!x) return NULL;
    if (c->use_moe) {
        y = as_array(yo, NPY_FLOAT32, 3, "expert outputs");
        w = y ? as_array(wo, NPY_FLOAT32, 1, "routing weights") : NULL;
        if (!w) goto fail;
        if (PyArray_DIM(y, 0) != c->n_expert || PyArray_DIM(y, 1) != PyArray_DIM(x, 0) || PyArray_DIM(y, 2) != c->n_embd ||
            PyArray_DIM(w, 0) != c->n_expert) {
            PyErr_Format(PyExc_ValueError, "expert outputs must be (%d, %zd, %d) and routing weights (%d,)", c->n_expert,
                         (Py_ssize_t)PyArray_DIM(x, 0), c->n_embd, c->n_expert);
            goto fail;
        }
    }
    out = (PyArrayObject *)PyArray_SimpleNew(2, PyArray_DIMS(x), NPY_FLOAT32);
    if (!out) goto fail;
    pr_error e = {0};
    pr_moe_combine(self->m, PyArray_DATA(x), y ? PyArray_DATA(y) : NULL, w ? PyArray_DATA(w) : NULL,
                   (int)PyArray_DIM(x, 0), PyArray_DATA(out), &e);
    Py_DECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(w);
    return (PyObject *)out;
fail:
    Py_XDECREF(x);
    Py_XDECREF(y);
    Py_XDECREF(w);
    return NULL;
}

static PyObject *Model_new_context(ModelObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"n_ctx", "kv_type", NULL};
    int n_ctx;
    const char *kv = "f32";
    if (!PyArg_ParseTupleAndKeywords(args, kw, "i|s", kwlist, &n_ctx, &kv)) return NULL;
    if (check_model(self)) return NULL;
    if (strcmp(kv, "f32") && strcmp(kv, "f16"))
        return PyErr_Format(PyExc_ValueError, "kv_type must be 'f32' or 'f16', got '%s'", kv);
    pr_error e = {0};
    pr_context *c;
    if (pr_context_new_kv(self->m, n_ctx, kv[1] == '1' ? PR_F16 : PR_F32, &c, &e)) return pr_py_raise(&e);
    ContextObject *co = PyObject_New(ContextObject, &ContextType);
    if (!co) {
        pr_context_free(c);
        return NULL;
    }
    co->c = c;
    Py_INCREF(self);
    co->model = self;
    return (PyObject *)co;
}

static PyObject *Model_decode_batch(ModelObject *self, PyObject *args) {
    PyObject *seq_obj, *tok_obj;
    if (!PyArg_ParseTuple(args, "OO", &seq_obj, &tok_obj)) return NULL;
    if (check_model(self)) return NULL;
    PyObject *seq = PySequence_Fast(seq_obj, "contexts must be a sequence of Context");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyArrayObject *tok = NULL, *out = NULL;
    pr_context **ctxs = NULL;
    if (n < 1 || n > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "decode_batch needs at least one context");
        goto done;
    }
    tok = as_array(tok_obj, NPY_INT32, 1, "tokens");
    if (!tok) goto done;
    if (PyArray_DIM(tok, 0) != n) {
        PyErr_Format(PyExc_ValueError, "%zd contexts but %zd tokens", n, (Py_ssize_t)PyArray_DIM(tok, 0));
        goto done;
    }
    ctxs = PyMem_Malloc((size_t)n * sizeof *ctxs);
    if (!ctxs) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyObject_TypeCheck(o, &ContextType) || ((ContextObject *)o)->model != self) {
            PyErr_Format(PyExc_TypeError, "contexts[%zd] is not a Context of this model", i);
            goto done;
        }
        ctxs[i] = ((ContextObject *)o)->c;
    }
    npy_intp dims[2] = {n, pr_model_config(self->m)->n_vocab};
    out = (PyArrayObject *)PyArray_SimpleNew(2, dims, NPY_FLOAT32);
    if (!out) goto done;
    pr_error e = {0};
    int rc;
    const int32_t *tp = PyArray_DATA(tok);
    float *lp = PyArray_DATA(out);
    RUN_LONG(rc = pr_decode_batch(ctxs, tp, (int)n, lp, &e));
    if (rc) {
        Py_CLEAR(out);
        raise_error(&e);
    }
done:
    PyMem_Free(ctxs);
    Py_XDECREF(tok);
    Py_DECREF(seq);
    return (PyObject *)out;
}

static PyObject *Model_tokenize_prompt(ModelObject *self, PyObject *args) {
    const char *text;
    Py_ssize_t len;
    if (!PyArg_ParseTuple(args, "s#", &text, &len)) return NULL;
    if (check_model(self)) return NULL;
    if (memchr(text, 0, (size_t)len)) return PyErr_Format(PyExc_ValueError, "the prompt contains a NUL character");
    pr_error e = {0};
    int32_t *ids;
    int n, rc;
    Py_BEGIN_ALLOW_THREADS rc = pr_tokenize_prompt(self->m, text, &ids, &n, &e);
    Py_END_ALLOW_THREADS
    if (rc) return pr_py_raise(&e);
    npy_intp dims[1] = {n};
    PyArrayObject *a = (PyArrayObject *)PyArray_SimpleNew(1, dims, NPY_INT32);
    if (a && n) memcpy(PyArray_DATA(a), ids, (size_t)n * sizeof(int32_t));
    free(ids);
    return (PyObject *)a;
}

static PyMethodDef Model_methods[] = {
    {"tensors", (PyCFunction)Model_tensors, METH_NOARGS, "[(name, dtype, shape, nbytes)] of every tensor"},
    {"read_tensors", (PyCFunction)Model_read_tensors, METH_VARARGS,
     "read_tensors(names, repeat) -> (bytes, seconds, xor): the fastest of `repeat` reads of these tensors' "
     "memory on the model's threads (the benchmarks' bandwidth bound); xor folds every 8-byte word read"},
    {"metadata", (PyCFunction)(void (*)(void))Model_metadata, METH_VARARGS | METH_KEYWORDS,
     "metadata(max_array=64) -> dict of the file's GGUF metadata"},
    {"embed", (PyCFunction)Model_embed, METH_O, "embed(ids int32[n]) -> float32[n, hidden]"},
    {"encode_image", (PyCFunction)Model_encode_image, METH_O,
     "encode_image(pixels float32[3,S,S]) -> float32[image_tokens, hidden] (ViT + projector)"},
    {"encode_features", (PyCFunction)Model_encode_features, METH_O,
     "encode_features(pixels float32[3,S,S]) -> Features: vision tower, projector and every expert's output, "
     "held in C for Context.prefill"},
    {"vision_features", (PyCFunction)Model_vision_features, METH_O,
     "vision_features(pixels float32[3,S,S]) -> float32[image_tokens, vision_hidden] (selected hidden state)"},
    {"project", (PyCFunction)Model_project, METH_O,
     "project(features float32[n, vision_hidden]) -> float32[n, hidden] (the multimodal projector)"},
    {"moe_routing", (PyCFunction)Model_moe_routing, METH_VARARGS,
     "moe_routing(x float32[n, hidden], text float32[m, hidden]) -> float32[num_experts]"},
    {"moe_experts", (PyCFunction)Model_moe_experts, METH_O,
     "moe_experts(x float32[n, hidden]) -> float32[num_experts, n, hidden]"},
    {"moe_combine", (PyCFunction)Model_moe_combine, METH_VARARGS,
     "moe_combine(x, expert_outputs, weights) -> float32[n, hidden]"},
    {"new_context", (PyCFunction)(void (*)(void))Model_new_context, METH_VARARGS | METH_KEYWORDS,
     "new_context(n_ctx, kv_type='f32') -> Context (kv_type 'f16' halves the KV cache)"},
    {"decode_batch", (PyCFunction)Model_decode_batch, METH_VARARGS,
     "decode_batch(contexts, tokens int32[n]) -> float32[n, vocab]: each context advances by its token, all "
     "through one pass over the weights per 4 contexts; logits equal one-at-a-time decode's exactly"},
    {"tokenize_prompt", (PyCFunction)Model_tokenize_prompt, METH_VARARGS,
     "tokenize_prompt(text) -> int32[n]: split at '<image>', each piece tokenised with special tokens, "
     "IMAGE_TOKEN (-200) between pieces"},
    {NULL},
};

static PyGetSetDef Model_getset[] = {
    {"config", (getter)Model_config, NULL, "hyperparameters (dict)", NULL},
    {"path", (getter)Model_get_path, NULL, "the model file", NULL},
    {"threads", (getter)Model_get_threads, NULL, "worker threads", NULL},
    {"pool_runs", (getter)Model_get_pool_runs, NULL,
     "jobs the thread pool has run so far (each wakes every worker once; benchmarks count them per token)", NULL},
    {"tokenizer", (getter)Model_get_tokenizer, NULL, "the file's tokenizer (_core.Tokenizer) or None", NULL},
    {NULL},
};

/* ---- Context */

static void Context_dealloc(ContextObject *self) {
    pr_context_free(self->c);
    Py_XDECREF(self->model);
    PyObject_Free(self);
}

static PyObject *Context_decode(ContextObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"inputs", "all_logits", "logits", NULL};
    PyObject *in;
    int all = 0, want = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|pp", kwlist, &in, &all, &want)) return NULL;
    pr_model *m = self->model->m;
    const pr_config *c = pr_model_config(m);
    PyArrayObject *a = (PyArrayObject *)PyArray_FROMANY(in, NPY_NOTYPE, 1, 2, NPY_ARRAY_IN_ARRAY);
    if (!a) return NULL;
    int is_ids = PyArray_NDIM(a) == 1;
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROMANY((PyObject *)a, is_ids ? NPY_INT32 : NPY_FLOAT32, 1, 2,
                                                          NPY_ARRAY_IN_ARRAY | NPY_ARRAY_FORCECAST);
    Py_DECREF(a);
    if (!arr) return NULL;
    if (!is_ids && PyArray_DIM(arr, 1) != c->n_embd) {
        PyErr_Format(PyExc_ValueError, "input embeddings must have %d columns, got %zd", c->n_embd,
                     (Py_ssize_t)PyArray_DIM(arr, 1));
        Py_DECREF(arr);
        return NULL;
    }
    int n = (int)PyArray_DIM(arr, 0);
    if (n < 1) {
        Py_DECREF(arr);
        PyErr_SetString(PyExc_ValueError, "nothing to decode: the input is empty");
        return NULL;
    }
    PyArrayObject *out = NULL;
    if (want) {
        npy_intp d2[2] = {n, c->n_vocab}, d1[1] = {c->n_vocab};
        out = (PyArrayObject *)(all ? PyArray_SimpleNew(2, d2, NPY_FLOAT32) : PyArray_SimpleNew(1, d1, NPY_FLOAT32));
        if (!out) {
            Py_DECREF(arr);
            return NULL;
        }
    }
    pr_error e = {0};
    int rc;
    void *data = PyArray_DATA(arr);
    float *lg = out ? PyArray_DATA(out) : NULL;
    if (is_ids) RUN_LONG(rc = pr_decode_tokens(self->c, data, n, lg, all, &e));
    else RUN_LONG(rc = pr_decode_embd(self->c, data, n, lg, all, &e));
    Py_DECREF(arr);
    if (rc) {
        Py_XDECREF(out);
        return raise_error(&e);
    }
    if (!out) Py_RETURN_NONE;
    return (PyObject *)out;
}

static PyObject *Context_prefill(ContextObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"ids", "features", "all_logits", "cached", NULL};
    PyObject *in, *fobj = Py_None;
    int all = 0, cached = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O|Op$i", kwlist, &in, &fobj, &all, &cached)) return NULL;
    pr_model *m = self->model->m;
    const pr_config *c = pr_model_config(m);
    const pr_image_features *img = NULL;
    if (fobj != Py_None) {
        if (!PyObject_TypeCheck(fobj, &FeaturesType))
            return PyErr_Format(PyExc_TypeError, "features must be a Features (Model.encode_features) or None, "
                                "got %s", Py_TYPE(fobj)->tp_name);
        if (((FeaturesObject *)fobj)->model != self->model)
            return PyErr_Format(PyExc_ValueError, "the features were computed by another model");
        img = ((FeaturesObject *)fobj)->f;
    }
    PyArrayObject *ids = as_array(in, NPY_INT32, 1, "ids");
    if (!ids) return NULL;
    int n = (int)PyArray_DIM(ids, 0);
    if (n < 1) {
        Py_DECREF(ids);
        return PyErr_Format(PyExc_ValueError, "nothing to prefill: ids is empty");
    }
    if (cached < 0 || cached >= n) {
        Py_DECREF(ids);
        return PyErr_Format(PyExc_ValueError, "cached = %d must leave at least one of the %d ids", cached, n);
    }
    long rows = (long)n - cached - (img ? 1 : 0) + (img ? pr_image_features_n_tokens(img) : 0);
    npy_intp d2[2] = {rows, c->n_vocab}, d1[1] = {c->n_vocab}, de[1] = {c->n_expert};
    PyArrayObject *lg = (PyArrayObject *)(all ? PyArray_SimpleNew(2, d2, NPY_FLOAT32) : PyArray_SimpleNew(1, d1, NPY_FLOAT32));
    int routed = img && c->use_moe;
    PyArrayObject *w = routed ? (PyArrayObject *)PyArray_SimpleNew(1, de, NPY_FLOAT32) : NULL;
    if (!lg || (routed && !w)) {
        Py_DECREF(ids);
        Py_XDECREF(lg);
        Py_XDECREF(w);
        return NULL;
    }
    pr_error e = {0};
    int rc;
    const int32_t *ip = PyArray_DATA(ids);
    float *lp = PyArray_DATA(lg), *wp = w ? PyArray_DATA(w) : NULL;
    RUN_LONG(rc = pr_prefill(self->c, ip, n, cached, img, wp, lp, all, &e));
    Py_DECREF(ids);
    if (rc) {
        Py_DECREF(lg);
        Py_XDECREF(w);
        return raise_error(&e);
    }
    if (!w) {
        Py_INCREF(Py_None);
        w = (PyArrayObject *)Py_None;
    }
    return Py_BuildValue("(NN)", lg, w);
}

static PyObject *Context_truncate(ContextObject *self, PyObject *args) {
    int n;
    if (!PyArg_ParseTuple(args, "i", &n)) return NULL;
    pr_error e = {0};
    if (pr_context_truncate(self->c, n, &e)) return pr_py_raise(&e);
    Py_RETURN_NONE;
}

static PyObject *Context_n_past(ContextObject *self, void *closure) { return PyLong_FromLong(pr_context_n_past(self->c)); }
static PyObject *Context_n_ctx(ContextObject *self, void *closure) { return PyLong_FromLong(pr_context_n_ctx(self->c)); }

static PyMethodDef Context_methods[] = {
    {"decode", (PyCFunction)(void (*)(void))Context_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(inputs, all_logits=False, logits=True): run token ids (int[n]) or embeddings (float[n, hidden]) "
     "through the decoder, appending to the KV cache; returns logits of the last (or every) position"},
    {"prefill", (PyCFunction)(void (*)(void))Context_prefill, METH_VARARGS | METH_KEYWORDS,
     "prefill(ids, features=None, all_logits=False) -> (logits, routing): run prompt ids (int[n], IMAGE_TOKEN "
     "once when features is given) into the cache: text embedded, MoE routed on it, experts combined, image "
     "rows spliced in, decoded. logits of the last (or every new) position; routing float32[num_experts], or "
     "None without an image or MoE. cached=k: ids[:k] are already in the context (a reused prefix before the "
     "image): routed on, not run again"},
    {"truncate", (PyCFunction)Context_truncate, METH_VARARGS, "truncate(n_past): forget positions >= n_past"},
    {NULL},
};

static PyGetSetDef Context_getset[] = {
    {"n_past", (getter)Context_n_past, NULL, "positions in the KV cache", NULL},
    {"n_ctx", (getter)Context_n_ctx, NULL, "context size", NULL},
    {NULL},
};

static PyTypeObject ModelType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parrot._core.Model",
    .tp_basicsize = sizeof(ModelObject),
    .tp_dealloc = (destructor)Model_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Model(path, threads=0): a parrot GGUF model file, mapped and validated",
    .tp_methods = Model_methods,
    .tp_getset = Model_getset,
    .tp_init = (initproc)Model_init,
    .tp_new = PyType_GenericNew,
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parrot._core.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "One sequence's KV cache (made by Model.new_context)",
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
};

/* ---- Features */

static void Features_dealloc(FeaturesObject *self) {
    pr_image_features_free(self->f);
    Py_XDECREF(self->model);
    PyObject_Free(self);
}

/* a copy of n × n_embd rows of the features (or of the experts' outputs, 3-D) as a numpy array */
static PyObject *Features_copy(FeaturesObject *self, int experts) {
    const pr_config *c = pr_model_config(self->model->m);
    const float *src = experts ? pr_image_features_experts(self->f) : pr_image_features_projected(self->f);
    if (!src) Py_RETURN_NONE;
    npy_intp d3[3] = {c->n_expert, pr_image_features_n_tokens(self->f), c->n_embd};
    PyArrayObject *a = (PyArrayObject *)PyArray_SimpleNew(experts ? 3 : 2, experts ? d3 : d3 + 1, NPY_FLOAT32);
    if (a) memcpy(PyArray_DATA(a), src, (size_t)PyArray_NBYTES(a));
    return (PyObject *)a;
}

static PyObject *Features_projected(FeaturesObject *self, void *closure) { return Features_copy(self, 0); }
static PyObject *Features_experts(FeaturesObject *self, void *closure) { return Features_copy(self, 1); }
static PyObject *Features_n_tokens(FeaturesObject *self, void *closure) {
    return PyLong_FromLong(pr_image_features_n_tokens(self->f));
}
static PyObject *Features_nbytes(FeaturesObject *self, void *closure) {
    return PyLong_FromSize_t(pr_image_features_nbytes(self->f));
}
static PyObject *Features_seconds(FeaturesObject *self, void *closure) {
    double v, x;
    pr_image_features_seconds(self->f, &v, &x);
    return Py_BuildValue("(dd)", v, x);
}

static PyGetSetDef Features_getset[] = {
    {"n_tokens", (getter)Features_n_tokens, NULL, "image rows spliced into a prompt", NULL},
    {"nbytes", (getter)Features_nbytes, NULL, "memory held (bytes)", NULL},
    {"seconds", (getter)Features_seconds, NULL, "(vision tower + projector, experts) seconds spent encoding", NULL},
    {"projected", (getter)Features_projected, NULL, "a copy of the projected features, float32[n_tokens, hidden]",
     NULL},
    {"experts", (getter)Features_experts, NULL,
     "a copy of every expert's output, float32[num_experts, n_tokens, hidden], or None without the MoE", NULL},
    {NULL},
};

static PyTypeObject FeaturesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "parrot._core.Features",
    .tp_basicsize = sizeof(FeaturesObject),
    .tp_dealloc = (destructor)Features_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "An image's features, held in C (made by Model.encode_features, used by Context.prefill)",
    .tp_getset = Features_getset,
};

int pr_py_model_init(PyObject *m) {
    if (PyType_Ready(&ModelType) < 0 || PyType_Ready(&ContextType) < 0 || PyType_Ready(&FeaturesType) < 0)
        return -1;
    Py_INCREF(&ModelType);
    if (PyModule_AddObject(m, "Model", (PyObject *)&ModelType) < 0) return -1;
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(m, "Context", (PyObject *)&ContextType) < 0) return -1;
    Py_INCREF(&FeaturesType);
    if (PyModule_AddObject(m, "Features", (PyObject *)&FeaturesType) < 0) return -1;
    return 0;
}
