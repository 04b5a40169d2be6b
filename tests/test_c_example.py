"""examples/describe.c — a C program using only parrot.h — built from the same sources as the extension
(examples/Makefile) and run on the shipped model: its greedy answers must be the Python API's, word for word
(both decode greedily from the same C core; the program formats, tokenises, loads the image, encodes, prefills
and decodes through parrot.h alone)."""
import os
import shutil
import subprocess

import pytest

import parrot
from parrot import demo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHIPPED = os.path.join(ROOT, "parrot", "models", "parrot-tiny-shapes.gguf")


def _env():
    # under scripts/test-sanitized.sh the ASan runtime is preloaded for Python; the compiler and the
    # (uninstrumented) example must not inherit it
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    return env


@pytest.fixture(scope="module")
def describe(tmp_path_factory):
    if shutil.which("make") is None or shutil.which("pkg-config") is None:
        pytest.skip("needs make and pkg-config (scripts/install.sh installs them)")
    build = tmp_path_factory.mktemp("cbuild")
    r = subprocess.run(["make", "-s", "-j2", "-C", os.path.join(ROOT, "examples"), f"BUILD={build}"],
                       capture_output=True, text=True, env=_env())
    assert r.returncode == 0, r.stdout + r.stderr
    assert "warning" not in r.stderr, r.stderr
    return str(build / "describe")


def run(exe, *args):
    return subprocess.run([exe, *args], capture_output=True, text=True, env=_env(), timeout=120)


def test_describe_answers_as_the_python_api(describe, tmp_path):
    from PIL import Image

    model = parrot.load(SHIPPED)
    checked = 0
    for i, scene in enumerate(demo.SCENES[:2]):
        png = tmp_path / f"scene{i}.png"
        Image.fromarray(demo.draw_scene(scene)).save(png)
        for lang in demo.LANGS:
            for kind in ("colour", "shape"):
                q = demo.QUESTIONS[lang][kind]
                r = run(describe, SHIPPED, str(png), q, "24")
                assert r.returncode == 0, r.stderr
                want = model.run(str(png), q, max_new_tokens=24)
                assert r.stdout == want.text + "\n", (lang, q)
                got_w = [float(v) for v in r.stderr.split("routing:")[1].split()]
                assert got_w == pytest.approx(want.routing.tolist(), abs=1e-4)  # printed with 4 decimals
                checked += 1
    assert checked == 24


def test_describe_reports_bad_input(describe, tmp_path):
    r = run(describe, SHIPPED, str(tmp_path / "missing.png"), "What?")
    assert r.returncode == 1 and "missing.png" in r.stderr
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    r = run(describe, SHIPPED, str(bad), "What?")
    assert r.returncode == 1 and "bad.png" in r.stderr
    r = run(describe, str(tmp_path / "no.gguf"), str(bad), "What?")
    assert r.returncode == 1 and "no.gguf" in r.stderr
    r = run(describe)
    assert r.returncode == 2 and "usage" in r.stderr


def test_load_stops_when_interrupted(describe, tmp_path):
    """pr_model_load copies q8_0/q4_0 tensors into its own memory (seconds for a 7B file), checking the abort
    flag (Ctrl-C in Python) between tensors: tests/c/load_interrupt.c loads a q8_0 file with the flag raised
    (PR_ERR_INTERRUPTED, no model) and again once it is cleared (loads). An f32 file copies nothing, so the
    same program on it fails — which shows the check is the copy's."""
    from conftest import make_qwen2

    _, d = make_qwen2(tmp_path)
    q8 = parrot.convert(d, tmp_path / "q8.gguf", dtype="q8_0", progress=False, log=lambda s: None)
    build = os.path.dirname(describe)
    exe = str(tmp_path / "load_interrupt")
    libs = subprocess.run(["pkg-config", "--libs", "openblas", "libpng", "libjpeg", "libutf8proc"],
                          capture_output=True, text=True, check=True).stdout.split()
    r = subprocess.run(["cc", "-std=c11", "-Wall", "-Wextra", "-I" + os.path.join(ROOT, "csrc"),
                        os.path.join(ROOT, "tests", "c", "load_interrupt.c"), os.path.join(build, "libparrot.a"),
                        *libs, *["-Wl,-rpath," + a[2:] for a in libs if a.startswith("-L")], "-lm", "-pthread",
                        "-o", exe], capture_output=True, text=True, env=_env())
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
    r = run(exe, str(q8))
    assert r.returncode == 0, r.stderr
    r = run(exe, SHIPPED)
    assert r.returncode == 1 and "with the flag raised: rc 0" in r.stderr, r.stderr
