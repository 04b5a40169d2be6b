"""Torch reference implementation of Parrot (arXiv:2406.02539), written from docs/model.md.

The module tree mirrors the authors' ParrotQwen2ForCausalLM so that `state_dict()` gives the official
Hugging Face tensor names:

    model.embed_tokens / model.layers.N.* / model.norm / lm_head          (transformers Qwen2ForCausalLM)
    model.vision_tower.vision_tower.vision_model.*                       (CLIPVisionTower -> CLIPVisionModel)
    model.mm_projector.{0,2}.* | model.mm_projector.*                    (projector)
    model.moe_model.gate.weight, model.moe_model.experts.E.{gate,up,down}_proj.weight

Vision tower prefix: in AIDC-AI/Parrot, `ParrotMetaModel.vision_tower` is a `CLIPVisionTower`
(parrot/model/multimodal_encoder/clip_encoder.py) whose attribute `vision_tower` is a transformers
`CLIPVisionModel`, and that model's own state dict starts with `vision_model.` (parrot_qwen2.py reads
`self.model.vision_tower.vision_tower.vision_model.encoder.layers[0]...`). So the prefix (docs/model.md §10)
`model.vision_tower.vision_tower.` is followed by the CLIPVisionModel names, which begin with `vision_model.`:
the full name is e.g. `model.vision_tower.vision_tower.vision_model.embeddings.class_embedding`.

Two notes from reading the authors' code against docs/model.md:
- `MultilingualMoE` falls back to `moe_weight = 1.0` when the config lacks the key, while model.md §10 (and this file)
  use the training default 0.1 for a missing key. Checkpoints written here always store the key.
- During training the MoE's text tokens are the tokens whose label is IGNORE (system + user turn + the
  assistant role header), i.e. exactly the prompt tokens that inference sees, so training and inference route
  identically.
"""
import json
import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig, CLIPVisionModel, Qwen2Config, Qwen2ForCausalLM

IMAGE_TOKEN_INDEX = -200  # the placeholder id where "<image>" stood in the prompt (Parrot's constants.py)

# Config keys Parrot adds to Qwen2's, with the values a missing key takes (docs/model.md §10, Parrot-7B's values).
PARROT_DEFAULTS = {
    "mm_vision_tower": "openai/clip-vit-large-patch14-336",
    "mm_hidden_size": 1024,
    "mm_projector_type": "mlp2x_gelu",
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "cls_patch",
    "mm_patch_merge_type": "flat",
    "image_aspect_ratio": "pad",
    "num_experts": 6,
    "moe_hidden_size": None,  # = hidden_size
    "moe_intermediate_size": 4096,
    "use_moe": True,
    "use_moe_residual": True,
    "moe_weight": 0.1,
    "moe_top_k": None,  # stored, unused in the forward pass; = num_experts when missing
}

# Qwen2 keys as Qwen1.5 checkpoints (transformers 4.39) store them. transformers 5 would write
# `rope_parameters` instead of `rope_theta`; the official layout has `rope_theta`, so config.json is written by hand.
QWEN2_KEYS = [
    "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
    "num_key_value_heads", "hidden_act", "max_position_embeddings", "initializer_range", "rms_norm_eps",
    "use_cache", "tie_word_embeddings", "rope_theta", "use_sliding_window", "sliding_window",
    "max_window_layers", "attention_dropout", "bos_token_id", "eos_token_id",
]

# The tower Parrot-7B/14B name; its configuration is known (docs/model.md §10) when no CLIP directory is given.
OPENAI_CLIP_L336 = {
    "hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 24, "num_attention_heads": 16,
    "patch_size": 14, "image_size": 336, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5,
    "projection_dim": 768, "num_channels": 3,
}

CLIP_VISION_KEYS = ["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "patch_size",
                    "image_size", "hidden_act", "layer_norm_eps", "projection_dim", "num_channels"]


