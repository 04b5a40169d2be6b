"""Hugging Face checkpoint (Parrot or plain Qwen2) -> one parrot GGUF model file.

    parrot.convert("Parrot-7B/", "parrot-7b.gguf", clip="clip-vit-large-patch14-336/", dtype="f16")

Reads sharded safetensors (f32, f16, bf16) or torch ``pytorch_model*.bin`` without torch, in named steps:

1. ``_read_config``     config.json (an object), model type;
2. ``_open_tensors``    the checkpoint's tensor headers, and the CLIP tower's (inside, ``clip``, or the
                        ``mm_vision_tower`` directory or Hub id);
3. ``_plan_llm`` / ``_plan_vision`` / ``_plan_parrot``: every config field type- and range-checked
   (:class:`_Fields`), every expected tensor checked for presence, shape and dtype, all problems reported at once;
4. ``_metadata``        the GGUF keys;
5. ``_write_gguf``      header, then tensor data streamed in chunks of at most ``CHUNK_ELEMENTS`` values, each
                        checked finite (in the source and in the stored type) before it is written.

Nothing is created before step 5; the output is written to a temporary file beside OUT and renamed at the
end, so a failure (a NaN found in the last tensor, Ctrl-C) never leaves a half-written OUT, and an existing OUT
is kept unless ``force=True``. Peak memory is a constant plus one chunk (~ 0.5 GB), whatever the checkpoint's
size: tensors are read with explicit reads into fresh buffers (no memory map whose pages would stay resident).
Names and keys written: docs/gguf.md. Every error is a one-line :class:`ModelError` naming the file and the
field or tensor (missing/mis-shaped tensors: one line each).

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
import math
import os
import re
import sys
import tempfile
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from parrot._safetensors import FLOAT_DTYPES, Checkpoint, TensorInfo, bf16_to_f32, open_checkpoint
from parrot.errors import ModelError
from parrot.prompt import DEFAULT_SYSTEM

DTYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
# general.file_type as llama.cpp numbers it (LLAMA_FTYPE_ALL_F32, MOSTLY_F16, MOSTLY_Q4_0, MOSTLY_Q8_0, MOSTLY_BF16)
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "bf16": 32}
KNOWN_CLIP = {
    # configuration of openai/clip-vit-large-patch14-336, used when only the name is known (docs/model.md §10)
    "openai/clip-vit-large-patch14-336": dict(
        hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
        patch_size=14, image_size=336, hidden_act="quick_gelu", layer_norm_eps=1e-5),
}
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# values converted per step: 32 Mi f32 values = 128 MiB; with the source chunk, its f32 widening and the
# converted bytes, a step holds < 0.5 GB however large the tensor (Parrot-7B's embedding is 544 M values)
CHUNK_ELEMENTS = 32 * 1024 * 1024
UINT32_MAX = 2 ** 32 - 1
F16_MAX = 65504.0
MAX_PROBLEMS_SHOWN = 20
Cfg = Dict[str, Any]           # a parsed config.json object
Meta = List[Tuple[str, Any, Any]]  # (GGUF key, value, GGUFValueType)
Log = Callable[[str], None]


@dataclass
class _Entry:
    name: str                  # GGUF tensor name
    src: TensorInfo            # where the data comes from
    shape: Tuple[int, ...]     # shape written (numpy order)
    kind: str                  # "matrix" (target dtype) or "f32"


def _read_json(path: str) -> Cfg:
    """A JSON file that must hold an object."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ModelError(f"{path}: not found") from None
    except (OSError, ValueError, RecursionError) as e:
        raise ModelError(f"{path}: cannot read JSON: {e}") from None
    if not isinstance(doc, dict):
        raise ModelError(f"{path}: expected a JSON object, found a {type(doc).__name__}")
    return doc


