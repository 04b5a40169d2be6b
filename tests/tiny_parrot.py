"""Tiny random Parrot models with a real (small) Qwen2-style tokenizer, for the API, CLI and notebook tests.

The tokenizer is a byte-level BPE trained here with Hugging Face ``tokenizers`` and configured as Qwen2's
tokenizer.json is (NFC, Qwen2's split regex, ByteLevel, the three special tokens); the model is
``training.modeling_parrot.make_tiny_parrot`` with the same vocabulary size, converted with parrot.convert.
"""
import json
import os

QWEN2_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
               r"|\s+(?!\S)|\s+")
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [
    "What colour is the circle? The circle is red.",
    "Какого цвета круг? Круг красный.",
    "圆是什么颜色？圆是红色的。",
    "Qual é a cor do círculo? O círculo é vermelho.",
    "ما لون الدائرة؟ الدائرة حمراء.",
    "Dairenin rengi nedir? Daire kırmızı.",
    "You are a helpful assistant.",
] * 20


def make_tokenizer(vocab_size):
    """A trained byte-level BPE with exactly vocab_size ids (256 bytes, merges, 3 special tokens last)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(dropout=None, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(SPECIAL_TOKENS), min_frequency=2,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)
    assert tok.get_vocab_size() == vocab_size, tok.get_vocab_size()
    return tok


def save_tokenizer(tok, d):
    tok.save(os.path.join(d, "tokenizer.json"))
    added = {str(tok.token_to_id(t)): {"content": t, "lstrip": False, "normalized": False, "rstrip": False,
                                       "single_word": False, "special": True} for t in SPECIAL_TOKENS}
    with open(os.path.join(d, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"added_tokens_decoder": added, "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
                   "bos_token": None, "unk_token": None, "tokenizer_class": "Qwen2Tokenizer"}, f)


def build(tmp_dir, seed=0, vocab_size=300, edit=None, **overrides):
    """(torch reference model, HF tokenizer, path of the converted f32 GGUF) of a tiny random Parrot.

    ``edit(model, tokenizer)``, if given, changes the torch model's weights in place before it is saved."""
    from training.modeling_parrot import make_tiny_parrot

    ref = make_tiny_parrot(seed, vocab_size=vocab_size, **overrides).eval()
    tok = make_tokenizer(vocab_size)
    if edit is not None:
        edit(ref, tok)
    d = os.path.join(str(tmp_dir), f"hf-{seed}")
    ref.save_pretrained(d)
    save_tokenizer(tok, d)
    import parrot
    out = parrot.convert(d, os.path.join(str(tmp_dir), f"tiny-{seed}.gguf"), dtype="f32", progress=False,
                         log=lambda s: None)
    return ref, tok, out


def reference_ids(tok, text):
    """The reference tokenisation of a formatted prompt (Parrot's tokenizer_image_token): split the text at
    "<image>", tokenise each chunk on its own with the HF tokenizer, and put IMAGE_TOKEN_INDEX between them."""
    from training.modeling_parrot import IMAGE_TOKEN_INDEX
    ids = []
    for i, chunk in enumerate(text.split("<image>")):
        if i:
            ids.append(IMAGE_TOKEN_INDEX)
        ids += tok.encode(chunk, add_special_tokens=False).ids
    return ids
