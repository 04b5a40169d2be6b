/* Python bindings of the image room: decoding and CLIP preprocessing on NumPy arrays. The typed, documented
 * API is parrot/image.py; these functions check their arguments but expect that module's normalisation. */
#include <errno.h>

#include "python/pynp.h"

#include "image/image.h"
#include "util/mem.h"

static void free_capsule(PyObject *cap) { pr_free(PyCapsule_GetPointer(cap, "parrot.image.pixels")); }

/* A NumPy array of the given shape that owns `data` (a pr_alloc buffer); frees data on failure. */
static PyObject *owning_array(void *data, int nd, npy_intp *shape, int typenum) {
    PyObject *cap = PyCapsule_New(data, "parrot.image.pixels", free_capsule);
    if (!cap) {
        pr_free(data);
        return NULL;
    }
    PyObject *arr = PyArray_SimpleNewFromData(nd, shape, typenum, data);
    if (!arr) {
        Py_DECREF(cap);
        return NULL;
    }
    if (PyArray_SetBaseObject((PyArrayObject *)arr, cap) < 0) { /* steals cap even on failure */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static int parse_max_pixels(PyObject *obj, uint64_t *out) {
    if (obj == Py_None) {
        *out = UINT64_MAX;
        return 0;
    }
    unsigned long long v = PyLong_AsUnsignedLongLong(obj);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "max_pixels must be a non-negative integer or None");
        return -1;
    }
    if (v == 0) { /* 0 means "the default" to the C API; from Python it is a mistake */
        PyErr_SetString(PyExc_ValueError, "max_pixels must be positive (or None for no limit)");
        return -1;
    }
    *out = v;
    return 0;
}

/* decode_image(src, max_pixels, name=None, max_bytes=None, orientation=False) -> H×W×3 uint8, or
 * (pixels, exif_orientation) with orientation=True. src: str path, or a bytes-like object. */
static PyObject *py_decode_image(PyObject *self, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"src", "max_pixels", "name", "max_bytes", "orientation", NULL};
    PyObject *src, *maxobj, *nameobj = Py_None, *maxbytesobj = Py_None;
    int want_orientation = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO|OOp", kwlist, &src, &maxobj, &nameobj, &maxbytesobj,
                                     &want_orientation))
        return NULL;
    uint64_t max_pixels, max_bytes;
    if (parse_max_pixels(maxobj, &max_pixels) < 0) return NULL;
    if (maxbytesobj == Py_None) {
        max_bytes = PR_IMAGE_DEFAULT_MAX_BYTES;
    } else {
        max_bytes = PyLong_AsUnsignedLongLong(maxbytesobj);
        if ((max_bytes == (uint64_t)-1 && PyErr_Occurred()) || max_bytes == 0) {
            PyErr_Clear();
            return PyErr_Format(PyExc_ValueError, "max_bytes must be a positive integer");
        }
    }
    pr_image im = {0};
    pr_error err = {0};
    int rc;
    if (PyUnicode_Check(src)) {
        PyObject *enc = NULL;
        if (!PyUnicode_FSConverter(src, &enc)) return NULL;
        const char *path = PyBytes_AS_STRING(enc);
        int saved_errno = 0;
        Py_BEGIN_ALLOW_THREADS
        rc = pr_image_decode_file(path, max_pixels, max_bytes, &im, &err);
        saved_errno = errno;
        Py_END_ALLOW_THREADS
        if (rc == PR_ERR_IO) {
            errno = saved_errno;
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, src);
            Py_DECREF(enc);
            return NULL;
        }
        Py_DECREF(enc);
    } else {
        Py_buffer buf;
        if (PyObject_GetBuffer(src, &buf, PyBUF_SIMPLE) < 0) {
            PyErr_Clear();
            return PyErr_Format(PyExc_TypeError, "decode_image: expected a path or bytes, got %s",
                                Py_TYPE(src)->tp_name);
        }
        PyObject *nb = NULL;
        const char *name = NULL;
        if (nameobj != Py_None) {
            if (!PyUnicode_FSConverter(nameobj, &nb)) {
                PyBuffer_Release(&buf);
                return NULL;
            }
            name = PyBytes_AS_STRING(nb);
        }
        Py_BEGIN_ALLOW_THREADS
        rc = pr_image_decode(buf.buf, (size_t)buf.len, name, max_pixels, &im, &err);
        Py_END_ALLOW_THREADS
        PyBuffer_Release(&buf);
        Py_XDECREF(nb);
    }
    if (rc) return pr_py_raise(&err);
    npy_intp shape[3] = {im.h, im.w, 3};
    PyObject *arr = owning_array(im.rgb, 3, shape, NPY_UINT8);
    if (!arr || !want_orientation) return arr;
    return Py_BuildValue("(Ni)", arr, im.orientation);
}