class _Fields:
    """Typed, range-checked access to one config object; each error names the file and the field."""

    def __init__(self, cfg: Cfg, where: str):
        self.cfg, self.where = cfg, where

    def _get(self, key: str, default: Any) -> Any:
        v = self.cfg.get(key)
        if v is None:
            if default is None:
                raise ModelError(f"{self.where}: missing config field '{key}'")
            return default
        return v

    def int(self, key: str, default: Optional[int] = None, lo: int = 1, hi: int = UINT32_MAX) -> int:
        v = self._get(key, default)
        if type(v) is not int:
            raise ModelError(f"{self.where}: config field '{key}' must be an integer, got {v!r}"[:300])
        if not lo <= v <= hi:
            raise ModelError(f"{self.where}: config field '{key}' is {v}, outside [{lo}, {hi}]"[:300])
        return v

    def float(self, key: str, default: Optional[float] = None, lo: float = -math.inf, hi: float = math.inf,
              lo_open: bool = False) -> float:
        v = self._get(key, default)
        if type(v) not in (int, float):
            raise ModelError(f"{self.where}: config field '{key}' must be a number, got {v!r}"[:300])
        v = float(v)
        if not math.isfinite(v) or not lo <= v <= hi or (lo_open and v == lo) or abs(v) > 3.4e38:
            raise ModelError(f"{self.where}: config field '{key}' is {v}; it must be finite and within "
                             f"{'(' if lo_open else '['}{lo}, {hi}]")
        return v

    def bool(self, key: str, default: bool) -> bool:
        v = self._get(key, default)
        if type(v) is not bool:
            raise ModelError(f"{self.where}: config field '{key}' must be true or false, got {v!r}"[:300])
        return v

    def str(self, key: str, default: str, allowed: Sequence[str]) -> str:
        v = self._get(key, default)
        if v not in allowed:
            raise ModelError(f"{self.where}: config field {key} {v!r} is not supported ({', '.join(allowed)})"[:300])
        return str(v)


class _Plan:
    """Collects the tensors to write and every problem found, to report them together."""

    def __init__(self, tensors: Dict[str, TensorInfo]):
        self.tensors = tensors
        self.entries: List[_Entry] = []
        self.problems: List[str] = []
        self.used: set[str] = set()

    def add(self, gguf_name: str, hf_name: str, shape: Sequence[int], kind: str = "matrix",
            out_shape: Optional[Sequence[int]] = None) -> None:
        info = self.tensors.get(hf_name)
        if info is None:
            self.problems.append(f"missing tensor '{hf_name}' (expected shape {list(shape)})")
            return
        self.used.add(hf_name)
        if tuple(info.shape) != tuple(shape):
            self.problems.append(f"tensor '{hf_name}' in {os.path.basename(info.path)} has shape "
                                 f"{list(info.shape)}, expected {list(shape)}")
            return
        if info.dtype not in FLOAT_DTYPES:
            self.problems.append(f"tensor '{hf_name}' has dtype {info.dtype}; expected F32, F16 or BF16")
            return
        self.entries.append(_Entry(gguf_name, info, tuple(out_shape or shape), kind))

    def check_layers(self, fields: _Fields, key: str, prefix: str) -> int:
        """A layer count, bounded by the layers whose tensors are present (so a config claiming 10⁹ layers is
        one error, not 10⁹)."""
        n = fields.int(key, lo=0)
        pat = re.compile(re.escape(prefix) + r"(\d+)\.")
        present = {int(m.group(1)) for m in map(pat.match, self.tensors) if m}
        have = max(present) + 1 if present else 0
        if n > have:
            raise ModelError(f"{fields.where}: config field '{key}' is {n}, but the checkpoint holds tensors "
                             f"of {have} such layers ('{prefix}N.*')")
        return n

    def raise_problems(self, where: str) -> None:
        if self.problems:
            shown = self.problems[:MAX_PROBLEMS_SHOWN]
            more = len(self.problems) - len(shown)
            raise ModelError(f"{where}: the checkpoint does not match its config.json: " + "; ".join(shown)
                             + (f"; and {more} more" if more else ""))


def _read_config(hf_dir: str) -> Tuple[Cfg, str, bool]:
    """config.json, its path, and whether it is a Parrot (else a plain Qwen2) checkpoint."""
    where = os.path.join(hf_dir, "config.json")
    cfg = _read_json(where)
    model_type = cfg.get("model_type", "")
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        raise ModelError(f"{where}: config field 'architectures' must be a list, got {archs!r}"[:300])
    is_parrot = model_type == "parrot_qwen2" or any("Parrot" in str(a) for a in archs)
    if not is_parrot and model_type != "qwen2":
        raise ModelError(f"{where}: model_type {model_type!r} is not supported (parrot_qwen2 or qwen2)"[:300])
    return cfg, where, is_parrot


def _find_vision_prefix(tensors: Dict[str, TensorInfo]) -> Optional[str]:
    for p in ("model.vision_tower.vision_tower.vision_model.", "model.vision_tower.vision_tower.",
              "vision_model."):
        if p + "embeddings.class_embedding" in tensors:
            return p
    return None


