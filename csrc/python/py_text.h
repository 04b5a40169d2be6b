/* Python bindings of the text room: parrot._core.Tokenizer and its streaming decoder. */
#ifndef PR_PY_TEXT_H
#define PR_PY_TEXT_H
#include "python/pymod.h"

struct pr_tokenizer;

/* A new _core.Tokenizer object that uses t without owning it; it holds a reference to owner (e.g. the Model
 * object whose model owns t), which keeps t alive. Returns NULL with an exception set on failure. */
PyObject *pr_py_tokenizer_wrap(const struct pr_tokenizer *t, PyObject *owner);
#endif