def build_projector(projector_type, mm_hidden_size, hidden_size):
    if projector_type == "mlp2x_gelu":
        # nn.GELU() default is the exact erf form
        return nn.Sequential(nn.Linear(mm_hidden_size, hidden_size), nn.GELU(), nn.Linear(hidden_size, hidden_size))
    if projector_type == "linear":
        return nn.Linear(mm_hidden_size, hidden_size)
    if projector_type == "identity":
        if mm_hidden_size != hidden_size:
            raise ValueError(f"identity projector needs mm_hidden_size == hidden_size, got {mm_hidden_size} != {hidden_size}")
        return nn.Identity()
    raise ValueError(f"unknown mm_projector_type {projector_type!r} (expected mlp2x_gelu, linear or identity)")


class CLIPVisionModel4x(nn.Module):
    """transformers 4.x's CLIPVisionModel layout: the transformer sits under `vision_model`. transformers 5
    flattened CLIPVisionModel (its state dict no longer starts with `vision_model.` and the prefix is mapped at
    load time), so the 4.x name is kept here explicitly: checkpoints written by Parrot's code (transformers 4.39)
    carry it."""

    def __init__(self, vision_config):
        super().__init__()
        self.vision_model = CLIPVisionModel(vision_config)


class CLIPVisionTower(nn.Module):
    """Holds the CLIP vision model under the attribute name `vision_tower`, as Parrot's CLIPVisionTower does."""

    def __init__(self, vision_config):
        super().__init__()
        self.vision_tower = CLIPVisionModel4x(vision_config)