def _is_hub_id(name: str) -> bool:
    from parrot.hub import is_hub_id
    return is_hub_id(name)


def _open_tensors(hf_dir: str, cfg: Cfg, where: str, is_parrot: bool, clip: Optional[str]
                  ) -> Tuple[Checkpoint, Optional[str], Optional[str]]:
    """The checkpoint's tensors plus, for a Parrot without the tower inside, the CLIP checkpoint's; the vision
    tensors' name prefix; the CLIP directory used (``clip``, the ``mm_vision_tower`` directory, or its Hub
    snapshot)."""
    ckpt = open_checkpoint(hf_dir)
    if not is_parrot:
        return ckpt, None, clip
    prefix = _find_vision_prefix(ckpt.tensors)
    tower = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    if tower is not None and not isinstance(tower, str):
        raise ModelError(f"{where}: config field 'mm_vision_tower' must be a string, got {tower!r}"[:300])
    if clip is None and tower and prefix is None:
        if os.path.isdir(tower):
            clip = tower
        elif _is_hub_id(tower):
            from parrot.hub import snapshot
            try:
                clip = snapshot(tower)
            except ModelError as e:
                raise ModelError(f"{where}: the vision tower is not inside the checkpoint and mm_vision_tower "
                                 f"{tower!r} cannot be fetched ({e}); pass its CLIP checkpoint directory with "
                                 f"--clip") from None
    if clip is not None and os.path.isdir(clip) is False and _is_hub_id(clip):
        from parrot.hub import snapshot
        clip = snapshot(clip)
    if prefix is None and clip is not None:
        tower_ckpt = open_checkpoint(clip)
        prefix = _find_vision_prefix(tower_ckpt.tensors)
        if prefix is None:
            raise ModelError(f"{clip}: no CLIP vision tower found (expected 'vision_model.embeddings.*')")
        ckpt.files += tower_ckpt.files
        for k, v in tower_ckpt.tensors.items():
            if k.startswith(prefix):
                ckpt.tensors[k] = v
    if prefix is None:
        raise ModelError(f"{where}: the vision tower is not inside the checkpoint and mm_vision_tower "
                         f"({tower!r}) cannot be loaded here; pass its CLIP checkpoint directory (or Hub id) "
                         f"with --clip"[:400])
    return ckpt, prefix, clip


def _vision_config(cfg: Cfg, where: str, clip: Optional[str]) -> Tuple[Cfg, str, Tuple[float, ...], Tuple[float, ...]]:
    """CLIP vision hyperparameters and where they came from; image mean/std. A CLIP checkpoint's own config wins
    over the checkpoint's ``vision_config`` and over the built-in table."""
    mean, std = CLIP_MEAN, CLIP_STD
    tower = cfg.get("mm_vision_tower") or cfg.get("vision_tower")
    d = clip
    if d is None and isinstance(tower, str) and os.path.isdir(tower):
        d = tower
    if d is None and isinstance(tower, str) and _is_hub_id(tower):
        from parrot.hub import snapshot
        # a tower in the table needs no download; its cached snapshot's config still wins when present
        d = snapshot(tower, weights=False, local_only=tower in KNOWN_CLIP, missing_ok=True)
    if d is not None and os.path.exists(os.path.join(d, "config.json")):
        cj = os.path.join(d, "config.json")
        c = _read_json(cj)
        vc = c.get("vision_config", c)
        if not isinstance(vc, dict):
            raise ModelError(f"{cj}: config field 'vision_config' must be an object")
        pp = os.path.join(d, "preprocessor_config.json")
        if os.path.exists(pp):
            p = _read_json(pp)
            mean, std = p.get("image_mean", mean), p.get("image_std", std)
            for key, v in (("image_mean", mean), ("image_std", std)):
                if not (isinstance(v, (list, tuple)) and len(v) == 3 and all(
                        type(x) in (int, float) and math.isfinite(x) for x in v)) or (key == "image_std" and min(v) <= 0):
                    raise ModelError(f"{pp}: field '{key}' must be 3 finite numbers (std positive), got {v!r}"[:300])
        return vc, cj, tuple(mean), tuple(std)
    if "vision_config" in cfg:
        if not isinstance(cfg["vision_config"], dict):
            raise ModelError(f"{where}: config field 'vision_config' must be an object")
        return cfg["vision_config"], f"{where} (vision_config)", mean, std
    if tower in KNOWN_CLIP:
        return KNOWN_CLIP[tower], f"the known configuration of {tower}", mean, std
    raise ModelError(f"{where}: mm_vision_tower is {tower!r}: its configuration is unknown; pass the "
                     f"CLIP checkpoint directory with --clip"[:400])


