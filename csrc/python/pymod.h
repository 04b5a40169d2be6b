/* Shared declarations of the CPython extension parrot._core. Each room's bindings live in their own file
 * (py_model.c, py_text.c, py_image.c) and register themselves from module.c. */
#ifndef PR_PYMOD_H
#define PR_PYMOD_H
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "parrot.h"

/* parrot.errors.ModelError / ImageError / TokenizerError, set at module init */
extern PyObject *pr_py_ModelError;
extern PyObject *pr_py_ImageError;
extern PyObject *pr_py_TokenizerError;

/* Raises the Python exception matching e->code (ModelError, ImageError, ValueError, MemoryError,
 * KeyboardInterrupt, OSError...) with e->msg; returns NULL for convenient `return pr_py_raise(&e);`. */
PyObject *pr_py_raise(const pr_error *e);

/* Each returns 0, or -1 with a Python exception set. Called once from PyInit__core. */
int pr_py_model_init(PyObject *m);
int pr_py_text_init(PyObject *m);
int pr_py_image_init(PyObject *m);
int pr_py_kernels_init(PyObject *m); /* py_kernels.c */
#endif
