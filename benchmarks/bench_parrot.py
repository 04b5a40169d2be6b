"""parrot's benchmark: real Parrot shapes with random weights, beside PyTorch + transformers and llama.cpp.

    python benchmarks/bench_parrot.py [--threads 2] [--llm 0.5b,1.8b] [--workdir /tmp/parrot-bench]
                                      [--out benchmarks/RESULTS.md]

What is measured (same weights, same thread count, in one run):
  image encode  the CLIP ViT-L/14-336 tower (up to select_layer −2), the mlp2x_gelu projector to hidden 4096
                and the 6 MoE experts at hidden 4096 / 4096, each in ms: ours (f32, bf16, q8_0 files) and
                PyTorch fp32 / bf16 (Parrot's reference modules, training/modeling_parrot.py)
  LLM           Qwen1.5-0.5B and Qwen1.5-1.8B shapes: prefill tokens/s at 600 tokens, decode tokens/s at
                context 700, load time, peak RSS: ours (q8_0, q4_0; f32/bf16 for 0.5B), PyTorch fp32 / bf16, and
                llama.cpp (llama-cpp-python) on the same LLM written as a standard `qwen2` GGUF holding the very
                tensors of our file (same quantisation, byte for byte)
  machine       sgemm GFLOP/s (PyTorch's fp32 GEMM, 2048³) and memory read bandwidth (a 1 GiB sum)

Every engine runs in its own subprocess (so peak RSS is its own). All files are written first, so every
engine loads from a warm page cache. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are removed from the
environment of every measurement (printed at start): OpenBLAS then picks its kernels from the CPU itself.
Our decode uses an f16 KV cache, as llama.cpp does by default. Importable: main(argv) is `parrot bench`."""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

LLM_SHAPES = {  # Qwen1.5 configurations (config.json of Qwen/Qwen1.5-0.5B and -1.8B)
    "0.5b": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=151936, tie_word_embeddings=True),
    "1.8b": dict(hidden_size=2048, intermediate_size=5504, num_hidden_layers=24, num_attention_heads=16,
                 num_key_value_heads=16, vocab_size=151936, tie_word_embeddings=False),
    # Parrot-7B's and -14B's LLMs (Qwen1.5-7B-Chat, Qwen1.5-14B-Chat): benchmarks/bench_full.py
    "7b": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
               num_key_value_heads=32, vocab_size=151936, tie_word_embeddings=False),
    "14b": dict(hidden_size=5120, intermediate_size=13696, num_hidden_layers=40, num_attention_heads=40,
                num_key_value_heads=40, vocab_size=152064, tie_word_embeddings=False),
    # a small model to check the harness itself quickly (--llm test --no-vision)
    "test": dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=1000, tie_word_embeddings=False),
}
PREFILL, CONTEXT, DECODE = 600, 700, 32
IMAGE = 336
ENV_DROP = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the forking parent's)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ------------------------------------------------------------------------------------------------ workers
def w_limits(spec):
    import torch

    torch.set_num_threads(spec["threads"])
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    torch.mm(a, b)
    best = min(_timed(lambda: torch.mm(a, b)) for _ in range(5))
    x = torch.ones(256 * 1024 * 1024)  # 1 GiB of f32
    x.sum()
    bw = min(_timed(lambda: x.sum()) for _ in range(5))
    return dict(sgemm_gflops=2 * 2048 ** 3 / best / 1e9, read_gbps=x.numel() * 4 / bw / 1e9)


