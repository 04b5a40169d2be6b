"""Builds (once, cached) a Parrot-7B- or 14B-shaped checkpoint with random weights in the published layout.

    python benchmarks/fullscale_checkpoint.py [--shape 7b|14b] [--cache DIR]      # DIR: $PARROT_BENCH_CACHE,
                                                                                  # else /work/cache/fullscale
Writes
  DIR/parrot-7b/                       config.json (model_type parrot_qwen2, the Parrot keys, mm_vision_tower
                                       "openai/clip-vit-large-patch14-336"), 10 f16 safetensors shards +
                                       model.safetensors.index.json, the tokenizer files of the shipped model's
                                       checkpoint (training/checkpoint; its ids are padded to the 151936
                                       embedding rows, as Qwen's own vocabulary is), and `.complete` last
  DIR/clip-vit-large-patch14-336/      a CLIPModel directory (config.json with vision_config,
                                       preprocessor_config.json, model.safetensors holding vision_model.*)

Shapes: Qwen1.5-7B (32 layers, hidden 4096, MLP 11008, vocab 151936, untied lm_head) or Qwen1.5-14B (40 layers,
hidden 5120, MLP 13696, vocab 152064), CLIP ViT-L/14-336, the mlp2x_gelu projector, 6 experts of 4096.

write_gguf_direct(shape, out) writes a GGUF of the shape straight from random values through parrot.convert,
without the f16 checkpoint (bench_full.py uses it for 14B, whose 27 GiB checkpoint does not fit beside 7B's).

Memory stays bounded: each shard's header is computed from the shapes, then every tensor is generated in
chunks of at most CHUNK values and written straight to the file (the 7B checkpoint is ~16 GB; this process
stays under ~1 GB). Values: matrices N(0, 0.02) (transformers' initializer_range), biases N(0, 0.02), norm
weights 1 + N(0, 0.02): with pre-norm layers every activation stays finite in f16, q8_0 and q4_0.
Importable: ensure(shape, cache) -> (checkpoint dir, clip dir)."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from bench_parrot import LLM_SHAPES  # noqa: E402  (the Qwen1.5 shapes, 7b and 14b among them)

DEFAULT_CACHE = os.environ.get("PARROT_BENCH_CACHE", "/work/cache/fullscale")
CLIP_NAME = "openai/clip-vit-large-patch14-336"
CLIP_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   patch_size=14, image_size=336, hidden_act="quick_gelu", layer_norm_eps=1e-5,
                   projection_dim=768, num_channels=3)
MOE = dict(num_experts=6, moe_intermediate_size=4096)
SHARDS = 10
CHUNK = 1 << 25      # values generated at once (128 MiB of f32)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt")


# ------------------------------------------------------------------------------------------------ tensor lists
def llm_tensors(shape):
    """[(name, shape, kind)] of a Parrot checkpoint's own tensors (LLM, projector, MoE); kind picks the values."""
    s = LLM_SHAPES[shape]
    d, ff, L, V = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], s["vocab_size"]
    kv = d // s["num_attention_heads"] * s["num_key_value_heads"]
    vd, E, mff = CLIP_VISION["hidden_size"], MOE["num_experts"], MOE["moe_intermediate_size"]
    t = [("model.embed_tokens.weight", (V, d), "w")]
    for i in range(L):
        p = f"model.layers.{i}."
        t += [(p + "input_layernorm.weight", (d,), "norm")]
        for x, rows in (("q", d), ("k", kv), ("v", kv)):
            t += [(p + f"self_attn.{x}_proj.weight", (rows, d), "w"), (p + f"self_attn.{x}_proj.bias", (rows,), "w")]
        t += [(p + "self_attn.o_proj.weight", (d, d), "w"), (p + "post_attention_layernorm.weight", (d,), "norm"),
              (p + "mlp.gate_proj.weight", (ff, d), "w"), (p + "mlp.up_proj.weight", (ff, d), "w"),
              (p + "mlp.down_proj.weight", (d, ff), "w")]
    t += [("model.norm.weight", (d,), "norm"), ("lm_head.weight", (V, d), "w"),
          ("model.mm_projector.0.weight", (d, vd), "w"), ("model.mm_projector.0.bias", (d,), "w"),
          ("model.mm_projector.2.weight", (d, d), "w"), ("model.mm_projector.2.bias", (d,), "w"),
          ("model.moe_model.gate.weight", (E, d), "w")]
    for e in range(E):
        q = f"model.moe_model.experts.{e}."
        t += [(q + "gate_proj.weight", (mff, d), "w"), (q + "up_proj.weight", (mff, d), "w"),
              (q + "down_proj.weight", (d, mff), "w")]
    return t


