"""Two caches: image features in memory, and Hugging Face checkpoints converted once on disk.

The image-feature cache holds what depends only on the image — the vision tower + projector output and each
MoE expert's output — so asking about one image in six languages runs the ViT (and the experts) once; only
the text-guided routing and the weighted sum run per question. It is an LRU keyed by a hash of the
preprocessed pixels and bounded in bytes.

Converted checkpoints live in ``$PARROT_CACHE`` (default ``$XDG_CACHE_HOME/parrot``, else ``~/.cache/parrot``),
named after the directory and a hash of its config and of its files' names, sizes and modification times, so an
edited checkpoint is converted again and an unchanged one never is.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Generic, List, Optional, Protocol, Tuple, TypeVar

import numpy as np

__all__ = ["ImageFeatures", "ImageCacheInfo", "ImageFeatureCache", "PrefixCache", "PrefixCacheInfo", "pixel_key",
           "cache_dir", "converted_path", "DEFAULT_IMAGE_CACHE_BYTES", "DEFAULT_PREFIX_CACHE_ENTRIES"]

#: Default bound of a model's image-feature cache: a few images of Parrot-7B (6 experts × 577 × 4096 f32 plus
#: the features themselves is about 66 MB per image).
DEFAULT_IMAGE_CACHE_BYTES = 256 * 1024 * 1024


def pixel_key(pixels: np.ndarray) -> bytes:
    """The cache key of a preprocessed image: a 128-bit BLAKE2b of its shape and float32 bytes."""
    a = np.ascontiguousarray(pixels, dtype=np.float32)
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(a.shape).encode())
    h.update(a.data.cast("B"))
    return h.digest()


@dataclass(frozen=True)
class ImageFeatures:
    """What the model computes from an image alone."""

    features: np.ndarray            # (image_tokens, hidden): vision tower + projector
    experts: Optional[np.ndarray]   # (num_experts, image_tokens, hidden), None when the model has no MoE
    vision_s: float                 # time the vision tower + projector took
    experts_s: float                # time the experts took

    @property
    def seconds(self) -> float:
        """What a cache hit saves."""
        return self.vision_s + self.experts_s

    @property
    def nbytes(self) -> int:
        return self.features.nbytes + (self.experts.nbytes if self.experts is not None else 0)


@dataclass(frozen=True)
class ImageCacheInfo:
    """Counters of an image-feature cache."""

    hits: int
    misses: int
    entries: int
    bytes: int
    max_bytes: int
    seconds_saved: float


class _Entry(Protocol):
    """What the image cache holds: anything that knows its size and what recomputing it costs (today an
    :class:`ImageFeatures`; an opaque handle owned by the C core fits as well)."""

    @property
    def nbytes(self) -> int: ...

    @property
    def seconds(self) -> float: ...


E = TypeVar("E", bound=_Entry)


class ImageFeatureCache(Generic[E]):
    """LRU of image features (:class:`ImageFeatures`) bounded by ``max_bytes`` (0 disables it). Thread-safe."""

    def __init__(self, max_bytes: int = DEFAULT_IMAGE_CACHE_BYTES):
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"image cache size must be a non-negative int of bytes, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._items: "OrderedDict[bytes, E]" = OrderedDict()
        self._bytes = 0
        self._hits = self._misses = 0
        self._saved = 0.0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Optional[E]:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self._misses += 1
                return None
            self._items.move_to_end(key)
            self._hits += 1
            self._saved += item.seconds
            return item

    def put(self, key: bytes, item: E) -> None:
        """Stores item, evicting the least recently used entries to stay within max_bytes; an item larger than
        the whole cache is not stored."""
        if item.nbytes > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            while self._items and self._bytes + item.nbytes > self.max_bytes:
                _, evicted = self._items.popitem(last=False)
                self._bytes -= evicted.nbytes
            self._items[key] = item
            self._bytes += item.nbytes

    def clear(self) -> None:
        """Drops every entry (the counters stay)."""
        with self._lock:
            self._items.clear()
            self._bytes = 0

    def info(self) -> ImageCacheInfo:
        with self._lock:
            return ImageCacheInfo(self._hits, self._misses, len(self._items), self._bytes, self.max_bytes,
                                  self._saved)


#: Default number of parked KV caches in a model's prefix cache.
DEFAULT_PREFIX_CACHE_ENTRIES = 1


@dataclass(frozen=True)
class PrefixCacheInfo:
    """Counters of a prefix cache: lookups that found a parked KV cache (and the positions they skipped)."""

    hits: int
    misses: int
    entries: int
    max_entries: int
    positions_reused: int


class PrefixCache:
    """KV caches parked between generations, each holding exactly the positions of a prompt prefix.

    Every one-question prompt with the same system message starts with the same ids (the system turn, up to
    the user turn's ``<|im_start|>``), and a causal decoder's KV rows for those positions depend on nothing
    after them. A generation takes a parked context whose prefix its prompt starts with, runs only its own
    positions, and when it ends the context is cut back to the prefix (:meth:`put`) for the next one. The
    positions at and after the image are never reused: the MoE routes the image's rows on the whole question.

    A parked context keeps the memory its KV cache grew to (the C core does not shrink it), so the cache is
    bounded by a number of contexts, ``max_entries`` (0 disables it). Thread-safe: a context is lent to one
    generation at a time; concurrent generations with the same prefix build their own."""

    def __init__(self, max_entries: int = DEFAULT_PREFIX_CACHE_ENTRIES):
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 0:
            raise ValueError(f"prefix cache size must be a non-negative int of contexts, got {max_entries!r}")
        self.max_entries = max_entries
        self._items: List[Tuple[Tuple[int, ...], Any]] = []   # least recently parked first
        self._hits = self._misses = self._reused = 0
        self._lock = threading.Lock()

    def take(self, prefix: Tuple[int, ...]) -> Optional[Any]:
        """A parked context holding exactly ``prefix`` (removed from the cache), or None."""
        with self._lock:
            for i in range(len(self._items) - 1, -1, -1):
                if self._items[i][0] == prefix:
                    ctx = self._items.pop(i)[1]
                    self._hits += 1
                    self._reused += len(prefix)
                    return ctx
            self._misses += 1
            return None

    def put(self, prefix: Tuple[int, ...], ctx: Any) -> None:
        """Parks ``ctx``, cut back to ``prefix`` (it must hold those ids at its first positions), evicting the
        least recently parked context beyond ``max_entries``."""
        if self.max_entries == 0:
            return
        ctx.truncate(len(prefix))
        with self._lock:
            self._items.append((prefix, ctx))
            del self._items[:-self.max_entries]

    def clear(self) -> None:
        """Drops every parked context (the counters stay)."""
        with self._lock:
            self._items.clear()

    def info(self) -> PrefixCacheInfo:
        with self._lock:
            return PrefixCacheInfo(self._hits, self._misses, len(self._items), self.max_entries, self._reused)


def cache_dir() -> str:
    """``$PARROT_CACHE``, else ``$XDG_CACHE_HOME/parrot``, else ``~/.cache/parrot``."""
    d = os.environ.get("PARROT_CACHE")
    if not d:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = os.path.join(base, "parrot")
    return d


def _dir_fingerprint(d: str, h: "hashlib._Hash") -> None:
    for name in sorted(os.listdir(d)):
        p = os.path.join(d, name)
        if not os.path.isfile(p):
            continue
        st = os.stat(p)
        h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        if name.endswith(".json"):
            with open(p, "rb") as f:
                h.update(f.read())


def converted_path(hf_dir: str, *, dtype: str) -> str:
    """Where :func:`parrot.load` keeps the GGUF conversion of ``hf_dir`` (it may not exist yet; an explicit CLIP
    tower is keyed by :func:`parrot.hub.resolve_model`)."""
    h = hashlib.sha256()
    h.update(json.dumps({"dtype": dtype, "format": 1}).encode())
    _dir_fingerprint(hf_dir, h)
    name = os.path.basename(os.path.normpath(os.path.abspath(hf_dir))) or "model"
    return os.path.join(cache_dir(), "converted", f"{name}-{h.hexdigest()[:16]}-{dtype}.gguf")
