"""``parrot demo``: a few pictures of simple coloured shapes, each asked about in the six MMMB languages, with
the answer, the MoE's routing weights per question and the time taken.

It uses the default model. Without one (no ``$PARROT_MODEL`` and no model shipped in the package yet) it
builds a small *random* Parrot on the spot — random weights and a byte-level tokenizer written as a Hugging
Face checkpoint with numpy alone, then converted — so the whole pipeline runs, but its answers are
meaningless noise.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from typing import IO, Dict, List, Optional, Tuple

import numpy as np

__all__ = ["QUESTIONS", "shape_images", "make_random_model", "write_random_checkpoint", "default_or_random_model", "run"]

#: "What colour is the shape in the picture?" in the six MMMB languages
QUESTIONS: Dict[str, str] = {
    "en": "What colour is the shape in the picture?",
    "zh": "图片中的形状是什么颜色？",
    "pt": "Qual é a cor da forma na imagem?",
    "ar": "ما لون الشكل في الصورة؟",
    "tr": "Resimdeki şeklin rengi nedir?",
    "ru": "Какого цвета фигура на картинке?",
}


def shape_images(size: int = 96) -> List[Tuple[str, np.ndarray]]:
    """(name, H×W×3 uint8) pictures: a red circle, a blue square and a green triangle on white."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) + 0.5
    c, r = size / 2, size * 0.32
    masks = {
        "red circle": (x - c) ** 2 + (y - c) ** 2 <= r * r,
        "blue square": (np.abs(x - c) <= r) & (np.abs(y - c) <= r),
        "green triangle": (y >= size * 0.2) & (y <= size * 0.8) & (np.abs(x - c) <= (y - size * 0.2) * 0.6),
    }
    colours = {"red circle": (220, 30, 30), "blue square": (30, 60, 220), "green triangle": (30, 170, 60)}
    out = []
    for name, mask in masks.items():
        img = np.full((size, size, 3), 255, np.uint8)
        img[mask] = colours[name]
        out.append((name, img))
    return out


# ---- a random model without torch
def _write_safetensors(path: str, tensors: Dict[str, np.ndarray]) -> None:
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, a in tensors.items():
        header[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path, "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in tensors.values():
            f.write(np.ascontiguousarray(a, dtype=np.float32).tobytes())


def _byte_level_tokenizer(d: str) -> int:
    """A Qwen2-style tokenizer.json with one token per byte and no merges; returns the vocabulary size."""
    from parrot._tokenizer_data import BYTE_ALPHABET, QWEN2_PRE_REGEX

    vocab = {BYTE_ALPHABET[b]: b for b in range(256)}
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    added = [{"id": 256 + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, t in enumerate(specials)]
    tj = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": QWEN2_PRE_REGEX}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    with open(os.path.join(d, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False)
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "bos_token": None,
                   "tokenizer_class": "Qwen2Tokenizer"}, f)
    return 256 + len(specials)


def make_random_model(out_path: str, *, seed: int = 0) -> str:
    """Writes a small random Parrot GGUF (random weights, byte-level tokenizer) to out_path; no torch."""
    from parrot.converter import convert

    with tempfile.TemporaryDirectory(prefix="parrot-demo-") as d:
        write_random_checkpoint(d, seed=seed)
        return convert(d, out_path, dtype="f32", force=True, progress=False, log=lambda s: None)


