"""The Model: a loaded parrot GGUF file and everything it computes."""
from __future__ import annotations

import os
import threading
from typing import Iterable, List, Optional, Sequence, Union

import numpy as np

from parrot import _core
from parrot.errors import ModelError

IMAGE_TOKEN = -200  # the image placeholder id in a prompt's token ids (as the reference)

IdsLike = Union[Sequence[int], np.ndarray]


class Model:
    """A Parrot (or plain Qwen2) model loaded from a GGUF file made by :func:`parrot.convert`.

    Weights stay in the mapped file in their stored dtype, so loading is fast and resident memory is about
    the file size plus the KV cache. One Model may be shared by several threads: calls that run the network
    are serialised by a lock (they use all the model's threads already)."""

    def __init__(self, path: "os.PathLike[str] | str", *, threads: Optional[int] = None):
        path = os.fspath(path)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        self._core = _core.Model(path, threads or 0)
        self.path = path
        self.config = dict(self._core.config)
        self._lock = threading.RLock()
        self.last_routing: Optional[np.ndarray] = None

    def __repr__(self) -> str:
        c = self.config
        kind = "Parrot" if c["has_vision"] else "Qwen2"
        return (f"<parrot.Model {kind} {os.path.basename(self.path)}: {c['num_hidden_layers']} layers, "
                f"hidden {c['hidden_size']}, vocab {c['vocab_size']}, {self.threads} threads>")

    @property
    def threads(self) -> int:
        """Worker threads used by the C core."""
        return self._core.threads

    @property
    def context_size(self) -> int:
        """Longest sequence (prompt + image tokens + answer) the model accepts."""
        return int(self.config["max_position_embeddings"])

    # ---- low level: ids and pixels in, logits out
    def _check_ids(self, input_ids: IdsLike) -> np.ndarray:
        ids = np.asarray(input_ids)
        if ids.ndim != 1 or ids.size == 0:
            raise ValueError(f"input_ids must be a non-empty 1-D sequence of ints, got shape {ids.shape}")
        if not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"input_ids must be integers, got {ids.dtype}")
        V = self.config["vocab_size"]
        bad = (ids != IMAGE_TOKEN) & ((ids < 0) | (ids >= V))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"input_ids[{i}] = {int(ids[i])} is outside the vocabulary (0..{V - 1})")
        return ids.astype(np.int64)

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        """Projected image features: the vision tower's selected hidden state through the projector,
        ``(image_tokens, hidden)`` float32. ``pixels`` is a preprocessed ``(3, S, S)`` float32 array."""
        with self._lock:
            return self._core.encode_image(np.ascontiguousarray(pixels, dtype=np.float32))

    def moe(self, features: np.ndarray, text_ids: IdsLike) -> "tuple[np.ndarray, np.ndarray]":
        """The multilingual MoE on image ``features`` guided by the prompt's text token ids: returns
        ``(rewritten features, routing weights)``. With ``use_moe`` false, the features unchanged and None."""
        if not self.config.get("use_moe", False):
            return features, None
        text = self._core.embed(np.asarray(text_ids, dtype=np.int32))
        with self._lock:
            w = self._core.moe_routing(features, text)
            experts = self._core.moe_experts(features)
            return self._core.moe_combine(features, experts, w), w

    def _input_embeddings(self, ids: np.ndarray, pixels: Optional[np.ndarray]) -> np.ndarray:
        """Spliced input embeddings for ids containing IMAGE_TOKEN once (SPEC §5)."""
        where = np.flatnonzero(ids == IMAGE_TOKEN)
        if len(where) > 1:
            raise ValueError(f"input_ids contains the image placeholder {len(where)} times; one image per prompt")
        if len(where) == 1 and pixels is None:
            raise ValueError("input_ids contains the image placeholder but no pixels were given")
        if len(where) == 0 and pixels is not None:
            raise ValueError(f"pixels were given but input_ids has no image placeholder ({IMAGE_TOKEN})")
        if not self.config["has_vision"] and pixels is not None:
            raise ValueError(f"{self.path} has no vision tower; it cannot take an image")
        pos = int(where[0])
        text_ids = np.concatenate([ids[:pos], ids[pos + 1:]]).astype(np.int32)
        feats = self.encode_image(pixels)
        out, w = self.moe(feats, text_ids)
        self.last_routing = w
        text = self._core.embed(text_ids)
        return np.concatenate([text[:pos], out, text[pos:]]).astype(np.float32)

    def logits(self, input_ids: IdsLike, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        """Next-token logits for every position, ``(L, vocab)`` float32. ``input_ids`` may contain
        :data:`IMAGE_TOKEN` once, replaced by the image's features (then ``L`` counts them)."""
        ids = self._check_ids(input_ids)
        if pixels is None and not (ids == IMAGE_TOKEN).any():
            inputs = ids.astype(np.int32)
        else:
            inputs = self._input_embeddings(ids, pixels)
        n = len(inputs)
        if n > self.context_size:
            raise ValueError(f"the input is {n} positions long but the model's context is {self.context_size}")
        with self._lock:
            ctx = self._core.new_context(n)
            return ctx.decode(inputs, all_logits=True)

    def generate_ids(self, input_ids: IdsLike, max_new_tokens: int, *, pixels: Optional[np.ndarray] = None,
                     stop_ids: Iterable[int] = ()) -> List[int]:
        """Greedy continuation of ``input_ids`` with the KV cache: the new token ids (stops after a token in
        ``stop_ids``, which is included)."""
        ids = self._check_ids(input_ids)
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        inputs = ids.astype(np.int32) if pixels is None and not (ids == IMAGE_TOKEN).any() else \
            self._input_embeddings(ids, pixels)
        n = len(inputs)
        if n >= self.context_size:
            raise ValueError(f"the input is {n} positions long but the model's context is {self.context_size}")
        max_new_tokens = min(max_new_tokens, self.context_size - n)
        stop = set(int(s) for s in stop_ids)
        out: List[int] = []
        if max_new_tokens == 0:
            return out
        with self._lock:
            ctx = self._core.new_context(min(self.context_size, n + max_new_tokens))
            logits = ctx.decode(inputs)
            while True:
                tok = int(np.argmax(logits))
                out.append(tok)
                if tok in stop or len(out) >= max_new_tokens:
                    return out
                logits = ctx.decode(np.array([tok], dtype=np.int32))


def load(path: "os.PathLike[str] | str", *, threads: Optional[int] = None) -> Model:
    """Loads a parrot GGUF model file. ``threads`` defaults to the number of physical cores."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ModelError(f"{path} is a directory; convert it first with parrot.convert(...)")
    return Model(path, threads=threads)
