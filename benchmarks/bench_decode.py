"""Decode speed against the memory-bandwidth bound, measured in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_decode.py [--threads 2]
        [--shapes 0.5b,1.8b] [--dtypes q8_0,q4_0] [--batch 2,4,8] [--llama] [--workdir /tmp/parrot-bench-decode]
        [--out FILE]

For each Qwen1.5 shape (benchmarks/bench_parrot.py's LLM_SHAPES) and weight dtype, a GGUF with random
weights is written straight in that dtype (no checkpoint, no conversion: random q8_0/q4_0 blocks with sane
scales). A fresh interpreter loads it, prefills PROMPT tokens into an f16 KV cache, then decodes STEPS tokens one
at a time; tokens/s is the best of REPEATS runs of those steps (the machine is shared; the best run is the one
least disturbed).

The bound is the same run's read bandwidth divided by the bytes one decoded token must read. The read
bandwidth is the higher of two probes in the same process: bench_parrot's 1 GiB sum with the same thread count,
and a read of the model's own weights (`read_tensors`: the very bytes a token reads, in the memory the loader
put them in; a probe over another buffer can land in faster or slower memory of this host). The bytes: every weight matrix (an untied token embedding only one row;
a tied one is the lm_head and read whole) plus the KV cache at the decode positions. The script also counts
thread-pool jobs (each wakes every worker once) per decoded token, and times our int8 kernel alone in the same
process (one activation row against a weight streamed from memory and one resident in L2, `_core.matmul`'s
C-side timing): the streamed rate against the probe says whether the products can use the bandwidth at all, and
decode against the streamed rate how much of a token is not the products. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are
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
from bench_parrot import ENV_DROP, LLM_SHAPES, cpu_info, decoder_tensors_per_token, write_llama_gguf  # noqa: E402

PROMPT, STEPS, REPEATS = 64, 16, 6
KERNEL_STREAM, KERNEL_L2 = 256 << 20, 1 << 20
BLOCK = {"q8_0": (34, [("d", "<f2"), ("qs", "i1", 32)]), "q4_0": (18, [("d", "<f2"), ("qs", "u1", 16)])}


def random_blocks(rng, dtype: str, rows: int, cols: int) -> np.ndarray:
    """rows × cols weights as random q8_0/q4_0 blocks (uint8 rows of the file's layout)."""
    nbytes, fields = BLOCK[dtype]
    blocks = np.zeros((rows, cols // 32), dtype=np.dtype(fields))
    # weights ~ N(0, 0.02): per-block scale max|w|/127 (q8_0) or /8 (q4_0), about 0.06 / that
    blocks["d"] = np.float16(0.06 / (127 if dtype == "q8_0" else 8))
    blocks["qs"] = rng.integers(-127, 128, blocks["qs"].shape) if dtype == "q8_0" else \
        rng.integers(0, 256, blocks["qs"].shape)
    return blocks.view(np.uint8).reshape(rows, cols // 32 * nbytes)


def write_random_gguf(path: str, shape: dict, dtype: str, seed: int = 0) -> str:
    """A parrot GGUF of the given Qwen2 shape, matrices as random dtype blocks, vectors f32."""
    import gguf

    rng = np.random.default_rng(seed)
    d, ff, L, V = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    H, Hkv = shape["num_attention_heads"], shape["num_key_value_heads"]
    kv = d // H * Hkv
    w = gguf.GGUFWriter(path + ".tmp", "parrot")
    for key, val in (("parrot.vocab_size", V), ("parrot.embedding_length", d), ("parrot.block_count", L),
                     ("parrot.feed_forward_length", ff), ("parrot.attention.head_count", H),
                     ("parrot.attention.head_count_kv", Hkv), ("parrot.context_length", 32768)):
        w.add_uint32(key, val)
    w.add_bool("parrot.tie_word_embeddings", bool(shape["tie_word_embeddings"]))
    qtype = getattr(gguf.GGMLQuantizationType, dtype.upper())

    def matrix(name, rows, cols):
        w.add_tensor(name, random_blocks(rng, dtype, rows, cols), raw_dtype=qtype)

    def vector(name, n, lo=0.9, hi=1.1):
        w.add_tensor(name, rng.uniform(lo, hi, n).astype(np.float32))

    matrix("token_embd.weight", V, d)
    vector("output_norm.weight", d)
    if not shape["tie_word_embeddings"]:
        matrix("output.weight", V, d)
    for i in range(L):
        p = f"blk.{i}."
        vector(p + "attn_norm.weight", d)
        vector(p + "ffn_norm.weight", d)
        matrix(p + "attn_q.weight", d, d)
        matrix(p + "attn_k.weight", kv, d)
        matrix(p + "attn_v.weight", kv, d)
        for n, k in (("q", d), ("k", kv), ("v", kv)):
            vector(p + f"attn_{n}.bias", k, -0.1, 0.1)
        matrix(p + "attn_output.weight", d, d)
        matrix(p + "ffn_gate.weight", ff, d)
        matrix(p + "ffn_up.weight", ff, d)
        matrix(p + "ffn_down.weight", d, ff)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(path + ".tmp", path)
    return path


def bytes_per_token(shape: dict, dtype: str, position: int) -> int:
    """Weights one decoded token reads plus its f16 KV cache reads at `position` cached positions."""
    d, ff, L, V = shape["hidden_size"], shape["intermediate_size"], shape["num_hidden_layers"], shape["vocab_size"]
    kv = d // shape["num_attention_heads"] * shape["num_key_value_heads"]
    per_elt = BLOCK[dtype][0] / 32
    layer = (2 * d * d + 2 * d * kv + 3 * d * ff) * per_elt + (4 * d + 2 * kv) * 4
    head = V * d * per_elt + (0 if shape["tie_word_embeddings"] else d * per_elt)  # + one embedding row
    return int(L * layer + head + L * 2 * kv * 2 * position)


# ------------------------------------------------------------------------------------------------ worker
def w_decode(spec):
    """Interleaves REPEATS samples of the read bandwidth (bench_parrot's probe: a 1 GiB f32 sum with the same
    thread count) and of decoding STEPS tokens, in one process, so both see the same machine; best of each."""
    sys.path.insert(0, ROOT)
    import torch

    torch.set_num_threads(spec["threads"])
    probe = torch.ones(256 * 1024 * 1024)
    probe.sum()
    if spec.get("llama"):
        return w_llama_decode(spec, probe)
    import parrot

    from parrot import _core

    m = parrot.load(spec["path"], threads=spec["threads"])
    core = m._core
    ids = np.random.default_rng(1).integers(0, m.config["vocab_size"], PROMPT + STEPS + 1).astype(np.int32)
    # the int8 kernel alone, one activation row of the model's width (as decode's q/k/v/gate/up products) against
    # a weight of the file's dtype: streamed from memory (KERNEL_STREAM bytes, ≫ L3) and resident in L2
    # (KERNEL_L2 bytes: half on each of 2 threads)
    rng, dt, cols = np.random.default_rng(2), spec["dtype"], m.config["hidden_size"]
    row = cols // 32 * BLOCK[dt][0]
    streamed, resident = (random_blocks(rng, dt, n // row, cols) for n in (KERNEL_STREAM, KERNEL_L2))
    x = rng.standard_normal((1, cols), dtype=np.float32)
    kernel = {"stream": [], "l2": []}
    bw, wbw, tps, jobs = [], [], [], None
    weights = decoder_tensors_per_token(t[0] for t in core.tensors())
    for _ in range(REPEATS):
        t = time.perf_counter()
        probe.sum()
        bw.append(probe.numel() * 4 / (time.perf_counter() - t) / 1e9)
        nbytes, sec, _ = core.read_tensors(weights, 1)  # the weights a token reads, where the loader put them
        wbw.append(nbytes / sec / 1e9)
        for key, w, reps in (("stream", streamed, 2), ("l2", resident, 200)):
            _, sec = _core.matmul(w, dt, cols, x, threads=spec["threads"], repeat=reps)
            kernel[key].append(w.nbytes / sec / 1e9)
        ctx = core.new_context(PROMPT + STEPS + 1, kv_type="f16")
        ctx.decode(ids[:PROMPT], logits=False)
        ctx.decode(ids[PROMPT:PROMPT + 1])   # first step untimed: first touch of the activations
        jobs0 = core.pool_runs
        t = time.perf_counter()
        for i in range(PROMPT + 1, PROMPT + 1 + STEPS):
            ctx.decode(ids[i:i + 1])
        tps.append(STEPS / (time.perf_counter() - t))
        jobs = (core.pool_runs - jobs0) / STEPS
    res = dict(read_samples=bw, weights_read_samples=wbw, decode_samples=tps,
               read_gbps=max(bw), read_gbps_median=float(np.median(bw)), weights_read_gbps=max(wbw),
               weights_read_gbps_median=float(np.median(wbw)), decode_tps=max(tps),
               decode_tps_median=float(np.median(tps)), jobs_per_token=jobs, kernel_stream_gbps=max(kernel["stream"]),
               kernel_l2_gbps=max(kernel["l2"]))
    for B in spec.get("batch", []):
        # B sequences advanced together (pr_decode_batch): aggregate tokens/s, best of REPEATS
        best = 0.0
        for _ in range(REPEATS):
            ctxs = [core.new_context(PROMPT + STEPS + 1, kv_type="f16") for _ in range(B)]
            for c in ctxs:
                c.decode(ids[:PROMPT], logits=False)
            toks = np.repeat(ids[PROMPT:PROMPT + 1], B)
            core.decode_batch(ctxs, toks)
            t = time.perf_counter()
            for i in range(PROMPT + 1, PROMPT + 1 + STEPS):
                core.decode_batch(ctxs, np.repeat(ids[i:i + 1], B))
            best = max(best, B * STEPS / (time.perf_counter() - t))
        res[f"batch{B}_tps"] = best
    return res


def w_llama_decode(spec, probe):
    """The same interleaving with llama.cpp (llama-cpp-python) decoding the same weights (a `qwen2` copy of the
    file, bench_parrot.write_llama_gguf), f16 KV cache (its default), the same positions."""
    from llama_cpp import Llama

    llm = Llama(model_path=spec["path"], n_ctx=PROMPT + STEPS + 8, n_threads=spec["threads"],
                n_threads_batch=spec["threads"], verbose=False)
    ids = np.random.default_rng(1).integers(0, llm.n_vocab(), PROMPT + STEPS + 1).tolist()
    bw, tps = [], []
    for _ in range(REPEATS):
        t = time.perf_counter()
        probe.sum()
        bw.append(probe.numel() * 4 / (time.perf_counter() - t) / 1e9)
        llm.reset()
        llm.eval(ids[:PROMPT + 1])  # the prompt, and the first step untimed as ours
        t = time.perf_counter()
        for i in range(PROMPT + 1, PROMPT + 1 + STEPS):
            llm.eval(ids[i:i + 1])
        tps.append(STEPS / (time.perf_counter() - t))
    return dict(read_samples=bw, decode_samples=tps,
                read_gbps=max(bw), read_gbps_median=float(np.median(bw)), decode_tps=max(tps),
                decode_tps_median=float(np.median(tps)), jobs_per_token=None)


def bound_gbps(r: dict, stat: str = "") -> float:
    """The read rate a row's bound uses: the higher of the probe and the read of the model's own weights (llama.cpp
    rows: the probe alone); stat "" = best, "_median" = medians"""
    return max(r["read_gbps" + stat], r.get("weights_read_gbps" + stat, 0.0))


def paired_pct(r: dict, need: int) -> float:
    """The median over the interleaved samples of decode ÷ bound, each decode run against the read rates sampled
    just before it (the same machine state; best ÷ best pairs the luckiest moments of two different minutes)"""
    ws = r.get("weights_read_samples") or [0.0] * len(r["read_samples"])
    return float(np.median([100 * d * need / 1e9 / max(p, w)
                            for p, w, d in zip(r["read_samples"], ws, r["decode_samples"])]))


def run_worker(spec, env):
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)], env=env,
                       capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        raise SystemExit(f"worker failed: {r.stderr.strip()[-2000:]}")
    return json.loads(lines[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", default="0.5b,1.8b")
    ap.add_argument("--dtypes", default="q8_0,q4_0")
    ap.add_argument("--workdir", default="/tmp/parrot-bench-decode")
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--batch", default="", help="also measure batched decoding of these numbers of sequences, "
                    "e.g. 2,4,8 (aggregate tokens/s)")
    ap.add_argument("--llama", action="store_true", help="also decode each file with llama.cpp (llama-cpp-python, "
                    "the `bench` extra) on a `qwen2` copy of the same weights, OMP_WAIT_POLICY=PASSIVE")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(w_decode(spec)))
        return 0
    env = dict(os.environ)
    dropped = {k: env.pop(k) for k in ENV_DROP if k in env}
    print(f"unset {' and '.join(ENV_DROP)} for every measurement (were: {dropped if dropped else 'not set'})",
          flush=True)
    os.makedirs(args.workdir, exist_ok=True)
    rows = []
    for name in args.shapes.split(","):
        for dt in args.dtypes.split(","):
            path = os.path.join(args.workdir, f"qwen-{name}-{dt}.gguf")
            if not os.path.exists(path):
                print(f"writing {path} ...", flush=True)
                write_random_gguf(path, LLM_SHAPES[name], dt)
            batch = [int(b) for b in args.batch.split(",") if b]
            r = run_worker(dict(path=path, dtype=dt, threads=args.threads, batch=batch), env)
            need = bytes_per_token(LLM_SHAPES[name], dt, PROMPT + STEPS // 2)
            rows.append(("ours", name, dt, need, r))
            if args.llama:
                lp = write_llama_gguf(path, os.path.join(args.workdir, f"qwen-{name}-{dt}-llamacpp.gguf"),
                                      lambda s: print(s, flush=True))
                # OpenMP threads that spin at barriers stall each other on a shared machine (see bench_parrot.py)
                rl = run_worker(dict(path=lp, threads=args.threads, llama=True), dict(env, OMP_WAIT_POLICY="PASSIVE"))
                rows.append(("llama.cpp", name, dt, need, rl))
            for who, _, _, _, r in rows[-2 if args.llama else -1:]:
                print(f"  {who} {name} {dt}: {r['decode_tps']:.2f} tok/s (median {r['decode_tps_median']:.2f}), "
                      f"probe {r['read_gbps']:.1f} GB/s (median {r['read_gbps_median']:.1f}), weights read "
                      f"{r.get('weights_read_gbps', 0):.1f} GB/s (median {r.get('weights_read_gbps_median', 0):.1f}): "
                      f"{100 * r['decode_tps'] * need / 1e9 / bound_gbps(r):.0f} % of the bound (paired median "
                      f"{paired_pct(r, need):.0f} %)", flush=True)
    shown = [a for a in (sys.argv[1:] if argv is None else argv)]
    if "--out" in shown:
        i = shown.index("--out")
        del shown[i:i + 2]
    cmd = " ".join(["env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_decode.py"] + shown)
    model, flags, _ = cpu_info()
    out = [f"CPU: {model}; SIMD flags: {flags}", "",
           f"Command: `{cmd}` — {args.threads} threads, f16 KV cache, decode at positions {PROMPT}..{PROMPT + STEPS}. "
           f"One process per row interleaves {REPEATS} samples of the read bandwidth (1 GiB f32 sum, "
           f"{args.threads} threads) with {REPEATS} runs of {STEPS} decoded tokens; the table gives the best of "
           f"each (medians in brackets); 'paired' is the median over the {REPEATS} samples of each decode run "
           f"against the read rates sampled just before it. Our rows also read the model's own weights ({REPEATS} "
           "times, `read_tensors`: every byte a decoded token reads, in the memory the loader put them in, on the "
           "same threads); the bound = the higher of the two read rates ÷ bytes per token (llama.cpp rows: the "
           "probe).", "",
           "| engine | shape | weights | MB read per token | probe GB/s | weights read GB/s | bound tok/s | "
           "decode tok/s | decode GB/s | % of bound | % of bound, paired | pool jobs per token |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for who, name, dt, need, r in rows:
        bound, bound_med = bound_gbps(r) * 1e9 / need, bound_gbps(r, "_median") * 1e9 / need
        jobs = "—" if r["jobs_per_token"] is None else f"{r['jobs_per_token']:.0f}"
        wr = (f"{r['weights_read_gbps']:.1f} ({r['weights_read_gbps_median']:.1f})" if "weights_read_gbps" in r
              else "—")
        out.append(f"| {who} | Qwen1.5-{name.upper()} | {dt} | {need / 1e6:.0f} | {r['read_gbps']:.1f} "
                   f"({r['read_gbps_median']:.1f}) | {wr} | {bound:.1f} | {r['decode_tps']:.1f} ({r['decode_tps_median']:.1f}) | "
                   f"{r['decode_tps'] * need / 1e9:.1f} | {100 * r['decode_tps'] / bound:.0f} % "
                   f"({100 * r['decode_tps_median'] / bound_med:.0f} %) | {paired_pct(r, need):.0f} % | {jobs} |")
    out += ["", f"Our int8 kernel alone in the same processes ({args.threads} threads, one activation row of the "
            f"shape's width, best of {REPEATS}): streamed from a {KERNEL_STREAM >> 20} MiB weight of the row's dtype "
            f"and resident in L2 ({KERNEL_L2 >> 20} MiB). Kernel bound = the streamed rate ÷ bytes per token: what "
            "decoding would reach if the token were nothing but the products at that rate.", "",
            "| shape | weights | bound's read GB/s | kernel streamed GB/s (% of read) | kernel in L2 GB/s | kernel bound tok/s | "
            "decode % of kernel bound |", "|---|---|---|---|---|---|---|"]
    for who, name, dt, need, r in rows:
        if who == "ours":
            ks = r["kernel_stream_gbps"]
            out.append(f"| Qwen1.5-{name.upper()} | {dt} | {bound_gbps(r):.1f} | {ks:.1f} "
                       f"({100 * ks / bound_gbps(r):.0f} %) | {r['kernel_l2_gbps']:.1f} | {ks * 1e9 / need:.1f} | "
                       f"{100 * r['decode_tps'] * need / 1e9 / ks:.0f} % |")
    if args.llama:
        out += ["", "Ours ÷ llama.cpp on the same file and machine (decode tokens/s, best of runs; medians in "
                "brackets; > 1 = ours faster), and each against its own run's bound:", "",
                "| shape | weights | ours ÷ llama.cpp | ours % of bound (paired) | llama.cpp % of bound (paired) |",
                "|---|---|---|---|---|"]
        for (_, name, dt, need, r), (_, _, _, _, rl) in zip(rows[0::2], rows[1::2]):
            pct = lambda x: 100 * x["decode_tps"] * need / 1e9 / bound_gbps(x)
            out.append(f"| Qwen1.5-{name.upper()} | {dt} | {r['decode_tps'] / rl['decode_tps']:.2f}× "
                       f"({r['decode_tps_median'] / rl['decode_tps_median']:.2f}×) | {pct(r):.0f} % ({paired_pct(r, need):.0f} %) | "
                       f"{pct(rl):.0f} % ({paired_pct(rl, need):.0f} %) |")
    batch = [int(b) for b in args.batch.split(",") if b]
    if batch:
        out += ["", "Batched decoding (`Model.decode_batch`, one pass over the weights per 8 sequences): aggregate "
                "tokens/s of B sequences, best of the same number of runs, and the speed-up over one sequence "
                "(the decode column above).", "",
                "| shape | weights | " + " | ".join(f"B = {b}" for b in batch) + " |",
                "|---|---|" + "---|" * len(batch)]
        for who, name, dt, need, r in rows:
            if who != "ours":
                continue
            out.append(f"| Qwen1.5-{name.upper()} | {dt} | " + " | ".join(
                f"{r[f'batch{b}_tps']:.1f} ({r[f'batch{b}_tps'] / r['decode_tps']:.2f}×)" for b in batch) + " |")
    text = "\n".join(out)
    print("\n" + text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