/* A C-contiguous H×W×3 uint8 view of obj (new reference), or NULL with TypeError/ValueError. */
static PyArrayObject *rgb_array(PyObject *obj, const char *who) {
    if (!PyArray_Check(obj) || PyArray_TYPE((PyArrayObject *)obj) != NPY_UINT8) {
        PyErr_Format(PyExc_TypeError, "%s: expected a uint8 numpy array, got %s", who, Py_TYPE(obj)->tp_name);
        return NULL;
    }
    PyArrayObject *a = (PyArrayObject *)obj;
    if (PyArray_NDIM(a) != 3 || PyArray_DIM(a, 2) != 3 || PyArray_DIM(a, 0) < 1 || PyArray_DIM(a, 1) < 1 ||
        PyArray_DIM(a, 0) > INT32_MAX || PyArray_DIM(a, 1) > INT32_MAX) {
        PyErr_Format(pr_py_ImageError, "%s: expected a non-empty H×W×3 RGB array", who);
        return NULL;
    }
    return (PyArrayObject *)PyArray_FROMANY(obj, NPY_UINT8, 3, 3, NPY_ARRAY_C_CONTIGUOUS | NPY_ARRAY_ALIGNED);
}

static int parse_triple(PyObject *seq, float out[3], const char *what) {
    PyObject *fast = PySequence_Fast(seq, "expected a sequence of 3 floats");
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != 3) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s must have 3 values (one per RGB channel)", what);
        return -1;
    }
    for (int i = 0; i < 3; i++) {
        double v = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(fast, i));
        if (v == -1.0 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
        out[i] = (float)v;
    }
    Py_DECREF(fast);
    return 0;
}

