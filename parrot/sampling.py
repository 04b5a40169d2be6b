"""Choosing the next token from logits: greedy (the reference evaluation), or sampling with temperature,
top-k, top-p and a repetition penalty, in the order and with the meaning Hugging Face ``generate`` gives them
(repetition penalty, then temperature, then top-k, then top-p).

One departure from the reference, on by default (``valid_utf8``): a byte-level vocabulary can spell half a
character, and a model can then go on with something that does not complete it (or stop), which the reference
decodes as U+FFFD. :class:`Utf8Guard` leaves out, at each step, the tokens that would make the answer's bytes
ill-formed UTF-8, the end-of-turn tokens while a character is unfinished, and, near ``max_new_tokens``, the tokens
that would owe more bytes than tokens are left (so a cut answer ends on a whole character). Greedy answers are the
reference's whenever the reference's answer is well-formed, because the guard only acts when the most likely token
is one of those."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, Optional

import numpy as np

if TYPE_CHECKING:
    from parrot.tokenizer import Tokenizer

__all__ = ["SamplingOptions", "Sampler", "Utf8Table", "Utf8Guard"]


def _check_number(name: str, value: object, *, low: float, low_open: bool, high: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if (v <= low if low_open else v < low) or (high is not None and v > high):
        bound = f"{'>' if low_open else '>='} {low}" + (f" and <= {high}" if high is not None else "")
        raise ValueError(f"{name} must be {bound}, got {value!r}")
    return v


@dataclass(frozen=True)
class SamplingOptions:
    """How to pick each token. ``temperature == 0`` is greedy (argmax); the other knobs then only matter
    through ``repetition_penalty``, which also applies to greedy decoding, as in Hugging Face."""

    temperature: float = 0.0
    top_k: Optional[int] = None
    top_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    seed: Optional[int] = None
    valid_utf8: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.valid_utf8, bool):
            raise TypeError(f"valid_utf8 must be True or False, got {self.valid_utf8!r}")
        _check_number("temperature", self.temperature, low=0.0, low_open=False)
        if self.top_k is not None and (isinstance(self.top_k, bool) or not isinstance(self.top_k, int)
                                       or self.top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {self.top_k!r}")
        if self.top_p is not None:
            _check_number("top_p", self.top_p, low=0.0, low_open=True, high=1.0)
        if self.repetition_penalty is not None:
            _check_number("repetition_penalty", self.repetition_penalty, low=0.0, low_open=True)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)
                                      or self.seed < 0):
            raise ValueError(f"seed must be a non-negative int or None, got {self.seed!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


# UTF-8 (RFC 3629): a lead byte's length, and the range of the byte after it (E0, ED, F0 and F4 narrow it to rule
# out overlong forms, surrogates and code points above U+10FFFF; every later continuation byte is 80-BF)
def _utf8_length(lead: int) -> int:
    return 2 if 0xC2 <= lead <= 0xDF else 3 if 0xE0 <= lead <= 0xEF else 4 if 0xF0 <= lead <= 0xF4 else 0


_SECOND_BYTE = {0xE0: (0xA0, 0xBF), 0xED: (0x80, 0x9F), 0xF0: (0x90, 0xBF), 0xF4: (0x80, 0x8F)}


class Utf8Table:
    """Each token's bytes, described for :class:`Utf8Guard`; made once per model (``Model.utf8_table``).

    Per id (arrays of the model's vocabulary size): ``length`` (bytes the token adds to the answer: 0 for special
    tokens, which the answer's text skips, and for unused ids), ``lead`` (how many of its first bytes are
    continuation bytes 80-BF), ``first`` (its first byte), ``body_ok`` (the bytes after those are well-formed
    UTF-8, perhaps ending inside a character), ``need`` and ``lo``/``hi`` (continuation bytes still owed at its
    end, and the range the next one must lie in). Python's UTF-8 codec judges the bodies."""

    def __init__(self, token_bytes: Callable[[int], bytes], is_special: Callable[[int], bool], n_tokens: int,
                 vocab_size: int):
        self.length = np.zeros(vocab_size, dtype=np.int32)
        self.lead = np.zeros(vocab_size, dtype=np.int32)
        self.first = np.full(vocab_size, -1, dtype=np.int32)
        self.body_ok = np.ones(vocab_size, dtype=bool)
        self.need = np.zeros(vocab_size, dtype=np.int32)
        self.lo = np.full(vocab_size, 0x80, dtype=np.int32)
        self.hi = np.full(vocab_size, 0xBF, dtype=np.int32)
        for t in range(min(n_tokens, vocab_size)):
            b = token_bytes(t)
            if not b or is_special(t):
                continue
            self.length[t], self.first[t] = len(b), b[0]
            lead = len(b) - len(b.lstrip(bytes(range(0x80, 0xC0))))
            self.lead[t] = lead
            try:
                b[lead:].decode("utf-8")
            except UnicodeDecodeError as e:
                # only a character cut off by the token's end is fine ("unexpected end of data" at the end)
                if e.end != len(b) - lead or e.reason != "unexpected end of data":
                    self.body_ok[t] = False
                    continue
                tail = b[lead + e.start:]
                self.need[t] = _utf8_length(tail[0]) - len(tail)
                if len(tail) == 1:
                    self.lo[t], self.hi[t] = _SECOND_BYTE.get(tail[0], (0x80, 0xBF))

    @classmethod
    def of_tokenizer(cls, tok: "Tokenizer", vocab_size: int) -> "Utf8Table":
        # a special token's text never reaches the answer (it is decoded with skip_special)
        return cls(tok.token_bytes, lambda t: tok.decode([t], skip_special=True) == "", len(tok), vocab_size)


