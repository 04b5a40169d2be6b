"""The torch reference Parrot (training/modeling_parrot.py) checked against a from-scratch computation of the
formulas of docs/model.md §1-§6 with plain torch ops on the state dict, and its checkpoint I/O against
the layout of docs/model.md §10."""
import json
import math
import os

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open

from training.modeling_parrot import IMAGE_TOKEN_INDEX, ParrotQwen2ForCausalLM, make_tiny_parrot

torch.set_num_threads(1)

# f32 throughout; the hand computation reorders sums (e.g. attention as explicit softmax·V, experts summed in a
# loop), so results agree to rounding: |diff| ~1e-6 relative on O(1) values. 1e-4 absolute leaves margin but still
# catches any dropped bias, wrong eps, wrong layer or wrong rotary form (those move logits by >1e-2).
TOL = 1e-4

PROMPT_IDS = [11, 12, 13, IMAGE_TOKEN_INDEX, 14, 15, 16, 17]


def pixels_for(model, seed=0):
    size = model.vision_config.image_size
    return torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))


def hand_clip_hidden(sd, vc, pixels, upto_layers):
    """Embeddings -> pre_layrnorm -> `upto_layers` pre-LN encoder layers (docs/model.md §2)."""
    p = "model.vision_tower.vision_tower.vision_model."
    eps, d, heads, ps = vc.layer_norm_eps, vc.hidden_size, vc.num_attention_heads, vc.patch_size
    conv = F.conv2d(pixels[None], sd[p + "embeddings.patch_embedding.weight"], stride=ps)[0]  # d, gh, gw
    patches = conv.flatten(1).T  # row-major over the grid
    x = torch.cat([sd[p + "embeddings.class_embedding"][None], patches]) + sd[p + "embeddings.position_embedding.weight"]

    def ln(t, name):
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + eps) * sd[name + ".weight"] + sd[name + ".bias"]

    def lin(t, name):
        return t @ sd[name + ".weight"].T + sd[name + ".bias"]

    x = ln(x, p + "pre_layrnorm")
    hd = d // heads
    for i in range(upto_layers):
        q = p + f"encoder.layers.{i}."
        h = ln(x, q + "layer_norm1")
        Q, K, V = (lin(h, q + f"self_attn.{n}_proj").view(-1, heads, hd).transpose(0, 1) for n in "qkv")
        att = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(hd), -1) @ V
        x = x + lin(att.transpose(0, 1).reshape(-1, d), q + "self_attn.out_proj")
        h = lin(ln(x, q + "layer_norm2"), q + "mlp.fc1")
        x = x + lin(h * torch.sigmoid(1.702 * h), q + "mlp.fc2")
    return x


def hand_moe(sd, cfg, x, T):
    """docs/model.md §4 with plain ops."""
    c = x[0]
    a = torch.softmax(T @ c / math.sqrt(x.shape[1]), 0)
    g = a @ T
    w = torch.softmax(sd["model.moe_model.gate.weight"] @ g, 0)
    out = torch.zeros_like(x)
    for e in range(cfg.num_experts):
        q = f"model.moe_model.experts.{e}."
        h = F.silu(x @ sd[q + "gate_proj.weight"].T) * (x @ sd[q + "up_proj.weight"].T)
        out += w[e] * (h @ sd[q + "down_proj.weight"].T)
    return out + cfg.moe_weight * x, w