def clip_tensors():
    c = CLIP_VISION
    vd, vff, ps = c["hidden_size"], c["intermediate_size"], c["patch_size"]
    p = "vision_model."
    t = [(p + "embeddings.class_embedding", (vd,), "w"),
         (p + "embeddings.patch_embedding.weight", (vd, 3, ps, ps), "w"),
         (p + "embeddings.position_embedding.weight", ((c["image_size"] // ps) ** 2 + 1, vd), "w"),
         (p + "pre_layrnorm.weight", (vd,), "norm"), (p + "pre_layrnorm.bias", (vd,), "w")]
    for i in range(c["num_hidden_layers"]):
        q = f"{p}encoder.layers.{i}."
        for x in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t += [(q + f"self_attn.{x}.weight", (vd, vd), "w"), (q + f"self_attn.{x}.bias", (vd,), "w")]
        for x in ("layer_norm1", "layer_norm2"):
            t += [(q + f"{x}.weight", (vd,), "norm"), (q + f"{x}.bias", (vd,), "w")]
        t += [(q + "mlp.fc1.weight", (vff, vd), "w"), (q + "mlp.fc1.bias", (vff,), "w"),
              (q + "mlp.fc2.weight", (vd, vff), "w"), (q + "mlp.fc2.bias", (vd,), "w")]
    return t + [(p + "post_layernorm.weight", (vd,), "norm"), (p + "post_layernorm.bias", (vd,), "w")]


# ------------------------------------------------------------------------------------------------ writing
def _write_values(f, name, shape, kind):
    """Writes one tensor's f16 values, CHUNK at a time; the seed comes from the name (reproducible)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape))
    for start in range(0, n, CHUNK):
        x = rng.standard_normal(min(CHUNK, n - start), dtype=np.float32)
        x *= 0.02
        if kind == "norm":
            x += 1.0
        f.write(x.astype(np.float16).data)


def write_safetensors(path, tensors, log):
    header, off = {}, 0
    for name, shape, _ in tensors:
        nbytes = 2 * int(np.prod(shape))
        header[name] = {"dtype": "F16", "shape": list(shape), "data_offsets": [off, off + nbytes]}
        off += nbytes
    header["__metadata__"] = {"format": "pt"}
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    tmp = path + ".part"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for name, shape, kind in tensors:
            _write_values(f, name, shape, kind)
        f.flush()
        os.fsync(f.fileno())
        # the shard is on disk: drop it from the page cache so that a 16 GB build does not push others' pages out
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
    os.replace(tmp, path)
    log(f"  wrote {os.path.basename(path)} ({off / 2 ** 30:.2f} GiB, {len(tensors)} tensors)")
    return off


def _split(tensors, n):
    """n consecutive groups of roughly equal bytes (tensors keep their order, as transformers' sharding does)."""
    total = sum(int(np.prod(s)) for _, s, _ in tensors)
    groups, cur, acc = [], [], 0
    for t in tensors:
        cur.append(t)
        acc += int(np.prod(t[1]))
        if acc >= total * (len(groups) + 1) / n and len(groups) < n - 1:
            groups.append(cur)
            cur = []
    groups.append(cur)
    return [g for g in groups if g]


def _tokenizer_special_ids(src):
    with open(os.path.join(src, "tokenizer_config.json"), encoding="utf-8") as f:
        added = json.load(f)["added_tokens_decoder"]
    return {v["content"]: int(k) for k, v in added.items()}


def build_llm(d, shape, log):
    s = LLM_SHAPES[shape]
    tensors = llm_tensors(shape)
    shards = _split(tensors, SHARDS)
    weight_map, total = {}, 0
    for i, group in enumerate(shards):
        fn = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        if not os.path.exists(os.path.join(d, fn)):  # a shard written before an interruption is kept
            write_safetensors(os.path.join(d, fn), group, log)
        total += sum(2 * int(np.prod(sh)) for _, sh, _ in group)
        weight_map.update({name: fn for name, _, _ in group})
    with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    write_llm_config(d, shape)


def write_llm_config(d, shape):
    """config.json and the tokenizer files of a Parrot checkpoint of this shape (no weights)"""
    s = LLM_SHAPES[shape]
    src = os.path.join(ROOT, "training", "checkpoint")
    for fn in TOKENIZER_FILES:
        shutil.copy(os.path.join(src, fn), os.path.join(d, fn))
    special = _tokenizer_special_ids(src)
    cfg = dict(architectures=["ParrotQwen2ForCausalLM"], model_type="parrot_qwen2", **s,
               hidden_act="silu", max_position_embeddings=32768, initializer_range=0.02, rms_norm_eps=1e-6,
               use_cache=True, rope_theta=1e6, use_sliding_window=False, sliding_window=32768, max_window_layers=28,
               attention_dropout=0.0, bos_token_id=special["<|endoftext|>"], eos_token_id=special["<|im_end|>"],
               torch_dtype="float16", mm_vision_tower=CLIP_NAME, mm_hidden_size=CLIP_VISION["hidden_size"],
               mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="cls_patch",
               mm_patch_merge_type="flat", image_aspect_ratio="pad", num_experts=MOE["num_experts"],
               moe_hidden_size=s["hidden_size"], moe_intermediate_size=MOE["moe_intermediate_size"], use_moe=True,
               use_moe_residual=True, moe_weight=0.1, moe_top_k=MOE["num_experts"])
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def build_clip(d, log):
    write_safetensors(os.path.join(d, "model.safetensors"), clip_tensors(), log)
    cfg = dict(architectures=["CLIPModel"], model_type="clip", projection_dim=768, torch_dtype="float16",
               vision_config=dict(CLIP_VISION, model_type="clip_vision_model"),
               text_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                num_attention_heads=12, vocab_size=49408, model_type="clip_text_model"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    with open(os.path.join(d, "preprocessor_config.json"), "w") as f:
        json.dump({"crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_normalize": True,
                   "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
                   "image_std": [0.26862954, 0.26130258, 0.27577711], "resample": 3,
                   "size": {"shortest_edge": 336}, "image_processor_type": "CLIPImageProcessor"}, f, indent=2)


def _ensure_dir(d, build, log):
    if not os.path.exists(os.path.join(d, ".complete")):
        log(f"building {d} ...")
        t = time.perf_counter()
        os.makedirs(d, exist_ok=True)
        build(d)
        open(os.path.join(d, ".complete"), "w").close()
        log(f"  done in {time.perf_counter() - t:.0f} s")
    return d


def ensure_clip(cache=DEFAULT_CACHE, log=print):
    """the CLIP-L/336 directory, built if not complete yet"""
    return _ensure_dir(os.path.join(cache, "clip-vit-large-patch14-336"), lambda d: build_clip(d, log), log)


def ensure(shape="7b", cache=DEFAULT_CACHE, log=print):
    """(checkpoint dir, CLIP dir), building whichever is not complete yet."""
    return (_ensure_dir(os.path.join(cache, f"parrot-{shape}"), lambda d: build_llm(d, shape, log), log),
            ensure_clip(cache, log))


# ------------------------------------------------------------------------------------------------ straight to GGUF
class RandomCheckpoint:
    """The LLM, projector and MoE tensors of a shape (llm_tensors), with the values generated when they are read
    instead of read from a file: a Checkpoint (parrot._safetensors) for the converter. Each read of elements
    [first, first + count) draws from a generator seeded by the tensor's name and `first`, so any chunk is
    made alone and memory stays one chunk (the converter reads whole rows, ≤ 32 Mi values at a time). The
    values are those the f16 checkpoint would hold (N(0, 0.02); norms 1 + N(0, 0.02)) before f16 rounding, but
    not the same draws."""

    def __init__(self, shape):
        from parrot._safetensors import Checkpoint, TensorInfo

        self._ckpt = Checkpoint()
        self.files = self._ckpt.files
        self.kinds = {}
        for name, shp, kind in llm_tensors(shape):
            self._ckpt.tensors[name] = TensorInfo(name, "F32", tuple(shp), 0, 4 * int(np.prod(shp)), f"<random:{name}>")
            self.kinds[name] = kind
        self.tensors = self._ckpt.tensors

    def read(self, info, first=0, count=None):
        if info.path.startswith("<random:"):
            count = info.numel - first if count is None else count
            seed = int.from_bytes(hashlib.sha256(info.name.encode()).digest()[:8], "little")
            x = np.random.default_rng([seed, first]).standard_normal(count, dtype=np.float32)
            x *= 0.02
            if self.kinds[info.name] == "norm":
                x += 1.0
            return x
        return self._ckpt.read(info, first, count)  # the CLIP tower's, added by the converter from its files

    def close(self):
        self._ckpt.close()


def write_gguf_direct(shape, out, dtype="q4_0", cache=DEFAULT_CACHE, log=print):
    """A GGUF of this shape written by parrot.convert straight from random values (RandomCheckpoint), with no
    f16 checkpoint on disk: the LLM side needs only its config and tokenizer files (DIR/parrot-SHAPE-config/),
    the CLIP tower is the cached CLIP-L directory. The converter runs as for a real checkpoint (config and
    shape checks, chunked conversion, finite checks); only its open_checkpoint is pointed at the random
    tensors for that directory. Disk: the output file; memory: the converter's chunk (~0.5 GB)."""
    from unittest import mock

    import parrot
    import parrot.converter as conv

    d = os.path.join(cache, f"parrot-{shape}-config")
    os.makedirs(d, exist_ok=True)
    write_llm_config(d, shape)
    clip = ensure_clip(cache, log)
    real = conv.open_checkpoint

    def open_random(directory, ckpt=None):
        if os.path.abspath(directory) == os.path.abspath(d):
            return RandomCheckpoint(shape)
        return real(directory, ckpt)

    t = time.perf_counter()
    with mock.patch.object(conv, "open_checkpoint", open_random):
        parrot.convert(d, out, clip=clip, dtype=dtype, progress=False, log=lambda s: None)
    log(f"  wrote {out} straight from random values ({os.path.getsize(out) / 2 ** 30:.1f} GiB, "
        f"{time.perf_counter() - t:.0f} s)")
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--shape", choices=("7b", "14b"), default="7b")
    ap.add_argument("--cache", default=DEFAULT_CACHE, help="default: $PARROT_BENCH_CACHE or /work/cache/fullscale")
    args = ap.parse_args(argv)
    n = sum(int(np.prod(s)) for _, s, _ in llm_tensors(args.shape) + clip_tensors())
    print(f"{args.shape}: {n / 1e9:.2f} G parameters, {2 * n / 2 ** 30:.1f} GiB of f16", flush=True)
    for d in ensure(args.shape, args.cache, log=lambda s: print(s, flush=True)):
        print(d)
    return 0


if __name__ == "__main__":
    sys.exit(main())