def _timed(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def w_ours_vision(spec):
    sys.path.insert(0, ROOT)
    import parrot

    t = time.perf_counter()
    m = parrot.load(spec["path"], threads=spec["threads"])
    load = time.perf_counter() - t
    px = np.random.default_rng(0).normal(size=(3, IMAGE, IMAGE)).astype(np.float32)
    core = m._core
    core.project(core.vision_features(px)[:4])  # touch the code paths once
    out = {}
    t = time.perf_counter(); F = core.vision_features(px); out["vit_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter(); X = core.project(F); out["projector_ms"] = (time.perf_counter() - t) * 1e3
    t = time.perf_counter(); core.moe_experts(X); out["moe_ms"] = (time.perf_counter() - t) * 1e3
    out.update(load_s=load, rss_mb=peak_rss_mb(), isa=parrot._core.kernel_isa())
    return out


def w_torch_vision(spec):
    sys.path.insert(0, ROOT)
    import torch

    from training.modeling_parrot import ParrotQwen2ForCausalLM

    torch.set_num_threads(spec["threads"])
    dtype = getattr(torch, spec["dtype"])
    t = time.perf_counter()
    model = ParrotQwen2ForCausalLM.from_pretrained(spec["hf"], dtype=dtype).eval()
    load = time.perf_counter() - t
    px = torch.from_numpy(np.random.default_rng(0).normal(size=(1, 3, IMAGE, IMAGE)).astype(np.float32)).to(dtype)
    vm = model.model.vision_tower.vision_tower.vision_model
    out = {}
    with torch.inference_mode():
        t = time.perf_counter()
        feats = vm(pixel_values=px, output_hidden_states=True).hidden_states[model.config.mm_vision_select_layer]
        out["vit_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter(); x = model.model.mm_projector(feats); out["projector_ms"] = (time.perf_counter() - t) * 1e3
        t = time.perf_counter()
        for e in model.model.moe_model.experts:
            e(x)
        out["moe_ms"] = (time.perf_counter() - t) * 1e3
    out.update(load_s=load, rss_mb=peak_rss_mb())
    return out


def _ids(n, vocab, seed=0):
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def w_ours_llm(spec):
    sys.path.insert(0, ROOT)
    import parrot

    t = time.perf_counter()
    m = parrot.load(spec["path"], threads=spec["threads"])
    load = time.perf_counter() - t
    ids = _ids(CONTEXT + DECODE, m.config["vocab_size"])
    ctx = m._core.new_context(CONTEXT + DECODE, kv_type="f16")
    t = time.perf_counter(); ctx.decode(ids[:PREFILL]); prefill = time.perf_counter() - t
    ctx.decode(ids[PREFILL:CONTEXT])
    t = time.perf_counter()
    for i in range(CONTEXT, CONTEXT + DECODE):
        ctx.decode(ids[i:i + 1])
    decode = time.perf_counter() - t
    return dict(load_s=load, prefill_tps=PREFILL / prefill, decode_tps=DECODE / decode, rss_mb=peak_rss_mb())


def w_torch_llm(spec):
    import torch
    from transformers import Qwen2ForCausalLM

    torch.set_num_threads(spec["threads"])
    t = time.perf_counter()
    model = Qwen2ForCausalLM.from_pretrained(spec["hf"], dtype=getattr(torch, spec["dtype"])).eval()
    load = time.perf_counter() - t
    ids = torch.from_numpy(_ids(CONTEXT + DECODE, model.config.vocab_size).astype(np.int64))[None]
    with torch.inference_mode():
        t = time.perf_counter()
        out = model(ids[:, :PREFILL], use_cache=True, logits_to_keep=1)
        prefill = time.perf_counter() - t
        out = model(ids[:, PREFILL:CONTEXT], past_key_values=out.past_key_values, use_cache=True, logits_to_keep=1)
        pkv = out.past_key_values
        t = time.perf_counter()
        for i in range(CONTEXT, CONTEXT + DECODE):
            pkv = model(ids[:, i:i + 1], past_key_values=pkv, use_cache=True).past_key_values
        decode = time.perf_counter() - t
    return dict(load_s=load, prefill_tps=PREFILL / prefill, decode_tps=DECODE / decode, rss_mb=peak_rss_mb())


def w_llama_llm(spec):
    from llama_cpp import Llama

    t = time.perf_counter()
    llm = Llama(model_path=spec["path"], n_ctx=CONTEXT + DECODE + 8, n_batch=1024, n_ubatch=1024,
                n_threads=spec["threads"], n_threads_batch=spec["threads"], verbose=False)
    load = time.perf_counter() - t
    ids = _ids(CONTEXT + DECODE, llm.n_vocab()).tolist()
    t = time.perf_counter(); llm.eval(ids[:PREFILL]); prefill = time.perf_counter() - t
    llm.eval(ids[PREFILL:CONTEXT])
    t = time.perf_counter()
    for i in range(CONTEXT, CONTEXT + DECODE):
        llm.eval(ids[i:i + 1])
    decode = time.perf_counter() - t
    return dict(load_s=load, prefill_tps=PREFILL / prefill, decode_tps=DECODE / decode, rss_mb=peak_rss_mb())


WORKERS = dict(limits=w_limits, ours_vision=w_ours_vision, torch_vision=w_torch_vision, ours_llm=w_ours_llm,
               torch_llm=w_torch_llm, llama_llm=w_llama_llm)


def run_as_worker(args, workers):
    """With --worker SPEC: runs workers[SPEC.kind] here and prints its JSON result (see run_worker)."""
    if not args.worker:
        return False
    spec = json.loads(args.worker)
    print(json.dumps(workers[spec["kind"]](spec)))
    return True


def measurement_env():
    """This environment without ENV_DROP (said on stdout): OpenBLAS then picks its kernels from the CPU."""
    env = dict(os.environ)
    dropped = {k: env.pop(k) for k in ENV_DROP if k in env}
    print(f"unset {' and '.join(ENV_DROP)} for every measurement of this benchmark (were: "
          f"{dropped if dropped else 'not set'})", flush=True)
    return env


def run_worker(spec, env, script=__file__):
    """Runs one measurement in a fresh interpreter (`script --worker SPEC`); returns its dict, or {'error': ...}."""
    label = f"{spec['kind']} {spec.get('dtype', '')} {os.path.basename(spec.get('path', spec.get('hf', '')))}"
    print(f"  running {label.strip()} ...", flush=True)
    r = subprocess.run([sys.executable, os.path.abspath(script), "--worker", json.dumps(spec)], env=env,
                       capture_output=True, text=True)
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if r.returncode or not lines:
        err = (r.stderr.strip().splitlines() or ["exit code %d" % r.returncode])[-1]
        print(f"    failed: {err}", flush=True)
        return {"error": err}
    res = json.loads(lines[-1])
    print("    " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()), flush=True)
    return res


# ------------------------------------------------------------------------------------------------ models
def build_vision(workdir, log):
    """A Parrot with Parrot-7B's image path (CLIP ViT-L/14-336, mlp2x_gelu to 4096, 6 experts 4096/4096) and a
    one-layer stand-in LLM of hidden 4096 (the LLM is benchmarked separately)."""
    hf = os.path.join(workdir, "vision-hf")
    if not os.path.exists(os.path.join(hf, "config.json")):
        sys.path.insert(0, ROOT)
        import torch

        from training.modeling_parrot import make_tiny_parrot

        log("building the random vision model (CLIP ViT-L/14-336 + projector + MoE at 4096) ...")
        model = make_tiny_parrot(0, vision_hidden_size=1024, vision_intermediate_size=4096,
                                 vision_num_hidden_layers=24, vision_num_attention_heads=16, vision_image_size=IMAGE,
                                 vision_patch_size=14, vision_projection_dim=768, hidden_size=4096,
                                 intermediate_size=256, num_hidden_layers=1, num_attention_heads=32,
                                 num_key_value_heads=32, vocab_size=512, moe_intermediate_size=4096)
        model.save_pretrained(hf, dtype=torch.float32)
        del model
    return hf


def build_llm(workdir, name, log):
    hf = os.path.join(workdir, f"qwen-{name}-hf")
    if not os.path.exists(os.path.join(hf, "config.json")):
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM

        log(f"building the random Qwen1.5-{name} shaped model ...")
        torch.manual_seed(0)
        cfg = Qwen2Config(**LLM_SHAPES[name], max_position_embeddings=32768, rope_theta=1e6, rms_norm_eps=1e-6)
        model = Qwen2ForCausalLM(cfg).eval()
        with torch.no_grad():  # transformers' init is slow for big matrices; N(0, 0.02) as its initializer_range
            for p in model.parameters():
                p.normal_(0, 0.02) if p.dim() > 1 else p.uniform_(0.5, 1.5)
        model.save_pretrained(hf, safe_serialization=True)
        del model
    return hf


def convert(hf, out, dtype, log):
    sys.path.insert(0, ROOT)
    import parrot

    if not os.path.exists(out):
        log(f"converting {os.path.basename(hf)} to {dtype} ...")
        parrot.convert(hf, out, dtype=dtype, progress=False, log=lambda s: None)
    return out


def write_llama_gguf(ours, out, log):
    """Our file's tensors, byte for byte, under llama.cpp's `qwen2` architecture keys. Tensor names already are
    llama.cpp's. The random model has no tokenizer: a byte-level vocabulary stands in (ids are fed directly)."""
    if os.path.exists(out):
        return out
    import gguf

    log(f"writing {os.path.basename(out)} for llama.cpp ...")
    r = gguf.GGUFReader(ours)
    f = {k: v for k, v in r.fields.items()}
    val = lambda k, default=None: f[k].parts[f[k].data[0]][0].item() if k in f else default
    w = gguf.GGUFWriter(out, "qwen2")
    n_vocab = int(val("parrot.vocab_size"))
    w.add_context_length(int(val("parrot.context_length")))
    w.add_embedding_length(int(val("parrot.embedding_length")))
    w.add_block_count(int(val("parrot.block_count")))
    w.add_feed_forward_length(int(val("parrot.feed_forward_length")))
    w.add_head_count(int(val("parrot.attention.head_count")))
    w.add_head_count_kv(int(val("parrot.attention.head_count_kv")))
    # absent keys: our loader's defaults (csrc/model/config.c)
    w.add_rope_freq_base(float(val("parrot.rope.freq_base", 1e6)))
    w.add_layer_norm_rms_eps(float(val("parrot.attention.layer_norm_rms_epsilon", 1e-6)))
    if "general.file_type" in f:
        w.add_file_type(int(val("general.file_type")))
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):  # GPT-2's byte-to-unicode table: every byte is a token
        if b not in bs:
            bs.append(b), cs.append(256 + n)
            n += 1
    # one merge ("!" + "!" → "!!"): llama.cpp refuses a BPE vocabulary without merges
    tokens = [chr(c) for c in cs] + ["!!"] + [f"<t{i}>" for i in range(257, n_vocab)]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("qwen2")
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * n_vocab)
    w.add_token_merges(["! !"])
    w.add_eos_token_id(n_vocab - 1)
    w.add_bos_token_id(n_vocab - 1)
    for t in r.tensors:
        data = np.asarray(t.data)
        if t.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16):
            w.add_tensor(t.name, data)
        else:
            w.add_tensor(t.name, data.view(np.uint8), raw_dtype=t.tensor_type)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


