"""Choosing the next token from logits: greedy (the reference evaluation), or sampling with temperature,
top-k, top-p and a repetition penalty, in the order and with the meaning Hugging Face ``generate`` gives them
(repetition penalty, then temperature, then top-k, then top-p)."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np

__all__ = ["SamplingOptions", "Sampler"]


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

    def __post_init__(self) -> None:
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


class Sampler:
    """Picks tokens for one generation; owns its random generator so a ``seed`` reproduces the answer."""

    def __init__(self, options: SamplingOptions, vocab_size: int):
        self.options = options
        self.vocab_size = vocab_size
        self.rng = np.random.default_rng(options.seed)
        # ids already in the sequence, for the repetition penalty (Hugging Face counts the prompt too)
        self.seen = np.zeros(vocab_size, dtype=bool)

    def observe(self, ids: Iterable[int]) -> None:
        """Marks ids as present in the sequence (prompt text or generated)."""
        a = np.asarray([i for i in ids if 0 <= i < self.vocab_size], dtype=np.int64)
        if a.size:
            self.seen[a] = True

    def __call__(self, logits: np.ndarray) -> int:
        o = self.options
        x = np.asarray(logits, dtype=np.float64)
        if o.repetition_penalty is not None and o.repetition_penalty != 1.0 and self.seen.any():
            x = x.copy()
            s = self.seen
            x[s] = np.where(x[s] > 0, x[s] / o.repetition_penalty, x[s] * o.repetition_penalty)
        if o.greedy:
            return int(np.argmax(x))
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
