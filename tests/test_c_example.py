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
