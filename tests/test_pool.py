"""The thread pool (csrc/kernels/pool.c) under ThreadSanitizer and under AddressSanitizer + UBSan.

tests/c/pool_stress.c runs thousands of jobs of random sizes with random pauses on pools of 2 and 3 threads,
from one and from several calling threads, and frees pools right after a job or while their workers sleep; it
checks that every chunk ran exactly once and fails on a hang (a lost wake-up) through its watchdog. Each build
runs with the default spin time and with none (every wait then takes the sleeping path), and with the futex and
the condition-variable way of sleeping (PR_POOL_NO_FUTEX, what non-Linux systems build). A second test runs the
whole pipeline (examples/describe.c) built with TSan, so the decoder's jobs on the pool are checked for races too.
"""
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = "6000"  # per pool size: ~3 s per run under TSan on 2 cores; a planted lost wake-up hung within ~14000 jobs in all


def build(tmp_path, sanitizer, defines):
    exe = str(tmp_path / "pool_stress")
    r = subprocess.run(["gcc", "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Werror",
                        "-D_GNU_SOURCE", f"-fsanitize={sanitizer}", "-fno-omit-frame-pointer", *defines, "-Icsrc",
                        "tests/c/pool_stress.c", "csrc/kernels/pool.c", "-pthread", "-o", exe],
                       cwd=ROOT, capture_output=True, text=True)
    if r.returncode and "cannot find" in r.stderr:  # a compiler without that sanitizer's runtime
        pytest.skip(f"gcc lacks the {sanitizer} runtime: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stderr
    return exe


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("sanitizer", ["thread", "address,undefined"])
@pytest.mark.parametrize("sleep", ["futex", "condvar"])
def test_pool_stress_under_sanitizer(tmp_path, sanitizer, sleep):
    exe = build(tmp_path, sanitizer, [] if sleep == "futex" else ["-DPR_POOL_NO_FUTEX"])
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1", ASAN_OPTIONS="detect_leaks=1:halt_on_error=1",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")
    env.pop("LD_PRELOAD", None)  # scripts/test-sanitized.sh preloads ASan into Python; this binary links its own
    for spin_ns in (None, "0"):
        run_env = dict(env) if spin_ns is None else dict(env, PARROT_POOL_SPIN_NS=spin_ns)
        r = subprocess.run([exe, JOBS], capture_output=True, text=True, env=run_env, timeout=600)
        assert r.returncode == 0 and "ok:" in r.stdout, (spin_ns, r.stdout[-3000:], r.stderr[-3000:])


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("pkg-config") is None or shutil.which("gcc") is None,
                    reason="needs make, pkg-config and gcc (scripts/install.sh installs them)")
def test_whole_pipeline_under_tsan(tmp_path):
    """examples/describe.c (vision, MoE, prefill and decoding through the pool, 2 threads here) built with TSan
    from the same sources: no race reported, and the same answer as the normal build gives through Python."""
    import parrot
    from parrot import demo
    from PIL import Image

    env = dict(os.environ, CC="gcc", CFLAGS="-O1 -g -fsanitize=thread", LDFLAGS="-fsanitize=thread")
    env.pop("LD_PRELOAD", None)
    r = subprocess.run(["make", "-s", "-j2", "-C", os.path.join(ROOT, "examples"), f"BUILD={tmp_path}"],
                       capture_output=True, text=True, env=env)
    if r.returncode and "cannot find" in r.stderr:
        pytest.skip(f"gcc lacks the TSan runtime: {r.stderr.strip()[-200:]}")
    assert r.returncode == 0, r.stdout + r.stderr
    shipped = os.path.join(ROOT, "parrot", "models", "parrot-tiny-shapes.gguf")
    model = parrot.load(shipped, threads=2)
    for i, scene in enumerate(demo.SCENES[:2]):
        png = str(tmp_path / f"scene{i}.png")
        Image.fromarray(demo.draw_scene(scene)).save(png)
        q = demo.QUESTIONS["en"]["shape"]
        run = subprocess.run([str(tmp_path / "describe"), shipped, png, q, "24"], capture_output=True, text=True,
                             env=dict(env, TSAN_OPTIONS="halt_on_error=1"), timeout=600)
        assert run.returncode == 0 and "ThreadSanitizer" not in run.stderr, run.stderr[-5000:]
        assert run.stdout == model.run(png, q, max_new_tokens=24).text + "\n"
