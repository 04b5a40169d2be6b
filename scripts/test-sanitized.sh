#!/usr/bin/env bash
# Rebuilds parrot._core with AddressSanitizer + UBSan and runs the test suite against it, then restores the
# normal build. Extra arguments go to pytest (e.g. a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
restore() { $PY setup.py -q build_ext --inplace --force >/dev/null 2>&1 || true; }
trap restore EXIT
PARROT_SANITIZE=1 $PY setup.py -q build_ext --inplace --force >/dev/null
# Python itself is not instrumented, so the runtime is preloaded; leaks in the interpreter and torch are not
# ours, so leak detection is off here (the C core's own frees are exercised by the suite under ASan).
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=0:halt_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
$PY -m pytest -q -p no:cacheprovider "$@"
