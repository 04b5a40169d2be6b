#!/usr/bin/env bash
# CI check of the distributable packages (run by .ci/run; needs root for `unshare -m`):
#   1. scripts/build-wheels.sh builds the sdist and the manylinux wheel into dist/ (skipped with --wheel FILE);
#   2. the wheel goes into a fresh venv in a temporary directory outside the checkout;
#   3. in a private mount namespace, every copy of OpenBLAS, libpng16, libjpeg, utf8proc and libgfortran on
#      this machine outside that venv is covered by an empty file (bind mounts), so anything the wheel still
#      took from the system fails to load. Then, there:
#      - two negative controls: the checkout's own (system-linked) extension must now FAIL to load, proving
#        the hiding works, and so must the wheel's extension before `auditwheel repair`;
#      - every ELF file the wheel installed resolves each library it needs inside the venv or to glibc (ldd);
#      - `parrot demo` runs on the model inside the wheel, and `parrot.generate` on PNG, JPEG and array images
#        in six languages gives the answers the checkout's own build gives (computed before the hiding);
#      - notebooks/quickstart.ipynb runs on the wheel with its [notebook] extra (nbclient) and draws its plots;
#   4. the sdist, built where pkg-config finds none of the libraries, fails with one error naming all four.
#
#   bash scripts/check-wheel.sh                 # build, then check
#   bash scripts/check-wheel.sh --wheel FILE    # check a given wheel (e.g. a plain `pip wheel .` one: it fails)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-python3}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

[ "$(id -u)" = 0 ] || { echo "check-wheel: needs root (a private mount namespace, unshare -m)"; exit 1; }
if [ "${1:-}" = "--wheel" ]; then
    wheel=$(readlink -f "$2")
