"""A converted Parrot checkpoint carries its tokenizer: the loaded model tokenizes like HF and knows its
special-token ids."""
import json

import numpy as np

import parrot
from parrot.tokenizer import Tokenizer
from test_tokenizer import build_test_strings, qwen2_like_tokenizer
from training.modeling_parrot import make_tiny_parrot


def test_converted_model_has_the_checkpoints_tokenizer(tmp_path):
    hf = qwen2_like_tokenizer(vocab_size=700)
    n = hf.get_vocab_size()
    ref = make_tiny_parrot(0, vocab_size=n + 13)  # a padded embedding, as Qwen's 151936 > tokenizer size
    d = tmp_path / "hf"
    ref.save_pretrained(str(d))
    hf.save(str(d / "tokenizer.json"))
    json.dump({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}, open(d / "tokenizer_config.json", "w"))
    m = parrot.load(parrot.convert(d, tmp_path / "m.gguf", dtype="f32", progress=False))
    tok = Tokenizer(m._core.tokenizer)
    for s in build_test_strings(n_random=200)[:1500]:
        assert tok.encode(s) == hf.encode(s).ids
    c = m.config
    assert (c["im_start_id"], c["im_end_id"], c["endoftext_id"]) == tuple(
        hf.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert c["eos_token_id"] == hf.token_to_id("<|im_end|>")
    # the tokenizer outlives the Model object that handed it out
    del m
    assert tok.decode(hf.encode("olá mundo").ids) == "olá mundo"
