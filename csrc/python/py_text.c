/* Python bindings of the text room: _core.Tokenizer (encode / decode / token ids) and _core.DetokStream
 * (incremental decoding). A Tokenizer either owns its pr_tokenizer (built from a GGUF path) or borrows one
 * from an owner object that keeps it alive (pr_py_tokenizer_wrap, used by the Model binding). */
#include "python/py_text.h"

#include "io/gguf.h"
#include "text/tokenizer.h"

/* Inputs at least this long are encoded / decoded with the GIL released. */
#define RELEASE_GIL_BYTES 4096

typedef struct {
    PyObject_HEAD
    const pr_tokenizer *tok;
    pr_tokenizer *owned; /* freed with the object; NULL when borrowed */
    PyObject *owner;     /* keeps a borrowed tokenizer alive */
} TokenizerObject;

typedef struct {
    PyObject_HEAD
    TokenizerObject *tokenizer;
    pr_detok_stream *stream;
} DetokStreamObject;

static PyTypeObject TokenizerType;
static PyTypeObject DetokStreamType;

/* ---------------------------------------------------------------- Tokenizer */
static int Tokenizer_init(TokenizerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"path", NULL};
    PyObject *path_bytes = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O&:Tokenizer", kwlist, PyUnicode_FSConverter, &path_bytes))
        return -1;
    if (self->tok) {
        Py_DECREF(path_bytes);
        PyErr_SetString(PyExc_TypeError, "Tokenizer is already initialised");
        return -1;
    }
    const char *path = PyBytes_AS_STRING(path_bytes);
    pr_error err = {0};
    gguf_file *f = NULL;
    pr_tokenizer *t = NULL;
    int rc;
    /* The tokenizer copies what it needs, so the file is closed as soon as it is built. */
    Py_BEGIN_ALLOW_THREADS
    rc = gguf_open(path, &f, &err);
    if (rc == 0) {
        rc = pr_tokenizer_from_gguf(f, &t, &err);
        gguf_close(f);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(path_bytes);
    if (rc) {
        pr_py_raise(&err);
        return -1;
    }
    self->owned = t;
    self->tok = t;
    return 0;
}

static void Tokenizer_dealloc(TokenizerObject *self) {
    pr_tokenizer_free(self->owned);
    Py_XDECREF(self->owner);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int check_ready(TokenizerObject *self) {
    if (!self->tok) {
        PyErr_SetString(PyExc_ValueError, "Tokenizer is not initialised");
        return -1;
    }
    return 0;
}

static PyObject *ids_to_list(const int32_t *ids, size_t n) {
    PyObject *list = PyList_New((Py_ssize_t)n);
    if (!list) return NULL;
    for (size_t i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(ids[i]);
        if (!v) {
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, v);
    }
    return list;
}

static PyObject *Tokenizer_encode(TokenizerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"text", "special", NULL};
    PyObject *text;
    int special = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:encode", kwlist, &text, &special)) return NULL;
    if (check_ready(self)) return NULL;
    const char *s;
    Py_ssize_t n;
    Py_buffer view = {0};
    int have_view = 0;
    if (PyUnicode_Check(text)) {
        /* a str with lone surrogates has no UTF-8 form: UnicodeEncodeError, as with HF tokenizers */
        s = PyUnicode_AsUTF8AndSize(text, &n);
        if (!s) return NULL;
    } else if (PyObject_CheckBuffer(text)) {
        if (PyObject_GetBuffer(text, &view, PyBUF_SIMPLE) < 0) return NULL;
        have_view = 1;
        s = view.buf;
        n = view.len;
    } else {
        return PyErr_Format(PyExc_TypeError, "encode() takes str or UTF-8 bytes, not %.100s",
                            Py_TYPE(text)->tp_name);
    }
    int32_t *ids = NULL;
    size_t nid = 0;
    pr_error err = {0};
    int rc;
    if (n >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        rc = pr_tokenize(self->tok, s, (size_t)n, special, &ids, &nid, &err);
        Py_END_ALLOW_THREADS
    } else {
        rc = pr_tokenize(self->tok, s, (size_t)n, special, &ids, &nid, &err);
    }
    if (have_view) PyBuffer_Release(&view);
    if (rc) return pr_py_raise(&err);
    PyObject *list = ids_to_list(ids, nid);
    free(ids);
    return list;
}

