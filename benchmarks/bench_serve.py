"""Aggregate decode throughput of B concurrent sequences (B = 1, 2, 4, 8) against one at a time, and against
the machine's bounds measured in the same run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_serve.py [--threads 2] [--llm 0.5b]
        [--dtype q8_0] [--steps 16] [--repeats 3] [--workdir /tmp/parrot-bench-serve] [--out FILE]

The model is benchmarks/bench_parrot.py's random Qwen1.5 shape (built once in --workdir, converted to --dtype).
In a fresh interpreter, for each B:
  one at a time  B sequences (each its own KV cache, PROMPT tokens prefilled) decode STEPS tokens each, one
                 sequence after the other: aggregate tokens/s = B·STEPS / time.
  concurrent     the same B sequences advance together, one token each per step, round robin — what the
                 server's scheduler does (parrot/server.py). When the core has a batched decode (several
                 sequences through one pass over the weights), the step is that one call instead.
The bound for B concurrent sequences is the lesser of B × (read bandwidth ÷ weight bytes per token) and the
sgemm rate ÷ FLOPs per token, with bandwidth and sgemm measured in the same run (bench_parrot's w_limits:
a 1 GiB sum and a 2048³ fp32 GEMM with the same thread count). OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
removed from every measurement's environment (printed at start)."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_parrot import ENV_DROP, LLM_SHAPES, build_llm, convert, w_limits, weight_bytes_per_token  # noqa: E402

PROMPT = 64
BATCHES = (1, 2, 4, 8)


def _decode_together(core, ctxs, tokens):
    """One step of every sequence: the core's batched decode when it has one, else one call per sequence."""
    batched = getattr(core, "decode_batch", None)
    if batched is not None:
        return batched(ctxs, np.asarray(tokens, dtype=np.int32))
    return [c.decode(np.asarray([t], dtype=np.int32)) for c, t in zip(ctxs, tokens)]


def w_decode(spec):
    """Aggregate tokens/s of B sequences, one at a time and concurrently, for each B."""
    sys.path.insert(0, ROOT)
    import parrot

    m = parrot.load(spec["path"], threads=spec["threads"])
    core, steps, V = m._core, spec["steps"], m.config["vocab_size"]
    rng = np.random.default_rng(0)

    def fresh(b):
        ctxs = [core.new_context(PROMPT + steps + 1, kv_type="f16") for _ in range(b)]
        for c in ctxs:
            c.decode(rng.integers(0, V, PROMPT).astype(np.int32))
        return ctxs

    warm = fresh(1)[0]  # page in the weights and start the pool before anything is timed
    for tok in rng.integers(0, V, steps).astype(np.int32):
        warm.decode(np.asarray([tok], dtype=np.int32))
    def one_at_a_time(ctxs, toks):
        for c, row in zip(ctxs, toks):
            for tok in row:
                c.decode(np.asarray([tok], dtype=np.int32))

    def together(ctxs, toks):
        for s in range(toks.shape[1]):
            _decode_together(core, ctxs, toks[:, s])

    out = {}
    for b in BATCHES:
        toks = rng.integers(0, V, (b, steps)).astype(np.int32)
        best = {}
        for _ in range(spec["repeats"]):  # alternated, best of each: the least disturbed run on a shared machine
            for name, fn in (("one_tps", one_at_a_time), ("together_tps", together)):
                ctxs = fresh(b)
                t = time.perf_counter()
                fn(ctxs, toks)
                best[name] = max(best.get(name, 0.0), b * steps / (time.perf_counter() - t))
        out[b] = best
    out["batched_call"] = hasattr(core, "decode_batch")
    return out


def flops_per_token(name):
    """Matrix FLOPs of one decoded token: every projection and the lm_head (attention at PROMPT positions is
    small beside them and left out, which makes the compute bound a little higher, never lower)."""
    s = LLM_SHAPES[name]
    d, ff, L, V = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    return 2 * (L * (2 * d * d + 2 * d * kv + 3 * d * ff) + V * d)


def run_worker(fn, spec, env):
    code = (f"import json, sys; sys.path.insert(0, {HERE!r}); import bench_serve as b; "
            f"print('RESULT' + json.dumps(b.{fn}(json.loads(sys.argv[1]))))")
    p = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], env=env, capture_output=True, text=True)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT")]
    if p.returncode or not lines:
        raise RuntimeError(f"{fn} failed:\n{p.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT"):])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llm", default="0.5b", choices=sorted(LLM_SHAPES))
    ap.add_argument("--dtype", default="q8_0")
    ap.add_argument("--steps", type=int, default=16, help="tokens each sequence decodes")
    ap.add_argument("--repeats", type=int, default=3, help="best of this many runs of each measurement")
    ap.add_argument("--workdir", default="/tmp/parrot-bench-serve")
    ap.add_argument("--out", help="append the markdown table to this file")
    a = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ENV_DROP}
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    print(f"removed from every measurement's environment: {', '.join(ENV_DROP)}", file=sys.stderr)
    os.makedirs(a.workdir, exist_ok=True)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    path = convert(build_llm(a.workdir, a.llm, log), os.path.join(a.workdir, f"qwen-{a.llm}-{a.dtype}.gguf"),
                   a.dtype, log)
    lim = run_worker("w_limits", {"threads": a.threads}, env)
    res = run_worker("w_decode", {"path": path, "threads": a.threads, "steps": a.steps,
                                         "repeats": a.repeats}, env)
    lim_after = run_worker("w_limits", {"threads": a.threads}, env)
    bw = max(lim["read_gbps"], lim_after["read_gbps"]) * 1e9        # the best of both: the least disturbed
    sg = max(lim["sgemm_gflops"], lim_after["sgemm_gflops"]) * 1e9
    nbytes, flops = weight_bytes_per_token(path), flops_per_token(a.llm)
    step = "one batched call per step" if res["batched_call"] else \
        "one call per sequence per step (this core has no batched decode)"
    lines = [f"Command: `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_serve.py --llm {a.llm} "
             f"--dtype {a.dtype} --steps {a.steps} --repeats {a.repeats} --threads {a.threads}`  ",
             f"Qwen1.5-{a.llm} shape, {a.dtype} weights ({nbytes / 1e6:.0f} MB read per token, "
             f"{flops / 1e9:.2f} GFLOP per token), f16 KV cache, {PROMPT} prompt tokens, {a.steps} decoded tokens per "
             f"sequence, best of {a.repeats} runs, {a.threads} threads. Same run: read bandwidth {bw / 1e9:.1f} GB/s, sgemm "
             f"{sg / 1e9:.1f} GFLOP/s (best of a measurement before and after). Concurrent step: {step}.", "",
             "| B | one at a time tok/s | concurrent tok/s | concurrent ÷ one at a time | bound tok/s | "
             "concurrent % of bound (target 75 %) |", "|---|---|---|---|---|---|"]
    for b in BATCHES:
        r = res[str(b)]
        bound = min(b * bw / nbytes, sg / flops)
        lines.append(f"| {b} | {r['one_tps']:.2f} | {r['together_tps']:.2f} | "
                     f"{r['together_tps'] / r['one_tps']:.2f}× | {bound:.2f} | {100 * r['together_tps'] / bound:.0f} % |")
    lines += ["", "Bound for B sequences: min(B × read bandwidth ÷ bytes per token, sgemm rate ÷ FLOPs per token)."]
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