def _rope_theta(f: _Fields) -> float:
    """RoPE base; transformers < 5 writes rope_theta (+ rope_scaling), 5.x writes rope_parameters. Only
    unscaled ("default") RoPE is supported."""
    cfg = f.cfg
    for key in ("rope_scaling", "rope_parameters"):
        rope = cfg.get(key)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise ModelError(f"{f.where}: config field {key} {rope!r} is not supported (null or an object with "
                             f"rope_type 'default')"[:300])
        kind = rope.get("rope_type", rope.get("type", "default"))
        if kind != "default":
            raise ModelError(f"{f.where}: rope scaling {kind!r} ({key}) is not supported (default RoPE only)"[:300])
        if "rope_theta" in rope:
            return _Fields(rope, f"{f.where} ({key})").float("rope_theta", lo=0, lo_open=True)
    return f.float("rope_theta", 1e6, lo=0, lo_open=True)


def _plan_llm(plan: _Plan, cfg: Cfg, where: str) -> Cfg:
    f = _Fields(cfg, where)
    V = f.int("vocab_size")
    d = f.int("hidden_size")
    L = plan.check_layers(f, "num_hidden_layers", "model.layers.")
    H = f.int("num_attention_heads")
    Hkv = f.int("num_key_value_heads", H)
    ff = f.int("intermediate_size")
    tied = f.bool("tie_word_embeddings", False)
    f.str("hidden_act", "silu", ("silu",))
    theta = _rope_theta(f)
    eps = f.float("rms_norm_eps", 1e-6, lo=0, hi=1, lo_open=True)
    ctx = f.int("max_position_embeddings", 32768, hi=2 ** 31 - 1)
    if f.bool("use_sliding_window", False) and cfg.get("sliding_window") is not None and \
            f.int("sliding_window", hi=2 ** 31 - 1) < ctx:
        raise ModelError(f"{where}: sliding-window attention (sliding_window {cfg['sliding_window']}) is not supported")
    if d % H or H % Hkv or (d // H) % 2:
        raise ModelError(f"{where}: hidden_size {d}, num_attention_heads {H}, num_key_value_heads {Hkv} are "
                         f"inconsistent (heads must divide hidden_size into even head sizes, kv heads divide heads)")
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
    return dict(V=V, d=d, L=L, H=H, Hkv=Hkv, ff=ff, tied=tied, theta=theta, eps=eps, ctx=ctx)


def _plan_vision(plan: _Plan, prefix: str, vc: Cfg, where: str) -> Cfg:
    f = _Fields(vc, where)
    vd = f.int("hidden_size")
    vff = f.int("intermediate_size")
    vL = plan.check_layers(f, "num_hidden_layers", prefix + "encoder.layers.")
    vH = f.int("num_attention_heads")
    ps = f.int("patch_size", hi=4096)
    S = f.int("image_size", hi=65536)
    act = f.str("hidden_act", "quick_gelu", ("quick_gelu", "gelu"))
    eps = f.float("layer_norm_eps", 1e-5, lo=0, hi=1, lo_open=True)
    if S % ps:
        raise ModelError(f"{where}: image_size {S} is not a multiple of patch_size {ps}")
    if vd % vH:
        raise ModelError(f"{where}: hidden_size {vd} is not a multiple of num_attention_heads {vH}")
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
    return dict(vd=vd, vff=vff, vL=vL, vH=vH, ps=ps, S=S, act=act, eps=eps)


def _parrot_options(cfg: Cfg, where: str) -> Cfg:
    """The Parrot-level choices (projector, feature selection, MoE), checked before any tensor planning."""
    f = _Fields(cfg, where)
    return dict(
        proj=f.str("mm_projector_type", "mlp2x_gelu", ("mlp2x_gelu", "linear", "identity")),
        feat=f.str("mm_vision_select_feature", "cls_patch", ("cls_patch", "patch")),
        merge=f.str("mm_patch_merge_type", "flat", ("flat",)),
        # missing: LLaVA's default "pad"; null or "": no padding (plain resize)
        aspect=f.str("image_aspect_ratio", "pad", ("pad", "square")) if cfg.get("image_aspect_ratio", "pad") else "square",
        use_moe=f.bool("use_moe", True), residual=f.bool("use_moe_residual", True),
        moe_weight=f.float("moe_weight", 0.1),
    )


def _plan_parrot(plan: _Plan, cfg: Cfg, where: str, opts: Cfg, llm: Cfg, vis: Cfg) -> Cfg:
    """The projector and the MoE of a Parrot checkpoint."""
    f = _Fields(cfg, where)
    d, vd = llm["d"], vis["vd"]
    select_layer = f.int("mm_vision_select_layer", -2, lo=-(vis["vL"] + 1), hi=vis["vL"])
    mm_hidden = f.int("mm_hidden_size", vd)
    if mm_hidden != vd:
        plan.problems.append(f"mm_hidden_size {mm_hidden} differs from the vision tower's hidden size {vd}")
    proj = opts["proj"]
    if proj == "mlp2x_gelu":
        plan.add("mm.0.weight", "model.mm_projector.0.weight", (d, vd))
        plan.add("mm.0.bias", "model.mm_projector.0.bias", (d,), "f32")
        plan.add("mm.2.weight", "model.mm_projector.2.weight", (d, d))
        plan.add("mm.2.bias", "model.mm_projector.2.bias", (d,), "f32")
    elif proj == "linear":
        plan.add("mm.0.weight", "model.mm_projector.weight", (d, vd))
        plan.add("mm.0.bias", "model.mm_projector.bias", (d,), "f32")
    E = f.int("num_experts", 6, hi=len(plan.tensors))  # each expert has tensors: more than there are is wrong
    moe_ff = f.int("moe_intermediate_size", 4096)
    top_k = f.int("moe_top_k", 0, lo=0)  # 0: all experts; more than E means all too
    if opts["use_moe"]:
        moe_hidden = f.int("moe_hidden_size", d)
        if moe_hidden != d:
            plan.problems.append(f"moe_hidden_size {moe_hidden} differs from hidden_size {d}")
        plan.add("moe.gate.weight", "model.moe_model.gate.weight", (E, d), "f32")
        for e in range(E):
            q = f"model.moe_model.experts.{e}."
            plan.add(f"moe.exp.{e}.ffn_gate.weight", q + "gate_proj.weight", (moe_ff, d))
            plan.add(f"moe.exp.{e}.ffn_up.weight", q + "up_proj.weight", (moe_ff, d))
            plan.add(f"moe.exp.{e}.ffn_down.weight", q + "down_proj.weight", (d, moe_ff))
    return dict(select_layer=select_layer, mm_hidden=mm_hidden, E=E, moe_ff=moe_ff, top_k=top_k)


def _metadata(hf_dir: str, cfg: Cfg, dtype: str, llm: Cfg, vis: Optional[Cfg], opts: Optional[Cfg],
              moe: Optional[Cfg], mean: Sequence[float], std: Sequence[float]) -> Meta:
    import gguf

    A = gguf.GGUFValueType
    meta: Meta = [
        ("general.name", os.path.basename(os.path.normpath(hf_dir)), A.STRING),
        ("general.file_type", FILE_TYPE[dtype], A.UINT32),
        ("parrot.source_model_type", str(cfg.get("model_type", "")), A.STRING),
        ("parrot.vocab_size", llm["V"], A.UINT32),
        ("parrot.embedding_length", llm["d"], A.UINT32),
        ("parrot.block_count", llm["L"], A.UINT32),
        ("parrot.feed_forward_length", llm["ff"], A.UINT32),
        ("parrot.attention.head_count", llm["H"], A.UINT32),
        ("parrot.attention.head_count_kv", llm["Hkv"], A.UINT32),
        ("parrot.context_length", llm["ctx"], A.UINT32),
        ("parrot.attention.layer_norm_rms_epsilon", llm["eps"], A.FLOAT32),
        ("parrot.rope.freq_base", llm["theta"], A.FLOAT32),
        ("parrot.tie_word_embeddings", llm["tied"], A.BOOL),
        ("parrot.prompt.format", "qwen_chat", A.STRING),
        ("parrot.prompt.system", DEFAULT_SYSTEM, A.STRING),
    ]
    if vis is None or opts is None or moe is None:
        return meta
    return meta + [
        ("parrot.vision.present", True, A.BOOL),
        ("parrot.vision.image_size", vis["S"], A.UINT32),
        ("parrot.vision.patch_size", vis["ps"], A.UINT32),
        ("parrot.vision.embedding_length", vis["vd"], A.UINT32),
        ("parrot.vision.feed_forward_length", vis["vff"], A.UINT32),
        ("parrot.vision.block_count", vis["vL"], A.UINT32),
        ("parrot.vision.attention.head_count", vis["vH"], A.UINT32),
        ("parrot.vision.attention.layer_norm_epsilon", vis["eps"], A.FLOAT32),
        ("parrot.vision.activation", vis["act"], A.STRING),
        ("parrot.vision.image_mean", [float(x) for x in mean], A.ARRAY),
        ("parrot.vision.image_std", [float(x) for x in std], A.ARRAY),
        ("parrot.vision.select_layer", moe["select_layer"], A.INT32),
        ("parrot.vision.select_feature", opts["feat"], A.STRING),
        ("parrot.vision.image_aspect_ratio", opts["aspect"], A.STRING),
        ("parrot.vision.tower", str(cfg.get("mm_vision_tower", "")), A.STRING),
        ("parrot.projector.type", opts["proj"], A.STRING),
        ("parrot.projector.input_size", moe["mm_hidden"], A.UINT32),
        ("parrot.projector.patch_merge_type", opts["merge"], A.STRING),
        ("parrot.moe.enabled", opts["use_moe"], A.BOOL),
        ("parrot.moe.residual", opts["residual"], A.BOOL),
        ("parrot.moe.expert_count", moe["E"], A.UINT32),
        ("parrot.moe.feed_forward_length", moe["moe_ff"], A.UINT32),
        ("parrot.moe.weight", opts["moe_weight"], A.FLOAT32),
        ("parrot.moe.top_k", moe["top_k"], A.UINT32),
    ]


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
    n = math.prod(shape)
    return {"f32": 4 * n, "f16": 2 * n, "bf16": 2 * n, "q8_0": n // 32 * 34, "q4_0": n // 32 * 18}[tdtype]


def _check_finite(values: np.ndarray, shown: Optional[np.ndarray] = None, why: str = "") -> None:
    """Raises _NonFinite with the first NaN/inf of ``values`` (flat index; the value shown is ``shown``'s).
    A float32 sum is NaN or infinite whenever an element is, so one vectorised pass without a temporary
    clears almost every chunk; only a non-finite sum (or an overflow of it) pays for the exact search."""
    if math.isfinite(float(np.add.reduce(values.reshape(-1), dtype=np.float32))):
        return
    ok = np.isfinite(values).reshape(-1)
    if ok.all():
        return  # the sum overflowed; every value is finite
    i = int(np.argmin(ok))
    v = float((values if shown is None else shown).reshape(-1)[i])
    raise _NonFinite(i, ("NaN" if v != v else f"{v:g}") + why)


def _convert_array(arr: np.ndarray, src_dtype: str, tdtype: str, name: str = "") -> np.ndarray:
    """The bytes of rows of one tensor stored as ``tdtype`` (an array whose tobytes() is the GGUF data).
    Raises _NonFinite (with the flat index within ``arr``) if a value is NaN or infinite in the source or
    would become infinite in ``tdtype``."""
    if src_dtype == tdtype.upper():  # f16 -> f16, bf16 -> bf16: the bits as they are, once checked
        _check_finite(bf16_to_f32(arr) if src_dtype == "BF16" else arr)
        return np.ascontiguousarray(arr)
    f32 = bf16_to_f32(arr) if src_dtype == "BF16" else np.asarray(arr, dtype=np.float32)
    _check_finite(f32)
    if tdtype == "f32":
        return np.ascontiguousarray(f32, dtype=np.float32)
    if tdtype in ("q8_0", "q4_0"):
        from parrot import _core

        return _core.quantize(np.ascontiguousarray(f32, dtype=np.float32).reshape(-1, f32.shape[-1]), tdtype)
    if tdtype == "f16":
        out = np.ascontiguousarray(f32.astype(np.float16))
        _check_finite(out, f32, f", beyond f16's range ±{F16_MAX:g}")
        return out
    # bf16 with round-to-nearest-even, as torch does
    bits = f32.view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    over = (rounded & 0x7F80) == 0x7F80  # exponent all ones: rounded up to infinity
    if over.any():
        i = int(np.argmax(over.reshape(-1)))
        raise _NonFinite(i, f"{float(f32.reshape(-1)[i]):g}, beyond bf16's range")
    return np.ascontiguousarray(rounded)


class _NonFinite(Exception):
    def __init__(self, index: int, value: str):
        self.index, self.value = index, value


@dataclass
class _Chunk:
    entry: _Entry
    first: int                 # first element (flat index into the source tensor)
    rows: int                  # whole rows of entry.shape[-1] values (1 for a vector)


def _chunks(entries: Sequence[_Entry]) -> List[_Chunk]:
    """Every tensor cut into steps of whole rows, at most ~CHUNK_ELEMENTS values each."""
    out = []
    for e in entries:
        cols, rows = e.shape[-1], math.prod(e.shape[:-1])
        step = max(1, CHUNK_ELEMENTS // max(cols, 1))
        out += [_Chunk(e, r * cols, min(step, rows - r)) for r in range(0, rows, step)]
    return out


def _read_chunk(ckpt: Checkpoint, c: _Chunk) -> np.ndarray:
    cols = c.entry.shape[-1]
    arr = ckpt.read(c.entry.src, c.first, c.rows * cols)
    return arr.reshape(c.rows, cols) if len(c.entry.shape) > 1 else arr


def _convert_chunk(pool: ThreadPoolExecutor, workers: int, arr: np.ndarray, c: _Chunk, tdtype: str) -> List[np.ndarray]:
    """One chunk converted by the pool's threads (numpy's loops and the C quantiser release the GIL), each
    taking a run of whole rows; the parts' bytes in order are the chunk's bytes."""
    e = c.entry
    parts = np.array_split(arr, min(workers, len(arr))) if arr.ndim > 1 and len(arr) > 1 else [arr]
    starts = np.cumsum([0] + [p.size for p in parts[:-1]])
    try:
        return list(pool.map(lambda p: _convert_array(p, e.src.dtype, tdtype, e.name), parts))
    except _NonFinite:  # which part, and where: re-run serially for the first bad value
        for p, start in zip(parts, starts):
            try:
                _convert_array(p, e.src.dtype, tdtype, e.name)
            except _NonFinite as bad:
                index = np.unravel_index(c.first + int(start) + bad.index, e.src.shape) if e.src.shape else ()
                raise ModelError(f"{e.src.path}: tensor '{e.src.name}' ({e.name}) holds {bad.value} at index "
                                 f"{list(map(int, index))}; converting to {tdtype} needs finite weights") from None
        raise


def _write_gguf(tmp: str, ckpt: Checkpoint, plan: _Plan, meta: Meta, dtype: str, hf_dir: str, cfg: Cfg, log: Log,
                progress: bool) -> None:
    """Header, metadata and tensor infos, then the tensors' data chunk by chunk (``tmp`` grows as it goes)."""
    import gguf

    A = gguf.GGUFValueType
    w = gguf.GGUFWriter(tmp, "parrot")
    try:
        for key, value, vtype in meta:
            if vtype == A.ARRAY:
                w.add_array(key, value)
            else:
                w.add_key_value(key, value, vtype)
        _add_tokenizer(w, hf_dir, cfg, log)
        # tensor infos first (sizes known from the plan), then data streamed chunk by chunk
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
                byte_shape = (*e.shape[:-1], nbytes // math.prod(e.shape[:-1]))
                w.add_tensor_info(e.name, byte_shape, np.dtype(np.uint8), nbytes,
                                  raw_dtype=Q.Q8_0 if t == "q8_0" else Q.Q4_0)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_ti_data_to_file()
        assert w.fout is not None
        fout = w.fout[0]
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=sum(e.src.nbytes for e in plan.entries), unit="B", unit_scale=True,
                       desc=f"converting to {dtype}", file=sys.stderr)
        # one thread reads the next chunk while the others convert this one: time ~ max(read, convert)
        chunks = _chunks(plan.entries)
        workers = max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(workers) as pool:
            pending = reader.submit(_read_chunk, ckpt, chunks[0]) if chunks else None
            written = 0
            for k, c in enumerate(chunks):
                assert pending is not None
                arr = pending.result()
                if k + 1 < len(chunks):
                    pending = reader.submit(_read_chunk, ckpt, chunks[k + 1])
                t = _tensor_dtype(c.entry, dtype)
                if c.first == 0:
                    w.write_padding(fout, fout.tell())
                    written = 0
                for data in _convert_chunk(pool, workers, arr, c, t):
                    data.tofile(fout)
                    written += data.nbytes
                if bar:
                    bar.update(arr.nbytes)
                del arr
                if k + 1 == len(chunks) or chunks[k + 1].entry is not c.entry:  # the tensor is complete
                    assert written == _tensor_bytes(c.entry.shape, t), c.entry.name
                    w.write_padding(fout, written)
        if bar:
            bar.close()
        fout.flush()
        os.fsync(fout.fileno())
    finally:
        w.close()


def convert(hf_dir: "os.PathLike[str] | str", out_path: "os.PathLike[str] | str", *,
            clip: "os.PathLike[str] | str | None" = None, dtype: str = "f16", force: bool = False,
            progress: bool = True, log: Optional[Log] = None) -> str:
    """Converts a Hugging Face Parrot (``model_type`` ``parrot_qwen2``) or plain Qwen2 checkpoint directory
    into one GGUF file. ``clip`` is a separate CLIP checkpoint (directory or Hub id) for the vision tower when
    the Parrot checkpoint does not hold it; by default the config's ``mm_vision_tower`` (a directory, or a Hub
    id fetched with :mod:`parrot.hub`). Returns the output path.

    Raises ModelError (one line, naming file and field or tensor) for a bad config field, missing / mis-shaped
    tensors (all listed), non-finite weights, unreadable or corrupt files; FileExistsError if ``out_path``
    exists and ``force`` is false."""
    say: Log = log if log is not None else (lambda s: print(s, file=sys.stderr))
    hf_dir, out_path = os.fspath(hf_dir), os.fspath(out_path)
    clip = os.fspath(clip) if clip is not None else None
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    if not os.path.isdir(hf_dir):
        raise ModelError(f"{hf_dir}: not a checkpoint directory")
    if os.path.exists(out_path) and not force:
        raise FileExistsError(f"{out_path} exists; pass force=True (--force) to overwrite it")

    cfg, where, is_parrot = _read_config(hf_dir)
    opts = _parrot_options(cfg, where) if is_parrot else None
    ckpt, prefix, clip = _open_tensors(hf_dir, cfg, where, is_parrot, clip)
    try:
        plan = _Plan(ckpt.tensors)
        llm = _plan_llm(plan, cfg, where)
        vis = moe = None
        mean: Tuple[float, ...] = CLIP_MEAN
        std: Tuple[float, ...] = CLIP_STD
        if is_parrot and prefix is not None and opts is not None:
            vc, vsource, mean, std = _vision_config(cfg, where, clip)
            say(f"vision tower: weights under '{prefix}', configuration from {vsource}")
            vis = _plan_vision(plan, prefix, vc, vsource)
            moe = _plan_parrot(plan, cfg, where, opts, llm, vis)
        plan.raise_problems(hf_dir)
        ignored = sorted(n for n in ckpt.tensors if n not in plan.used and not n.startswith("text_model.")
                         and not n.endswith("position_ids") and not n.endswith("rotary_emb.inv_freq")
                         and "logit_scale" not in n and "visual_projection" not in n and "text_projection" not in n)
        if ignored:
            warnings.warn(f"{hf_dir}: {len(ignored)} tensor(s) not used by Parrot were skipped: "
                          + ", ".join(ignored[:8]) + (" ..." if len(ignored) > 8 else ""))
        meta = _metadata(hf_dir, cfg, dtype, llm, vis, opts, moe, mean, std)

        out_dir = os.path.dirname(os.path.abspath(out_path))
        fd, tmp = tempfile.mkstemp(prefix=os.path.basename(out_path) + ".", suffix=".partial", dir=out_dir)
        os.close(fd)
        try:
            _write_gguf(tmp, ckpt, plan, meta, dtype, hf_dir, cfg, say, progress)
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
        ckpt.close()
    return out_path


def _add_tokenizer(writer: Any, hf_dir: str, cfg: Cfg, log: Log) -> None:
    """Stores the tokenizer (if the checkpoint has one) and the eos id."""
    import gguf

    has = any(os.path.exists(os.path.join(hf_dir, n)) for n in ("tokenizer.json", "vocab.json"))
    if not has:
        log(f"{hf_dir}: no tokenizer files; the model will accept token ids only")
        eos = cfg.get("eos_token_id")
        if type(eos) is int and 0 <= eos <= UINT32_MAX:
            writer.add_key_value("tokenizer.ggml.eos_token_id", eos, gguf.GGUFValueType.UINT32)
        return
    from parrot._tokenizer_data import add_tokenizer

    add_tokenizer(writer, hf_dir, n_vocab=int(cfg["vocab_size"]))
