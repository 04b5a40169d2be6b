/* The one translation unit that owns NumPy's C-API table; the others use NO_IMPORT_ARRAY. */
#define PY_ARRAY_UNIQUE_SYMBOL pr_numpy_api
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <numpy/arrayobject.h>

int pr_py_import_numpy(void) {
    import_array1(-1);
    return 0;
}
