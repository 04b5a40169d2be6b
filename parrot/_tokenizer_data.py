"""Reading a Hugging Face Qwen2 tokenizer and storing it as GGUF metadata (see docs/gguf-tokenizer.md).

The converter calls :func:`add_tokenizer` (or :func:`tokenizer_metadata`) with the checkpoint directory. The
tokenizer is read from ``tokenizer.json`` when present, else from ``vocab.json`` + ``merges.txt`` (+ the added
tokens of ``tokenizer_config.json``), which is what ``Qwen2TokenizerFast`` builds in that case. Only Qwen2's
pipeline is accepted -- NFC normaliser, the Qwen2 Split regex then ByteLevel pre-tokeniser, a byte-level BPE
model, the ByteLevel decoder -- and anything else raises :class:`parrot.errors.TokenizerError` naming the file
and the field, rather than being approximated.

The post-processor is not stored: it only adds tokens when a caller asks ``add_special_tokens=True``, and Qwen2's
adds none (Parrot's prompt formatter tokenises with ``add_special_tokens=False``).
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

from gguf import GGUFValueType

from parrot.errors import TokenizerError

#: The pre-tokeniser regex of Qwen2 (docs/model.md §9); the C tokenizer implements exactly this one.
QWEN2_PRE_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                   r"\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.token_type values (llama.cpp's numbering)
TOKEN_NORMAL = 1
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5

# Qwen2Tokenizer's defaults, used when tokenizer_config.json does not name these tokens
_QWEN2_DEFAULT_EOS = "<|endoftext|>"
_QWEN2_DEFAULT_PAD = "<|endoftext|>"

Metadata = List[Tuple[str, Any, GGUFValueType]]


def _bytes_to_unicode() -> Dict[int, str]:
    """GPT-2's byte alphabet: printable Latin-1 bytes stand for themselves, the rest get U+0100 onwards."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


BYTE_ALPHABET = _bytes_to_unicode()


class _Added:
    __slots__ = ("id", "content", "special", "normalized")

    def __init__(self, id: int, content: str, special: bool, normalized: bool):
        self.id, self.content, self.special, self.normalized = id, content, special, normalized


