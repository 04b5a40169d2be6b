#!/usr/bin/env bash
# For developers: installs everything parrot needs to build from source on a fresh Debian machine (run as root,
# or with sudo for apt), then installs this checkout (distribution parrot-vlm, import parrot) in editable mode
# with the test extras. Users install the prebuilt wheel instead: pip install parrot-vlm (docs/install.md).
#   bash scripts/install.sh            # runtime + test dependencies
set -euo pipefail
cd "$(dirname "$0")/.."

pkgs="build-essential pkg-config libopenblas-dev libpng-dev libjpeg-dev libutf8proc-dev"
# clang and its sanitizer/libFuzzer runtime: scripts/fuzz.sh (the fuzz smoke run of .ci/run)
pkgs="$pkgs clang libclang-rt-dev"
# an AArch64 cross compiler and qemu, and SIMDe: tests/test_kernels.py runs the NEON kernels under qemu and
# the AVX-512 ones through SIMDe on any x86 CPU
[ "$(uname -m)" = "x86_64" ] && pkgs="$pkgs gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user libsimde-dev"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends $missing
fi

PY=${PYTHON:-python3}
# torch only for the tests (the reference); the CPU build of this exact version is available offline here
$PY -m pip install -q "torch==2.13.0"
# this project was once installed under the distribution name `parrot`: remove such an install, recognised by
# its `parrot = parrot.cli:main` command, so it cannot shadow this one (never the unrelated PyPI `parrot`)
if $PY -c 'import importlib.metadata as m, sys
try: d = m.distribution("parrot")
except m.PackageNotFoundError: sys.exit(1)
sys.exit(0 if any(e.value == "parrot.cli:main" for e in d.entry_points) else 1)'; then
    $PY -m pip uninstall -q -y parrot
fi
$PY -m pip install -q -e ".[test]"
# the `parrot` command: pyenv only sees new console scripts after a rehash
if command -v pyenv >/dev/null 2>&1; then pyenv rehash || true; fi
