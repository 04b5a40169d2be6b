"""The Qwen2 decoder in C against transformers' Qwen2ForCausalLM (tiny random models, several shapes)."""
import numpy as np
import pytest
import torch

import parrot
from conftest import make_qwen2

SHAPES = [
    dict(hidden=64, heads=4, kv_heads=2, layers=2, ff=96, tied=False),   # GQA, untied
    dict(hidden=64, heads=4, kv_heads=4, layers=2, ff=96, tied=True),    # MHA, tied
    dict(hidden=48, heads=3, kv_heads=1, layers=3, ff=80, tied=False, vocab=157),  # odd sizes, MQA
]


def ref_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("shape", SHAPES)
def test_logits_match_transformers_f32(tmp_path, shape):
    model, d = make_qwen2(tmp_path, **shape)
    out = parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False)
    m = parrot.load(out, threads=2)
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, 37)
    got, want = m.logits(ids), ref_logits(model, list(ids))
    # f32 everywhere; differences come only from summation order: 1e-4 relative to the logits' scale
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert rel <= 1e-4, rel


def test_greedy_with_kv_cache_matches_generate(tmp_path):
    model, d = make_qwen2(tmp_path, hidden=64, heads=4, kv_heads=2, layers=2, ff=96)
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False))
    prompt = [5, 17, 99, 3, 42, 7]
    with torch.no_grad():
        ref = model.generate(torch.tensor([prompt]), max_new_tokens=40, do_sample=False, min_new_tokens=40,
                             eos_token_id=None, pad_token_id=0)[0, len(prompt):].tolist()
    got = m.generate_ids(prompt, 40)
    assert got == ref


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_files(tmp_path, dtype):
    model, d = make_qwen2(tmp_path, hidden=64, heads=4, kv_heads=2, layers=2, ff=96)
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype=dtype, progress=False))
    ids = list(range(1, 30))
    got, want = m.logits(ids), ref_logits(model, ids)
    # weights rounded to 11 (f16) or 8 (bf16) significant bits: relative weight error ≤ 2^-11 / 2^-8;
    # through 2 layers of products of ~64-term sums the logit error stays a few times that. Compare
    # against the same model with rounded weights in torch to prove it is rounding, not a bug:
    tdtype = torch.float16 if dtype == "f16" else torch.bfloat16
    # (the file keeps vectors — norms, biases — in f32 and rounds matrices only)
    rounded = type(model)(model.config).eval()
    rounded.load_state_dict({k: v.to(tdtype).float() if v.dim() >= 2 else v for k, v in model.state_dict().items()})
    want_r = ref_logits(rounded, ids)
    assert np.abs(got - want_r).max() / np.abs(want_r).max() <= 1e-4
    eps = 2 ** -11 if dtype == "f16" else 2 ** -8
    assert np.abs(got - want).max() / np.abs(want).max() <= 16 * eps


def test_bf16_checkpoint_input(tmp_path):
    model, d = make_qwen2(tmp_path, dtype="bfloat16")
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False))
    ids = [1, 2, 3, 4, 5, 6, 7]
    rounded = type(model)(model.config).eval()
    rounded.load_state_dict({k: v.to(torch.bfloat16).float() for k, v in model.state_dict().items()})
    want = ref_logits(rounded, ids)
    assert np.abs(m.logits(ids) - want).max() / np.abs(want).max() <= 1e-4


def test_prefill_in_pieces_equals_whole(tmp_path):
    model, d = make_qwen2(tmp_path)
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False))
    ids = np.arange(1, 300) % 200
    whole = m.logits(ids)
    ctx = m._core.new_context(400)
    parts = [ctx.decode(ids[:100].astype(np.int32), all_logits=True),
             ctx.decode(ids[100:101].astype(np.int32), all_logits=True),
             ctx.decode(ids[101:].astype(np.int32), all_logits=True)]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-4 * np.abs(whole).max())
    assert ctx.n_past == len(ids)


def test_prompt_longer_than_one_pass_matches_transformers(tmp_path):
    # 1100 positions run as two equal passes of 550 (the decoder's passes hold at most 1024 positions), the second
    # attending to the first's KV cache; RMSNorm, RoPE, biases and SwiGLU split by rows over 3 threads.
    model, d = make_qwen2(tmp_path, hidden=64, heads=4, kv_heads=2, layers=2, ff=96, max_pos=2048)
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False), threads=3)
    ids = np.random.default_rng(1).integers(0, model.config.vocab_size, 1100)
    got, want = m.logits(ids), ref_logits(model, list(ids))
    # as the f32 test above: summation order only, 1e-4 relative to the logits' scale, at every position
    rel = np.abs(got - want).max() / np.abs(want).max()
    assert got.shape == want.shape and rel <= 1e-4, rel


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0", "f32"])
def test_decode_same_bits_on_any_thread_count(tmp_path, dtype):
    """Decoding one token at a time with an f16 cache (guided chunks of the fused jobs, the attention block's
    chunks of kv heads, the cache stored head by head and grown past its first 256 positions mid-decode) gives
    the same logits bit for bit on 1, 2 and 3 threads, and the same as a batch of one step for several contexts.
    (Every position is decoded alone: a long prompt's products do not promise thread-count independence.)"""
    model, d = make_qwen2(tmp_path, hidden=128, heads=4, kv_heads=2, layers=2, ff=160, max_pos=512)
    path = parrot.convert(d, tmp_path / "m.gguf", dtype=dtype, progress=False)
    ids = (np.random.default_rng(3).integers(0, model.config.vocab_size, 262)).astype(np.int32)
    runs = {}
    for threads in (1, 2, 3):
        core = parrot.load(path, threads=threads)._core
        for kv in ("f16", "f32"):
            ctx = core.new_context(300, kv_type=kv)
            runs[threads, kv] = np.stack([ctx.decode(ids[i:i + 1]) for i in range(262)])
        ctxs = [core.new_context(300, kv_type="f16") for _ in range(3)]
        for j, c in enumerate(ctxs):
            c.decode(ids[j:250 + j], logits=False)
        batch = core.decode_batch(ctxs, ids[250:253])
        for j, c in enumerate(ctxs):  # each context alone, the same step again
            c.truncate(250)
            np.testing.assert_array_equal(batch[j], c.decode(ids[250 + j:251 + j]))
    for threads in (2, 3):
        np.testing.assert_array_equal(runs[threads, "f16"], runs[1, "f16"])
    if dtype != "f32":  # (quantising the activations to q8_0 turns a small input change into a step)
        return
    # the f16 cache against the f32 one: f16 keeps 11 significant bits (each cached value within 2^-11 ≈ 4.9e-4
    # relative), which moves these logits by a few times that; a value cached at the wrong head or position
    # (or lost when the cache grows at 256) moves them by their own scale
    ref = runs[1, "f32"]
    assert np.abs(runs[1, "f16"] - ref).max() <= 5e-3 * np.abs(ref).max()