class Utf8Guard:
    """Keeps one answer's bytes well-formed UTF-8 (see the module's docstring). State: how many continuation
    bytes the answer still owes, and the range the next must lie in."""

    def __init__(self, table: Utf8Table, stop_ids: Iterable[int]):
        self.table = table
        self.stop_ids = np.array(sorted({int(i) for i in stop_ids if 0 <= int(i) < table.length.size}),
                                 dtype=np.int64)
        self.need, self.lo, self.hi = 0, 0x80, 0xBF

    def allowed(self, ids: "np.ndarray | None" = None, *, room: Optional[int] = None) -> np.ndarray:
        """Which of ``ids`` (default: every id) may come next. ``room``: how many tokens may follow it (None: no
        limit); a token may not leave more continuation bytes owed than that, so that the answer's last token
        ends a character (single-byte tokens can always pay one byte each)."""
        t = self.table
        sel = slice(None) if ids is None else ids
        length, lead, body_ok, need = t.length[sel], t.lead[sel], t.body_ok[sel], t.need[sel]
        if self.need == 0:
            ok: np.ndarray = (lead == 0) & body_ok
            if room is not None:
                ok &= need <= room
            return ok
        first = t.first[sel]
        continuation_only = (lead == length) & (length > 0)
        ok = (first >= self.lo) & (first <= self.hi) & np.where(
            continuation_only, length <= self.need, (lead == self.need) & body_ok)
        ok |= length == 0
        if room is not None:
            ok &= np.where(continuation_only, self.need - length, np.where(length == 0, self.need, need)) <= room
        if ids is None:
            ok[self.stop_ids] = False
        else:
            ok &= ~np.isin(ids, self.stop_ids)
        return ok

    def took(self, token: int) -> None:
        t = self.table
        if not 0 <= token < t.length.size or t.length[token] == 0:
            return
        if t.lead[token] == t.length[token]:
            self.need -= int(t.length[token])
            self.lo, self.hi = 0x80, 0xBF
        else:
            self.need, self.lo, self.hi = int(t.need[token]), int(t.lo[token]), int(t.hi[token])


class Sampler:
    """Picks tokens for one generation; owns its random generator so a ``seed`` reproduces the answer.
    ``utf8``: the answer's :class:`Utf8Guard` (None: any token may come)."""

    def __init__(self, options: SamplingOptions, vocab_size: int, utf8: Optional[Utf8Guard] = None):
        self.options = options
        self.vocab_size = vocab_size
        self.utf8 = utf8
        self.rng = np.random.default_rng(options.seed)
        # ids already in the sequence, for the repetition penalty (Hugging Face counts the prompt too)
        self.seen = np.zeros(vocab_size, dtype=bool)

    def observe(self, ids: Iterable[int]) -> None:
        """Marks ids as present in the sequence (prompt text or generated)."""
        a = np.asarray([i for i in ids if 0 <= i < self.vocab_size], dtype=np.int64)
        if a.size:
            self.seen[a] = True

    def took(self, token: int) -> None:
        """The token was chosen and kept in the answer."""
        self.observe((token,))
        if self.utf8 is not None:
            self.utf8.took(token)

    def _keep_valid(self, x: np.ndarray, room: Optional[int]) -> np.ndarray:
        """x with the tokens the UTF-8 guard rules out at -inf (unchanged if it would rule out every token)."""
        assert self.utf8 is not None
        ok = self.utf8.allowed(room=room)
        if not ok.any():
            return x
        return np.where(ok, x, -np.inf)

    def __call__(self, logits: np.ndarray, room: Optional[int] = None) -> int:
        """The next token; ``room``: how many more the answer may have after it (for the UTF-8 guard)."""
        o = self.options
        x = np.asarray(logits, dtype=np.float64)
        if o.repetition_penalty is not None and o.repetition_penalty != 1.0 and self.seen.any():
            x = x.copy()
            s = self.seen
            x[s] = np.where(x[s] > 0, x[s] / o.repetition_penalty, x[s] * o.repetition_penalty)
        if o.greedy:
            best = int(np.argmax(x))
            if self.utf8 is not None and not self.utf8.allowed(np.array([best]), room=room)[0]:
                best = int(np.argmax(self._keep_valid(x, room)))
            return best
        if self.utf8 is not None:
            x = self._keep_valid(x, room)
        x = x / o.temperature
        if o.top_k is not None and o.top_k < x.size:
            kth = np.partition(x, -o.top_k)[-o.top_k]
            x = np.where(x < kth, -np.inf, x)
        p = np.exp(x - x.max())
        p /= p.sum()
        if o.top_p is not None and o.top_p < 1.0:
            order = np.argsort(-p, kind="stable")
            cum = np.cumsum(p[order])
            # keep the smallest prefix whose mass reaches top_p (always at least the most likely token)
            keep = int(np.searchsorted(cum, o.top_p, side="left")) + 1
            mask = np.zeros_like(p, dtype=bool)
            mask[order[:keep]] = True
            p = np.where(mask, p, 0.0)
            p /= p.sum()
        return int(self.rng.choice(p.size, p=p))
