"""Writes the fuzzers' seed corpora, tests/fuzz/corpus/{image,gguf,tokenizer}/ (committed; rerun after
changing this file: python3 tests/fuzz/make_seeds.py). Seeds are small valid inputs of every kind the parsers
take plus the hostile inputs of issue 15, so mutation starts next to every branch."""
from __future__ import annotations

import io
import os
import struct
import sys

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import hostile_inputs as H  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))


def save(target: str, name: str, data: bytes) -> None:
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    im.save(b, fmt, **kw)
    return b.getvalue()


def images() -> None:
    r = np.random.default_rng(0)
    rgb = Image.fromarray(r.integers(0, 256, (9, 13, 3), dtype=np.uint8))
    for mode in ("RGB", "RGBA", "L", "LA", "P", "1"):
        save("image", f"png-{mode}.png", encode(rgb.convert(mode), "PNG"))
    save("image", "png-I16.png", encode(Image.fromarray(r.integers(0, 65536, (5, 7), dtype=np.uint16)), "PNG"))
    for name, kw in (("baseline", {}), ("progressive", {"progressive": True}), ("444", {"subsampling": 0}),
                     ("q100", {"quality": 100})):
        save("image", f"jpeg-{name}.jpg", encode(rgb, "JPEG", **kw))
    save("image", "jpeg-grey.jpg", encode(rgb.convert("L"), "JPEG"))
    save("image", "jpeg-cmyk.jpg", encode(rgb.convert("CMYK"), "JPEG"))
    ex = Image.Exif()
    ex[0x0112] = 6
    save("image", "jpeg-exif6.jpg", encode(rgb, "JPEG", exif=ex.tobytes()))
    save("image", "png-exif8.png", encode(rgb, "PNG", exif=ex.tobytes()))
    save("image", "png-1x3000.png", H.png(1, 3000))
    save("image", "png-3000x2.png", H.png(3000, 2))
    save("image", "png-text-bomb.png", H.png_text_bomb())
    save("image", "jpeg-segment-bomb.jpg", H.jpeg_segment_bomb())
    save("image", "jpeg-cmyk-24x2000.jpg", H.cmyk_jpeg(24, 2000))
    # raw pixels through the resampler (fuzz_image.c's 'R' inputs): w, h bytes, then the output size
    px = r.integers(0, 256, 3 * 600, dtype=np.uint8).tobytes()
    for name, head in (("wide", (1, 0x2c, 0, 0, 0x4f, 0x01)), ("tall", (0, 0, 200, 0, 0x30, 0)),
                       ("square", (0, 19, 19, 0, 7, 0))):
        save("image", f"raw-{name}", b"R" + bytes(head[1:]) + px)


def ggufs() -> None:
    save("gguf", "tensor-overflow.gguf", H.gguf_tensor_overflow())
    save("gguf", "bad-merge.gguf", H.gguf_bad_merge())
    save("gguf", "bad-token.gguf", H.gguf_bad_token())
    save("gguf", "tiny-tokenizer.gguf", H.gguf(H.tokenizer_kvs(["a", "b", "ab", "Ġ", "Ġa"], ["a b", "Ġ a"])))
    save("gguf", "tensors.gguf", H.gguf([("general.architecture", "qwen2"), ("general.alignment", 32)],
                                        [("a.weight", [4, 2], 0, 0), ("b.weight", [32], 1, 32)],
                                        struct.pack("<8f", *range(8)) + b"\x00" * 64))
    # the shipped model's whole tokenizer, without its tensors
    import gguf
    rd = gguf.GGUFReader(os.path.join(ROOT, "parrot", "models", "parrot-tiny-shapes.gguf"))
    kvs = []
    for k, f in rd.fields.items():
        if not k.startswith(("tokenizer.", "parrot.tokenizer.")):
            continue
        if f.types[0] == gguf.GGUFValueType.STRING:
            kvs.append((k, bytes(f.parts[f.data[0]])))
        elif f.types[0] == gguf.GGUFValueType.ARRAY and f.types[1] == gguf.GGUFValueType.STRING:
            kvs.append((k, ("strs", [bytes(f.parts[i]) for i in f.data])))
        elif f.types[0] == gguf.GGUFValueType.ARRAY:
            kvs.append((k, ("i32", [int(f.parts[i][0]) for i in f.data])))
        else:
            kvs.append((k, int(f.parts[f.data[0]][0])))
    save("gguf", "shipped-tokenizer.gguf", H.gguf(kvs))


def texts() -> None:
    samples = {
        "en": "What colour is the square? Answer with the option's letter.\n(A) red (B) blue",
        "zh": "图片里有什么？请用一个词回答。",
        "pt": "Qual é a cor do círculo? Responda em português.",
        "ar": "ما لون المربع؟ أجب بكلمة واحدة.",
        "tr": "Karenin rengi ne? İ ı Ş ğ",
        "ru": "Какого цвета квадрат? Ответьте одним словом.",
        "special": "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\n<image>\nhi<|im_end|>",
        "spaces": "  \t\n\r\n   x  y\u00a0\u3000z  ",
        "emoji": "👍🏽 family: 👨‍👩‍👧 flags: 🇵🇹",
        "nfc": "e\u0301 A\u030a \u1e9b\u0323 \ufb01",
    }
    for k, v in samples.items():
        save("tokenizer", k, v.encode())
    save("tokenizer", "invalid-utf8", b"ok \xc3( \xed\xa0\x80 \xf4\x90\x80\x80 \xff end")
    save("tokenizer", "ids", struct.pack("<16I", *range(0, 1024, 64)))


if __name__ == "__main__":
    images()
    ggufs()
    texts()
