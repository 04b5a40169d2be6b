"""Stand-ins for the evaluation-logic tests: synthetic VLMEvalKit TSVs and a scripted model.

The scripted model answers what the question asks it to (``{{reply}}`` inside the question text), so a test
knows every reply and derives the expected score from the reference rules by hand. It decodes images with
Pillow (raising parrot.ImageError on bad ones, as the real model does) and keeps a pixel-keyed cache so the
image-cache accounting is exercised. Importable by worker processes (spawn) and Ray actors.
"""
import base64
import csv
import hashlib
import io
import os
import re
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

import parrot

LANGS = ("en", "zh", "pt", "ar", "tr", "ru")
_INSTR_LANG = {"directly.": "en", "回答。": "zh", "dadas.": "pt", "المعطاة.": "ar", "verin.": "tr",
               "напрямую.": "ru"}


@dataclass
class FakeResult:
    text: str
    routing: Optional[np.ndarray]
    timings: dict = field(default_factory=dict)
    image_cache_hit: bool = False


@dataclass
class FakeCacheInfo:
    hits: int
    misses: int
    seconds_saved: float


class ScriptedModel:
    def __init__(self, delay: float = 0.0):
        self.delay = delay
        self.seen = set()
        self.hits = self.misses = 0
        self.saved = 0.0
        self.calls = []

    def image_cache_info(self):
        return FakeCacheInfo(self.hits, self.misses, self.saved)

    def run(self, image, prompt, max_new_tokens=512):
        from PIL import Image
        assert max_new_tokens == 512
        try:
            if isinstance(image, np.ndarray):  # the runner decodes images itself (without EXIF orientation)
                pixels = np.ascontiguousarray(image).tobytes()
            else:
                pixels = Image.open(io.BytesIO(bytes(image))).convert("RGB").tobytes()
        except Exception as e:
            raise parrot.ImageError(f"cannot decode image: {e}") from None
        key = hashlib.sha1(pixels).hexdigest()
        hit = key in self.seen
        if hit:
            self.hits += 1
            self.saved += 0.25
        else:
            self.misses += 1
            self.seen.add(key)
        self.calls.append((key, prompt))
        if self.delay:
            time.sleep(self.delay)
        m = re.search(r"\{\{(.*?)\}\}", prompt, re.S)
        reply = m.group(1) if m else "A"
        lang = next((v for k, v in _INSTR_LANG.items() if prompt.endswith(k)), "en")
        routing = np.full(6, 0.02)
        routing[LANGS.index(lang)] = 0.9
        return FakeResult(text=reply, routing=routing, timings={"total": 0.0}, image_cache_hit=hit)


CREATED = []  # models made by scripted_model in this process (tests look at their calls)


def scripted_model():
    """Factory used by workers / Ray (env PARROT_FAKE_DELAY slows each row, for the kill test)."""
    CREATED.append(ScriptedModel(delay=float(os.environ.get("PARROT_FAKE_DELAY", "0"))))
    return CREATED[-1]


def png_b64(seed: int, size=(9, 7)) -> str:
    from PIL import Image
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def write_tsv(path, rows, columns=None):
    """rows: dicts; missing keys / None become empty fields."""
    columns = columns or ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category",
                          "image"]
    with open(path, "w", encoding="utf-8", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow(["" if r.get(c) is None else r[c] for c in columns])
    return str(path)