class Expert(nn.Module):
    def __init__(self, hidden_size, intermediate_size):
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.up_proj = nn.Linear(hidden_size, intermediate_size, bias=False)
        self.down_proj = nn.Linear(intermediate_size, hidden_size, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MultilingualMoE(nn.Module):
    def __init__(self, hidden_size, intermediate_size, num_experts):
        super().__init__()
        self.gate = nn.Linear(hidden_size, num_experts, bias=False)
        self.experts = nn.ModuleList([Expert(hidden_size, intermediate_size) for _ in range(num_experts)])


def _parrot_value(config, key):
    value = getattr(config, key, None)
    if value is None:
        if key == "moe_hidden_size":
            return config.hidden_size
        if key == "moe_top_k":
            return _parrot_value(config, "num_experts")
        return PARROT_DEFAULTS[key]
    return value


class ParrotQwen2ForCausalLM(Qwen2ForCausalLM):
    """Parrot = CLIP ViT -> projector -> text-guided MoE -> spliced into a Qwen2 decoder.

    `config` is a Qwen2Config carrying Parrot's extra keys as attributes; `vision_config` a CLIPVisionConfig.
    """

    def __init__(self, config, vision_config):
        super().__init__(config)
        for key in PARROT_DEFAULTS:
            setattr(config, key, _parrot_value(config, key))
        if config.mm_vision_select_feature not in ("cls_patch", "patch"):
            raise ValueError(f"unknown mm_vision_select_feature {config.mm_vision_select_feature!r}")
        if config.mm_hidden_size != vision_config.hidden_size:
            raise ValueError(f"mm_hidden_size {config.mm_hidden_size} != vision hidden_size {vision_config.hidden_size}")
        if config.moe_hidden_size != config.hidden_size:
            raise ValueError(f"moe_hidden_size {config.moe_hidden_size} != hidden_size {config.hidden_size}")
        self.vision_config = vision_config
        self.model.vision_tower = CLIPVisionTower(vision_config)
        self.model.mm_projector = build_projector(config.mm_projector_type, config.mm_hidden_size, config.hidden_size)
        self.model.moe_model = MultilingualMoE(config.hidden_size, config.moe_intermediate_size, config.num_experts)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    # ---- vision ------------------------------------------------------------------------------------------------
    def encode_images(self, pixels):
        """pixels (B,3,S,S) or (3,S,S), already CLIP-normalised -> projected features (B, N, hidden)."""
        if pixels.dim() == 3:
            pixels = pixels.unsqueeze(0)
        out = self.model.vision_tower.vision_tower.vision_model(pixel_values=pixels, output_hidden_states=True)
        feats = out.hidden_states[self.config.mm_vision_select_layer]
        if self.config.mm_vision_select_feature == "patch":
            feats = feats[:, 1:]
        return self.model.mm_projector(feats)

    # ---- multilingual MoE --------------------------------------------------------------------------------------
    def moe(self, x, text_embeds, text_mask=None):
        """x: image features (N,d) or (B,N,d); text_embeds: (L,d) or (B,L,d); text_mask (B,L) bool, True = text.

        Returns (out, routing_weights) with routing_weights (num_experts,) or (B, num_experts)."""
        single = x.dim() == 2
        if single:
            x, text_embeds = x.unsqueeze(0), text_embeds.unsqueeze(0)
            text_mask = None if text_mask is None else text_mask.unsqueeze(0)
        moe = self.model.moe_model
        c = x[:, 0:1, :]  # the CLS row (B,1,d)
        scores = c @ text_embeds.transpose(-2, -1) / math.sqrt(x.shape[-1])
        if text_mask is not None:
            scores = scores.masked_fill(~text_mask[:, None, :], float("-inf"))
        a = torch.softmax(scores, dim=-1)
        g = a @ text_embeds  # (B,1,d)
        w = torch.softmax(moe.gate(g), dim=-1)[:, 0, :]  # (B,E)
        if not self.config.use_moe:
            out = x
        else:
            out = sum(w[:, e, None, None] * expert(x) for e, expert in enumerate(moe.experts))
            if self.config.use_moe_residual:
                out = out + self.config.moe_weight * x
        if single:
            return out[0], w[0]
        return out, w

    # ---- splice ------------------------------------------------------------------------------------------------
    def prepare_inputs_embeds(self, input_ids, pixels):
        """input_ids: 1-D ids with one IMAGE_TOKEN_INDEX placeholder -> (embeds (L', d), routing_weights (E,))."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(-1)
        where = (ids == IMAGE_TOKEN_INDEX).nonzero().flatten().tolist()
        if len(where) != 1:
            raise ValueError(f"expected exactly one image placeholder ({IMAGE_TOKEN_INDEX}) in input_ids, found {len(where)}")
        p = where[0]
        text_ids = torch.cat([ids[:p], ids[p + 1:]])
        if text_ids.numel() and (int(text_ids.min()) < 0 or int(text_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"token id out of range [0, {self.config.vocab_size})")
        text_embeds = self.model.embed_tokens(text_ids)
        image = self.encode_images(pixels)[0]
        out, w = self.moe(image, text_embeds)
        embeds = torch.cat([text_embeds[:p], out, text_embeds[p:]], dim=0)
        return embeds, w

    def logits_from_embeds(self, embeds, attention_mask=None):
        """embeds (L,d) or (B,L,d) -> logits (same leading shape, vocab); positions 0..L-1, causal."""
        single = embeds.dim() == 2
        if single:
            embeds = embeds.unsqueeze(0)
        out = Qwen2ForCausalLM.forward(self, inputs_embeds=embeds, attention_mask=attention_mask, use_cache=False)
        return out.logits[0] if single else out.logits

    def forward(self, input_ids, pixels):
        """One prompt with one image -> logits (L', vocab) over the spliced sequence."""
        embeds, _ = self.prepare_inputs_embeds(input_ids, pixels)
        return self.logits_from_embeds(embeds)

    @torch.no_grad()
    def generate(self, input_ids, pixels, max_new_tokens=512, eos_token_ids=None):
        """Greedy decoding. Re-runs the whole sequence each step (a reference, not fast). Returns new token ids
        (without the stop token). The MoE routes on the prompt tokens only, as Parrot does at inference."""
        if eos_token_ids is None:
            eos = self.config.eos_token_id
            eos_token_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        embeds, _ = self.prepare_inputs_embeds(input_ids, pixels)
        new_ids = []
        for _ in range(max_new_tokens):
            next_id = int(self.logits_from_embeds(embeds)[-1].argmax())
            if next_id in eos_token_ids:
                break
            new_ids.append(next_id)
            embeds = torch.cat([embeds, self.model.embed_tokens(torch.tensor([next_id]))], dim=0)
        return new_ids

    # ---- checkpoint I/O ----------------------------------------------------------------------------------------
    def config_dict(self, mm_vision_tower, dtype, vision_inside):
        cfg = {"architectures": ["ParrotQwen2ForCausalLM"], "model_type": "parrot_qwen2"}
        for key in QWEN2_KEYS:
            if key == "rope_theta":
                cfg[key] = float(_rope_theta(self.config))
            else:
                cfg[key] = getattr(self.config, key, None)
        for key in PARROT_DEFAULTS:
            cfg[key] = getattr(self.config, key)
        cfg["mm_vision_tower"] = mm_vision_tower
        cfg["torch_dtype"] = {torch.float32: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}[dtype]
        if vision_inside:
            # Not an official key: with the tower stored inside and a tower that is not the openai one, nothing
            # else says what its hyperparameters are; a converter may read them here.
            cfg["vision_config"] = {k: getattr(self.vision_config, k) for k in CLIP_VISION_KEYS}
        return cfg

    def save_pretrained(self, save_dir, vision_inside=True, clip_dir=None, tokenizer=None, dtype=torch.float32,
                        max_shard_size=2_000_000_000, mm_vision_tower=None):
        """Write the official Hugging Face Parrot layout.

        vision_inside=True: CLIP tensors in the shards under `model.vision_tower.vision_tower.vision_model.*`.
        vision_inside=False: a full CLIPModel checkpoint is written to `clip_dir` (default save_dir/clip-vit)
        and `mm_vision_tower` names that directory (absolute path)."""
        os.makedirs(save_dir, exist_ok=True)
        state = {k: v.detach().to(dtype).contiguous() for k, v in self.state_dict().items()}
        if self.config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        tower_prefix = "model.vision_tower.vision_tower."
        if vision_inside:
            if mm_vision_tower is None:
                mm_vision_tower = "tiny/clip-vit-parrot-tiny" if not _is_openai_l336(self.vision_config) \
                    else PARROT_DEFAULTS["mm_vision_tower"]
        else:
            state = {k: v for k, v in state.items() if not k.startswith(tower_prefix)}
            clip_dir = os.path.abspath(clip_dir or os.path.join(save_dir, "clip-vit"))
            self.save_clip(clip_dir, dtype)
            mm_vision_tower = clip_dir
        with open(os.path.join(save_dir, "config.json"), "w") as f:
            json.dump(self.config_dict(mm_vision_tower, dtype, vision_inside), f, indent=2)
        _save_sharded(state, save_dir, max_shard_size)
        if tokenizer is not None:
            save_tokenizer(tokenizer, save_dir)

    def save_clip(self, clip_dir, dtype=torch.float32):
        """A full CLIPModel checkpoint (vision_model.* = this tower; a small random text tower fills text_model.*)."""
        vc = self.vision_config
        text_config = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                       "num_attention_heads": 2, "max_position_embeddings": 16, "projection_dim": vc.projection_dim,
                       "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
        vision = {k: getattr(vc, k) for k in CLIP_VISION_KEYS}
        clip = CLIPModel(CLIPConfig(text_config=text_config, vision_config=vision, projection_dim=vc.projection_dim))
        missing = clip.vision_model.load_state_dict(self.model.vision_tower.vision_tower.vision_model.state_dict())
        assert not missing.missing_keys and not missing.unexpected_keys
        clip.to(dtype).save_pretrained(clip_dir)
        size = vc.image_size
        preprocessor = {
            "crop_size": {"height": size, "width": size}, "do_center_crop": True, "do_convert_rgb": True,
            "do_normalize": True, "do_rescale": True, "do_resize": True,
            "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
            "image_processor_type": "CLIPImageProcessor", "resample": 3, "rescale_factor": 1 / 255,
            "size": {"shortest_edge": size},
        }
        with open(os.path.join(clip_dir, "preprocessor_config.json"), "w") as f:
            json.dump(preprocessor, f, indent=2)

    @classmethod
    def from_pretrained(cls, load_dir, clip_dir=None, dtype=torch.float32):
        """Load what save_pretrained wrote (or an official checkpoint's layout). The vision tower comes from the
        shards when they hold it, else from clip_dir / the directory `mm_vision_tower` names."""
        with open(os.path.join(load_dir, "config.json")) as f:
            cfg = json.load(f)
        if cfg.get("model_type") != "parrot_qwen2":
            raise ValueError(f"{load_dir}/config.json: model_type {cfg.get('model_type')!r} is not 'parrot_qwen2'")
        state = _load_tensors(load_dir)
        tower_prefix = "model.vision_tower.vision_tower."
        inside = any(k.startswith(tower_prefix) for k in state)
        tower_name = cfg.get("mm_vision_tower", PARROT_DEFAULTS["mm_vision_tower"])
        if clip_dir is None and not inside:
            clip_dir = tower_name if os.path.isabs(tower_name) else os.path.join(load_dir, tower_name)
        if clip_dir is not None and os.path.isdir(clip_dir):
            with open(os.path.join(clip_dir, "config.json")) as f:
                clip_cfg = json.load(f)
            vision = clip_cfg.get("vision_config", clip_cfg)
            if not inside:
                clip_state = _load_tensors(clip_dir)
                state.update({tower_prefix + k: v for k, v in clip_state.items() if k.startswith("vision_model.")})
        elif "vision_config" in cfg:
            vision = cfg["vision_config"]
        elif tower_name == PARROT_DEFAULTS["mm_vision_tower"]:
            vision = OPENAI_CLIP_L336
        else:
            raise ValueError(f"{load_dir}: vision tower {tower_name!r} not found and its configuration is unknown")
        vision_config = CLIPVisionConfig(**{k: vision[k] for k in CLIP_VISION_KEYS if k in vision})
        vision_config._attn_implementation = "eager"
        qwen = {k: cfg[k] for k in QWEN2_KEYS if k in cfg and cfg[k] is not None}
        qwen.update({k: cfg[k] for k in PARROT_DEFAULTS if k in cfg})
        config = Qwen2Config(**qwen)
        config._attn_implementation = "eager"
        model = cls(config, vision_config)
        if config.tie_word_embeddings:
            state.pop("lm_head.weight", None)
        expected = set(model.state_dict().keys())
        if config.tie_word_embeddings:
            expected.discard("lm_head.weight")
        missing, unexpected = expected - set(state), set(state) - expected
        if missing or unexpected:
            raise ValueError(f"{load_dir}: missing tensors {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
        model.load_state_dict({k: v.to(torch.float32) for k, v in state.items()}, strict=False)
        return model.to(dtype).eval()


def _rope_theta(config):
    theta = getattr(config, "rope_theta", None)
    if theta is None:
        theta = (getattr(config, "rope_parameters", None) or {}).get("rope_theta", 10000.0)
    return theta


def _is_openai_l336(vision_config):
    return all(getattr(vision_config, k) == v for k, v in OPENAI_CLIP_L336.items() if k != "projection_dim")


def _save_sharded(state, save_dir, max_shard_size):
    """Shards named model-0000i-of-0000N.safetensors plus model.safetensors.index.json (HF's layout)."""
    for name in os.listdir(save_dir):
        if name.endswith(".safetensors") or name == "model.safetensors.index.json":
            os.remove(os.path.join(save_dir, name))
    shards, current, current_size = [], {}, 0
    for name, tensor in state.items():
        size = tensor.numel() * tensor.element_size()
        if current and current_size + size > max_shard_size:
            shards.append(current)
            current, current_size = {}, 0
        current[name] = tensor
        current_size += size
    if current:
        shards.append(current)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, os.path.join(save_dir, fname), metadata={"format": "pt"})
        for name, tensor in shard.items():
            weight_map[name] = fname
            total += tensor.numel() * tensor.element_size()
    with open(os.path.join(save_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)


def _load_tensors(load_dir):
    index = os.path.join(load_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(load_dir) if n.endswith(".safetensors"))
    if not files:
        raise ValueError(f"{load_dir}: no *.safetensors files")
    state = {}
    for name in files:
        state.update(load_file(os.path.join(load_dir, name)))
    return state


def save_tokenizer(tokenizer, save_dir):
    """Write tokenizer.json, tokenizer_config.json, vocab.json and merges.txt (Qwen2TokenizerFast layout).
    `tokenizer`: a `tokenizers.Tokenizer` (written Qwen1.5-style by training.tokenizer) or a transformers one."""
    if not hasattr(tokenizer, "save_pretrained"):
        from training.tokenizer import save_qwen2_tokenizer
        save_qwen2_tokenizer(tokenizer, save_dir)
        return
    tokenizer.save_pretrained(save_dir)
    with open(os.path.join(save_dir, "tokenizer.json"), encoding="utf-8") as f:
        model = json.load(f)["model"]
    if not os.path.exists(os.path.join(save_dir, "vocab.json")):
        with open(os.path.join(save_dir, "vocab.json"), "w", encoding="utf-8") as f:
            json.dump(model["vocab"], f, ensure_ascii=False)
    if not os.path.exists(os.path.join(save_dir, "merges.txt")):
        with open(os.path.join(save_dir, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n")
            for merge in model["merges"]:
                f.write((merge if isinstance(merge, str) else " ".join(merge)) + "\n")


# ---- tiny random models for tests ------------------------------------------------------------------------------
def tiny_configs(**overrides):
    """Tiny Qwen2+Parrot config and CLIP vision config. Keys prefixed `vision_` go to the CLIP config."""
    vision = dict(hidden_size=40, intermediate_size=72, num_hidden_layers=3, num_attention_heads=4, patch_size=14,
                  image_size=42, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=24, num_channels=3)
    qwen = dict(vocab_size=300, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, hidden_act="silu", max_position_embeddings=512, rms_norm_eps=1e-6,
                rope_theta=1e6, tie_word_embeddings=False, use_sliding_window=False, sliding_window=None,
                max_window_layers=2, attention_dropout=0.0, bos_token_id=None, eos_token_id=None,
                initializer_range=0.02, use_cache=True,
                mm_projector_type="mlp2x_gelu", mm_vision_select_layer=-2, mm_vision_select_feature="cls_patch",
                mm_patch_merge_type="flat", image_aspect_ratio="pad", num_experts=6, moe_intermediate_size=80,
                use_moe=True, use_moe_residual=True, moe_weight=0.1, moe_top_k=2)
    for key, value in overrides.items():
        if key.startswith("vision_"):
            vision[key[len("vision_"):]] = value
        else:
            qwen[key] = value
    qwen["mm_hidden_size"] = vision["hidden_size"]
    qwen["moe_hidden_size"] = qwen["hidden_size"]
    qwen["mm_vision_tower"] = "tiny/clip-vit-parrot-tiny"
    vision_config = CLIPVisionConfig(**vision)
    vision_config._attn_implementation = "eager"
    config = Qwen2Config(**qwen)
    config._attn_implementation = "eager"
    return config, vision_config


def make_tiny_parrot(seed=0, **overrides):
    """A random tiny Parrot with every parameter drawn from a seeded generator: matrices ~ N(0, 1/fan_in), norm
    weights ~ 1 + N(0, 0.1), biases ~ N(0, 0.1), embeddings ~ N(0, 0.5), so that no bias is zero and no norm is
    the identity (tests then catch a dropped term)."""
    config, vision_config = tiny_configs(**overrides)
    torch.manual_seed(seed)
    model = ParrotQwen2ForCausalLM(config, vision_config)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen)
            if "embed" in name or name.endswith("class_embedding"):
                p.copy_(0.5 * noise)
            elif p.dim() == 1 and ("norm" in name or "layrnorm" in name):
                p.copy_(1.0 + 0.1 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))
    return model.eval()
