/* parrot._core: the CPython extension. It wraps the C API of parrot.h; the Python package gives names,
 * defaults, docstrings and errors. This file holds the module and the error mapping; each room binds its
 * own types in py_*.c. */
#include <string.h>

#include "python/pymod.h"

PyObject *pr_py_ModelError, *pr_py_ImageError, *pr_py_TokenizerError;

PyObject *pr_py_raise(const pr_error *e) {
    PyObject *type;
    switch (e->code) {
    case PR_ERR_FORMAT: type = pr_py_ModelError; break;
    case PR_ERR_IMAGE: type = pr_py_ImageError; break;
    case PR_ERR_TOKENIZER: type = pr_py_TokenizerError; break;
    case PR_ERR_NOMEM: type = PyExc_MemoryError; break;
    case PR_ERR_INTERRUPTED: type = PyExc_KeyboardInterrupt; break;
    case PR_ERR_IO: type = PyExc_OSError; break;
    default: type = PyExc_ValueError; break;
    }
    /* messages may quote file bytes (names, paths) or be cut mid-character: never fail on their decoding */
    const char *msg = e->msg[0] ? e->msg : "parrot: unknown error";
    PyObject *text = PyUnicode_DecodeUTF8(msg, (Py_ssize_t)strlen(msg), "backslashreplace");
    if (!text) return NULL;
    PyErr_SetObject(type, text);
    Py_DECREF(text);
    return NULL;
}

static struct PyModuleDef core_module = {
    PyModuleDef_HEAD_INIT, "parrot._core", "parrot's C core (use the parrot package, not this module).", -1,
    NULL, NULL, NULL, NULL, NULL,
};

int pr_py_import_numpy(void);

PyMODINIT_FUNC PyInit__core(void) {
    if (pr_py_import_numpy() < 0) return NULL;
    PyObject *errors = PyImport_ImportModule("parrot.errors");
    if (!errors) return NULL;
    pr_py_ModelError = PyObject_GetAttrString(errors, "ModelError");
    pr_py_ImageError = PyObject_GetAttrString(errors, "ImageError");
    pr_py_TokenizerError = PyObject_GetAttrString(errors, "TokenizerError");
    Py_DECREF(errors);
    if (!pr_py_ModelError || !pr_py_ImageError || !pr_py_TokenizerError) return NULL;
    PyObject *m = PyModule_Create(&core_module);
    if (!m) return NULL;
    if (pr_py_model_init(m) < 0 || pr_py_text_init(m) < 0 || pr_py_image_init(m) < 0 ||
        pr_py_kernels_init(m) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