else
    bash "$ROOT/scripts/build-wheels.sh"
    wheel=$(ls "$ROOT"/dist/parrot_vlm-*-manylinux*.whl)
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/parrot-wheel-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
case "$WORK/" in "$ROOT"/*) echo "check-wheel: $WORK is inside the checkout"; exit 1 ;; esac
mkdir "$WORK/run"

echo "== fresh venv in $WORK: pip install '$(basename "$wheel")[notebook]' nbclient nbformat"
"$PY" -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install -q "$wheel[notebook]" nbclient nbformat >"$WORK/pip.log" 2>&1 \
    || { cat "$WORK/pip.log"; exit 1; }

echo "== images and expected answers from the checkout's own build"
# the checkout's build (scripts/install.sh) is independent of the wheel: system OpenBLAS, not scipy-openblas32
( cd "$WORK/run" && PYTHONPATH=$ROOT env -u PARROT_MODEL "$PY" - <<'EOF'
import json, numpy as np, parrot
from PIL import Image
from parrot.demo import QUESTIONS, SCENES, draw_scene
assert parrot.__file__.startswith(__import__("os").environ["PYTHONPATH"]), parrot.__file__
names = []
for i, scene in enumerate(SCENES[:3]):
    rgb = draw_scene(scene)
    np.save(f"scene{i}.npy", rgb)                              # passed as an array
    Image.fromarray(rgb).save(f"scene{i}.png")                 # decoded by the bundled libpng
    Image.fromarray(rgb).save(f"scene{i}.jpg", quality=95)     # decoded by the bundled libjpeg
    names += [f"scene{i}.png", f"scene{i}.jpg", f"scene{i}.npy"]
cases = [(name, QUESTIONS[lang][kind]) for name in names for lang in QUESTIONS for kind in ("colour", "shape")]
load = lambda name: np.load(name) if name.endswith(".npy") else name
answers = [parrot.generate(load(name), q, max_new_tokens=16) for name, q in cases]
json.dump({"cases": cases, "answers": answers}, open("expected.json", "w"), ensure_ascii=False)
print(f"{len(cases)} questions; e.g. {cases[0][1]!r} on {cases[0][0]} -> {answers[0]!r}")
EOF
)
# the wheel's extension before auditwheel repair, for the second negative control
raw=$(ls "$ROOT"/build/wheel-work/raw/parrot_vlm-*.whl 2>/dev/null || true)
[ -n "$raw" ] && "$PY" - "$raw" "$WORK/raw" <<'EOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("parrot/_core")])
EOF

read -r -d '' INSIDE <<'EOF' || true
set -euo pipefail
WORK=$1 ROOT=$2
venv=$WORK/venv
: >"$WORK/empty"
n=0
while IFS= read -r -d '' f; do mount --bind "$WORK/empty" "$f"; n=$((n + 1)); done < <(
    find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /var -o -path "$venv" \) -prune -o -type f \
        \( -name 'libopenblas*.so*' -o -name 'libscipy_openblas*.so*' -o -name 'libpng16*.so*' \
           -o -name 'libjpeg*.so*' -o -name 'libutf8proc*.so*' -o -name 'libgfortran*.so*' \) -print0)
echo "== $n system copies of OpenBLAS/libpng16/libjpeg/utf8proc/libgfortran hidden"
[ "$n" -ge 4 ] || { echo "FAIL: hid only $n files: this check would prove nothing"; exit 1; }

echo "== negative controls (must fail to load now)"
controls=("$ROOT"/parrot/_core*.so "$WORK"/raw/parrot/_core*.so)
checked=0
for so in "${controls[@]}"; do
    [ -f "$so" ] || continue
    if out=$("$venv/bin/python" -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$so" 2>&1); then
        echo "FAIL: $so still loads with the system libraries hidden: the hiding does not work"; exit 1
    fi
    echo "ok: $so fails: $(echo "$out" | tail -1)"
    checked=$((checked + 1))
done
[ "$checked" -ge 1 ] || { echo "FAIL: no system-linked build to prove the hiding with (run scripts/install.sh)"; exit 1; }

echo "== every library the installed wheel needs is inside it, or glibc"
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["platlib"])')
bad=0
while IFS= read -r -d '' elf; do
    deps=$(ldd "$elf" 2>&1) || { echo "FAIL: $deps"; bad=1; }
    while read -r line; do
        case "$line" in
            *"not found"*) echo "FAIL: $elf: $line"; bad=1 ;;
            *"=> $venv/"*) ;;
            lib[cm].so.6\ =\>*|libpthread.so.0\ =\>*|libdl.so.2\ =\>*|librt.so.1\ =\>*|libmvec.so.1\ =\>*) ;;
            *"=> /"*) echo "FAIL: $(basename "$elf") takes from the system: $line"; bad=1 ;;
        esac
    done <<<"$deps"
done < <(find "$site/parrot" "$site/parrot_vlm.libs" -type f -name '*.so*' -print0 2>/dev/null)
[ "$bad" = 0 ] || exit 1
ls -l "$site/parrot_vlm.libs" | tail -n +2

cd "$WORK/run"
unset PYTHONPATH PYTHONHOME PARROT_MODEL   # the wheel alone, with the model it ships

echo "== parrot demo (from $PWD)"
"$venv/bin/parrot" demo >demo.txt 2>&1 || { cat demo.txt; echo "FAIL: parrot demo"; exit 1; }
head -6 demo.txt
grep -q "parrot-tiny-shapes.gguf" demo.txt || { echo "FAIL: the demo did not use the model in the wheel"; exit 1; }
if grep -qi "random" demo.txt; then echo "FAIL: the demo fell back to a random model"; exit 1; fi

echo "== parrot.generate, against the checkout's answers"
"$venv/bin/python" - "$venv" <<'PY'
import json, os, sys
import numpy as np
import parrot, parrot._core
from parrot.model import default_model_path
venv = sys.argv[1]
for what, path in [("parrot", parrot.__file__), ("parrot._core", parrot._core.__file__), ("model", default_model_path())]:
    assert os.path.realpath(path).startswith(os.path.realpath(venv)), f"{what} comes from {path}, not the wheel"
exp = json.load(open("expected.json"))
got = [parrot.generate(np.load(img) if img.endswith(".npy") else img, q, max_new_tokens=16) for img, q in exp["cases"]]
diff = [(c, e, g) for c, e, g in zip(exp["cases"], exp["answers"], got) if e != g]
for c, e, g in diff:
    print(f"FAIL: {c}: checkout says {e!r}, wheel says {g!r}")
assert not diff, f"{len(diff)} of {len(got)} answers differ"
print(f"ok: {len(got)} answers equal the checkout build's (kernels: {parrot._core.kernel_isa()}); "
      f"e.g. {exp['cases'][1][1]!r} on {exp['cases'][1][0]} -> {got[1]!r}")
PY

echo "== notebooks/quickstart.ipynb on the wheel's [notebook] extra"
cp "$ROOT/notebooks/quickstart.ipynb" .
unset MPLBACKEND   # the kernel's inline backend draws the plots
"$venv/bin/python" - <<'PY'
import nbclient, nbformat
nb = nbformat.read("quickstart.ipynb", as_version=4)
nbclient.NotebookClient(nb, timeout=300, kernel_name="python3").execute()
outs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
errors = [f"{o.ename}: {o.evalue}" for o in outs if o.output_type == "error"]
assert not errors, errors
assert any("parrot-tiny-shapes.gguf" in o.get("data", {}).get("text/plain", "") for o in outs), "not the shipped model"
plots = sum("image/png" in o.get("data", {}) for o in outs)
assert plots >= 2, f"only {plots} plots drawn"
print(f"ok: every cell ran on the shipped model; {plots} plots drawn")
PY
EOF
echo "== in a private mount namespace with the system libraries hidden"
unshare -m --propagation private bash -c "$INSIDE" check-wheel "$WORK" "$ROOT"

[ "${1:-}" = "--wheel" ] && { echo "check-wheel: all checks passed for $(basename "$wheel")"; exit 0; }
echo "== the sdist where pkg-config finds none of the libraries: one error naming them all"
sdist=$(ls "$ROOT"/dist/parrot_vlm-*.tar.gz)
if PKG_CONFIG_LIBDIR="$WORK/nothing" PKG_CONFIG_PATH="" "$ROOT/build/wheel-env/bin/python" -m pip wheel --no-deps \
        --no-build-isolation -w "$WORK/sdist-wheel" "$sdist" >"$WORK/sdist.log" 2>&1; then
    echo "FAIL: the sdist built without any library"; exit 1
fi
grep -A3 "parrot-vlm build: missing" "$WORK/sdist.log" | sed 's/^ *//'
for want in "missing OpenBLAS, libpng, libjpeg, utf8proc" \
            "apt-get install libopenblas-dev libpng-dev libjpeg-dev libutf8proc-dev"; do
    grep -qF "$want" "$WORK/sdist.log" || { cat "$WORK/sdist.log"; echo "FAIL: no '$want' in the error"; exit 1; }
done
echo "check-wheel: all checks passed for $(basename "$wheel")"
