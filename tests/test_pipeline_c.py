"""The C pipeline (parrot.h: pr_image_encode -> pr_prefill), bound as ``_core.Model.encode_features`` and
``_core.Context.prefill`` (which ``parrot.Model`` runs), against the stages assembled in Python (encode_image,
moe_experts, embed, moe_routing, moe_combine, a numpy splice, decode) and the torch reference Parrot.

Both paths call the same C functions on the same rows in the same order (the embedding is a row copy, the
router and combination are the same loops, the decoder gets identical input rows), so their logits must be
bit-identical: the comparison is exact. Against torch the tolerance is test_api's (routing to f32 summation
order, 1e-5)."""
import numpy as np
import pytest
import torch

import parrot

pytest.importorskip("parrot.tokenizer", reason="needs parrot.tokenizer (issue 4)")
import tiny_parrot
from training.modeling_parrot import IMAGE_TOKEN_INDEX

torch.set_num_threads(1)
PROMPTS = ["What colour is the circle?", "Какого цвета круг?", "圆是什么颜色？"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_parrot.build(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def model(tiny):
    return parrot.load(tiny[2], threads=2)


def pixels(model, seed=0):
    rgb = np.random.default_rng(seed).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    return model.preprocess(rgb)


def prompt_text(q):
    return (f"<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n{q}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def assembled_inputs(core, ids, px):
    """The Python-assembled decoder inputs (what parrot.Model did before the C pipeline): the image's features
    and experts, the text embedded, routed, combined, spliced with numpy."""
    x = core.encode_image(px)
    pos = int(np.flatnonzero(ids == IMAGE_TOKEN_INDEX)[0])
    text = core.embed(np.concatenate([ids[:pos], ids[pos + 1:]]).astype(np.int32))
    w = core.moe_routing(x, text)
    rows = core.moe_combine(x, core.moe_experts(x), w)
    return np.concatenate([text[:pos], rows, text[pos:]]), w


def test_tokenize_prompt_equals_hf_tokenizers(tiny, model):
    _, tok, _ = tiny
    for q in PROMPTS + ["<image> twice <image>", ""]:
        text = prompt_text(q)
        assert model._core.tokenize_prompt(text).tolist() == tiny_parrot.reference_ids(tok, text)
    assert model._core.tokenize_prompt("").tolist() == []


def test_features_hold_what_the_separate_calls_compute(model):
    px = pixels(model)
    f = model._core.encode_features(px)
    x = model._core.encode_image(px)
    np.testing.assert_array_equal(f.projected, x)
    np.testing.assert_array_equal(f.experts, model._core.moe_experts(x))
    c = model.config
    assert f.n_tokens == c["image_tokens"]
    assert f.nbytes == (1 + c["num_experts"]) * c["image_tokens"] * c["hidden_size"] * 4
    vision_s, experts_s = f.seconds
    assert vision_s > 0 and experts_s > 0


@pytest.mark.parametrize("q", PROMPTS)
def test_prefill_logits_equal_python_path_and_reference(tiny, model, q):
    ref, tok, _ = tiny
    px = pixels(model, 3)
    ids = np.array(tiny_parrot.reference_ids(tok, prompt_text(q)), np.int32)
    inputs, w_py = assembled_inputs(model._core, ids, px)
    f = model._core.encode_features(px)
    n = len(ids) - 1 + f.n_tokens
    want = model._core.new_context(n).decode(inputs, all_logits=True)   # the stages assembled in Python
    ctx = model._core.new_context(n)
    logits, w = ctx.prefill(ids, f, all_logits=True)
    np.testing.assert_array_equal(logits, want)
    np.testing.assert_array_equal(w, w_py)
    assert ctx.n_past == n
    np.testing.assert_array_equal(model.logits(ids, px), want)     # parrot.Model runs this pipeline
    np.testing.assert_array_equal(model.last_routing, w_py)
    with torch.no_grad():
        _, want_w = ref.prepare_inputs_embeds(ids.tolist(), torch.from_numpy(px))
    np.testing.assert_allclose(w, want_w.numpy(), atol=1e-5)
    # last-position logits only (the lm_head then takes the one-row path): as decode on the assembled inputs
    last, w2 = model._core.new_context(n).prefill(ids, f)
    np.testing.assert_array_equal(last, model._core.new_context(n).decode(inputs))
    np.testing.assert_array_equal(w2, w_py)


def test_one_features_object_serves_many_prompts(tiny, model):
    _, tok, _ = tiny
    px = pixels(model, 5)
    f = model._core.encode_features(px)
    routings = []
    for q in PROMPTS:
        ids = np.array(tiny_parrot.reference_ids(tok, prompt_text(q)), np.int32)
        logits, w = model._core.new_context(len(ids) + f.n_tokens).prefill(ids, f, all_logits=True)
        inputs, _ = assembled_inputs(model._core, ids, px)
        np.testing.assert_array_equal(logits, model._core.new_context(len(inputs)).decode(inputs, all_logits=True))
        routings.append(w)
    assert max(np.abs(routings[0] - r).max() for r in routings[1:]) > 0   # routing follows the text


def test_text_only_prefill_is_decode_and_appends(tiny, model):
    _, tok, _ = tiny
    ids = np.array(tok.encode("<|im_start|>user\nhello<|im_end|>", add_special_tokens=False).ids, np.int32)
    ctx = model._core.new_context(64)
    logits, w = ctx.prefill(ids, all_logits=True)
    assert w is None
    np.testing.assert_array_equal(logits, model.logits(ids))
    # a follow-up appends after the cached positions, as decode does
    more = np.array(tok.encode(" more text", add_special_tokens=False).ids, np.int32)
    last, _ = ctx.prefill(more, all_logits=True)
    twin = model._core.new_context(64)
    twin.decode(ids, logits=False)
    np.testing.assert_array_equal(last, twin.decode(more, all_logits=True))


def test_bad_prefills_are_clear_errors_and_leave_the_context_alone(tiny, model, tmp_path):
    _, tok, _ = tiny
    px = pixels(model)
    f = model._core.encode_features(px)
    ids = np.array(tiny_parrot.reference_ids(tok, prompt_text("hi")), np.int32)
    ctx = model._core.new_context(len(ids) + f.n_tokens)
    with pytest.raises(ValueError, match="no image features were given"):
        ctx.prefill(ids)
    with pytest.raises(ValueError, match="no image placeholder"):
        ctx.prefill(ids[ids != IMAGE_TOKEN_INDEX], f)
    with pytest.raises(ValueError, match="placeholder twice"):
        ctx.prefill(np.concatenate([ids, [IMAGE_TOKEN_INDEX]]).astype(np.int32), f)
    bad = ids.copy()
    bad[-1] = 10 ** 6
    with pytest.raises(ValueError, match=f"token id 1000000 at position {len(ids) - 1} is outside the vocabulary"):
        ctx.prefill(bad, f)
    with pytest.raises(ValueError, match="nothing to prefill"):
        ctx.prefill(np.zeros(0, np.int32))
    with pytest.raises(TypeError, match="features must be a Features"):
        ctx.prefill(ids, px)
    other = parrot.load(model.path, threads=1)
    with pytest.raises(ValueError, match="another model"):
        ctx.prefill(ids, other._core.encode_features(px))
    with pytest.raises(ValueError, match="must leave at least one"):
        ctx.prefill(ids, f, cached=len(ids))
    with pytest.raises(ValueError, match="n_cached = 2 must lie before the image.*0 positions cached"):
        ctx.prefill(ids, f, cached=2)            # the context holds none of them
    small = model._core.new_context(f.n_tokens)
    with pytest.raises(ValueError, match="positions long"):
        small.prefill(ids, f)
    assert ctx.n_past == 0 and small.n_past == 0
    logits, _ = ctx.prefill(ids, f, all_logits=True)          # still usable
    np.testing.assert_array_equal(logits, model.logits(ids, px))


def test_image_mean_and_std_come_from_the_file_only(tiny, tmp_path):
    # the key renamed in place (same length): the file no longer has it, and there is no built-in default
    for key in (b"parrot.vision.image_mean", b"parrot.vision.image_std"):
        data = open(tiny[2], "rb").read()
        assert data.count(key) == 1
        bad = tmp_path / "no-mean.gguf"
        bad.write_bytes(data.replace(key, key[:-1] + b"X"))
        with pytest.raises(parrot.ModelError, match=f"missing metadata key '{key.decode()}'"):
            parrot.load(str(bad))


# ---------------------------------------------------------------- batched decoding
def greedy_alone(core, ids, features, steps):
    ctx = core.new_context(len(ids) + 20 + (features.n_tokens if features else 0))
    logits, _ = ctx.prefill(ids, features)
    out, all_logits = [], []
    for _ in range(steps):
        t = int(np.argmax(logits))
        out.append(t)
        logits = ctx.decode(np.array([t], np.int32))
        all_logits.append(logits)
    return out, all_logits


@pytest.mark.parametrize("dtype", ["f32", "q8_0", "q4_0"])
def test_batched_greedy_equals_one_at_a_time(tiny, tmp_path, dtype):
    """Nine sequences (two groups: 8 + 1) of different lengths, with and without the image, advanced together:
    every step's logits equal the lone sequence's exactly (same dot products; see pr_decode_batch)."""
    import os

    ref, tok, path = tiny
    if dtype != "f32":
        path = parrot.convert(os.path.join(os.path.dirname(path), "hf-0"), str(tmp_path / f"tiny-{dtype}.gguf"),
                              dtype=dtype, progress=False, log=lambda s: None)
    model = parrot.load(path, threads=2)
    core = model._core
    f = core.encode_features(pixels(model, 7))
    prompts = [(tiny_parrot.reference_ids(tok, prompt_text(q)), f) for q in PROMPTS] + \
              [(tok.encode(t, add_special_tokens=False).ids, None)
               for t in ("hello there", "a", "Какого цвета", "the red square", "圆", "a blue circle on white")]
    steps = 10
    want = [greedy_alone(core, np.array(ids, np.int32), feats, steps) for ids, feats in prompts]
    ctxs, nxt = [], []
    for ids, feats in prompts:
        ctx = core.new_context(len(ids) + 20 + (feats.n_tokens if feats else 0))
        logits, _ = ctx.prefill(np.array(ids, np.int32), feats)
        ctxs.append(ctx)
        nxt.append(int(np.argmax(logits)))
    got = [[t] for t in nxt]
    for step in range(steps):
        logits = core.decode_batch(ctxs, np.array(nxt, np.int32))
        for s in range(len(prompts)):
            np.testing.assert_array_equal(logits[s], want[s][1][step], err_msg=f"sequence {s}, step {step}")
        nxt = [int(np.argmax(row)) for row in logits]
        if step < steps - 1:
            for s, t in enumerate(nxt):
                got[s].append(t)
    assert got == [w[0] for w in want]
    # the sequences sat at different positions (prompts of different lengths) all along
    assert len({c.n_past for c in ctxs}) > 1


def test_batched_decoding_errors_leave_every_sequence_alone(tiny, model):
    _, tok, _ = tiny
    core = model._core
    ids = np.array(tok.encode("hello there", add_special_tokens=False).ids, np.int32)
    a, b, full = core.new_context(32), core.new_context(32), core.new_context(len(ids))
    for c in (a, b, full):
        c.prefill(ids)
    other = parrot.load(model.path, threads=1)._core.new_context(8)
    cases = [
        (([a, a], [1, 2]), ValueError, "same context"),
        (([a, full], [1, 2]), ValueError, "is full"),
        (([a, b], [1, 10 ** 6]), ValueError, "token id 1000000 of sequence 1"),
        (([a, b], [1]), ValueError, "2 contexts but 1 tokens"),
        (([a, other], [1, 2]), TypeError, r"contexts\[1\] is not a Context of this model"),
        (([], []), ValueError, "at least one"),
    ]
    for (ctxs, toks), exc, msg in cases:
        with pytest.raises(exc, match=msg):
            core.decode_batch(ctxs, np.array(toks, np.int32))
    assert (a.n_past, b.n_past, full.n_past) == (len(ids),) * 3
