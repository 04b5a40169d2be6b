"""Tiny random Parrot models with a real (small) Qwen2-style tokenizer, for the API, CLI and notebook tests.

The tokenizer is a byte-level BPE trained here with Hugging Face ``tokenizers`` and configured as Qwen2's
tokenizer.json is (NFC, Qwen2's split regex, ByteLevel, the three special tokens); the model is
``training.modeling_parrot.make_tiny_parrot`` with the same vocabulary size, converted with parrot.convert.
"""
import json
import os

import numpy as np

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


# ---- keeping answers well-formed UTF-8 (parrot's valid_utf8), judged by Python's own UTF-8 codec
def token_bytes(tok, token_id):
    """The bytes a token adds to an answer (b"" for special tokens, which the answer's text skips), read through
    transformers' byte-level alphabet."""
    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode
    except ImportError:  # transformers 4.x before it moved there
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    byte_of = {c: b for b, c in bytes_to_unicode().items()}
    text = tok.id_to_token(token_id)
    if text is None or text in SPECIAL_TOKENS:
        return b""
    return bytes(byte_of[c] for c in text)


# every way a well-formed beginning of UTF-8 can go on: a second byte from each of the ranges RFC 3629 allows
# after E0 (A0-BF), ED (80-9F), F0 (90-BF) and F4 (80-8F), then up to two more continuation bytes
_ENDINGS = [b""] + [bytes([second]) + b"\x80" * k for second in (0x80, 0x90, 0xA0) for k in range(3)]


def utf8_owed(data):
    """How many bytes data lacks to be well-formed UTF-8 (the shortest ending Python's strict decoder accepts it
    with), or None if no ending makes it so."""
    for ending in sorted(_ENDINGS, key=len):
        try:
            (data + ending).decode("utf-8")
            return len(ending)
        except UnicodeDecodeError:
            pass
    return None


def utf8_can_continue(data):
    """data is well-formed UTF-8, or the beginning of some."""
    return utf8_owed(data) is not None


def utf8_complete(data):
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def utf8_pick(tok, logits, answer, stops, room):
    """The most likely token keeping the answer's bytes well-formed (an end-of-turn token only after a whole
    character) and owing no more bytes than ``room``, the tokens that may follow it: the rule parrot's valid_utf8
    follows, here by trying the tokens in order with Python's codec."""
    so_far = b"".join(token_bytes(tok, t) for t in answer)
    for t in np.argsort(-np.asarray(logits, dtype=np.float64), kind="stable"):
        t = int(t)
        if t in stops:
            if utf8_complete(so_far):
                return t
        else:
            owed = utf8_owed(so_far + token_bytes(tok, t))
            if owed is not None and owed <= room:
                return t
    raise AssertionError("no token keeps the answer well-formed")