def hand_qwen2_logits(sd, cfg, emb):
    """docs/model.md §6: RMSNorm, rotate-half RoPE, causal GQA attention with q/k/v biases, SwiGLU, lm_head."""
    L, d = emb.shape
    nh, nkv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = d // nh
    eps = cfg.rms_norm_eps

    def rms(t, w):
        return t / torch.sqrt((t * t).mean(-1, keepdim=True) + eps) * w

    inv = 1.0 / (1e6 ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.arange(L, dtype=torch.float64)[:, None] * inv[None]
    cos, sin = torch.cat([ang.cos()] * 2, -1).float(), torch.cat([ang.sin()] * 2, -1).float()

    def rope(t):  # t: heads, L, hd
        half = torch.cat([-t[..., hd // 2:], t[..., :hd // 2]], -1)
        return t * cos + half * sin

    x = emb
    mask = torch.triu(torch.full((L, L), float("-inf")), 1)
    for i in range(cfg.num_hidden_layers):
        q = f"model.layers.{i}."
        h = rms(x, sd[q + "input_layernorm.weight"])
        Q = (h @ sd[q + "self_attn.q_proj.weight"].T + sd[q + "self_attn.q_proj.bias"]).view(L, nh, hd).transpose(0, 1)
        K = (h @ sd[q + "self_attn.k_proj.weight"].T + sd[q + "self_attn.k_proj.bias"]).view(L, nkv, hd).transpose(0, 1)
        V = (h @ sd[q + "self_attn.v_proj.weight"].T + sd[q + "self_attn.v_proj.bias"]).view(L, nkv, hd).transpose(0, 1)
        Q, K = rope(Q), rope(K)
        K, V = K.repeat_interleave(nh // nkv, 0), V.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(Q @ K.transpose(1, 2) / math.sqrt(hd) + mask, -1) @ V
        x = x + att.transpose(0, 1).reshape(L, d) @ sd[q + "self_attn.o_proj.weight"].T
        h = rms(x, sd[q + "post_attention_layernorm.weight"])
        h = F.silu(h @ sd[q + "mlp.gate_proj.weight"].T) * (h @ sd[q + "mlp.up_proj.weight"].T)
        x = x + h @ sd[q + "mlp.down_proj.weight"].T
    x = rms(x, sd["model.norm.weight"])
    return x @ sd.get("lm_head.weight", sd["model.embed_tokens.weight"]).T


def hand_parrot_logits(model, ids, pixels):
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    cfg, vc = model.config, model.vision_config
    n_layers = vc.num_hidden_layers + 1 + cfg.mm_vision_select_layer  # hidden_states[-2] = after L-1 layers
    feats = hand_clip_hidden(sd, vc, pixels, n_layers)
    h = F.gelu(feats @ sd["model.mm_projector.0.weight"].T + sd["model.mm_projector.0.bias"], approximate="none")
    x = h @ sd["model.mm_projector.2.weight"].T + sd["model.mm_projector.2.bias"]
    p = ids.index(IMAGE_TOKEN_INDEX)
    text = torch.tensor(ids[:p] + ids[p + 1:])
    T = sd["model.embed_tokens.weight"][text]
    out, w = hand_moe(sd, cfg, x, T)
    emb = torch.cat([T[:p], out, T[p:]])
    return hand_qwen2_logits(sd, cfg, emb), w


@pytest.mark.parametrize("overrides", [
    {},
    {"vision_image_size": 35, "vision_patch_size": 7, "vision_num_hidden_layers": 2, "tie_word_embeddings": True},
])
def test_forward_matches_hand_computation(overrides):
    model = make_tiny_parrot(3, **overrides)
    px = pixels_for(model)
    with torch.no_grad():
        logits = model(PROMPT_IDS, px)
        _, w = model.prepare_inputs_embeds(PROMPT_IDS, px)
        want, want_w = hand_parrot_logits(model, PROMPT_IDS, px)
    n_img = (model.vision_config.image_size // model.vision_config.patch_size) ** 2 + 1
    assert logits.shape == (len(PROMPT_IDS) - 1 + n_img, model.config.vocab_size)
    assert (logits - want).abs().max().item() < TOL
    assert (w - want_w).abs().max().item() < 1e-6  # routing is a short softmax chain: f32 rounding only


def test_moe_formula_and_switches():
    model = make_tiny_parrot(4)
    sd = {k: v.detach() for k, v in model.state_dict().items()}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(10, 64, generator=g)
    T = torch.randn(7, 64, generator=g)
    with torch.no_grad():
        out, w = model.moe(x, T)
        want, want_w = hand_moe(sd, model.config, x, T)
        assert (out - want).abs().max().item() < TOL
        assert abs(w.sum().item() - 1.0) < 1e-6 and (w > 0).all()
        # batched path with a text mask gives the same as the single path on the unmasked tokens
        Tpad = torch.cat([T, torch.randn(3, 64, generator=g)])
        mask = torch.tensor([True] * 7 + [False] * 3)
        outb, wb = model.moe(x[None].repeat(2, 1, 1), Tpad[None].repeat(2, 1, 1), mask[None].repeat(2, 1))
        assert (outb[1] - out).abs().max().item() < TOL and (wb[0] - w).abs().max().item() < 1e-6
        model.config.use_moe_residual = False
        out_nores, _ = model.moe(x, T)
        assert (out_nores - (want - model.config.moe_weight * x)).abs().max().item() < TOL
        model.config.use_moe = False
        assert torch.equal(model.moe(x, T)[0], x)


def test_routing_depends_on_text():
    model = make_tiny_parrot(5)
    px = pixels_for(model)
    with torch.no_grad():
        _, w1 = model.prepare_inputs_embeds([1, 2, IMAGE_TOKEN_INDEX, 3], px)
        _, w2 = model.prepare_inputs_embeds([100, 200, IMAGE_TOKEN_INDEX, 250], px)
    assert (w1 - w2).abs().max().item() > 1e-3


def test_generate_is_greedy_and_stops_at_eos():
    model = make_tiny_parrot(6)
    px = pixels_for(model)
    with torch.no_grad():
        ids = model.generate(PROMPT_IDS, px, max_new_tokens=4, eos_token_ids=[])
        assert len(ids) == 4
        # each generated token is the hand-computed argmax of the sequence so far
        seq = list(PROMPT_IDS)
        for tok in ids:
            logits, _ = hand_parrot_logits(model, seq, px)
            assert int(logits[-1].argmax()) == tok
            seq.append(tok)
        assert model.generate(PROMPT_IDS, px, max_new_tokens=4, eos_token_ids=[ids[0]]) == []


def test_bad_inputs_raise():
    model = make_tiny_parrot(7)
    px = pixels_for(model)
    with pytest.raises(ValueError, match="placeholder"):
        model([1, IMAGE_TOKEN_INDEX, 2, IMAGE_TOKEN_INDEX], px)
    with pytest.raises(ValueError, match="out of range"):
        model([1, IMAGE_TOKEN_INDEX, 300], px)
    with pytest.raises(ValueError, match="mm_projector_type"):
        make_tiny_parrot(0, mm_projector_type="mlp9x_relu")


@pytest.mark.parametrize("vision_inside", [True, False])
def test_save_load_round_trip(tmp_path, vision_inside):
    model = make_tiny_parrot(8)
    px = pixels_for(model)
    out = tmp_path / "parrot"
    model.save_pretrained(str(out), vision_inside=vision_inside, max_shard_size=60_000)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "parrot_qwen2" and cfg["architectures"] == ["ParrotQwen2ForCausalLM"]
    assert cfg["rope_theta"] == 1e6 and cfg["num_experts"] == 6 and cfg["mm_hidden_size"] == 40
    index = json.loads((out / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 3 and shards == sorted(p.name for p in out.glob("*.safetensors"))
    names = set()
    for shard in shards:
        with safe_open(str(out / shard), "pt") as f:
            for k in f.keys():
                assert index["weight_map"][k] == shard
                names.add(k)
    assert names == set(index["weight_map"])
    assert "model.moe_model.gate.weight" in names and "model.mm_projector.2.bias" in names
    assert "model.moe_model.experts.5.down_proj.weight" in names and "lm_head.weight" in names
    tower = "model.vision_tower.vision_tower.vision_model.embeddings.class_embedding"
    assert (tower in names) == vision_inside
    if not vision_inside:
        clip_dir = cfg["mm_vision_tower"]
        clip_cfg = json.loads(open(os.path.join(clip_dir, "config.json")).read())
        assert "vision_config" in clip_cfg and "text_config" in clip_cfg
        with safe_open(os.path.join(clip_dir, "model.safetensors"), "pt") as f:
            keys = list(f.keys())
        assert "vision_model.pre_layrnorm.weight" in keys and any(k.startswith("text_model.") for k in keys)
    loaded = ParrotQwen2ForCausalLM.from_pretrained(str(out))
    with torch.no_grad():
        assert torch.equal(model(PROMPT_IDS, px), loaded(PROMPT_IDS, px))


def test_bf16_save_rounds_weights_only(tmp_path):
    model = make_tiny_parrot(9)
    model.save_pretrained(str(tmp_path), dtype=torch.bfloat16)
    loaded = ParrotQwen2ForCausalLM.from_pretrained(str(tmp_path))
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v.to(torch.bfloat16).float()), k


def test_tokenizer_is_qwen2_format(tmp_path):
    """The trained BPE, saved Qwen1.5-style, loads as transformers' Qwen2Tokenizer and encodes like `tokenizers`."""
    from transformers import AutoTokenizer

    from training import data
    from training.tokenizer import QWEN2_SPLIT, SPECIAL_TOKENS, save_qwen2_tokenizer, train_tokenizer
    tok = train_tokenizer(data.all_texts() * 3, vocab_size=600)
    save_qwen2_tokenizer(tok, str(tmp_path))
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    assert spec["normalizer"]["type"] == "NFC"
    assert spec["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] == QWEN2_SPLIT
    assert spec["pre_tokenizer"]["pretokenizers"][1]["type"] == "ByteLevel"
    # special tokens come after the BPE vocabulary, as in Qwen2
    assert [tok.token_to_id(t) for t in SPECIAL_TOKENS] == [tok.get_vocab_size() - 3 + i for i in range(3)]
    hf = AutoTokenizer.from_pretrained(str(tmp_path))
    assert type(hf).__name__ in ("Qwen2Tokenizer", "Qwen2TokenizerFast") and hf.eos_token == "<|im_end|>"
    text = data.chat_prompt("Сколько фигур? 图中有几个图形？ kaç şekil 12 emoji🦜").replace("<image>", "")
    ids = tok.encode(text, add_special_tokens=False).ids
    assert hf(text, add_special_tokens=False).input_ids == ids
    assert tok.decode(ids, skip_special_tokens=False) == text
    assert ids.count(tok.token_to_id("<|im_start|>")) == 3


def test_heldout_tsv_layout(tmp_path):
    """Held-out files: MMMB columns (docs/model.md §11), decodable PNGs, shared-image indices, the same letters per language."""
    import base64
    import csv
    import io

    from PIL import Image

    from training import data
    from training.make_heldout import MC_COLUMNS, write_heldout
    write_heldout(str(tmp_path), n_scenes=4, seed=7)
    answers = {}
    for lang in data.LANGS:
        with open(tmp_path / f"mmmb_tiny_{data.MMMB_FILE_CODE[lang]}.tsv", encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f, delimiter="\t"))
        assert list(rows[0].keys()) == MC_COLUMNS and len(rows) == 12
        for r in rows:
            assert r["answer"] in "ABCD" and r[r["answer"]] != ""
            assert all(r[k] in data.WORDS[lang].values() for k in "ABCD" if r[k])
            if len(r["image"]) <= 64:
                assert rows[int(r["image"])]["image"] and len(rows[int(r["image"])]["image"]) > 64
            else:
                Image.open(io.BytesIO(base64.b64decode(r["image"]))).verify()
        answers[lang] = [r["answer"] for r in rows]
        prompt = data.mmmb_prompt(rows[0]["question"], {k: rows[0][k] for k in "ABCD"}, lang)
        assert prompt.endswith("\n" + data.MC_INSTRUCTION[lang]) and "\nA. " in prompt
    assert all(a == answers["en"] for a in answers.values())
