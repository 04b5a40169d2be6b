"""Quantised and half-precision files: the converter's storage choices and bytes, and the accuracy of the
fast paths against our f32 engine (top-1 agreement and mean KL divergence of next-token distributions).

Accuracy has two parts. (1) Our engine adds little error beyond the storage format itself: the reference is
transformers' model with the very weights our file holds (dequantised, f32 activations), so the format's own
loss is measured independently of our kernels. (2) The issue's targets (bf16 ≥ 99.5 %, q8_0 ≥ 99 %,
q4_0 ≥ 95 % top-1) — on random-weight models the formats themselves (measured in torch) miss some of them;
those cases are marked xfail with the measured numbers, so they show up in every run instead of hiding."""
import os

import numpy as np
import pytest
import torch

import parrot
from parrot import _core

# Random models conditioned like trained ones: weights ~ N(0, 1/fan_in) keep activations at unit scale through
# the layers (the conftest models, built to make f32 parity differences visible, amplify any perturbation
# layer after layer and would measure that chaos rather than quantisation); lm_head scaled so logits spread as
# a trained LM's do (mean top probability 0.2-0.4).
MODELS = {
    "tiny": dict(vocab=211, hidden=64, layers=2, heads=4, kv_heads=2, ff=96),
    "medium": dict(vocab=3000, hidden=256, layers=4, heads=8, kv_heads=4, ff=704),
}
N_TOKENS = 500
TARGET = {"bf16": 0.995, "q8_0": 0.99, "q4_0": 0.95}
# (model, dtype) pairs where the storage format itself, measured in transformers with the file's weights,
# stays below the target on these random models (see the module docstring)
FORMAT_BELOW_TARGET = {("tiny", "q4_0"): "format alone: ~0.84 top-1 in torch",
                       ("medium", "q4_0"): "format alone: ~0.70 top-1 in torch",
                       ("medium", "q8_0"): "format alone: ~0.97 top-1 in torch"}

HF_NAMES = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
            "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
            "ffn_down": "mlp.down_proj"}


def make_model(tmp_dir, name, seed=1):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    s = MODELS[name]
    torch.manual_seed(seed)
    cfg = Qwen2Config(vocab_size=s["vocab"], hidden_size=s["hidden"], num_hidden_layers=s["layers"],
                      num_attention_heads=s["heads"], num_key_value_heads=s["kv_heads"], intermediate_size=s["ff"],
                      tie_word_embeddings=False, rope_theta=10000.0, max_position_embeddings=1024, rms_norm_eps=1e-6,
                      attn_implementation="eager")
    model = Qwen2ForCausalLM(cfg).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.dim() == 1:
                p.fill_(1.0) if "norm" in pname else p.normal_(0, 0.02)
            elif "embed" in pname:
                p.normal_(0, 1.0)
            elif "lm_head" in pname:
                p.normal_(0, 3.0 / s["hidden"] ** 0.5)
            else:
                p.normal_(0, p.shape[1] ** -0.5)
    d = os.path.join(str(tmp_dir), name)
    model.save_pretrained(d, safe_serialization=True)
    return model, d


def log_softmax(z):
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def compare(ref, got):
    """(top-1 agreement, mean KL(ref ‖ got)) over positions"""
    lp, lq = log_softmax(ref.astype(np.float64)), log_softmax(got.astype(np.float64))
    return float((ref.argmax(1) == got.argmax(1)).mean()), float((np.exp(lp) * (lp - lq)).sum(1).mean())


def file_weights_in_torch(model, path):
    """The torch model with every matrix replaced by what the GGUF file holds (dequantised to f32)."""
    from gguf import GGUFReader

    sd = {k: v.clone() for k, v in model.state_dict().items()}
    for t in GGUFReader(path).tensors:
        if len(t.shape) != 2:
            continue
        cols, rows, kind = int(t.shape[0]), int(t.shape[1]), t.tensor_type.name.lower()
        w = _core.dequantize(np.asarray(t.data).reshape(rows, -1).view(np.uint8), kind, cols)
        if t.name == "token_embd.weight":
            key = "model.embed_tokens.weight"
        elif t.name == "output.weight":
            key = "lm_head.weight"
        else:
            _, i, what, _ = t.name.split(".")
            key = f"model.layers.{i}.{HF_NAMES[what]}.weight"
        sd[key] = torch.from_numpy(w)
    m = type(model)(model.config).eval()
    m.load_state_dict(sd)
    return m