/* resize_bicubic(rgb, width, height) -> height×width×3 uint8, Pillow's BICUBIC (reducing_gap=None). */
static PyObject *py_resize_bicubic(PyObject *self, PyObject *args) {
    PyObject *obj;
    int ow, oh;
    if (!PyArg_ParseTuple(args, "Oii", &obj, &ow, &oh)) return NULL;
    if (ow <= 0 || oh <= 0) return PyErr_Format(PyExc_ValueError, "resize_bicubic: bad size %dx%d", ow, oh);
    PyArrayObject *a = rgb_array(obj, "resize_bicubic");
    if (!a) return NULL;
    pr_image in = {(int)PyArray_DIM(a, 1), (int)PyArray_DIM(a, 0), PyArray_DATA(a), 1}, out = {0};
    pr_error err = {0};
    int rc;
    Py_BEGIN_ALLOW_THREADS
    rc = pr_image_resize_bicubic(&in, ow, oh, &out, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(a);
    if (rc) return pr_py_raise(&err);
    npy_intp shape[3] = {oh, ow, 3};
    return owning_array(out.rgb, 3, shape, NPY_UINT8);
}

/* clip_resize(rgb, size, pad, mean) -> size×size×3 uint8: the pixels CLIP sees, before normalisation. */
static PyObject *py_clip_resize(PyObject *self, PyObject *args) {
    PyObject *obj, *meanobj;
    int size, pad;
    if (!PyArg_ParseTuple(args, "OipO", &obj, &size, &pad, &meanobj)) return NULL;
    float mean[3];
    if (parse_triple(meanobj, mean, "mean") < 0) return NULL;
    if (size <= 0 || size > 16384) return PyErr_Format(PyExc_ValueError, "size must be in 1..16384, got %d", size);
    PyArrayObject *a = rgb_array(obj, "clip_resize");
    if (!a) return NULL;
    uint8_t *px = pr_alloc((size_t)size, (size_t)size, 3);
    if (!px) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    uint8_t bg[3];
    pr_image_pad_color(mean, bg);
    pr_error err = {0};
    int rc, w = (int)PyArray_DIM(a, 1), h = (int)PyArray_DIM(a, 0);
    const uint8_t *rgb = PyArray_DATA(a);
    Py_BEGIN_ALLOW_THREADS
    rc = pr_clip_resize(rgb, w, h, size, pad, bg, px, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(a);
    if (rc) {
        pr_free(px);
        return pr_py_raise(&err);
    }
    npy_intp shape[3] = {size, size, 3};
    return owning_array(px, 3, shape, NPY_UINT8);
}

/* clip_preprocess(rgb, size, pad, mean, std) -> 3×size×size float32 (CHW). */
static PyObject *py_clip_preprocess(PyObject *self, PyObject *args) {
    PyObject *obj, *meanobj, *stdobj;
    int size, pad;
    if (!PyArg_ParseTuple(args, "OipOO", &obj, &size, &pad, &meanobj, &stdobj)) return NULL;
    float mean[3], std[3];
    if (parse_triple(meanobj, mean, "mean") < 0 || parse_triple(stdobj, std, "std") < 0) return NULL;
    if (size <= 0 || size > 16384) return PyErr_Format(PyExc_ValueError, "size must be in 1..16384, got %d", size);
    PyArrayObject *a = rgb_array(obj, "clip_preprocess");
    if (!a) return NULL;
    float *px = pr_alloc((size_t)size * size, 3, sizeof(float));
    if (!px) {
        Py_DECREF(a);
        return PyErr_NoMemory();
    }
    pr_error err = {0};
    int rc, w = (int)PyArray_DIM(a, 1), h = (int)PyArray_DIM(a, 0);
    const uint8_t *rgb = PyArray_DATA(a);
    Py_BEGIN_ALLOW_THREADS
    rc = pr_clip_preprocess(rgb, w, h, size, pad, mean, std, px, &err);
    Py_END_ALLOW_THREADS
    Py_DECREF(a);
    if (rc) {
        pr_free(px);
        return pr_py_raise(&err);
    }
    npy_intp shape[3] = {3, size, size};
    return owning_array(px, 3, shape, NPY_FLOAT32);
}

static PyMethodDef image_methods[] = {
    {"decode_image", (PyCFunction)(void (*)(void))py_decode_image, METH_VARARGS | METH_KEYWORDS,
     "decode_image(src, max_pixels, name=None, max_bytes=None, orientation=False) -> H×W×3 uint8 array (with "
     "orientation=True: (array, EXIF orientation 1..8)). src: str path or bytes-like PNG/JPEG; max_bytes: the "
     "file size limit (None: 256 MiB)."},
    {"resize_bicubic", py_resize_bicubic, METH_VARARGS,
     "resize_bicubic(rgb, width, height) -> height×width×3 uint8, Pillow's BICUBIC with reducing_gap=None."},
    {"clip_resize", py_clip_resize, METH_VARARGS,
     "clip_resize(rgb, size, pad, mean) -> size×size×3 uint8 (pad to square, resize, centre crop)."},
    {"clip_preprocess", py_clip_preprocess, METH_VARARGS,
     "clip_preprocess(rgb, size, pad, mean, std) -> 3×size×size float32 CLIP input."},
    {NULL, NULL, 0, NULL},
};

int pr_py_image_init(PyObject *m) { return PyModule_AddFunctions(m, image_methods); }