def write_random_checkpoint(d: str, *, seed: int = 0, hidden: int = 64, layers: int = 2, image_size: int = 56,
                            patch: int = 14, experts: int = 6) -> str:
    """Writes a small random Hugging Face Parrot checkpoint (config.json, model.safetensors, a byte-level
    tokenizer) into directory d with numpy alone; returns d."""
    rng = np.random.default_rng(seed)
    vd, vff, vL, vH, ff, moe_ff = 48, 96, 3, 4, 128, 96
    n_pos = (image_size // patch) ** 2 + 1
    os.makedirs(d, exist_ok=True)
    V = _byte_level_tokenizer(d)

    def mat(*shape: int) -> np.ndarray:
        return rng.normal(0, 1 / np.sqrt(np.prod(shape[1:])), shape).astype(np.float32)

    def vec(n: int, centre: float = 0.0, scale: float = 0.1) -> np.ndarray:
        return (centre + scale * rng.normal(0, 1, n)).astype(np.float32)

    kv = hidden // 4 * 2
    t: Dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.normal(0, 0.5, (V, hidden)).astype(np.float32),
        "model.norm.weight": vec(hidden, 1.0), "lm_head.weight": mat(V, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        t.update({p + "input_layernorm.weight": vec(hidden, 1.0), p + "post_attention_layernorm.weight":
                  vec(hidden, 1.0), p + "self_attn.q_proj.weight": mat(hidden, hidden),
                  p + "self_attn.q_proj.bias": vec(hidden), p + "self_attn.k_proj.weight": mat(kv, hidden),
                  p + "self_attn.k_proj.bias": vec(kv), p + "self_attn.v_proj.weight": mat(kv, hidden),
                  p + "self_attn.v_proj.bias": vec(kv), p + "self_attn.o_proj.weight": mat(hidden, hidden),
                  p + "mlp.gate_proj.weight": mat(ff, hidden), p + "mlp.up_proj.weight": mat(ff, hidden),
                  p + "mlp.down_proj.weight": mat(hidden, ff)})
    v = "model.vision_tower.vision_tower.vision_model."
    t.update({v + "embeddings.class_embedding": vec(vd, 0.0, 0.5),
              v + "embeddings.patch_embedding.weight": mat(vd, 3, patch, patch),
              v + "embeddings.position_embedding.weight": rng.normal(0, 0.5, (n_pos, vd)).astype(np.float32),
              v + "pre_layrnorm.weight": vec(vd, 1.0), v + "pre_layrnorm.bias": vec(vd)})
    for i in range(vL):
        q = f"{v}encoder.layers.{i}."
        for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
            t[q + f"self_attn.{name}.weight"] = mat(vd, vd)
            t[q + f"self_attn.{name}.bias"] = vec(vd)
        for name in ("layer_norm1", "layer_norm2"):
            t[q + f"{name}.weight"] = vec(vd, 1.0)
            t[q + f"{name}.bias"] = vec(vd)
        t.update({q + "mlp.fc1.weight": mat(vff, vd), q + "mlp.fc1.bias": vec(vff),
                  q + "mlp.fc2.weight": mat(vd, vff), q + "mlp.fc2.bias": vec(vd)})
    t.update({"model.mm_projector.0.weight": mat(hidden, vd), "model.mm_projector.0.bias": vec(hidden),
              "model.mm_projector.2.weight": mat(hidden, hidden), "model.mm_projector.2.bias": vec(hidden),
              "model.moe_model.gate.weight": mat(experts, hidden)})
    for e in range(experts):
        q = f"model.moe_model.experts.{e}."
        t.update({q + "gate_proj.weight": mat(moe_ff, hidden), q + "up_proj.weight": mat(moe_ff, hidden),
                  q + "down_proj.weight": mat(hidden, moe_ff)})
    _write_safetensors(os.path.join(d, "model.safetensors"), t)
    config = {
        "architectures": ["ParrotQwen2ForCausalLM"], "model_type": "parrot_qwen2", "vocab_size": V,
        "hidden_size": hidden, "intermediate_size": ff, "num_hidden_layers": layers, "num_attention_heads": 4,
        "num_key_value_heads": 2, "hidden_act": "silu", "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6, "rope_theta": 1e6, "tie_word_embeddings": False,
        "mm_vision_tower": "random/clip-vit-demo", "mm_hidden_size": vd, "mm_projector_type": "mlp2x_gelu",
        "mm_vision_select_layer": -2, "mm_vision_select_feature": "cls_patch", "mm_patch_merge_type": "flat",
        "image_aspect_ratio": "pad", "num_experts": experts, "moe_hidden_size": hidden,
        "moe_intermediate_size": moe_ff, "use_moe": True, "use_moe_residual": True, "moe_weight": 0.1,
        "vision_config": {"hidden_size": vd, "intermediate_size": vff, "num_hidden_layers": vL,
                          "num_attention_heads": vH, "patch_size": patch, "image_size": image_size,
                          "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    return d


def _bars(w: Optional[np.ndarray], width: int = 8) -> str:
    if w is None:
        return ""
    blocks = " ▁▂▃▄▅▆▇█"
    top = float(max(w.max(), 1e-9))
    return "".join(blocks[int(round(float(x) / top * width))] for x in w) + "  " + \
        " ".join(f"{float(x):.2f}" for x in w)


def default_or_random_model(out: IO[str] = sys.stdout) -> "Tuple[object, bool]":
    """``(model, is_random)``: the default model, else a random one built in a temporary directory (with a
    notice on ``out``)."""
    import parrot
    from parrot.errors import ModelError

    try:
        return parrot.default_model(), False
    except ModelError:
        pass
    print("No trained model is installed yet (no $PARROT_MODEL, none shipped in the package).\n"
          "Building a small RANDOM Parrot to show the pipeline: its answers are meaningless noise until "
          "the trained model ships.\n", file=out)
    d = tempfile.mkdtemp(prefix="parrot-demo-")
    path = make_random_model(os.path.join(d, "random-parrot.gguf"))
    model = parrot.load(path)
    os.unlink(path)  # the file stays mapped; nothing is left behind
    os.rmdir(d)
    return model, True


def run(model: "object" = None, *, max_new_tokens: int = 24, out: IO[str] = sys.stdout) -> int:
    """Runs the demo on ``model`` (default: the default model, else a random one built on the spot)."""
    random_model = False
    if model is None:
        model, random_model = default_or_random_model(out)
    print(f"model: {model}\n", file=out)
    for name, img in shape_images():
        print(f"== {name}", file=out)
        for lang, q in QUESTIONS.items():
            t0 = time.perf_counter()
            r = model.run(img, q, max_new_tokens=max_new_tokens)  # type: ignore[attr-defined]
            dt = time.perf_counter() - t0
            answer = r.text.replace("\n", " ")
            if random_model:
                # noise bytes: show printable characters only
                answer = "".join(c if c.isprintable() and c != "\ufffd" else "·" for c in answer)[:48]
            cached = ", image cached" if r.image_cache_hit else ""
            print(f"  [{lang}] {q}\n       → {answer}\n       routing {_bars(r.routing)}   "
                  f"({dt * 1000:.0f} ms{cached})", file=out)
        print(file=out)
    info = model.image_cache_info()  # type: ignore[attr-defined]
    print(f"image-feature cache: {info.hits} hits, {info.misses} misses, "
          f"{info.seconds_saved * 1000:.0f} ms of vision + expert work saved", file=out)
    if random_model:
        print("\n(random weights: the answers above mean nothing; they show the pipeline works.)", file=out)
    return 0