@pytest.fixture(scope="module")
def measured(tmp_path_factory):
    """For each model and dtype: ours vs our f32, and the format alone (torch with the file's weights) vs
    torch f32. Printed as a table (pytest -s) and kept for the tests."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("quant")
    out = {}
    for name in MODELS:
        model, d = make_model(tmp, name)
        ids = np.random.default_rng(0).integers(0, MODELS[name]["vocab"], N_TOKENS)
        conv = lambda dt: parrot.convert(d, tmp / f"{name}-{dt}.gguf", dtype=dt, progress=False, log=lambda s: None)
        ref = parrot.load(conv("f32"), threads=2).logits(ids)
        with torch.no_grad():
            tref = model(torch.tensor([ids])).logits[0].numpy()
        for dt in ("bf16", "q8_0", "q4_0"):
            path = conv(dt)
            ours = compare(ref, parrot.load(path, threads=2).logits(ids))
            with torch.no_grad():
                fmt = compare(tref, file_weights_in_torch(model, path)(torch.tensor([ids])).logits[0].numpy())
            out[name, dt] = ours, fmt
    print("\nmodel   dtype  top-1 (ours vs f32)  mean KL   | format alone in torch: top-1  mean KL")
    for (name, dt), ((a, kl), (fa, fkl)) in out.items():
        print(f"{name:7s} {dt:5s}  {a:8.4f}            {kl:.2e}  |                        {fa:.4f}  {fkl:.2e}")
    return out


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", ["bf16", "q8_0", "q4_0"])
def test_engine_adds_little_beyond_the_format(measured, name, dtype):
    (agree, kl), (fmt_agree, fmt_kl) = measured[name, dtype]
    # Our only extra rounding is the q8_0 activation quantisation of the int8 paths (few rows: decoding, and on
    # VNNI CPUs prompts of under 32 positions; longer ones run on f32 activations, csrc/kernels/matmul.c). KL grows with the variance
    # of the logit noise, and independent roundings add variances: q8_0 activations round as finely as q8_0
    # weights (same 1/127-of-block-max step), so q8_0 files should show about 2× the format's KL; q4_0 weights'
    # step is ~17× coarser, so activations add ~0.3 %; bf16 runs with f32 activations and must match the format.
    # Allowed: those factors with 25 % (q8_0: 2.5, q4_0: 1.25) or 10 % (bf16) for sampling and heavier tails.
    factor = {"bf16": 1.1, "q8_0": 2.5, "q4_0": 1.25}[dtype]
    assert kl <= factor * fmt_kl + 1e-6, (kl, fmt_kl)
    assert agree >= fmt_agree - 0.02, (agree, fmt_agree)


@pytest.mark.parametrize("name,dtype", [
    pytest.param(n, d, marks=pytest.mark.xfail(reason=FORMAT_BELOW_TARGET[n, d], strict=False)
                 if (n, d) in FORMAT_BELOW_TARGET else ())
    for n in MODELS for d in ("bf16", "q8_0", "q4_0")])
def test_issue_top1_targets(measured, name, dtype):
    (agree, kl), _ = measured[name, dtype]
    assert agree >= TARGET[dtype], f"{name} {dtype}: top-1 agreement {agree:.4f}, mean KL {kl:.2e}"


@pytest.mark.parametrize("dtype", ["q8_0", "q4_0"])
def test_converter_storage_types_and_bytes(tmp_path, dtype):
    """Matrices quantised with ggml's reference quantiser (gguf package), vectors f32, the documented mix."""
    from gguf import GGMLQuantizationType, GGUFReader, quants

    model, d = make_model(tmp_path, "tiny")
    path = parrot.convert(d, tmp_path / "m.gguf", dtype=dtype, progress=False, log=lambda s: None)
    r = GGUFReader(path)
    sd = model.state_dict()
    assert int(r.fields["general.file_type"].parts[-1][0]) == {"q8_0": 7, "q4_0": 2}[dtype]
    for t in r.tensors:
        kind = t.tensor_type.name.lower()
        if len(t.shape) == 1:
            assert kind == "f32", t.name
            continue
        want = dtype if t.name.startswith("blk.") else "q8_0"
        assert kind == want, (t.name, kind)
        if t.name.startswith("blk."):
            _, i, what, _ = t.name.split(".")
            src = sd[f"model.layers.{i}.{HF_NAMES[what]}.weight"].numpy()
        else:
            src = sd["model.embed_tokens.weight" if t.name == "token_embd.weight" else "lm_head.weight"].numpy()
        ref = quants.quantize(src, getattr(GGMLQuantizationType, kind.upper()))
        assert np.array_equal(np.asarray(t.data).reshape(ref.shape).view(np.uint8), ref), t.name