def cpu_info():
    """(model name with its family/model/stepping — the same name covers CPUs of different generations —, the
    SIMD flags, the number of logical CPUs)"""
    model, ids, flags = platform.processor() or "?", {}, []
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, val = line.partition(":")
                key, val = key.strip(), val.strip()
                if key == "model name" and model in ("?", "", "x86_64"):
                    model = val
                elif key in ("cpu family", "model", "stepping") and key not in ids:
                    ids[key] = val
                elif key == "flags":
                    flags = val.split()
                    break
    except OSError:
        pass
    if ids:
        model += " (" + ", ".join(f"{k} {v}" for k, v in ids.items()) + ")"
    keep = [f for f in flags if f.startswith(("avx", "fma", "f16c", "amx"))]
    return model, " ".join(keep), os.cpu_count()


def decoder_tensors_per_token(names):
    """Of a GGUF's tensor names, those one decoded token reads whole: the decoder's layers, its final norm and
    the lm_head (`output.weight`, or the token embedding when tied); an untied token embedding is read one row
    at a time and is left out, as are a Parrot file's vision tower (`v.`), projector (`mm.`) and experts
    (`moe.`), which run once per image."""
    names = set(names)
    return sorted(n for n in names if n.startswith(("blk.", "output")) or
                  (n == "token_embd.weight" and "output.weight" not in names))


