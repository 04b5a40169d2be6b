/* Include this (not numpy/arrayobject.h) in binding files that use NumPy. */
#ifndef PR_PYNP_H
#define PR_PYNP_H
#include "python/pymod.h"
#define PY_ARRAY_UNIQUE_SYMBOL pr_numpy_api
#define NO_IMPORT_ARRAY
#include <numpy/arrayobject.h>
#endif