def test_unaligned_matrix_falls_back_to_f16(tmp_path):
    """A matrix whose rows are not whole 32-value blocks is stored f16 (and the model still runs)."""
    from gguf import GGUFReader

    from conftest import make_qwen2

    model, d = make_qwen2(tmp_path, hidden=48, heads=3, kv_heads=1, layers=1, ff=80, vocab=157)
    path = parrot.convert(d, tmp_path / "m.gguf", dtype="q8_0", progress=False, log=lambda s: None)
    kinds = {t.name: t.tensor_type.name for t in GGUFReader(path).tensors}
    assert kinds["blk.0.ffn_down.weight"] == "F16"   # 80 columns
    assert kinds["blk.0.attn_q.weight"] == "F16"     # 48 columns
    ids = list(range(1, 20))
    with torch.no_grad():
        want = model(torch.tensor([ids])).logits[0].numpy()
    got = parrot.load(path).logits(ids)
    # f16 weights only (11 significant bits): well within 16·2^-11 relative, as test_llm's f16 test
    assert np.abs(got - want).max() / np.abs(want).max() <= 16 * 2 ** -11


def test_non_finite_weights_refused(tmp_path):
    from safetensors.numpy import load_file, save_file

    model, d = make_model(tmp_path, "tiny")
    f = os.path.join(d, "model.safetensors")
    t = load_file(f)
    t["model.layers.1.mlp.up_proj.weight"][3, 5] = np.nan
    save_file(t, f, metadata={"format": "pt"})
    with pytest.raises(parrot.ModelError, match="blk.1.ffn_up.weight.*NaN"):
        parrot.convert(d, tmp_path / "m.gguf", dtype="q4_0", progress=False, log=lambda s: None)
    assert not os.path.exists(tmp_path / "m.gguf")


def test_f16_kv_cache(tmp_path):
    """An f16 KV cache changes only the rounding of cached keys and values (11 significant bits)."""
    model, d = make_model(tmp_path, "tiny")
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False, log=lambda s: None))
    ids = np.random.default_rng(4).integers(0, MODELS["tiny"]["vocab"], 300).astype(np.int32)
    out = {}
    for kv in ("f32", "f16"):
        ctx = m._core.new_context(400, kv_type=kv)
        # a prefill in two passes then single-token steps: both the blocked and the decode attention read the cache
        out[kv] = np.concatenate([ctx.decode(ids[:200], all_logits=True), ctx.decode(ids[200:201], all_logits=True),
                                  ctx.decode(ids[201:], all_logits=True)])
    # relative error 2^-11 per cached value, through 2 layers: as test_llm's f16-weight bound
    assert np.abs(out["f16"] - out["f32"]).max() / np.abs(out["f32"]).max() <= 16 * 2 ** -11
    assert not np.array_equal(out["f16"], out["f32"])  # the f16 cache is really used
    with pytest.raises(ValueError, match="kv_type"):
        m._core.new_context(10, kv_type="q8_0")
