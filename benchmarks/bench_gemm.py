"""The many-rows matrix-product paths side by side at Parrot-7B's shapes, against the machine's limits.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_gemm.py [--threads 2] [--rounds 5]

For each shape (activation rows n × weight rows × columns: CLIP-L/336 layers, projector, MoE experts, the 7B
decoder at a 603-position prefill) and weight dtype, GFLOP/s of every path of parrot's matmul:
  gemm    the packed GEMM (csrc/kernels/gemm.c): weights widened/dequantised per panel, our f32 micro-kernel
  panels  weights widened to f32 per panel, then OpenBLAS sgemm on it
  tiles   int8 tiles on q8_0 activations (q8_0/q4_0 weights) or bf16 tiles (bf16 weights; AVX512_BF16 only)
beside numpy's sgemm on the same f32 shape and our FMA peak loop. Rounds interleave every measurement and the
best of the rounds counts: on a shared, noisy machine the best round is the one least disturbed, and every
path had the same chances. By default a rate is flops ÷ (process CPU time ÷ threads) (--clock cpu): time the
threads spent descheduled by other people's jobs does not count, so paths compare fairly on a busy machine
(OpenBLAS threads that spin while waiting count against numpy; ours sleep). --clock wall for elapsed time.
This is the measurement behind the choice in csrc/kernels/matmul.c (use_gemm)."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHAPES = {  # name: (n, rows, cols)
    "vit qkv/out": (577, 1024, 1024), "vit fc1": (577, 4096, 1024), "vit fc2": (577, 1024, 4096),
    "moe/proj 4096²": (577, 4096, 4096), "7b qkvo": (603, 4096, 4096), "7b gate/up": (603, 11008, 4096),
    "7b down": (603, 4096, 11008), "128 rows": (128, 4096, 4096), "64 rows": (64, 4096, 4096), "40 rows": (40, 4096, 4096), "24 rows": (24, 4096, 4096),
    "20 rows": (20, 4096, 4096), "16 rows": (16, 4096, 4096), "12 rows": (12, 4096, 4096),
    "8 rows": (8, 4096, 4096),
}
ENV_DROP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def weight_raw(w, dtype, core):
    if dtype == "f32":
        return w.view(np.uint8)
    if dtype == "f16":
        return np.ascontiguousarray(w.astype(np.float16).view(np.uint8))
    if dtype == "bf16":
        b = w.view(np.uint32)
        return np.ascontiguousarray(((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16).view(np.uint8))
    return core.quantize(w, dtype)


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}


def timed(fn, clock="wall", threads=1):
    """Seconds fn takes: elapsed, or process CPU time per thread"""
    c = CLOCK[clock]
    t = c()
    fn()
    return (c() - t) / (threads if clock == "cpu" else 1)


def breakdown():
    import subprocess
    import tempfile

    # the flags setup.py gives these files (isa_flags there)
    flags = {"csrc/kernels/kernels_avx2.c": ["-mavx2", "-mfma", "-mf16c"],
             "csrc/kernels/kernels_avx512.c": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx512bf16",
                                               "-mavx512vnni", "-mavx2", "-mfma", "-mf16c"]}
    srcs = ["csrc/kernels/dispatch.c", "csrc/kernels/kernels_scalar.c", "csrc/kernels/quant.c",
            "csrc/util/error.c", "csrc/util/dtype.c"]
    objs, tmp = [], tempfile.mkdtemp()
    for f in flags:
        o = os.path.join(tmp, os.path.basename(f) + ".o")
        subprocess.run(["gcc", "-std=c11", "-O3", "-D_GNU_SOURCE", "-Icsrc", "-c", f, "-o", o] + flags[f],
                       cwd=ROOT, check=True)
        objs.append(o)
    exe = os.path.join(tmp, "gemm_ukernel")
    subprocess.run(["gcc", "-std=c11", "-O2", "-D_GNU_SOURCE", "-pthread", "-Icsrc", "benchmarks/gemm_ukernel.c",
                    *srcs, *objs, "-lm", "-o", exe], cwd=ROOT, check=True)
    print(subprocess.run([exe], capture_output=True, text=True, check=True).stdout, end="")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--dtypes", default="f32,f16,bf16,q8_0,q4_0")
    ap.add_argument("--isa", default="best")
    ap.add_argument("--clock", choices=tuple(CLOCK), default="cpu")
    ap.add_argument("--breakdown", action="store_true",
                    help="also compile and run benchmarks/gemm_ukernel.c: the micro-kernels alone vs the FMA peak")
    ap.add_argument("--keep-openblas-env", action="store_true",
                    help="keep OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE (e.g. Haswell: OpenBLAS as on an AVX2-only CPU)")
    args = ap.parse_args(argv)
    dropped = [k for k in ENV_DROP if k in os.environ]
    if args.keep_openblas_env:
        print("kept: " + ", ".join(f"{k}={os.environ.get(k)}" for k in ENV_DROP))
    elif dropped:  # OpenBLAS reads them at load: run again without them
        os.execvpe(sys.executable, [sys.executable] + sys.argv,
                   {k: v for k, v in os.environ.items() if k not in ENV_DROP})
    else:
        print(f"{' and '.join(ENV_DROP)} are unset for this benchmark (OpenBLAS picks its kernels from the CPU)")
    sys.path.insert(0, ROOT)
    from parrot import _core

    if args.breakdown:
        breakdown()
    isa = _core.kernel_isa() if args.isa == "best" else args.isa
    T = args.threads
    rng = np.random.default_rng(0)
    print(f"isa {isa}, {T} threads, best of {args.rounds} interleaved rounds; GFLOP/s by {args.clock} time")
    print(f"{'shape':16} {'dtype':5} {'gemm':>7} {'panels':>7} {'tiles':>7} {'numpy':>7} {'peak':>7}  best")
    for name in args.shapes.split(","):
        n, rows, cols = SHAPES[name]
        w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02)
        x = rng.standard_normal((n, cols), dtype=np.float32)
        fl = 2.0 * n * rows * cols
        for dt in args.dtypes.split(","):
            raw = weight_raw(w, dt, _core)
            paths = ["gemm", "panels"] + (["tiles"] if dt in ("q8_0", "q4_0", "bf16") else [])
            best = {p: 0.0 for p in paths + ["numpy", "peak"]}
            for _ in range(args.rounds):
                for p in paths:
                    s = timed(lambda: _core.matmul(raw, dt, cols, x, isa=isa, threads=T, path=p), args.clock, T)
                    best[p] = max(best[p], fl / s / 1e9)
                best["numpy"] = max(best["numpy"], fl / timed(lambda: x @ w.T, args.clock, T) / 1e9)
                for _ in range(20):  # short runs: the best is the undisturbed one
                    ops, s = _core.peak(0, isa, T, 200_000)
                    best["peak"] = max(best["peak"], ops / s / 1e9)
            win = max(paths, key=lambda p: best[p])
            cells = " ".join(f"{best[p]:7.1f}" if p in best else f"{'—':>7}" for p in ("gemm", "panels", "tiles"))
            print(f"{name:16} {dt:5} {cells} {best['numpy']:7.1f} {best['peak']:7.1f}  {win}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
