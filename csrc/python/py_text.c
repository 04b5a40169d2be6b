/* Python bindings of the text room (filled in by that room). */
#include "python/pynp.h"

int pr_py_text_init(PyObject *m) { (void)m; return 0; }
