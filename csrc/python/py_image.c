/* Python bindings of the image room (filled in by that room). */
#include "python/pynp.h"

int pr_py_image_init(PyObject *m) { (void)m; return 0; }