/* ids (any sequence or iterable of ints) -> malloc'd int32 array; NULL with an exception on failure */
static int32_t *ids_from_python(PyObject *obj, size_t *n) {
    PyObject *seq = PySequence_Fast(obj, "ids must be a sequence of ints");
    if (!seq) return NULL;
    Py_ssize_t len = PySequence_Fast_GET_SIZE(seq);
    int32_t *ids = malloc((len ? (size_t)len : 1) * sizeof *ids);
    if (!ids) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return NULL;
    }
    PyObject **items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < len; i++) {
        int overflow = 0;
        PyObject *idx = PyNumber_Index(items[i]);
        long long v = idx ? PyLong_AsLongLongAndOverflow(idx, &overflow) : -1;
        Py_XDECREF(idx);
        if (!idx || (v == -1 && PyErr_Occurred())) {
            if (PyErr_ExceptionMatches(PyExc_TypeError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_TypeError, "ids[%zd] is not an int (%.100s)", i, Py_TYPE(items[i])->tp_name);
            }
            free(ids);
            Py_DECREF(seq);
            return NULL;
        }
        if (overflow || v < INT32_MIN || v > INT32_MAX) {
            PyErr_Format(PyExc_ValueError, "ids[%zd] is not a token id (out of range)", i);
            free(ids);
            Py_DECREF(seq);
            return NULL;
        }
        ids[i] = (int32_t)v;
    }
    Py_DECREF(seq);
    *n = (size_t)len;
    return ids;
}

static PyObject *Tokenizer_decode(TokenizerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"ids", "skip_special", NULL};
    PyObject *obj;
    int skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|p:decode", kwlist, &obj, &skip)) return NULL;
    if (check_ready(self)) return NULL;
    size_t n;
    int32_t *ids = ids_from_python(obj, &n);
    if (!ids) return NULL;
    char *out = NULL;
    size_t len = 0;
    pr_error err = {0};
    int rc;
    if (n >= RELEASE_GIL_BYTES) {
        Py_BEGIN_ALLOW_THREADS
        rc = pr_detokenize(self->tok, ids, n, skip, &out, &len, &err);
        Py_END_ALLOW_THREADS
    } else {
        rc = pr_detokenize(self->tok, ids, n, skip, &out, &len, &err);
    }
    free(ids);
    if (rc) return pr_py_raise(&err);
    PyObject *s = PyUnicode_DecodeUTF8(out, (Py_ssize_t)len, "strict");
    free(out);
    return s;
}

static PyObject *Tokenizer_token_id(TokenizerObject *self, PyObject *arg) {
    if (check_ready(self)) return NULL;
    if (!PyUnicode_Check(arg)) return PyErr_Format(PyExc_TypeError, "token_id() takes a str");
    Py_ssize_t n;
    const char *s = PyUnicode_AsUTF8AndSize(arg, &n);
    if (!s) return NULL;
    if (strlen(s) != (size_t)n) Py_RETURN_NONE; /* tokens never contain NUL */
    int32_t id = pr_tokenizer_token_id(self->tok, s);
    if (id < 0) Py_RETURN_NONE;
    return PyLong_FromLong(id);
}

static int id_arg(TokenizerObject *self, PyObject *arg, int32_t *id) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < 0 || v >= pr_tokenizer_n_tokens(self->tok)) {
        PyErr_Format(PyExc_ValueError, "%ld is not a token id (0..%d)", v, pr_tokenizer_n_tokens(self->tok) - 1);
        return -1;
    }
    *id = (int32_t)v;
    return 0;
}