def weight_bytes_per_token(path):
    """Bytes of the weights one decoded token reads (decoder_tensors_per_token's tensors)."""
    import gguf

    r = gguf.GGUFReader(path)
    read = set(decoder_tensors_per_token(t.name for t in r.tensors))
    return sum(int(t.n_bytes) for t in r.tensors if t.name in read)


# ------------------------------------------------------------------------------------------------ report
def vision_flops(d_llm=4096):
    """CLIP-L/336 to layer −2, the projector to the LLM's width d_llm and 6 experts of d_llm × 4096"""
    n, d, ff, L = (IMAGE // 14) ** 2 + 1, 1024, 4096, 23
    vit = L * (2 * n * (4 * d * d + 2 * d * ff) + 4 * n * n * d) + 2 * (n - 1) * 588 * d
    proj = 2 * n * (d * d_llm + d_llm * d_llm)
    moe = 6 * 2 * n * 3 * d_llm * 4096
    return dict(vit=vit, projector=proj, moe=moe)


def prefill_flops(name, n=PREFILL):
    """Matrix products of n prompt positions, causal attention (2·n²·d per layer for QKᵀ and PV together) and
    the lm_head of the last position only (what a prefill computes)."""
    s = LLM_SHAPES[name]
    d, ff, L, V = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    return 2 * n * L * (2 * d * d + 2 * d * kv + 3 * d * ff) + 2 * L * n ** 2 * d + 2 * V * d


def fmt(x, nd=1):
    return "—" if x is None else f"{x:.{nd}f}"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--llm", default="0.5b,1.8b", help="LLM shapes to run: 0.5b, 1.8b")
    ap.add_argument("--no-vision", action="store_true")
    ap.add_argument("--workdir", default=os.path.join("/tmp", "parrot-bench"))
    ap.add_argument("--out", default=os.path.join(HERE, "RESULTS.md"))
    ap.add_argument("--omp-active", action="store_true",
                    help="leave OpenMP's default spin-waiting (OMP_WAIT_POLICY unset) for llama.cpp and PyTorch")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if run_as_worker(args, WORKERS):
        return 0

    env = measurement_env()
    if not args.omp_active:
        # llama.cpp and PyTorch use OpenMP, whose threads spin at every barrier by default: on a machine shared
        # with other work a descheduled spinner stalls all the others (llama.cpp decode fell from ~16 to ~0.4
        # tokens/s here). Passive waiting is what such a machine needs; our pool always sleeps on a condvar.
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        print("OMP_WAIT_POLICY=PASSIVE for the peers (OpenMP threads sleep instead of spinning; --omp-active "
              "to keep the default)", flush=True)
    T, log = args.threads, (lambda s: print(s, flush=True))
    os.makedirs(args.workdir, exist_ok=True)
    try:
        import llama_cpp  # noqa: F401
        have_llama = True
    except ImportError as e:
        have_llama = False
        print(f"llama-cpp-python is not importable ({e}); llama.cpp columns stay empty", flush=True)

    results = {"limits": run_worker(dict(kind="limits", threads=T), env)}
    if not args.no_vision:
        hf = build_vision(args.workdir, log)
        vis = {}
        for dt in ("f32", "bf16", "q8_0"):
            path = convert(hf, os.path.join(args.workdir, f"vision-{dt}.gguf"), dt, log)
            vis[f"ours {dt}"] = run_worker(dict(kind="ours_vision", path=path, threads=T), env)
        for dt in ("float32", "bfloat16"):
            vis[f"torch {dt}"] = run_worker(dict(kind="torch_vision", hf=hf, dtype=dt, threads=T), env)
        results["vision"] = vis
    for name in [s for s in args.llm.split(",") if s]:
        hf = build_llm(args.workdir, name, log)
        res, sizes = {}, {}
        dts = ("q8_0", "q4_0") if name == "1.8b" else ("f32", "bf16", "q8_0", "q4_0")
        for dt in dts:
            path = convert(hf, os.path.join(args.workdir, f"qwen-{name}-{dt}.gguf"), dt, log)
            sizes[dt] = dict(file_mb=os.path.getsize(path) / 2 ** 20, read_per_token=weight_bytes_per_token(path))
            res[f"ours {dt}"] = run_worker(dict(kind="ours_llm", path=path, threads=T), env)
            if have_llama and dt in ("q8_0", "q4_0"):
                lp = write_llama_gguf(path, os.path.join(args.workdir, f"qwen-{name}-{dt}-llamacpp.gguf"), log)
                res[f"llama.cpp {dt}"] = run_worker(dict(kind="llama_llm", path=lp, threads=T), env)
        # PyTorch bf16 has no bf16 arithmetic on CPUs without AVX512_BF16/AMX and runs ~4x slower than fp32;
        # for 1.8B that costs ~10 minutes for little information, so it runs for the smaller shapes only
        for dt in ("float32",) if name == "1.8b" else ("float32", "bfloat16"):
            res[f"torch {dt}"] = run_worker(dict(kind="torch_llm", hf=hf, dtype=dt, threads=T), env)
        results[f"llm {name}"] = dict(runs=res, sizes=sizes)
    text = report(results, T, argv, "" if args.omp_active else
                  "OMP_WAIT_POLICY=PASSIVE was set for every measurement (llama.cpp and PyTorch use OpenMP; "
                  "see the script).")
    print("\n" + text)
    with open(args.out, "w", encoding="utf-8") as f:
        f.write(text)
    print(f"written to {args.out}")
    return 0


def report(results, T, argv, omp_note):
    lim = results["limits"]
    sg, bw = lim.get("sgemm_gflops"), lim.get("read_gbps")
    cmd = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_parrot.py" + (
        " " + " ".join(argv) if argv else "")
    out = ["# parrot benchmark results", "",
           f"Command (from the repository root): `{cmd}`  ",
           "(the script itself also removes OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE from every measurement's "
           "environment and says so)", "",
           f"Threads: {T} for every engine. Machine limits measured in the same run: sgemm {fmt(sg)} GFLOP/s "
           f"(PyTorch fp32 GEMM 2048³), memory read bandwidth {fmt(bw)} GB/s (1 GiB sum). {omp_note}", ""]
    if "vision" in results:
        v, fl = results["vision"], vision_flops()
        out += ["## Image encode (CLIP ViT-L/14-336 to layer −2, projector to 4096, 6 MoE experts 4096/4096)", "",
                "| engine | ViT ms | projector ms | MoE ms | total ms | ViT GFLOP/s (% of sgemm) | load s | peak RSS MB |",
                "|---|---|---|---|---|---|---|---|"]
        for k, r in v.items():
            if "error" in r:
                out.append(f"| {k} | failed: {r['error']} | | | | | | |")
                continue
            tot = r["vit_ms"] + r["projector_ms"] + r["moe_ms"]
            g = fl["vit"] / r["vit_ms"] / 1e6
            out.append(f"| {k} | {fmt(r['vit_ms'], 0)} | {fmt(r['projector_ms'], 0)} | {fmt(r['moe_ms'], 0)} | "
                       f"{fmt(tot, 0)} | {fmt(g)} ({fmt(100 * ratio(g, sg), 0)} %) | {fmt(r['load_s'], 2)} | "
                       f"{fmt(r['rss_mb'], 0)} |")
        out += ["", "Speed-up of ours over PyTorch (peer time / our time, > 1 = ours faster):", "",
                "| ours | peer | ViT | projector | MoE | total |", "|---|---|---|---|---|---|"]
        for ours, peer in (("ours f32", "torch float32"), ("ours bf16", "torch bfloat16"), ("ours q8_0", "torch float32"),
                           ("ours q8_0", "torch bfloat16"), ("ours bf16", "torch float32")):
            a, b = v.get(ours, {}), v.get(peer, {})
            if "vit_ms" not in a or "vit_ms" not in b:
                continue
            ta, tb = (a["vit_ms"] + a["projector_ms"] + a["moe_ms"]), (b["vit_ms"] + b["projector_ms"] + b["moe_ms"])
            out.append(f"| {ours} | {peer} | {fmt(ratio(b['vit_ms'], a['vit_ms']), 2)}× | "
                       f"{fmt(ratio(b['projector_ms'], a['projector_ms']), 2)}× | {fmt(ratio(b['moe_ms'], a['moe_ms']), 2)}× | "
                       f"{fmt(ratio(tb, ta), 2)}× |")
        out.append("")
    for key in [k for k in results if k.startswith("llm ")]:
        name = key.split()[1]
        runs, sizes = results[key]["runs"], results[key]["sizes"]
        fl = prefill_flops(name)
        out += [f"## LLM: Qwen1.5-{name.upper()} shape (prefill {PREFILL} tokens, decode at context {CONTEXT})", "",
                "| engine | prefill tok/s | prefill GFLOP/s (% of sgemm) | decode tok/s | decode % of bandwidth bound "
                "| load s | peak RSS MB | file MB |", "|---|---|---|---|---|---|---|---|"]
        for k, r in runs.items():
            if "error" in r:
                out.append(f"| {k} | failed: {r['error']} | | | | | | |")
                continue
            dt = k.split()[-1]
            sz = sizes.get(dt)
            g = fl * r["prefill_tps"] / PREFILL / 1e9
            bound = bw * 1e9 / sz["read_per_token"] if sz and bw else None
            out.append(f"| {k} | {fmt(r['prefill_tps'])} | {fmt(g)} ({fmt(100 * ratio(g, sg), 0)} %) | "
                       f"{fmt(r['decode_tps'], 2)} | {fmt(100 * ratio(r['decode_tps'], bound), 0) if bound else '—'} "
                       f"{'%' if bound else ''} | {fmt(r['load_s'], 2)} | {fmt(r['rss_mb'], 0)} | "
                       f"{fmt(sz['file_mb'], 0) if sz else '—'} |")
        out += ["", "Ratios ours / peer (throughput; > 1 = ours faster):", "",
                "| ours | peer | prefill | decode | load time (peer/ours) | peak RSS (ours/peer) |",
                "|---|---|---|---|---|---|"]
        pairs = [("ours q8_0", "llama.cpp q8_0"), ("ours q4_0", "llama.cpp q4_0"), ("ours f32", "torch float32"),
                 ("ours bf16", "torch bfloat16"), ("ours q8_0", "torch float32"), ("ours q8_0", "torch bfloat16")]
        for ours, peer in pairs:
            a, b = runs.get(ours, {}), runs.get(peer, {})
            if "prefill_tps" not in a or "prefill_tps" not in b:
                continue
            out.append(f"| {ours} | {peer} | {fmt(ratio(a['prefill_tps'], b['prefill_tps']), 2)}× | "
                       f"{fmt(ratio(a['decode_tps'], b['decode_tps']), 2)}× | {fmt(ratio(b['load_s'], a['load_s']), 2)}× | "
                       f"{fmt(ratio(a['rss_mb'], b['rss_mb']), 2)} |")
        out.append("")
    out += ["Bandwidth bound: measured read bandwidth ÷ weight bytes one decoded token reads (every matrix of the "
            "file; an untied embedding counts one row). Our decode uses an f16 KV cache (as llama.cpp's default). "
            "PyTorch's vision tower runs all 24 layers as Parrot's code does (output_hidden_states, then layer −2); "
            "ours stops after the 23 it needs. GFLOP/s figures count the matrix products and attention only.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main())