def _load_json(path: str) -> Any:
    try:
        with open(path, "r", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TokenizerError(f"{path}: cannot read tokenizer file: {e}") from e


def _fail(path: str, field: str, what: str) -> TokenizerError:
    return TokenizerError(f"{path}: field '{field}': {what}")


def _check_normalizer(path: str, norm: Any) -> None:
    if not (isinstance(norm, dict) and norm.get("type") == "NFC"):
        kind = norm.get("type") if isinstance(norm, dict) else norm
        raise _fail(path, "normalizer", f"unsupported normaliser {kind!r}; only NFC (Qwen2's) is implemented")


def _check_pre_tokenizer(path: str, pre: Any) -> None:
    def bad(what: str) -> TokenizerError:
        return _fail(path, "pre_tokenizer", what + "; only Qwen2's Sequence[Split(regex, Isolated), "
                     "ByteLevel(add_prefix_space=False, use_regex=False)] is implemented")

    if not isinstance(pre, dict) or pre.get("type") != "Sequence" or not isinstance(pre.get("pretokenizers"), list):
        raise bad(f"unsupported pre-tokeniser {pre.get('type') if isinstance(pre, dict) else pre!r}")
    parts = pre["pretokenizers"]
    if len(parts) != 2 or not all(isinstance(p, dict) for p in parts):
        raise bad(f"a Sequence of {len(parts)} pre-tokenisers")
    split, byte_level = parts
    if split.get("type") != "Split":
        raise bad(f"first pre-tokeniser is {split.get('type')!r}")
    pattern = split.get("pattern")
    regex = pattern.get("Regex") if isinstance(pattern, dict) else None
    if regex != QWEN2_PRE_REGEX:
        raise bad(f"unsupported split pattern {pattern!r}")
    if split.get("behavior") != "Isolated" or split.get("invert", False):
        raise bad(f"split behaviour {split.get('behavior')!r} (invert={split.get('invert')!r})")
    if byte_level.get("type") != "ByteLevel":
        raise bad(f"second pre-tokeniser is {byte_level.get('type')!r}")
    if byte_level.get("add_prefix_space", False) or byte_level.get("use_regex", True):
        raise bad("ByteLevel with add_prefix_space or use_regex")


def _check_decoder(path: str, dec: Any) -> None:
    if not (isinstance(dec, dict) and dec.get("type") == "ByteLevel"):
        kind = dec.get("type") if isinstance(dec, dict) else dec
        raise _fail(path, "decoder", f"unsupported decoder {kind!r}; only ByteLevel is implemented")


def _parse_merges(path: str, raw: Any) -> List[Tuple[str, str]]:
    if not isinstance(raw, list):
        raise _fail(path, "model.merges", "not a list")
    merges = []
    for i, m in enumerate(raw):
        if isinstance(m, str):
            parts = m.split(" ")
        elif isinstance(m, list):
            parts = m
        else:
            parts = []
        if len(parts) != 2 or not all(isinstance(p, str) and p and " " not in p for p in parts):
            raise _fail(path, f"model.merges[{i}]", f"{m!r} is not a pair of tokens")
        merges.append((parts[0], parts[1]))
    return merges


def _added_from_tokenizer_json(path: str, raw: Any) -> List[_Added]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise _fail(path, "added_tokens", "not a list")
    out = []
    for i, a in enumerate(raw):
        if not isinstance(a, dict) or not isinstance(a.get("id"), int) or not isinstance(a.get("content"), str):
            raise _fail(path, f"added_tokens[{i}]", "needs an integer 'id' and a string 'content'")
        special = bool(a.get("special", False))
        out.append(_check_added(path, f"added_tokens[{i}]", a["id"], a, special))
    return out


def _check_added(path: str, field: str, id: int, a: Dict[str, Any], special: bool) -> _Added:
    for flag in ("single_word", "lstrip", "rstrip"):
        if a.get(flag, False):
            raise _fail(path, f"{field}.{flag}", f"added token {a.get('content')!r} sets {flag}, which is not "
                        "implemented (Qwen2's added tokens do not)")
    content = a.get("content")
    if not isinstance(content, str) or not content or "\0" in content:
        raise _fail(path, f"{field}.content", f"{content!r} is not a usable token")
    if id < 0:
        raise _fail(path, f"{field}.id", f"negative id {id}")
    # tokenizers' default: an added token is normalised unless it is special
    normalized = bool(a.get("normalized", not special))
    return _Added(id, content, special, normalized)


def _read_tokenizer_json(path: str) -> Tuple[Dict[str, int], List[Tuple[str, str]], List[_Added]]:
    tj = _load_json(path)
    if not isinstance(tj, dict):
        raise TokenizerError(f"{path}: not a tokenizer.json object")
    _check_normalizer(path, tj.get("normalizer"))
    _check_pre_tokenizer(path, tj.get("pre_tokenizer"))
    _check_decoder(path, tj.get("decoder"))
    model = tj.get("model")
    if not isinstance(model, dict) or model.get("type", "BPE") != "BPE":
        raise _fail(path, "model.type", f"unsupported model {model.get('type') if isinstance(model, dict) else model!r}"
                    "; only BPE is implemented")
    if model.get("dropout") not in (None, 0, 0.0):
        raise _fail(path, "model.dropout", f"BPE dropout {model.get('dropout')!r} is not implemented")
    for field in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(field) not in (None, ""):
            raise _fail(path, f"model.{field}", f"{model.get(field)!r} is not implemented for a byte-level BPE")
    if model.get("ignore_merges", False):
        raise _fail(path, "model.ignore_merges", "ignore_merges=true is not implemented (Qwen2 merges every word)")
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise _fail(path, "model.vocab", "not an object of token -> id")
    merges = _parse_merges(path, model.get("merges", []))
    added = _added_from_tokenizer_json(path, tj.get("added_tokens"))
    _check_byte_alphabet(path, vocab, model.get("unk_token") is not None or bool(model.get("byte_fallback")))
    return vocab, merges, added


def _check_byte_alphabet(path: str, vocab: Dict[str, int], needs_all: bool) -> None:
    """With an unk token or byte fallback, a byte missing from the vocabulary would be replaced, which the C
    tokenizer does not do; without them tokenizers drops it, as the C tokenizer does."""
    missing = [b for b, c in BYTE_ALPHABET.items() if c not in vocab]
    if missing and needs_all:
        raise _fail(path, "model.vocab", f"lacks the byte tokens of bytes {missing[:8]} while the model sets "
                    "unk_token or byte_fallback, which are not implemented")


def _token_name(tok: Any) -> Optional[str]:
    if isinstance(tok, dict):
        return tok.get("content")
    return tok if isinstance(tok, str) else None


def _read_vocab_merges(hf_dir: str, config: Optional[Dict[str, Any]], config_path: str
                       ) -> Tuple[Dict[str, int], List[Tuple[str, str]], List[_Added]]:
    """vocab.json + merges.txt, as transformers' Qwen2Tokenizer reads them and its slow->fast converter
    builds the pipeline (NFC, Qwen2 split, ByteLevel, BPE without unk)."""
    vpath, mpath = os.path.join(hf_dir, "vocab.json"), os.path.join(hf_dir, "merges.txt")
    vocab = _load_json(vpath)
    if not isinstance(vocab, dict):
        raise _fail(vpath, "(top level)", "not an object of token -> id")
    merges = []
    try:
        with open(mpath, "r", encoding="utf-8") as f:
            for i, line in enumerate(f):
                line = line.strip()
                if (i == 0 and line.startswith("#version:")) or not line:
                    continue
                parts = line.split()
                if len(parts) != 2:
                    raise _fail(mpath, f"line {i + 1}", f"{line!r} is not a pair of tokens")
                merges.append((parts[0], parts[1]))
    except (OSError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{mpath}: cannot read merges: {e}") from e
    added: List[_Added] = []
    decoder = (config or {}).get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for key, a in decoder.items():
            if not isinstance(a, dict) or not str(key).isdigit():
                raise _fail(config_path, f"added_tokens_decoder[{key!r}]", "not an id -> token object")
            added.append(_check_added(config_path, f"added_tokens_decoder[{key}]", int(key), a,
                                      bool(a.get("special", False))))
    # Qwen2Tokenizer registers its unk/eos/pad tokens (by default <|endoftext|>) as special added tokens
    known = {a.content for a in added}
    next_id = max(list(vocab.values()) + [a.id for a in added] + [-1]) + 1
    for key, default in (("unk_token", "<|endoftext|>"), ("eos_token", _QWEN2_DEFAULT_EOS),
                         ("pad_token", _QWEN2_DEFAULT_PAD), ("bos_token", None)):
        name = _token_name((config or {}).get(key, default))
        if name and name not in known:
            id = vocab.get(name, next_id)
            if id == next_id:
                next_id += 1
            added.append(_Added(id, name, True, False))
            known.add(name)
    return vocab, merges, added


def _special_id(config: Optional[Dict[str, Any]], key: str, default: Optional[str],
                lookup: Dict[str, int]) -> Optional[int]:
    name = _token_name((config or {}).get(key, default))
    return lookup.get(name) if name else None


def tokenizer_metadata(hf_dir: "str | os.PathLike[str]", n_vocab: Optional[int] = None) -> Metadata:
    """The GGUF metadata entries (key, value, type) of the tokenizer in a Hugging Face directory.

    n_vocab: the model's vocabulary size (embedding rows); the token list is padded to it with unused entries,
    so every id the model can produce has a row. It must not be smaller than the tokenizer's largest id + 1.
    """
    hf_dir = os.fspath(hf_dir)
    config_path = os.path.join(hf_dir, "tokenizer_config.json")
    config = _load_json(config_path) if os.path.exists(config_path) else None
    if config is not None and not isinstance(config, dict):
        raise TokenizerError(f"{config_path}: not a JSON object")
    tj_path = os.path.join(hf_dir, "tokenizer.json")
    if os.path.exists(tj_path):
        source = tj_path
        vocab, merges, added = _read_tokenizer_json(tj_path)
    elif os.path.exists(os.path.join(hf_dir, "vocab.json")) and os.path.exists(os.path.join(hf_dir, "merges.txt")):
        source = os.path.join(hf_dir, "vocab.json")
        vocab, merges, added = _read_vocab_merges(hf_dir, config, config_path)
    else:
        raise TokenizerError(f"{hf_dir}: no tokenizer found (need tokenizer.json, or vocab.json and merges.txt)")

    # tokens by id
    by_id: Dict[int, str] = {}
    for tok, id in vocab.items():
        if not isinstance(id, int) or isinstance(id, bool) or id < 0:
            raise _fail(source, f"vocab[{tok!r}]", f"id {id!r} is not a non-negative integer")
        if id in by_id:
            raise _fail(source, f"vocab[{tok!r}]", f"id {id} is also used by {by_id[id]!r}")
        if not tok or "\0" in tok:
            raise _fail(source, f"vocab[{tok!r}]", "empty token or NUL character")
        by_id[id] = tok
    types: Dict[int, int] = {id: TOKEN_NORMAL for id in by_id}
    for a in added:
        if a.id in by_id and by_id[a.id] != a.content and types[a.id] == TOKEN_NORMAL:
            raise _fail(source, "added_tokens", f"added token {a.content!r} has id {a.id}, which the vocabulary "
                        f"gives to {by_id[a.id]!r}")
        if a.id in types and types[a.id] != TOKEN_NORMAL:
            raise _fail(source, "added_tokens", f"id {a.id} is given to two added tokens")
        by_id[a.id] = a.content
        types[a.id] = TOKEN_CONTROL if a.special else TOKEN_USER_DEFINED

    for i, (left, right) in enumerate(merges):
        for part in (left, right, left + right):
            if part not in vocab:
                raise _fail(source, f"merges[{i}]", f"merge {left!r} {right!r} names {part!r}, which is not in "
                            "the vocabulary")

    size = max(by_id) + 1
    if n_vocab is not None:
        if n_vocab < size:
            raise TokenizerError(f"{source}: the tokenizer uses ids up to {size - 1}, more than the model's "
                                 f"{n_vocab} embedding rows")
        size = n_vocab
    tokens = [by_id.get(i, f"[PAD{i}]") for i in range(size)]
    token_type = [types.get(i, TOKEN_UNUSED) for i in range(size)]
    for i, t in enumerate(tokens):
        try:
            t.encode("utf-8")
        except UnicodeEncodeError as e:
            raise _fail(source, "vocab", f"token {i} is not valid Unicode: {e}") from e

    lookup = {a.content: a.id for a in added}
    for tok, id in vocab.items():
        lookup.setdefault(tok, id)
    eos = _special_id(config, "eos_token", _QWEN2_DEFAULT_EOS, lookup)
    pad = _special_id(config, "pad_token", _QWEN2_DEFAULT_PAD, lookup)

    meta: Metadata = [
        ("tokenizer.ggml.model", "gpt2", GGUFValueType.STRING),
        ("tokenizer.ggml.pre", "qwen2", GGUFValueType.STRING),
        ("tokenizer.ggml.tokens", tokens, GGUFValueType.ARRAY),
        ("tokenizer.ggml.token_type", token_type, GGUFValueType.ARRAY),
    ]
    if merges:  # GGUF cannot store an empty array
        meta.append(("tokenizer.ggml.merges", [f"{a} {b}" for a, b in merges], GGUFValueType.ARRAY))
    if eos is not None:
        meta.append(("tokenizer.ggml.eos_token_id", eos, GGUFValueType.UINT32))
    if pad is not None:
        meta.append(("tokenizer.ggml.padding_token_id", pad, GGUFValueType.UINT32))
    meta.append(("parrot.tokenizer.normalizer", "NFC", GGUFValueType.STRING))
    meta.append(("parrot.tokenizer.pre_regex", QWEN2_PRE_REGEX, GGUFValueType.STRING))
    normalized = sorted(a.id for a in added if a.normalized)
    if normalized:
        meta.append(("parrot.tokenizer.added_normalized", normalized, GGUFValueType.ARRAY))
    return meta


def add_tokenizer(writer: Any, hf_dir: "str | os.PathLike[str]", n_vocab: Optional[int] = None) -> None:
    """Adds the tokenizer of hf_dir to a gguf.GGUFWriter (before it writes its header)."""
    for key, value, vtype in tokenizer_metadata(hf_dir, n_vocab):
        writer.add_key_value(key, value, vtype)


__all__: Sequence[str] = ["QWEN2_PRE_REGEX", "tokenizer_metadata", "add_tokenizer", "BYTE_ALPHABET"]
