"""One generation: the decoding loop over a KV cache, the text it streams, and the :class:`Result`.

The loop prefills the prompt, then picks and feeds one token at a time. Each call into the C core takes the
model's lock, so generations in several threads interleave token by token on one model without sharing a KV
cache. Text is produced the way the reference evaluation decodes: special tokens skipped, surrounding white
space stripped — incrementally, through the tokenizer's stream decoder, so no piece ever ends inside a UTF-8
character and ``"".join(pieces)`` is exactly the final text.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from parrot.sampling import Sampler

__all__ = ["Result", "Generation", "normalize_stop"]


def normalize_stop(stop: "str | Sequence[str] | None") -> List[str]:
    """``stop`` as a list of non-empty strings."""
    if stop is None:
        return []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, Iterable):
        raise TypeError(f"stop must be a str, a sequence of str or None, got {type(stop).__name__}: {stop!r}")
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


@dataclass
class Result:
    """Everything about one answer. ``str(result)`` is the text.

    timings (seconds unless named otherwise): ``preprocess_s`` (image decoding + CLIP preprocessing),
    ``vision_s`` (vision tower + projector; 0 on an image-cache hit), ``moe_s`` (the experts on a miss),
    ``prefill_s`` (routing, the weighted sum and the prompt through the decoder), ``decode_s`` (token-by-token
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
        from parrot.display import result_html
        return result_html(self)




class Generation:
    """One answer being generated. Iterating yields its text in pieces (nothing runs before the first
    ``next``); afterwards :attr:`result` is the :class:`Result`. Made by :meth:`parrot.Model.generation`.

    ``prefill()`` runs the prompt into the KV cache and returns the last position's logits and the MoE's
    routing weights; ``step(token)`` feeds one token and returns the next logits; ``release()`` is called
    once when the generation ends, however it ends (finished, error, interrupt, or abandoned).

    Stepwise use (batched decoding, :meth:`parrot.Model.decode_step`): :meth:`start` runs the prompt and
    samples the first token; while :attr:`pending` is not None, its logits (computed by whoever batches the
    step, from :attr:`context`) go to :meth:`advance`; :meth:`close` ends an abandoned one. Iterating is
    exactly this loop with ``step`` computing the logits."""

    def __init__(self, *, prefill: Callable[[], Tuple[np.ndarray, Optional[np.ndarray]]],
                 step: Callable[[int], np.ndarray], max_new_tokens: int, sampler: Sampler,
                 stop_ids: Iterable[int], stops: Sequence[str], detok: Any, timings: Dict[str, float],
                 prompt: str = "", image_cache_hit: bool = False, thumbnail: Optional[np.ndarray] = None,
                 release: Optional[Callable[[], None]] = None, context: Any = None):
        self._prefill, self._step, self._release = prefill, step, release
        self.context = context   # the KV cache it decodes into (a _core.Context)
        self.max_new_tokens = max_new_tokens
        self.sampler = sampler
        self.stop_ids = frozenset(int(i) for i in stop_ids)
        self.text_out = TextAssembler(stops)
        self.detok = detok
        self.timings = timings
        self.prompt, self.image_cache_hit, self.thumbnail = prompt, image_cache_hit, thumbnail
        self.token_ids: List[int] = []
        self.stop_token: Optional[int] = None   # the end-of-turn token that ended it (not in token_ids)
        self.routing: Optional[np.ndarray] = None
        self.finish_reason = "length"
        #: the token to feed back next (its logits go to advance()); None once the generation has ended
        self.pending: Optional[int] = None
        self._done = False
        self._started = False
        self._closed = False
        self._t1: Optional[float] = None

    @property
    def text(self) -> str:
        return self.text_out.text

    @property
    def result(self) -> Result:
        """The :class:`Result` (once the iteration has ended)."""
        if not self._done:
            raise RuntimeError("the generation has not finished: iterate over it (or call run()) first")
        return Result(text=self.text, token_ids=list(self.token_ids), routing=self.routing,
                      timings=dict(self.timings), finish_reason=self.finish_reason,
                      image_cache_hit=self.image_cache_hit, prompt=self.prompt, thumbnail=self.thumbnail)

    def run(self) -> Result:
        """Generates to the end and returns the :class:`Result`."""
        for _ in self:
            pass
        return self.result

    def __iter__(self) -> Iterator[str]:
        try:
            piece = self.start()
            if piece:
                yield piece
            while self.pending is not None:
                piece = self.advance(self._step(self.pending))
                if piece:
                    yield piece
        finally:
            self.close()

    def start(self) -> str:
        """Runs the prompt (the prefill) and samples the first token; returns the text it completes."""
        if self._started:
            raise RuntimeError("a generation can be iterated once")
        self._started = True
        self.timings.setdefault("prefill_s", 0.0)
        logits = None
        if self.max_new_tokens > 0:
            logits, self.routing = self._prefill()   # sets timings' prefill_s
        self._t1 = time.perf_counter()
        return self.advance(logits)

    def advance(self, logits: Optional[np.ndarray]) -> str:
        """Takes the logits that followed :attr:`pending` (or the prefill), samples the next token and returns
        the text completed so far; sets :attr:`pending` to the next token to feed back, or to None when the
        generation has ended (then it is closed, and :attr:`result` is ready)."""
        tok: Optional[int] = None
        piece = ""
        if len(self.token_ids) < self.max_new_tokens:
            assert logits is not None
            tok = self.sampler(logits, room=self.max_new_tokens - len(self.token_ids) - 1)
            if tok in self.stop_ids:
                self.finish_reason = "stop"
                self.stop_token, tok = tok, None
            else:
                self.token_ids.append(tok)
                self.sampler.took(tok)
                if self.detok is not None:
                    piece = self.text_out.push(self.detok.push(tok))
                    if self.text_out.stopped:
                        self.finish_reason = "stop_string"
                        tok = None
                if len(self.token_ids) == self.max_new_tokens:
                    tok = None
        self.pending = tok
        if tok is None:
            if self.detok is not None and not self.text_out.stopped:
                piece += self.text_out.push(self.detok.flush())
                if self.text_out.stopped:
                    self.finish_reason = "stop_string"
                piece += self.text_out.finish()
            self._done = True
            self.close()
        return piece

    def close(self) -> None:
        """Ends the generation (finished or abandoned; twice is fine): records the decode timings and releases
        its KV cache."""
        if self._closed:
            return
        self._closed = True
        self.pending = None
        t2 = time.perf_counter()
        t1 = t2 if self._t1 is None else self._t1
        self.timings["decode_s"] = t2 - t1
        self.timings["new_tokens"] = len(self.token_ids)
        self.timings["decode_tokens_per_s"] = len(self.token_ids) / (t2 - t1) if t2 > t1 else 0.0
        if self._release is not None:
            self._release()
