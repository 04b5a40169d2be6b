"""The multimodal forward pass in C (CLIP tower, projector, multilingual MoE, splice) against the torch
reference Parrot of training/modeling_parrot.py (transformers' CLIPVisionModel + Qwen2ForCausalLM), f32.

Tolerances: everything is f32 on both sides; the only differences are summation orders in GEMMs (OpenBLAS vs
torch), so errors are ~1e-6 relative per layer. 1e-5 for intermediate activations and routing weights, 1e-4
relative (to the largest magnitude) for logits after ~10 chained layers."""
import json
import os

import numpy as np
import pytest
import torch

import parrot
from training.modeling_parrot import IMAGE_TOKEN_INDEX, make_tiny_parrot

assert IMAGE_TOKEN_INDEX == parrot.IMAGE_TOKEN


def rel(a, b):
    return float(np.abs(np.asarray(a) - np.asarray(b)).max() / max(np.abs(np.asarray(b)).max(), 1e-30))


def build(tmp_path, seed=0, vision_inside=True, **overrides):
    ref = make_tiny_parrot(seed, **overrides).eval()
    d = str(tmp_path / f"hf{seed}")
    clip = str(tmp_path / f"clip{seed}") if not vision_inside else None
    ref.save_pretrained(d, vision_inside=vision_inside, clip_dir=clip, max_shard_size=60_000)
    out = parrot.convert(d, tmp_path / f"m{seed}.gguf", clip=clip, dtype="f32", progress=False)
    return ref, parrot.load(out, threads=2)


def pixels_for(ref, seed=0):
    S = ref.vision_config.image_size
    return np.random.default_rng(seed).normal(0, 1, (3, S, S)).astype(np.float32)


def prompt_ids(n_before=5, n_after=9, seed=0, vocab=300):
    r = np.random.default_rng(seed)
    return list(r.integers(0, vocab, n_before)) + [IMAGE_TOKEN_INDEX] + list(r.integers(0, vocab, n_after))


def check_all_stages(ref, m, ids, px):
    with torch.no_grad():
        pt = torch.from_numpy(px)[None]
        vt = ref.model.vision_tower.vision_tower.vision_model(pixel_values=pt, output_hidden_states=True)
        hidden = vt.hidden_states[ref.config.mm_vision_select_layer]
        if ref.config.mm_vision_select_feature == "patch":
            hidden = hidden[:, 1:]
        proj = ref.model.mm_projector(hidden)[0]
        text_ids = torch.tensor([i for i in ids if i != IMAGE_TOKEN_INDEX])
        moe_out, w_ref = ref.moe(proj, ref.model.embed_tokens(text_ids))
        logits_ref = ref(ids, pt).numpy()
    feats = m._core.vision_features(px)
    assert rel(feats, hidden[0].numpy()) <= 1e-5
    x = m.encode_image(px)
    assert rel(m._core.project(feats), proj.numpy()) <= 1e-5
    assert rel(x, proj.numpy()) <= 1e-5
    if ref.config.use_moe:   # the MoE's stages, as Context.prefill runs them inside the C core
        w = m._core.moe_routing(x, m._core.embed(np.array([i for i in ids if i != IMAGE_TOKEN_INDEX], np.int32)))
        out = m._core.moe_combine(x, m._core.moe_experts(x), w)
    else:
        out, w = x, None
    if ref.config.use_moe:
        assert np.abs(w - w_ref.numpy()).max() <= 1e-5
        assert abs(float(w.sum()) - 1) <= 1e-6
    assert rel(out, moe_out.numpy()) <= 1e-5
    logits = m.logits(ids, pixels=px)
    assert logits.shape == logits_ref.shape
    assert rel(logits, logits_ref) <= 1e-4
    return w


def test_default_parrot_inside_checkpoint(tmp_path):
    ref, m = build(tmp_path)
    assert m.config["image_tokens"] == (42 // 14) ** 2 + 1
    assert m.config["vision_layers_run"] == 2  # select -2 of 3 layers: the last one never runs
    ids, px = prompt_ids(), pixels_for(ref)
    w = check_all_stages(ref, m, ids, px)
    np.testing.assert_array_equal(m.last_routing, w)


def test_vision_from_separate_clip_checkpoint(tmp_path):
    ref, m = build(tmp_path, seed=1, vision_inside=False)
    check_all_stages(ref, m, prompt_ids(seed=1), pixels_for(ref, 1))


@pytest.mark.parametrize("overrides", [
    dict(use_moe=False),
    dict(use_moe_residual=False),
    dict(moe_weight=0.37),
    dict(num_experts=1),
    dict(num_experts=8),
    dict(mm_vision_select_feature="patch"),
    dict(mm_projector_type="linear"),
    dict(mm_vision_select_layer=-1),
    dict(vision_patch_size=7, vision_image_size=35, vision_hidden_act="gelu"),
], ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_variants(tmp_path, overrides):
    ref, m = build(tmp_path, seed=2, **overrides)
    check_all_stages(ref, m, prompt_ids(seed=2), pixels_for(ref, 2))


@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_image_position_and_greedy_answer(tmp_path, where):
    ref, m = build(tmp_path, seed=3)
    r = np.random.default_rng(3)
    text = list(r.integers(0, 300, 12))
    k = {"start": 0, "middle": 6, "end": 12}[where]
    ids = text[:k] + [IMAGE_TOKEN_INDEX] + text[k:]
    px = pixels_for(ref, 3)
    check_all_stages(ref, m, ids, px)
    want = ref.generate(ids, torch.from_numpy(px), max_new_tokens=32, eos_token_ids=[])
    got = m.generate_ids(ids, 32, pixels=px)
    assert got == want


def test_language_of_the_prompt_changes_routing(tmp_path):
    """Two prompts about the same image whose text comes from disjoint parts of the vocabulary (as two
    languages' tokens do) route differently, on the reference and identically on us."""
    ref, m = build(tmp_path, seed=4)
    px = pixels_for(ref, 4)
    a = list(range(10, 30)) + [IMAGE_TOKEN_INDEX]
    b = list(range(200, 220)) + [IMAGE_TOKEN_INDEX]
    wa, wb = check_all_stages(ref, m, a, px), check_all_stages(ref, m, b, px)
    assert np.abs(wa - wb).max() > 1e-3


def test_placeholder_errors(tmp_path):
    ref, m = build(tmp_path, seed=5)
    px = pixels_for(ref)
    with pytest.raises(ValueError, match="2 times"):
        m.logits([1, IMAGE_TOKEN_INDEX, 2, IMAGE_TOKEN_INDEX], pixels=px)
    with pytest.raises(ValueError, match="no pixels"):
        m.logits([1, IMAGE_TOKEN_INDEX, 2])
    with pytest.raises(ValueError, match="no image placeholder"):
        m.logits([1, 2, 3], pixels=px)
    with pytest.raises(ValueError, match=r"pixels must have shape \(3, 42, 42\)"):
        m.logits([1, IMAGE_TOKEN_INDEX], pixels=np.zeros((3, 40, 40), np.float32))


def test_missing_vision_tower_names_mm_vision_tower(tmp_path):
    ref = make_tiny_parrot(6)
    d = str(tmp_path / "hf")
    ref.save_pretrained(d, vision_inside=False, clip_dir=str(tmp_path / "clip"))
    cfg = json.load(open(os.path.join(d, "config.json")))
    cfg["mm_vision_tower"] = "someone/clip-elsewhere"
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    with pytest.raises(parrot.ModelError, match="mm_vision_tower.*someone/clip-elsewhere.*--clip"):
        parrot.convert(d, tmp_path / "o.gguf", progress=False)
