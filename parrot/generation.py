"""One generation: the decoding loop over a KV cache, the text it streams, and the :class:`Result`.

The loop prefills the prompt, then picks and feeds one token at a time. Each call into the C core takes the
model's lock, so generations in several threads interleave token by token on one model without sharing a KV
cache. Text is produced the way the reference evaluation decodes: special tokens skipped, surrounding white
space stripped — incrementally, through the tokenizer's stream decoder, so no piece ever ends inside a UTF-8
character and ``"".join(pieces)`` is exactly the final text.
"""
from __future__ import annotations

import base64
import html
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Optional, Sequence

import numpy as np

from parrot.sampling import Sampler

__all__ = ["Result", "Decoding", "normalize_stop"]


def normalize_stop(stop: "str | Sequence[str] | None") -> List[str]:
    """``stop`` as a list of non-empty strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    out = []
    for s in stop:
        if not isinstance(s, str):
            raise TypeError(f"stop strings must be str, got {type(s).__name__}: {s!r}")
        if not s:
            raise ValueError("stop strings must not be empty")
        out.append(s)
    return out


class TextAssembler:
    """Turns decoded text pieces into the pieces a caller may see: leading and trailing white space stripped
    (trailing white space is held back until text follows it) and the text cut at the first stop string (a
    tail that could still become a stop string is held back)."""

    def __init__(self, stops: Sequence[str]):
        self.stops = list(stops)
        self.longest = max((len(s) for s in self.stops), default=0)
        self.raw = ""
        self.lead: Optional[int] = None   # length of the leading white space, fixed once text appears
        self.emitted = 0                  # index into raw up to which text was handed out
        self.stopped = False

    def _hold(self) -> int:
        """Characters at the end of raw that must not be shown yet."""
        hold = len(self.raw) - len(self.raw.rstrip())
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.raw)), 0, -1):
                if self.raw.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        return hold

    def push(self, piece: str) -> str:
        if self.stopped or not piece:
            return ""
        start = max(0, len(self.raw) - self.longest + 1)
        self.raw += piece
        cut = min((i for i in (self.raw.find(s, start) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            self.raw = self.raw[:cut]
            self.stopped = True
            return self.finish()
        return self._emit(len(self.raw) - self._hold())

    def _emit(self, end: int) -> str:
        if self.lead is None:
            stripped = self.raw.lstrip()
            if not stripped:
                return ""
            self.lead = len(self.raw) - len(stripped)
            self.emitted = self.lead
        if end <= self.emitted:
            return ""
        out = self.raw[self.emitted:end]
        self.emitted = end
        return out

    def finish(self) -> str:
        """The rest of the text (everything but trailing white space)."""
        return self._emit(len(self.raw.rstrip()))

    @property
    def text(self) -> str:
        return self.raw.strip()


def _png(rgb: np.ndarray) -> bytes:
    """A minimal 8-bit RGB PNG of an H×W×3 uint8 array (for notebook thumbnails, without Pillow)."""
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw, 6)) + chunk(b"IEND", b""))


@dataclass
class Result:
    """Everything about one answer. ``str(result)`` is the text.

    timings (seconds unless named otherwise): ``preprocess_s`` (image decoding + CLIP preprocessing),
    ``vision_s`` (vision tower + projector; 0 on an image-cache hit), ``moe_s`` (experts on a miss, routing and
    the weighted sum), ``prefill_s`` (the prompt through the decoder), ``decode_s`` (token-by-token
    generation), ``prompt_tokens`` (positions of the prompt, image tokens included), ``new_tokens``,
    ``decode_tokens_per_s``.

    finish_reason: ``"stop"`` (the model ended its turn), ``"length"`` (max_new_tokens or the context was
    reached), ``"stop_string"`` (one of ``stop`` appeared; the text is cut before it) or ``"error"``
    (only in :meth:`parrot.Model.generate_many`, with ``error`` set).
    """

    text: str
    token_ids: List[int]
    routing: Optional[np.ndarray]
    timings: Dict[str, float]
    finish_reason: str
    image_cache_hit: bool = False
    prompt: str = ""
    error: Optional[BaseException] = None
    thumbnail: Optional[np.ndarray] = field(default=None, repr=False)

    def __str__(self) -> str:
        return self.text

    def _repr_html_(self) -> str:
        parts = ['<div style="display:flex;gap:12px;align-items:flex-start;font-family:sans-serif">']
        if self.thumbnail is not None:
            b64 = base64.b64encode(_png(self.thumbnail)).decode()
            parts.append(f'<img src="data:image/png;base64,{b64}" style="width:112px;image-rendering:auto" '
                         f'alt="image">')
        parts.append("<div>")
        if self.prompt:
            parts.append(f'<div style="color:#666">{html.escape(self.prompt)}</div>')
        if self.error is not None:
            parts.append(f'<div style="color:#b00">{html.escape(type(self.error).__name__)}: '
                         f'{html.escape(str(self.error))}</div>')
        else:
            parts.append(f'<div style="font-size:1.1em;margin:4px 0"><b>{html.escape(self.text)}</b></div>')
        if self.routing is not None:
            parts.append('<table style="border-collapse:collapse;font-size:0.85em">')
            for e, w in enumerate(self.routing):
                parts.append(f'<tr><td style="padding:0 6px">expert {e}</td><td style="width:160px">'
                             f'<div style="background:#4a7ebb;height:10px;width:{max(0.0, float(w)) * 100:.1f}%">'
                             f'</div></td><td style="padding:0 6px">{float(w):.3f}</td></tr>')
            parts.append("</table>")
        t = self.timings
        if t:
            parts.append(f'<div style="color:#888;font-size:0.8em">{t.get("new_tokens", 0):.0f} tokens, '
                         f'{t.get("decode_tokens_per_s", 0):.1f} tokens/s, prompt {t.get("prompt_tokens", 0):.0f} '
                         f'positions{", image cache hit" if self.image_cache_hit else ""}, '
                         f'finish: {html.escape(self.finish_reason)}</div>')
        parts.append("</div></div>")
        return "".join(parts)


class Decoding:
    """Iterating yields the text pieces of one generation; afterwards ``token_ids``, ``finish_reason`` and
    ``text`` are set and ``timings`` has ``prefill_s``, ``decode_s``, ``new_tokens``, ``decode_tokens_per_s``.

    ``inputs`` (ids or embeddings) are appended to ``ctx``; when ``first_logits`` is given they were already
    run and those are the logits of their last position."""

    def __init__(self, model: "object", ctx: "object", inputs: Optional[np.ndarray], *, max_new_tokens: int,
                 sampler: Sampler, stop_ids: Sequence[int], stops: Sequence[str], detok: "object",
                 timings: Dict[str, float]):
        self.model = model
        self.ctx = ctx
        self.inputs = inputs
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.text_out = TextAssembler(stops)
        self.detok = detok
        self.timings = timings
        self.token_ids: List[int] = []
        self.finish_reason = "length"

    @property
    def text(self) -> str:
        return self.text_out.text

    def _decode(self, inputs: np.ndarray) -> np.ndarray:
        with self.model._lock:
            return self.ctx.decode(inputs)

    def __iter__(self) -> Iterator[str]:
        t0 = time.perf_counter()
        logits = self._decode(self.inputs) if self.max_new_tokens > 0 else None
        t1 = time.perf_counter()
        self.timings["prefill_s"] = t1 - t0
        one = np.zeros(1, dtype=np.int32)
        n = 0
        try:
            while n < self.max_new_tokens:
                tok = self.sampler(logits)
                if tok in self.stop_ids:
                    self.finish_reason = "stop"
                    break
                self.token_ids.append(tok)
                self.sampler.observe((tok,))
                n += 1
                piece = self.text_out.push(self.detok.push(tok))
                if piece:
                    yield piece
                if self.text_out.stopped:
                    self.finish_reason = "stop_string"
                    break
                if n == self.max_new_tokens:
                    break
                one[0] = tok
                logits = self._decode(one)
            if not self.text_out.stopped:
                piece = self.text_out.push(self.detok.flush())
                if self.text_out.stopped:
                    self.finish_reason = "stop_string"
                piece += self.text_out.finish()
                if piece:
                    yield piece
        finally:
            t2 = time.perf_counter()
            self.timings["decode_s"] = t2 - t1
            self.timings["new_tokens"] = len(self.token_ids)
            self.timings["decode_tokens_per_s"] = len(self.token_ids) / (t2 - t1) if t2 > t1 else 0.0