static PyObject *Tokenizer_token_text(TokenizerObject *self, PyObject *arg) {
    int32_t id;
    if (check_ready(self) || id_arg(self, arg, &id)) return NULL;
    return PyUnicode_FromString(pr_tokenizer_token_text(self->tok, id));
}

static PyObject *Tokenizer_token_type(TokenizerObject *self, PyObject *arg) {
    int32_t id;
    if (check_ready(self) || id_arg(self, arg, &id)) return NULL;
    return PyLong_FromLong(pr_tokenizer_token_type(self->tok, id));
}

static PyObject *Tokenizer_token_bytes(TokenizerObject *self, PyObject *arg) {
    int32_t id;
    if (check_ready(self) || id_arg(self, arg, &id)) return NULL;
    size_t len;
    const uint8_t *b = pr_tokenizer_token_bytes(self->tok, id, &len);
    return PyBytes_FromStringAndSize((const char *)b, (Py_ssize_t)len);
}

static PyObject *Tokenizer_stream(TokenizerObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"skip_special", NULL};
    int skip = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|p:stream", kwlist, &skip)) return NULL;
    if (check_ready(self)) return NULL;
    DetokStreamObject *s = PyObject_New(DetokStreamObject, &DetokStreamType);
    if (!s) return NULL;
    s->stream = NULL;
    Py_INCREF(self);
    s->tokenizer = self;
    pr_error err = {0};
    if (pr_detok_stream_new(self->tok, skip, &s->stream, &err)) {
        Py_DECREF(s);
        return pr_py_raise(&err);
    }
    return (PyObject *)s;
}

static Py_ssize_t Tokenizer_len(TokenizerObject *self) {
    if (check_ready(self)) return -1;
    return pr_tokenizer_n_tokens(self->tok);
}

static PyObject *id_or_none(int32_t id) {
    if (id < 0) Py_RETURN_NONE;
    return PyLong_FromLong(id);
}

static PyObject *Tokenizer_get_n_tokens(TokenizerObject *self, void *c) {
    if (check_ready(self)) return NULL;
    return PyLong_FromLong(pr_tokenizer_n_tokens(self->tok));
}

static PyObject *Tokenizer_get_eos_id(TokenizerObject *self, void *c) {
    if (check_ready(self)) return NULL;
    return id_or_none(pr_tokenizer_eos_id(self->tok));
}

static PyObject *Tokenizer_get_pad_id(TokenizerObject *self, void *c) {
    if (check_ready(self)) return NULL;
    return id_or_none(pr_tokenizer_pad_id(self->tok));
}

