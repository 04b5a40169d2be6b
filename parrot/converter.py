"""Hugging Face checkpoint (Parrot or plain Qwen2) -> one parrot GGUF model file.

    parrot.convert("Parrot-7B/", "parrot-7b.gguf", clip="clip-vit-large-patch14-336/", dtype="f16")

Reads sharded safetensors (f32, f16, bf16) without torch and streams tensor by tensor, so peak memory stays
far below the model's size. Every expected tensor is checked for presence and shape up front, and all
problems are reported at once. The output is written to a temporary file beside OUT and renamed at the
end: an interrupted conversion never leaves a half-written OUT, and an existing OUT is kept unless
``force=True``. Names and keys written: docs/gguf.md.

Storage types (``dtype``): norms, biases, embeddings of one row, the position embedding and the MoE router
stay f32 in every file. Matrices become ``dtype``, with these choices for the quantised ones (ggml's q8_0 /
q4_0 blocks of 32 values, quantised in C by ``_core.quantize``, byte-identical to ggml's reference):
  - a matrix whose rows are not whole 32-value blocks (the CLIP patch embedding's 3·14·14 = 588 columns) is f16;
  - q4_0 is used for the decoder layers' matrices only, which decoding reads for every token; the token
    embedding, lm_head, vision tower, projector and MoE experts are q8_0: the embedding and lm_head are the
    most quantisation-sensitive tensors of a small LLM, and the image path is compute-bound, where 4 bits
    would cost accuracy without saving time.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import warnings
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from parrot._safetensors import FLOAT_DTYPES, TensorInfo, bf16_to_f32, open_checkpoint
from parrot.errors import ModelError
from parrot.prompt import DEFAULT_SYSTEM

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
# general.file_type as llama.cpp numbers it (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0, MOSTLY_BF16)
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
KNOWN_CLIP = {
    # configuration of openai/clip-vit-large-patch14-336, used when only the name is known (SPEC)
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        patch_size=14, image_size=336, hidden_act="quick_gelu", layer_norm_eps=1e-5),
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass
class _Entry:
    name: str                  # GGUF tensor name
    src: TensorInfo            # where the data comes from
    shape: Tuple[int, ...]     # shape written (numpy order)
    kind: str                  # "matrix" (target dtype) or "f32"


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{path}: not found") from None
    except (OSError, ValueError) as e:
        raise ModelError(f"{path}: cannot read JSON: {e}") from None


class _Plan:
    """Collects the tensors to write and every problem found, to report them together."""

    def __init__(self, tensors: Dict[str, TensorInfo]):
        self.tensors = tensors
        self.entries: List[_Entry] = []
        self.problems: List[str] = []
        self.used: set = set()

    def add(self, gguf_name: str, hf_name: str, shape: Sequence[int], kind: str = "matrix",
            out_shape: Optional[Sequence[int]] = None) -> None:
        info = self.tensors.get(hf_name)
        if info is None:
            self.problems.append(f"missing tensor '{hf_name}' (expected shape {list(shape)})")
            return
        self.used.add(hf_name)
        if tuple(info.shape) != tuple(shape):
            self.problems.append(f"tensor '{hf_name}' in {os.path.basename(info.file.path)} has shape "
                                 f"{list(info.shape)}, expected {list(shape)}")
            return
        if info.dtype not in FLOAT_DTYPES:
            self.problems.append(f"tensor '{hf_name}' has dtype {info.dtype}; expected F32, F16 or BF16")
            return
        self.entries.append(_Entry(gguf_name, info, tuple(out_shape or shape), kind))


def _cfg(config: dict, key: str, default, where: str):
    v = config.get(key, default)
    if v is None:
        v = default
    if v is None:
        raise ModelError(f"{where}: missing config key '{key}'")
    return v


def _vision_config(hf_dir: str, config: dict, clip: Optional[str]) -> Tuple[dict, str, Tuple, Tuple]:
    """CLIP vision hyperparameters and where they came from; image mean/std."""
    mean, std = CLIP_MEAN, CLIP_STD
    tower = config.get("mm_vision_tower") or config.get("vision_tower")
    candidates = []
    if clip:
        candidates.append(clip)
    if tower and os.path.isdir(str(tower)):
        candidates.append(str(tower))
    for d in candidates:
        cj = os.path.join(d, "config.json")
        if os.path.exists(cj):
            c = _read_json(cj)
            vc = c.get("vision_config", c)
            pp = os.path.join(d, "preprocessor_config.json")
            if os.path.exists(pp):
                p = _read_json(pp)
                mean, std = tuple(p.get("image_mean", mean)), tuple(p.get("image_std", std))
            return vc, f"the CLIP checkpoint's config ({cj})", mean, std
    if isinstance(config.get("vision_config"), dict):
        return config["vision_config"], "the checkpoint's vision_config", mean, std
    if tower in KNOWN_CLIP:
        return KNOWN_CLIP[tower], f"the known configuration of {tower}", mean, std
    raise ModelError(f"{hf_dir}/config.json: mm_vision_tower is {tower!r}: its configuration is unknown; pass the "
                     f"CLIP checkpoint directory with --clip")


def _find_vision_prefix(tensors: Dict[str, TensorInfo]) -> Optional[str]:
    for p in ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower.vision_tower.",
              "vision_model."):
        if p + "embeddings.class_embedding" in tensors:
            return p
    return None


def _plan_llm(plan: _Plan, cfg: dict, where: str) -> dict:
    V = int(_cfg(cfg, "vocab_size", None, where))
    d = int(_cfg(cfg, "hidden_size", None, where))
    L = int(_cfg(cfg, "num_hidden_layers", None, where))
    H = int(_cfg(cfg, "num_attention_heads", None, where))
    Hkv = int(_cfg(cfg, "num_key_value_heads", H, where))
    ff = int(_cfg(cfg, "intermediate_size", None, where))
    tied = bool(cfg.get("tie_word_embeddings", False))
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ModelError(f"{where}: hidden_act {act!r} is not supported (Qwen2 uses silu)")
    # transformers < 5 writes rope_theta (+ rope_scaling); 5.x writes rope_parameters
    rope = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if rope.get("rope_type", rope.get("type", "default")) != "default":
        raise ModelError(f"{where}: rope scaling {rope!r} is not supported (default RoPE only)")
    theta = float(rope.get("rope_theta", cfg.get("rope_theta", 1e6)))
    if cfg.get("use_sliding_window") and cfg.get("sliding_window") and \
            int(cfg["sliding_window"]) < int(cfg.get("max_position_embeddings", 32768)):
        raise ModelError(f"{where}: sliding-window attention (sliding_window {cfg['sliding_window']}) is not supported")
    if d % H or H % Hkv:
        raise ModelError(f"{where}: hidden_size {d}, num_attention_heads {H}, num_key_value_heads {Hkv} are "
                         f"inconsistent")
    kv = d // H * Hkv
    plan.add("token_embd.weight", "model.embed_tokens.weight", (V, d))
    plan.add("output_norm.weight", "model.norm.weight", (d,), "f32")
    if not tied:
        plan.add("output.weight", "lm_head.weight", (V, d))
    for i in range(L):
        p = f"model.layers.{i}."
        plan.add(f"blk.{i}.attn_norm.weight", p + "input_layernorm.weight", (d,), "f32")
        for x, rows in (("q", d), ("k", kv), ("v", kv)):
            plan.add(f"blk.{i}.attn_{x}.weight", p + f"self_attn.{x}_proj.weight", (rows, d))
            plan.add(f"blk.{i}.attn_{x}.bias", p + f"self_attn.{x}_proj.bias", (rows,), "f32")
        plan.add(f"blk.{i}.attn_output.weight", p + "self_attn.o_proj.weight", (d, d))
        plan.add(f"blk.{i}.ffn_norm.weight", p + "post_attention_layernorm.weight", (d,), "f32")
        plan.add(f"blk.{i}.ffn_gate.weight", p + "mlp.gate_proj.weight", (ff, d))
        plan.add(f"blk.{i}.ffn_up.weight", p + "mlp.up_proj.weight", (ff, d))
        plan.add(f"blk.{i}.ffn_down.weight", p + "mlp.down_proj.weight", (d, ff))
    return dict(V=V, d=d, L=L, H=H, Hkv=Hkv, ff=ff, tied=tied, theta=theta)


def _plan_vision(plan: _Plan, prefix: str, vc: dict, where: str) -> dict:
    vd = int(_cfg(vc, "hidden_size", None, where))
    vff = int(_cfg(vc, "intermediate_size", None, where))
    vL = int(_cfg(vc, "num_hidden_layers", None, where))
    vH = int(_cfg(vc, "num_attention_heads", None, where))
    ps = int(_cfg(vc, "patch_size", None, where))
    S = int(_cfg(vc, "image_size", None, where))
    if S % ps:
        raise ModelError(f"{where}: image_size {S} is not a multiple of patch_size {ps}")
    n_pos = (S // ps) ** 2 + 1
    p = prefix
    plan.add("v.class_embd", p + "embeddings.class_embedding", (vd,), "f32")
    plan.add("v.patch_embd.weight", p + "embeddings.patch_embedding.weight", (vd, 3, ps, ps), "matrix",
             out_shape=(vd, 3 * ps * ps))
    plan.add("v.position_embd.weight", p + "embeddings.position_embedding.weight", (n_pos, vd), "f32")
    plan.add("v.pre_ln.weight", p + "pre_layrnorm.weight", (vd,), "f32")
    plan.add("v.pre_ln.bias", p + "pre_layrnorm.bias", (vd,), "f32")
    for i in range(vL):
        q = f"{p}encoder.layers.{i}."
        for hf, g in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("out_proj", "attn_out")):
            plan.add(f"v.blk.{i}.{g}.weight", q + f"self_attn.{hf}.weight", (vd, vd))
            plan.add(f"v.blk.{i}.{g}.bias", q + f"self_attn.{hf}.bias", (vd,), "f32")
        for hf, g in (("layer_norm1", "ln1"), ("layer_norm2", "ln2")):
            plan.add(f"v.blk.{i}.{g}.weight", q + f"{hf}.weight", (vd,), "f32")
            plan.add(f"v.blk.{i}.{g}.bias", q + f"{hf}.bias", (vd,), "f32")
        plan.add(f"v.blk.{i}.ffn_up.weight", q + "mlp.fc1.weight", (vff, vd))
        plan.add(f"v.blk.{i}.ffn_up.bias", q + "mlp.fc1.bias", (vff,), "f32")
        plan.add(f"v.blk.{i}.ffn_down.weight", q + "mlp.fc2.weight", (vd, vff))
        plan.add(f"v.blk.{i}.ffn_down.bias", q + "mlp.fc2.bias", (vd,), "f32")
    for x in ("weight", "bias"):
        if p + f"post_layernorm.{x}" in plan.tensors:  # carried for completeness; hidden_states[-2] precedes it
            plan.add(f"v.post_ln.{x}", p + f"post_layernorm.{x}", (vd,), "f32")
    act = vc.get("hidden_act", "quick_gelu")
    if act not in ("quick_gelu", "gelu"):
        raise ModelError(f"{where}: vision hidden_act {act!r} is not supported (quick_gelu or gelu)")
    return dict(vd=vd, vff=vff, vL=vL, vH=vH, ps=ps, S=S, act=act, eps=float(vc.get("layer_norm_eps", 1e-5)))


def _tensor_dtype(e: _Entry, dtype: str) -> str:
    """The storage type of one tensor in a file converted to ``dtype`` (see the module's docstring)."""
    if e.kind == "f32" or dtype == "f32":
        return "f32"
    if dtype in ("f16", "bf16"):
        return dtype
    if e.shape[-1] % 32:
        return "f16"
    if dtype == "q4_0" and not e.name.startswith("blk."):
        return "q8_0"
    return dtype


def _tensor_bytes(shape: Tuple[int, ...], tdtype: str) -> int:
    n = int(np.prod(shape))
    return {"f32": 4 * n, "f16": 2 * n, "bf16": 2 * n, "q8_0": n // 32 * 34, "q4_0": n // 32 * 18}[tdtype]


def _convert_array(arr: np.ndarray, src_dtype: str, tdtype: str, name: str = "") -> np.ndarray:
    """The bytes of one tensor stored as ``tdtype`` (an array whose tobytes() is the GGUF data)."""
    f32 = bf16_to_f32(arr) if src_dtype == "BF16" else np.asarray(arr, dtype=np.float32)
    if tdtype == "f32":
        return np.ascontiguousarray(f32, dtype=np.float32)
    if tdtype == "f16":
        return np.ascontiguousarray(f32.astype(np.float16))
    if tdtype in ("q8_0", "q4_0"):
        from parrot import _core

        rows = np.ascontiguousarray(f32, dtype=np.float32).reshape(-1, f32.shape[-1])
        if not np.isfinite(rows).all():
            raise ModelError(f"tensor '{name}' contains NaN or infinite values and cannot be quantised to {tdtype}")
        return _core.quantize(rows, tdtype)
    # bf16 with round-to-nearest-even, as torch does
    if src_dtype == "BF16":
        return np.ascontiguousarray(arr)
    bits = f32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(f32)
    if nan.any():
        rounded[nan] = 0x7FC0
    return np.ascontiguousarray(rounded)


def convert(hf_dir: "os.PathLike[str] | str", out_path: "os.PathLike[str] | str", *, clip=None, dtype: str = "f16",
            force: bool = False, progress: bool = True, log: Callable[[str], None] = None) -> str:
    """Converts a Hugging Face Parrot (``model_type`` ``parrot_qwen2``) or plain Qwen2 checkpoint directory
    into one GGUF file. ``clip`` is a separate CLIP checkpoint directory for the vision tower when the Parrot
    checkpoint does not hold it. Returns the output path.

    Raises ModelError for missing / mis-shaped tensors (all listed), unreadable or corrupt files, and
    unsupported configuration; FileExistsError if ``out_path`` exists and ``force`` is false."""
    import gguf

    log = log or (lambda s: print(s, file=sys.stderr))
    hf_dir, out_path = os.fspath(hf_dir), os.fspath(out_path)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not os.path.isdir(hf_dir):
        raise ModelError(f"{hf_dir}: not a checkpoint directory")
    if os.path.exists(out_path) and not force:
        raise FileExistsError(f"{out_path} exists; pass force=True (--force) to overwrite it")
    where = os.path.join(hf_dir, "config.json")
    cfg = _read_json(where)
    model_type = cfg.get("model_type", "")
    is_parrot = model_type == "parrot_qwen2" or any("Parrot" in a for a in cfg.get("architectures") or [])
    if not is_parrot and model_type != "qwen2":
        raise ModelError(f"{where}: model_type {model_type!r} is not supported (parrot_qwen2 or qwen2)")

    tensors, files = open_checkpoint(hf_dir)
    plan = _Plan(tensors)
    llm = _plan_llm(plan, cfg, where)
    vis = None
    meta: List[Tuple[str, object, object]] = []
    if is_parrot:
        prefix = _find_vision_prefix(tensors)
        if prefix is None and clip is not None:
            ctensors, cfiles = open_checkpoint(clip)
            files += cfiles
            prefix = _find_vision_prefix(ctensors)
            if prefix is None:
                raise ModelError(f"{clip}: no CLIP vision tower found (expected 'vision_model.embeddings.*')")
            for k, v in ctensors.items():
                if k.startswith(prefix):
                    tensors[k] = v
        if prefix is None:
            raise ModelError(f"{where}: the vision tower is not inside the checkpoint and mm_vision_tower "
                             f"({cfg.get('mm_vision_tower')!r}) cannot be loaded here; pass its CLIP checkpoint "
                             f"directory with --clip")
        vc, vsource, mean, std = _vision_config(hf_dir, cfg, clip)
        log(f"vision tower: weights under '{prefix}', configuration from {vsource}")
        vis = _plan_vision(plan, prefix, vc, where)
        d, vd = llm["d"], vis["vd"]
        mm_hidden = int(cfg.get("mm_hidden_size", vd))
        if mm_hidden != vd:
            plan.problems.append(f"mm_hidden_size {mm_hidden} differs from the vision tower's hidden size {vd}")
        proj = cfg.get("mm_projector_type", "mlp2x_gelu")
        if proj == "mlp2x_gelu":
            plan.add("mm.0.weight", "model.mm_projector.0.weight", (d, vd))
            plan.add("mm.0.bias", "model.mm_projector.0.bias", (d,), "f32")
            plan.add("mm.2.weight", "model.mm_projector.2.weight", (d, d))
            plan.add("mm.2.bias", "model.mm_projector.2.bias", (d,), "f32")
        elif proj == "linear":
            plan.add("mm.0.weight", "model.mm_projector.weight", (d, vd))
            plan.add("mm.0.bias", "model.mm_projector.bias", (d,), "f32")
        elif proj != "identity":
            raise ModelError(f"{where}: mm_projector_type {proj!r} is not supported (mlp2x_gelu, linear, identity)")
        feat = cfg.get("mm_vision_select_feature", "cls_patch")
        if feat not in ("cls_patch", "patch"):
            raise ModelError(f"{where}: mm_vision_select_feature {feat!r} is not supported (cls_patch, patch)")
        merge = cfg.get("mm_patch_merge_type", "flat")
        if merge != "flat":
            raise ModelError(f"{where}: mm_patch_merge_type {merge!r} is not supported (flat)")
        aspect = cfg.get("image_aspect_ratio", "pad") or "square"
        if aspect not in ("pad", "square"):
            raise ModelError(f"{where}: image_aspect_ratio {aspect!r} is not supported (pad, or none)")
        use_moe = bool(cfg.get("use_moe", True))
        E = int(cfg.get("num_experts", 6))
        moe_ff = int(cfg.get("moe_intermediate_size", 4096))
        moe_hidden = int(cfg.get("moe_hidden_size", d))
        if use_moe:
            if moe_hidden != d:
                plan.problems.append(f"moe_hidden_size {moe_hidden} differs from hidden_size {d}")
            plan.add("moe.gate.weight", "model.moe_model.gate.weight", (E, d), "f32")
            for e in range(E):
                q = f"model.moe_model.experts.{e}."
                plan.add(f"moe.exp.{e}.ffn_gate.weight", q + "gate_proj.weight", (moe_ff, d))
                plan.add(f"moe.exp.{e}.ffn_up.weight", q + "up_proj.weight", (moe_ff, d))
                plan.add(f"moe.exp.{e}.ffn_down.weight", q + "down_proj.weight", (d, moe_ff))
        A = gguf.GGUFValueType
        meta += [
            ("parrot.vision.present", True, A.BOOL),
            ("parrot.vision.image_size", vis["S"], A.UINT32),
            ("parrot.vision.patch_size", vis["ps"], A.UINT32),
            ("parrot.vision.embedding_length", vd, A.UINT32),
            ("parrot.vision.feed_forward_length", vis["vff"], A.UINT32),
            ("parrot.vision.block_count", vis["vL"], A.UINT32),
            ("parrot.vision.attention.head_count", vis["vH"], A.UINT32),
            ("parrot.vision.attention.layer_norm_epsilon", vis["eps"], A.FLOAT32),
            ("parrot.vision.activation", vis["act"], A.STRING),
            ("parrot.vision.image_mean", [float(x) for x in mean], A.ARRAY),
            ("parrot.vision.image_std", [float(x) for x in std], A.ARRAY),
            ("parrot.vision.select_layer", int(cfg.get("mm_vision_select_layer", -2)), A.INT32),
            ("parrot.vision.select_feature", feat, A.STRING),
            ("parrot.vision.image_aspect_ratio", aspect, A.STRING),
            ("parrot.vision.tower", str(cfg.get("mm_vision_tower", "")), A.STRING),
            ("parrot.projector.type", proj, A.STRING),
            ("parrot.projector.input_size", mm_hidden, A.UINT32),
            ("parrot.projector.patch_merge_type", merge, A.STRING),
            ("parrot.moe.enabled", use_moe, A.BOOL),
            ("parrot.moe.residual", bool(cfg.get("use_moe_residual", True)), A.BOOL),
            ("parrot.moe.expert_count", E, A.UINT32),
            ("parrot.moe.feed_forward_length", moe_ff, A.UINT32),
            ("parrot.moe.weight", float(cfg.get("moe_weight", 0.1)), A.FLOAT32),
            ("parrot.moe.top_k", int(cfg.get("moe_top_k", 0) or 0), A.UINT32),
        ]

    if plan.problems:
        raise ModelError(f"{hf_dir}: the checkpoint does not match its config.json:\n  - "
                         + "\n  - ".join(plan.problems))
    ignored = sorted(n for n in tensors if n not in plan.used and not n.startswith("text_model.")
                     and not n.endswith("position_ids") and not n.endswith("rotary_emb.inv_freq")
                     and "logit_scale" not in n and "visual_projection" not in n and "text_projection" not in n)
    if ignored:
        warnings.warn(f"{hf_dir}: {len(ignored)} tensor(s) not used by Parrot were skipped: "
                      + ", ".join(ignored[:8]) + (" ..." if len(ignored) > 8 else ""))

    A = gguf.GGUFValueType
    meta = [
        ("general.name", os.path.basename(os.path.normpath(hf_dir)), A.STRING),
        ("general.file_type", FILE_TYPE[dtype], A.UINT32),
        ("parrot.source_model_type", model_type, A.STRING),
        ("parrot.vocab_size", llm["V"], A.UINT32),
        ("parrot.embedding_length", llm["d"], A.UINT32),
        ("parrot.block_count", llm["L"], A.UINT32),
        ("parrot.feed_forward_length", llm["ff"], A.UINT32),
        ("parrot.attention.head_count", llm["H"], A.UINT32),
        ("parrot.attention.head_count_kv", llm["Hkv"], A.UINT32),
        ("parrot.context_length", int(cfg.get("max_position_embeddings", 32768)), A.UINT32),
        ("parrot.attention.layer_norm_rms_epsilon", float(cfg.get("rms_norm_eps", 1e-6)), A.FLOAT32),
        ("parrot.rope.freq_base", llm["theta"], A.FLOAT32),
        ("parrot.tie_word_embeddings", llm["tied"], A.BOOL),
        ("parrot.prompt.format", "qwen_chat", A.STRING),
        ("parrot.prompt.system", DEFAULT_SYSTEM, A.STRING),
    ] + meta
    out_dir = os.path.dirname(os.path.abspath(out_path))
    fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out_path) + ".", suffix=".partial", dir=out_dir)
    os.close(fd)
    try:
        w = gguf.GGUFWriter(tmp, "parrot")
        for key, value, vtype in meta:
            if key == "general.architecture":
                continue
            if vtype == A.ARRAY:
                w.add_array(key, value)
            else:
                w.add_key_value(key, value, vtype)
        _add_tokenizer(w, hf_dir, cfg, log)
        # tensor infos first (sizes known from the plan), then data streamed one tensor at a time
        Q = gguf.GGMLQuantizationType
        for e in plan.entries:
            t = _tensor_dtype(e, dtype)
            nbytes = _tensor_bytes(e.shape, t)
            if t == "f32":
                w.add_tensor_info(e.name, e.shape, np.dtype(np.float32), nbytes)
            elif t == "f16":
                w.add_tensor_info(e.name, e.shape, np.dtype(np.float16), nbytes)
            elif t == "bf16":
                w.add_tensor_info(e.name, e.shape, np.dtype(np.uint16), nbytes, raw_dtype=Q.BF16)
            else:  # block-quantised: the writer takes the shape in bytes per row
                byte_shape = (*e.shape[:-1], nbytes // int(np.prod(e.shape[:-1])))
                w.add_tensor_info(e.name, byte_shape, np.dtype(np.uint8), nbytes,
                                  raw_dtype=Q.Q8_0 if t == "q8_0" else Q.Q4_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        total = sum(e.src.nbytes for e in plan.entries)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="B", unit_scale=True, desc=f"converting to {dtype}", file=sys.stderr)
        for e in plan.entries:
            arr = e.src.file.array(e.src.name).reshape(e.shape)
            data = _convert_array(arr, e.src.dtype, _tensor_dtype(e, dtype), e.name)
            w.write_tensor_data(data)
            del arr, data
            if bar:
                bar.update(e.src.nbytes)
        if bar:
            bar.close()
        w.close()
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        # mkstemp creates the file private (0600); give it the mode any new file gets (0666 less the umask)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    finally:
        for f in files:
            f.close()
    return out_path


def _add_tokenizer(writer, hf_dir: str, cfg: dict, log) -> None:
    """Stores the tokenizer (if the checkpoint has one) and the eos id."""
    import gguf

    has = any(os.path.exists(os.path.join(hf_dir, n)) for n in ("tokenizer.json", "vocab.json"))
    if not has:
        log(f"{hf_dir}: no tokenizer files; the model will accept token ids only")
        eos = cfg.get("eos_token_id")
        if isinstance(eos, int):
            writer.add_key_value("tokenizer.ggml.eos_token_id", eos, gguf.GGUFValueType.UINT32)
        return
    from parrot._tokenizer_data import add_tokenizer

    add_tokenizer(writer, hf_dir, n_vocab=int(cfg["vocab_size"]))
