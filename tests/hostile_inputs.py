"""Hostile inputs built from scratch: the inputs of issue 15's table (images, GGUF files, journals) and the
pieces to make more. Used by tests/test_hostile.py (with time and memory limits) and by
tests/fuzz/make_seeds.py (the fuzzers' seed corpora). No input here comes from a file on disk."""
from __future__ import annotations

import io
import struct
import zlib

PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png_chunk(tag: bytes, data: bytes, length: int | None = None) -> bytes:
    n = len(data) if length is None else length
    return struct.pack(">I", n) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def png(w: int, h: int, rgb: bytes | None = None, extra: bytes = b"") -> bytes:
    """An 8-bit RGB PNG; rgb (h*w*3 bytes) defaults to a pattern that compresses to almost nothing."""
    if rgb is None:
        raw = b"".join(b"\x00" + bytes((y * 7 % 256, 200, 9)) * w for y in range(h)) if w > 1 else \
            b"".join(b"\x00" + bytes((y % 256, 200, 9)) for y in range(h))
    else:
        raw = b"".join(b"\x00" + rgb[y * w * 3:(y + 1) * w * 3] for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (PNG_SIG + png_chunk(b"IHDR", ihdr) + extra + png_chunk(b"IDAT", zlib.compress(raw, 9))
            + png_chunk(b"IEND", b""))


def png_text_bomb() -> bytes:
    """51 bytes: a 1×1 PNG header, then a tEXt chunk declaring 0x7fffffff bytes (libpng would allocate them)."""
    head = PNG_SIG + png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    data = head + struct.pack(">I", 0x7FFFFFFF) + b"tEXt" + b"Comment\x00ab"
    assert len(data) == 51
    return data


def jpeg_segment_bomb() -> bytes:
    """SOI, then an APP1 segment declaring 65535 bytes of which 10 follow."""
    return b"\xff\xd8\xff\xe1\xff\xffExif\x00\x00abcd"


def cmyk_jpeg(w: int = 24, h: int = 32784) -> bytes:
    from PIL import Image
    b = io.BytesIO()
    Image.new("CMYK", (w, h), (10, 200, 30, 40)).save(b, "JPEG")
    return b.getvalue()


# ---------------------------------------------------------------- GGUF, written by hand (any bytes allowed)
U32, I32, STRING, ARRAY = 4, 5, 8, 9


def _gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def _kv(key: str, value) -> bytes:
    out = _gstr(key)
    if isinstance(value, (str, bytes)):
        return out + struct.pack("<I", STRING) + _gstr(value)
    if isinstance(value, int):
        return out + struct.pack("<II", U32, value)
    kind, items = value  # ("strs", [...]) or ("i32", [...])
    if kind == "strs":
        return out + struct.pack("<IIQ", ARRAY, STRING, len(items)) + b"".join(_gstr(x) for x in items)
    return out + struct.pack("<IIQ", ARRAY, I32, len(items)) + struct.pack(f"<{len(items)}i", *items)


def gguf(kvs: list, tensors: list = (), data: bytes = b"") -> bytes:
    """GGUF v3: kvs [(key, value)], tensors [(name, ne list, type id, offset)], then data (aligned to 32)."""
    out = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)) + b"".join(_kv(k, v) for k, v in kvs)
    for name, ne, typ, off in tensors:
        out += _gstr(name) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
        out += struct.pack("<IQ", typ, off)
    out += b"\x00" * (-len(out) % 32)
    return out + data


def gguf_tensor_overflow() -> bytes:
    """A tensor of ne = [2^40, 2^22] f32: 2^64 bytes, which wraps to 0 in 64-bit arithmetic."""
    return gguf([("general.architecture", "qwen2")], [("token_embd.weight", [1 << 40, 1 << 22], 0, 0)],
                b"\x00" * 64)


def tokenizer_kvs(tokens: list, merges: list) -> list:
    return [("tokenizer.ggml.model", "gpt2"), ("tokenizer.ggml.pre", "qwen2"),
            ("tokenizer.ggml.tokens", ("strs", tokens)), ("tokenizer.ggml.token_type", ("i32", [1] * len(tokens))),
            ("tokenizer.ggml.merges", ("strs", merges))]


def gguf_bad_merge() -> bytes:
    """A tokenizer whose merge 1 is not UTF-8."""
    return gguf(tokenizer_kvs(["a", "b", "ab"], ["a b", b"a \xff"]))


def gguf_bad_token() -> bytes:
    """A tokenizer whose token 1 is not UTF-8."""
    return gguf(tokenizer_kvs(["a", b"\xc3(", "ab"], ["a b"]))