static PyMethodDef Tokenizer_methods[] = {
    {"encode", (PyCFunction)(void (*)(void))Tokenizer_encode, METH_VARARGS | METH_KEYWORDS,
     "encode(text, special=True) -> list[int]: token ids of text (str, or UTF-8 bytes)."},
    {"decode", (PyCFunction)(void (*)(void))Tokenizer_decode, METH_VARARGS | METH_KEYWORDS,
     "decode(ids, skip_special=False) -> str"},
    {"token_id", (PyCFunction)Tokenizer_token_id, METH_O, "token_id(token) -> int | None"},
    {"token_text", (PyCFunction)Tokenizer_token_text, METH_O, "token_text(id) -> str: the stored token string"},
    {"token_type", (PyCFunction)Tokenizer_token_type, METH_O, "token_type(id) -> int (GGUF token type)"},
    {"token_bytes", (PyCFunction)Tokenizer_token_bytes, METH_O, "token_bytes(id) -> bytes it decodes to"},
    {"stream", (PyCFunction)(void (*)(void))Tokenizer_stream, METH_VARARGS | METH_KEYWORDS,
     "stream(skip_special=False) -> DetokStream"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Tokenizer_getset[] = {
    {"n_tokens", (getter)Tokenizer_get_n_tokens, NULL, "number of token ids", NULL},
    {"eos_id", (getter)Tokenizer_get_eos_id, NULL, "end-of-sequence id or None", NULL},
    {"pad_id", (getter)Tokenizer_get_pad_id, NULL, "padding id or None", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods Tokenizer_as_sequence = {.sq_length = (lenfunc)Tokenizer_len};

static PyTypeObject TokenizerType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "parrot._core.Tokenizer",
    .tp_doc = "Tokenizer(path): the Qwen2 byte-level BPE tokenizer stored in a GGUF file.",
    .tp_basicsize = sizeof(TokenizerObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Tokenizer_init,
    .tp_dealloc = (destructor)Tokenizer_dealloc,
    .tp_methods = Tokenizer_methods,
    .tp_getset = Tokenizer_getset,
    .tp_as_sequence = &Tokenizer_as_sequence,
};

PyObject *pr_py_tokenizer_wrap(const struct pr_tokenizer *t, PyObject *owner) {
    if (!t) {
        PyErr_SetString(pr_py_TokenizerError, "the model file has no tokenizer");
        return NULL;
    }
    TokenizerObject *o = (TokenizerObject *)PyType_GenericNew(&TokenizerType, NULL, NULL);
    if (!o) return NULL;
    o->tok = t;
    o->owned = NULL;
    Py_XINCREF(owner);
    o->owner = owner;
    return (PyObject *)o;
}

/* ---------------------------------------------------------------- DetokStream */
static void DetokStream_dealloc(DetokStreamObject *self) {
    pr_detok_stream_free(self->stream);
    Py_XDECREF(self->tokenizer);
    PyObject_Free(self);
}

static PyObject *text_result(int rc, const char *text, size_t len, pr_error *err) {
    if (rc) return pr_py_raise(err);
    return PyUnicode_DecodeUTF8(text, (Py_ssize_t)len, "strict");
}

static PyObject *DetokStream_push(DetokStreamObject *self, PyObject *arg) {
    long v = PyLong_AsLong(arg);
    if (v == -1 && PyErr_Occurred()) return NULL;
    if (v < INT32_MIN || v > INT32_MAX) return PyErr_Format(PyExc_ValueError, "%ld is not a token id", v);
    const char *text;
    size_t len;
    pr_error err = {0};
    int rc = pr_detok_stream_push(self->stream, (int32_t)v, &text, &len, &err);
    return text_result(rc, text, len, &err);
}

static PyObject *DetokStream_flush(DetokStreamObject *self, PyObject *unused) {
    const char *text;
    size_t len;
    pr_error err = {0};
    int rc = pr_detok_stream_flush(self->stream, &text, &len, &err);
    return text_result(rc, text, len, &err);
}

static PyMethodDef DetokStream_methods[] = {
    {"push", (PyCFunction)DetokStream_push, METH_O,
     "push(id) -> str: the text completed by this token (never a partial UTF-8 sequence)."},
    {"flush", (PyCFunction)DetokStream_flush, METH_NOARGS,
     "flush() -> str: end of stream; incomplete held-back bytes become U+FFFD."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject DetokStreamType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "parrot._core.DetokStream",
    .tp_doc = "Incremental decoder made by Tokenizer.stream().",
    .tp_basicsize = sizeof(DetokStreamObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_dealloc = (destructor)DetokStream_dealloc,
    .tp_methods = DetokStream_methods,
};

int pr_py_text_init(PyObject *m) {
    if (PyType_Ready(&TokenizerType) < 0 || PyType_Ready(&DetokStreamType) < 0) return -1;
    Py_INCREF(&TokenizerType);
    if (PyModule_AddObject(m, "Tokenizer", (PyObject *)&TokenizerType) < 0) {
        Py_DECREF(&TokenizerType);
        return -1;
    }
    Py_INCREF(&DetokStreamType);
    if (PyModule_AddObject(m, "DetokStream", (PyObject *)&DetokStreamType) < 0) {
        Py_DECREF(&DetokStreamType);
        return -1;
    }
    return 0;
}
