"""The Model: a loaded parrot GGUF file, and everything users ask of it.

    import parrot
    with parrot.load("parrot.gguf") as model:               # or a Hugging Face Parrot directory
        model.generate("cat.jpg", "What animal is this?")   # greedy, as the reference evaluation
        for piece in model.stream("cat.jpg", "Что это?"):   # streamed text
            print(piece, end="", flush=True)
        r = model.run("cat.jpg", "这是什么?")                # text, token ids, MoE routing, timings
        chat = model.chat("cat.jpg"); chat.ask("Describe it."); chat.ask("What colour is it?")

One pipeline serves every call: a prompt (:mod:`parrot.prompt`) becomes token ids with one
:data:`IMAGE_TOKEN` where the image goes; :meth:`Model.generation` takes the image's features from the
image-feature cache (running the vision tower and the experts on a miss), takes a parked KV cache holding the
system turn from the prefix cache when there is one, and returns a :class:`parrot.generation.Generation`
whose first step is the multimodal prefill (``_prefill``: one C call routes, splices and runs the decoder)
and whose next steps decode one token each (one at a time, or several generations together through
:meth:`Model.decode_step`). ``run``, ``generate``, ``stream``, ``generate_many``, ``generate_ids``,
``logits`` and chat sessions are all built on it.

Concurrency: one Model may be used from several threads. Every call into the C core (a prefill, one decoded
token, the vision tower) takes the model's lock, so those calls queue rather than run in parallel — the core
already spreads each of them over all the model's threads — and generations in different threads interleave
token by token, each with its own KV cache. Long C calls release the GIL. Ctrl-C (KeyboardInterrupt) stops a
generation within a token; the Model stays usable (the interrupted generation's KV cache is discarded).
"""
from __future__ import annotations

import glob
import logging
import os
import threading
import time
from collections.abc import Sized
from typing import (TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Literal, Mapping, Optional, Sequence,
                    Tuple, Union, overload)

import numpy as np

from parrot import _core
from parrot.cache import (DEFAULT_IMAGE_CACHE_BYTES, DEFAULT_PREFIX_CACHE_ENTRIES, ImageCacheInfo,
                          ImageFeatureCache, PrefixCache, PrefixCacheInfo, pixel_key)
from parrot.chat import ChatSession
from parrot.errors import ModelError
from parrot.generation import Generation, Result, normalize_stop
from parrot.prompt import (DEFAULT_SYSTEM, IM_START, IMAGE_PLACEHOLDER, IMAGE_TOKEN, Prompt, check_text,
                           format_query, system_turn)
from parrot.sampling import Sampler, SamplingOptions, Utf8Guard, Utf8Table

if TYPE_CHECKING:
    from parrot.tokenizer import Tokenizer

__all__ = ["IMAGE_TOKEN", "DEFAULT_SYSTEM", "Model", "load", "default_model", "generate", "ImageInput"]

log = logging.getLogger("parrot")

DEFAULT_MAX_NEW_TOKENS = 512

IdsLike = Union[Sequence[int], np.ndarray]
#: A path (str / os.PathLike), encoded PNG/JPEG bytes, a uint8 numpy array (H×W, H×W×3, H×W×4) or a PIL image.
ImageInput = Any

_SAMPLING_OPTIONS = ("temperature", "top_k", "top_p", "repetition_penalty", "seed", "valid_utf8")
_GENERATION_OPTIONS = ("max_new_tokens", "stop") + _SAMPLING_OPTIONS


class _Closed:
    """Stands in for the C model after :meth:`Model.close`: any use raises a clear error."""

    def __init__(self, path: str):
        self._path = path

    def __getattr__(self, name: str) -> Any:
        raise ValueError(f"{self._path}: the model is closed")


class Model:
    """A Parrot (or plain Qwen2) model loaded from a GGUF file made by :func:`parrot.convert`.

    Weights stay in the mapped file in their stored dtype, so loading is fast and resident memory is about the
    file size plus the KV caches. ``image_cache_bytes`` bounds the image-feature cache (0 disables it);
    ``prefix_cache_entries`` is how many KV caches holding a system turn are kept for the next question (0
    disables it; each keeps the memory its generation's KV cache grew to). ``exif=False`` (or setting the
    :attr:`exif` attribute) reads image files and bytes without applying their EXIF Orientation. A Model is a
    context manager; :meth:`close` releases the file, after which every call raises ``ValueError``. See the
    module docstring for threads and interrupts."""

    def __init__(self, path: "os.PathLike[str] | str", *, threads: Optional[int] = None,
                 image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
                 prefix_cache_entries: int = DEFAULT_PREFIX_CACHE_ENTRIES, exif: bool = True):
        path = os.fspath(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such model file")
        self._core: Any = _core.Model(path, threads or 0)
        self.path = path
        self.config: Dict[str, Any] = dict(self._core.config)
        self._lock = threading.RLock()
        #: Whether image files and bytes are turned upright by their EXIF Orientation before preprocessing (as
        #: ``PIL.ImageOps.exif_transpose`` does); False reads the stored pixels as they are. Arrays and PIL
        #: images are never rotated.
        self.exif = bool(exif)
        self.last_routing: Optional[np.ndarray] = None
        self.image_cache: ImageFeatureCache[_core.Features] = ImageFeatureCache(image_cache_bytes)
        self.prefix_cache = PrefixCache(prefix_cache_entries)
        #: How many times the vision tower has run (cache misses); handy to see the cache work.
        self.vision_runs = 0
        self._tokenizer: Optional["Tokenizer"] = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._stop_ids: Optional[Tuple[int, ...]] = None
        self._utf8_table: Optional[Utf8Table] = None
        core_tok = self._core.tokenizer  # built by the C loader from the same file, or None
        if core_tok is not None:
            from parrot.tokenizer import Tokenizer
            self._tokenizer = Tokenizer(core_tok)
        log.debug("loaded %s (%s threads)", path, self._core.threads)

    def __repr__(self) -> str:
        if self.closed:
            return f"<parrot.Model {os.path.basename(self.path)} (closed)>"
        c = self.config
        kind = "Parrot" if c["has_vision"] else "Qwen2"
        return (f"<parrot.Model {kind} {os.path.basename(self.path)}: {c['num_hidden_layers']} layers, "
                f"hidden {c['hidden_size']}, vocab {c['vocab_size']}, {self.threads} threads>")

    # ---- lifetime
    def close(self) -> None:
        """Releases the model file (once nothing else holds it) and every cache. A generation already
        decoding finishes; anything else on this Model — including a generation or chat question not started
        yet — raises ``ValueError``. Closing twice is fine."""
        with self._lock:
            self._core = _Closed(self.path)
            self._tokenizer = None
            self.image_cache.clear()
            self.prefix_cache.clear()

    @property
    def closed(self) -> bool:
        return isinstance(self._core, _Closed)

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- facts about the model
    @property
    def threads(self) -> int:
        """Worker threads used by the C core."""
        return int(self._core.threads)

    @property
    def context_size(self) -> int:
        """Longest sequence (prompt + image tokens + answer) the model accepts."""
        return int(self.config["max_position_embeddings"])

    @property
    def metadata(self) -> Dict[str, Any]:
        """The file's GGUF metadata (long arrays shown as ``("array", length)``)."""
        if self._metadata is None:
            self._metadata = dict(self._core.metadata())
        return self._metadata

    @property
    def default_system(self) -> str:
        """The system prompt used when none is given (stored in the file; Parrot's is the Qwen default)."""
        s = self.metadata.get("parrot.prompt.system")
        return s if isinstance(s, str) else DEFAULT_SYSTEM

    def tensors(self) -> List[Tuple[str, str, Tuple[int, ...], int]]:
        """``[(name, dtype, shape, nbytes)]`` of every tensor in the file."""
        return [(n, d, tuple(s), b) for n, d, s, b in self._core.tensors()]

    # ---- text
    @property
    def tokenizer(self) -> "Tokenizer":
        """The model's tokenizer (read from the same file). ModelError if the file has none."""
        if self._tokenizer is None:
            self._core.tokenizer  # raises if the model is closed
            raise ModelError(f"{self.path} has no tokenizer (it was converted from a checkpoint without tokenizer "
                             f"files); only token ids can be used with it (Model.generate_ids / Model.logits)")
        return self._tokenizer

    def tokenize(self, text: str, *, special: bool = True) -> List[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` recognised unless ``special=False``)."""
        return self.tokenizer.encode(text, special=special)

    def detokenize(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(ids, skip_special=skip_special)

    def encode_prompt(self, prompt: Prompt, *, allow_special: bool = False) -> List[int]:
        """Token ids of a formatted :class:`parrot.prompt.Prompt` (:data:`IMAGE_TOKEN` where ``<image>`` is).
        Text that looks like a special token (``<|im_end|>`` typed by a user) is read as plain text unless
        ``allow_special``; the formatter's own ChatML markers are always special tokens."""
        return prompt.tokenize(self.tokenizer, allow_special=allow_special)

    @property
    def stop_ids(self) -> Tuple[int, ...]:
        """Tokens that end the assistant's turn: ``<|im_end|>``, ``<|endoftext|>`` and the file's eos."""
        if self._stop_ids is None:
            ids = set()
            eos = self.config.get("eos_token_id", -1)
            if isinstance(eos, int) and eos >= 0:
                ids.add(eos)
            tok = self.tokenizer
            for name in ("<|im_end|>", "<|endoftext|>"):
                i = tok.token_id(name)
                if i is not None:
                    ids.add(int(i))
            self._stop_ids = tuple(sorted(ids))
        return self._stop_ids

    @property
    def utf8_table(self) -> Optional[Utf8Table]:
        """What each token's bytes do to UTF-8 (for ``valid_utf8``), made on first use; None without a
        tokenizer (ids alone have no text to keep well-formed)."""
        if self._utf8_table is None and self._tokenizer is not None:
            self._utf8_table = Utf8Table.of_tokenizer(self._tokenizer, int(self.config["vocab_size"]))
        return self._utf8_table

    # ---- images
    def preprocess(self, image: ImageInput) -> np.ndarray:
        """The ``(3, S, S)`` float32 pixels the vision tower sees (Parrot's pad-to-square + CLIP
        preprocessing with the size, mean and std stored in the file). Files and bytes are turned upright by
        their EXIF Orientation unless :attr:`exif` is False."""
        self._require_vision()
        from parrot.image import preprocess
        c = self.config
        pad = self.metadata.get("parrot.vision.image_aspect_ratio", "pad") == "pad"
        return preprocess(image, size=int(c["image_size"]), mean=c["image_mean"], std=c["image_std"], pad=pad,
                          exif=self.exif)

    def _require_vision(self) -> None:
        if not self.config["has_vision"]:
            raise ValueError(f"{self.path} has no vision tower (a text-only model); pass image=None")

    def image_features(self, pixels: np.ndarray) -> Tuple[_core.Features, bool]:
        """What the model computes from an image alone — projected features and each expert's output, held in
        the C core as a ``_core.Features`` handle — from the image-feature cache when present:
        ``(features, cache_hit)``."""
        self._require_vision()
        key = pixel_key(pixels)
        hit = self.image_cache.get(key)
        if hit is not None:
            return hit, True
        with self._lock:
            item = self._core.encode_features(np.ascontiguousarray(pixels, dtype=np.float32))
            self.vision_runs += 1
        self.image_cache.put(key, item)
        return item, False

    def image_cache_info(self) -> ImageCacheInfo:
        """Hits, misses, entries, bytes held, the bound, and the seconds of vision + expert work saved."""
        return self.image_cache.info()

    def prefix_cache_info(self) -> PrefixCacheInfo:
        """Hits, misses, parked contexts, the bound, and the prompt positions not recomputed thanks to it."""
        return self.prefix_cache.info()

    def encode_image(self, pixels: np.ndarray) -> np.ndarray:
        """Projected image features (for inspection): the vision tower's selected hidden state through the
        projector, ``(image_tokens, hidden)`` float32. ``pixels`` is a preprocessed ``(3, S, S)`` float32 array."""
        with self._lock:
            out: np.ndarray = self._core.encode_image(np.ascontiguousarray(pixels, dtype=np.float32))
            return out

    # ---- the pipeline
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

    def _positions(self, ids: np.ndarray, with_image: bool, n_past: int) -> int:
        """Positions ``ids`` take in the KV cache (the image's rows counted), checked against the image and
        the room left after ``n_past`` positions."""
        n = int((ids == IMAGE_TOKEN).sum())
        where = f"({IMAGE_PLACEHOLDER!r} in the text, IMAGE_TOKEN = {IMAGE_TOKEN} in the ids)"
        if with_image and n == 0:
            raise ValueError(f"pixels were given but the prompt has no image placeholder {where}")
        if with_image and n > 1:
            raise ValueError(f"the prompt holds the image placeholder {where} {n} times; the image goes in once")
        if not with_image and n:
            raise ValueError(f"the prompt holds the image placeholder {where} but no pixels were given (a chat "
                             f"session's image is already in its cache: reset(image=...) for another)")
        n_img = int(self.config["image_tokens"]) if with_image else 0
        positions = len(ids) - n + n_img
        if n_past + positions > self.context_size:
            img = f" ({n_img} of them the image's)" if n_img else ""
            before = f" after the {n_past} positions of the conversation so far" if n_past else ""
            raise ValueError(f"the prompt is {positions} positions long{img}{before}, but the model's context is "
                             f"{self.context_size}")
        return positions

    def _prefill(self, ctx: Any, ids: np.ndarray, image: Optional[_core.Features], *, start: int = 0,
                 all_logits: bool = False,
                 timings: Optional[Dict[str, float]] = None) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """The multimodal prefill, one call into the C core (``Context.prefill``): appends ``ids[start:]`` to
        ``ctx``, whose cache ends with ``ids[:start]`` (a reused prefix; it ends before the image). With
        ``image`` (a ``_core.Features``), ``ids`` holds IMAGE_TOKEN once: the MoE routes on every text token of
        ``ids`` (the prefix's too), and the combined rows replace the placeholder. Returns the logits (of the
        last, or every new, position) and the routing weights."""
        if self.closed:   # a generation made before close() must not start: it would hold the file open
            raise ValueError(f"{self.path}: the model is closed")
        t0 = time.perf_counter()
        with self._lock:
            logits, routing = ctx.prefill(ids.astype(np.int32), image, all_logits=all_logits, cached=start)
        if image is not None:
            self.last_routing = routing
        if timings is not None:
            timings["prefill_s"] = time.perf_counter() - t0
        return logits, routing

    def new_context(self, n_ctx: Optional[int] = None) -> Any:
        """An empty KV cache for one sequence (``n_past``, ``truncate(n)``), ``n_ctx`` positions at most
        (default: the model's context). Memory grows with use, not with ``n_ctx``."""
        with self._lock:
            return self._core.new_context(self.context_size if n_ctx is None else n_ctx)

    def generation(self, input_ids: IdsLike, *, pixels: Optional[np.ndarray] = None, context: Any = None,
                   shared_prefix: int = 0, stop_ids: Optional[Iterable[int]] = None, prompt: str = "",
                   **options: Any) -> Generation:
        """The one generation path: appends ``input_ids`` (with :data:`IMAGE_TOKEN` once where the image of
        the preprocessed ``pixels`` goes) to ``context`` (default: a fresh KV cache) and returns the
        :class:`~parrot.generation.Generation` that prefills them and decodes, token by token, the answer.

        ``shared_prefix``: how many leading ids are common to many prompts (the system turn, ending before the
        image); without a ``context``, their KV cache is taken from the prefix cache when parked there, and
        parked for the next generation when this one ends. ``stop_ids``: tokens that end the answer (default
        :attr:`stop_ids`). ``options``: those of :meth:`run`. Options, ids and room in the context are checked
        here, before any work; the image's features are fetched (or computed) here too."""
        unknown = set(options) - set(_GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        max_new = options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new!r}")
        sampling = SamplingOptions(**{k: options[k] for k in _SAMPLING_OPTIONS if options.get(k) is not None})
        stops = normalize_stop(options.get("stop"))
        stop_set = self.stop_ids if stop_ids is None else tuple(int(i) for i in stop_ids)
        table = self.utf8_table if sampling.valid_utf8 else None
        sampler = Sampler(sampling, int(self.config["vocab_size"]),
                          None if table is None else Utf8Guard(table, stop_set))
        ids = self._check_ids(input_ids)
        n_past = int(context.n_past) if context is not None else 0
        positions = self._positions(ids, pixels is not None, n_past)
        image_at = int(np.flatnonzero(ids == IMAGE_TOKEN)[0]) if pixels is not None else len(ids)
        if not 0 <= shared_prefix < len(ids) or shared_prefix > image_at:
            raise ValueError(f"shared_prefix must lie before the image and leave at least one id, got "
                             f"{shared_prefix} of {len(ids)} ids")
        sampler.observe(int(i) for i in ids if i != IMAGE_TOKEN)
        timings: Dict[str, float] = {"vision_s": 0.0, "moe_s": 0.0, "prompt_tokens": positions}
        image, hit, thumb = None, False, None
        if pixels is not None:
            image, hit = self.image_features(pixels)
            vision_s, experts_s = (0.0, 0.0) if hit else image.seconds
            timings["vision_s"], timings["moe_s"] = vision_s, experts_s
            from parrot.display import thumbnail
            thumb = thumbnail(pixels, self.config["image_mean"], self.config["image_std"])

        ctx, release = context, None
        prefix: Tuple[int, ...] = ()
        if context is None:
            prefix = tuple(int(i) for i in ids[:shared_prefix])
            ctx = self.prefix_cache.take(prefix) if prefix else None
            ctx = ctx if ctx is not None else self.new_context()

            def release() -> None:
                if prefix and ctx.n_past >= len(prefix):
                    self.prefix_cache.put(prefix, ctx)

        def prefill() -> Tuple[np.ndarray, Optional[np.ndarray]]:
            t0 = time.perf_counter()
            if prefix and ctx.n_past == 0:
                # the shared prefix runs on its own, hit or miss, so answers never depend on the cache's state
                with self._lock:
                    ctx.decode(ids[:len(prefix)].astype(np.int32), logits=False)
            t_prefix = time.perf_counter() - t0
            out = self._prefill(ctx, ids, image, start=len(prefix), timings=timings)
            timings["prefill_s"] += t_prefix
            return out

        one = np.zeros(1, dtype=np.int32)

        def step(token: int) -> np.ndarray:
            one[0] = token
            with self._lock:
                out: np.ndarray = ctx.decode(one)
                return out

        detok = self._tokenizer.stream(skip_special=True) if self._tokenizer is not None else None
        room = self.context_size - n_past - positions
        return Generation(prefill=prefill, step=step, max_new_tokens=min(max_new, room), sampler=sampler,
                          stop_ids=stop_set, stops=stops, detok=detok, timings=timings, prompt=prompt,
                          image_cache_hit=hit, thumbnail=thumb, release=release, context=ctx)

    def decode_step(self, generations: Sequence[Generation]) -> List[str]:
        """Advances started generations together by one token each: their :attr:`~Generation.pending`
        tokens go through one batched decode (``_core.Model.decode_batch``: one pass over the weights for
        several sequences; each sequence's logits equal what it would get alone, exactly), then each samples
        its next token. Returns each generation's new text; a generation whose ``pending`` becomes None has
        ended. Used by ``generate_many(batch_size=...)`` and the server's scheduler."""
        if not generations:
            return []
        tokens = np.array([g.pending for g in generations], dtype=np.int32)
        with self._lock:
            logits = self._core.decode_batch([g.context for g in generations], tokens)
        return [g.advance(row) for g, row in zip(generations, logits)]

    # ---- low level: ids and pixels in, logits or ids out
    def logits(self, input_ids: IdsLike, pixels: Optional[np.ndarray] = None) -> np.ndarray:
        """Next-token logits for every position, ``(L, vocab)`` float32. ``input_ids`` may contain
        :data:`IMAGE_TOKEN` once, replaced by the image's features (then ``L`` counts them)."""
        ids = self._check_ids(input_ids)
        if pixels is not None and not self.config["has_vision"]:
            raise ValueError(f"{self.path} has no vision tower; it cannot take an image")
        n = self._positions(ids, pixels is not None, 0)
        image = self.image_features(pixels)[0] if pixels is not None else None
        return self._prefill(self.new_context(n), ids, image, all_logits=True)[0]

    def generate_ids(self, input_ids: IdsLike, max_new_tokens: int, *, pixels: Optional[np.ndarray] = None,
                     stop_ids: Iterable[int] = ()) -> List[int]:
        """Greedy continuation of ``input_ids`` with the KV cache: the new token ids (stops after a token in
        ``stop_ids``, which is included). Ids in, ids out: plain argmax, as the reference (no ``valid_utf8``)."""
        gen = self.generation(input_ids, pixels=pixels, stop_ids=stop_ids, max_new_tokens=max_new_tokens,
                              valid_utf8=False)
        gen.run()
        return gen.token_ids + ([gen.stop_token] if gen.stop_token is not None else [])

    # ---- the API
    def _prompt(self, image: ImageInput, prompt: str, system: Optional[str], allow_special: bool,
                options: Mapping[str, Any]) -> Generation:
        """The generation answering one question about one image (or none)."""
        check_text("prompt", prompt)
        system = self.default_system if system is None else system
        check_text("system", system, empty_ok=True)
        pixels = None
        t0 = time.perf_counter()
        if image is not None:
            self._require_vision()
            pixels = self.preprocess(image)
        preprocess_s = time.perf_counter() - t0
        ids = self.encode_prompt(format_query(prompt, image=pixels is not None, system=system),
                                 allow_special=allow_special)
        # the system turn and the user turn's <|im_start|>: the same for every question with this system
        shared = len(self.encode_prompt(system_turn(system) + Prompt([(True, IM_START)])))
        gen = self.generation(ids, pixels=pixels, shared_prefix=shared, prompt=prompt, **options)
        gen.timings["preprocess_s"] = preprocess_s
        return gen

    def run(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
            temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
            repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
            stop: "str | Sequence[str] | None" = None, system: Optional[str] = None,
            allow_special: bool = False, valid_utf8: bool = True) -> Result:
        """Answers ``prompt`` about ``image`` (None for a text-only prompt) and returns a :class:`Result`:
        the text, its token ids, the MoE's routing weights, timings and why it stopped.

        Greedy by default (``temperature=0``), as the reference evaluation; stops at the end of the assistant's
        turn, after ``max_new_tokens`` (capped by the room left in the context) or at a ``stop`` string (the
        text is cut before it). ``system`` replaces the default system prompt. The text is decoded with special
        tokens skipped and surrounding white space stripped, as the reference does. Special-token text in
        ``prompt`` or ``system`` (``<|im_end|>`` ...) is read as plain text unless ``allow_special=True``.
        ``valid_utf8`` (default True) never lets the answer's bytes break UTF-8: a token that would (or the end of
        the turn inside a character) is passed over for the most likely one that does not, where the reference
        would show U+FFFD (:mod:`parrot.sampling`); False decodes exactly as the reference does. An answer cut
        by ``max_new_tokens`` ends on a whole character too.

        Raises ``ValueError`` for an empty prompt, a lone surrogate in it (naming its index), or a prompt that
        (with the image's tokens) does not fit in the context, naming both lengths; ``parrot.ImageError`` for
        an unreadable image; ``TypeError``/``ValueError`` naming a bad option."""
        return self._prompt(image, prompt, system, allow_special, dict(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop, valid_utf8=valid_utf8)).run()

    @overload
    def generate(self, image: ImageInput, prompt: str, *, max_new_tokens: int = ..., temperature: float = ...,
                 top_k: Optional[int] = ..., top_p: Optional[float] = ..., repetition_penalty: Optional[float] = ...,
                 seed: Optional[int] = ..., stop: "str | Sequence[str] | None" = ..., system: Optional[str] = ...,
                 allow_special: bool = ..., valid_utf8: bool = ..., return_details: Literal[False] = ...) -> str: ...

    @overload
    def generate(self, image: ImageInput, prompt: str, *, max_new_tokens: int = ..., temperature: float = ...,
                 top_k: Optional[int] = ..., top_p: Optional[float] = ..., repetition_penalty: Optional[float] = ...,
                 seed: Optional[int] = ..., stop: "str | Sequence[str] | None" = ..., system: Optional[str] = ...,
                 allow_special: bool = ..., valid_utf8: bool = ..., return_details: Literal[True]) -> Result: ...

    @overload
    def generate(self, image: ImageInput, prompt: str, *, max_new_tokens: int = ..., temperature: float = ...,
                 top_k: Optional[int] = ..., top_p: Optional[float] = ..., repetition_penalty: Optional[float] = ...,
                 seed: Optional[int] = ..., stop: "str | Sequence[str] | None" = ..., system: Optional[str] = ...,
                 allow_special: bool = ..., valid_utf8: bool = ..., return_details: bool) -> "str | Result": ...

    def generate(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 stop: "str | Sequence[str] | None" = None, system: Optional[str] = None,
                 allow_special: bool = False, valid_utf8: bool = True,
                 return_details: bool = False) -> "str | Result":
        """The answer's text (or, with ``return_details=True``, the :class:`Result` of :meth:`run`).

        ``image``: a path, PNG/JPEG bytes, a uint8 numpy array, a PIL image, or None for a text-only prompt.
        Options as in :meth:`run`."""
        r = self.run(image, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, stop=stop, system=system,
                     allow_special=allow_special, valid_utf8=valid_utf8)
        return r if return_details else r.text

    def stream(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
               repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
               stop: "str | Sequence[str] | None" = None, system: Optional[str] = None,
               allow_special: bool = False, valid_utf8: bool = True) -> Iterator[str]:
        """Yields the answer's text in pieces as it is decoded; ``"".join(pieces)`` equals :meth:`generate`'s
        text. No piece ends inside a UTF-8 character. The prompt is checked (and the image encoded) before the
        first piece. Options as in :meth:`run`."""
        return iter(self._prompt(image, prompt, system, allow_special, dict(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop, valid_utf8=valid_utf8)))

    def chat(self, image: ImageInput = None, system: Optional[str] = None, *,
             allow_special: bool = False) -> ChatSession:
        """A conversation about ``image`` (or none) that keeps its KV cache: follow-up questions neither
        re-encode the image nor re-run the history. See :class:`parrot.chat.ChatSession`."""
        if self.closed:
            self._core.config  # raises the closed model's error
        return ChatSession(self, image, system, allow_special=allow_special)

    def generate_many(self, items: Iterable[Any], *, progress: bool = True, batch_size: int = 1,
                      **options: Any) -> Iterator[Result]:
        """Answers many questions, yielding one :class:`Result` per item, in order.

        Each item is ``(image, prompt)`` or a dict with ``image``, ``prompt`` and optionally ``system``,
        ``allow_special`` and per-item generation options; ``options`` apply to all items. A bad item
        (unreadable image, prompt too long, ...) yields a Result with ``finish_reason == "error"``, empty text
        and ``error`` set, and the batch goes on. Repeated images hit the image-feature cache. ``progress``
        shows a tqdm bar on stderr (``False`` turns it off).

        ``batch_size`` > 1 decodes up to that many answers together (continuous batching): each item's prompt
        is prefilled on its own, then the active answers advance one token per step through one pass over the
        weights (:meth:`decode_step`); a finished answer leaves and the next item's prefill takes its place.
        The answers are the same as one at a time (greedy: identical; sampled: each item keeps its own
        sampler). Memory: up to ``batch_size`` KV caches at once."""
        bad = set(options) - set(_GENERATION_OPTIONS) - {"system", "allow_special"}
        if bad:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(bad))}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        total = len(items) if isinstance(items, Sized) else None
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, unit="item", desc="parrot")
        try:
            for r in self._batched(items, options, batch_size):
                if bar is not None:
                    bar.update(1)
                yield r
        finally:
            if bar is not None:
                bar.close()

    def _batched(self, items: Iterable[Any], options: Mapping[str, Any], batch_size: int) -> Iterator[Result]:
        """generate_many's loop: starts items (their prefill) while fewer than ``batch_size`` are decoding,
        advances the decoding ones together, yields the results in item order. Results that are done but wait
        for an earlier item are bounded: no item starts more than ``4 * batch_size`` places ahead of the first
        one not yet yielded."""
        queue = enumerate(items)
        active: List[Tuple[int, Generation]] = []
        done: Dict[int, Result] = {}
        next_out, exhausted = 0, False

        def failed(i: int, prompt: Any, e: BaseException) -> Result:
            log.debug("generate_many: item %d failed: %r", i, e)
            return Result(text="", token_ids=[], routing=None, timings={}, finish_reason="error",
                          prompt=prompt if isinstance(prompt, str) else "", error=e)

        try:
            while True:
                while not exhausted and len(active) < batch_size and len(active) + len(done) < 4 * batch_size:
                    try:
                        i, item = next(queue)
                    except StopIteration:
                        exhausted = True
                        break
                    prompt: Any = ""
                    gen = None
                    try:   # one bad item must not lose the batch
                        image, prompt, opts = _unpack_item(i, item)
                        kw = dict(options)
                        kw.update(opts)
                        system = kw.pop("system", None)
                        allow_special = bool(kw.pop("allow_special", False))
                        gen = self._prompt(image, prompt, system, allow_special, kw)
                        gen.start()
                    except BaseException as e:
                        if gen is not None:
                            gen.close()
                        if not isinstance(e, Exception):
                            raise
                        done[i] = failed(i, prompt, e)
                        continue
                    if gen.pending is None:
                        done[i] = gen.result
                    else:
                        active.append((i, gen))
                while next_out in done:
                    yield done.pop(next_out)
                    next_out += 1
                if not active:
                    if exhausted and not done:
                        return
                    continue
                gens = [g for _, g in active]
                try:
                    self.decode_step(gens)
                except Exception as e:   # the step failed for all of them (the core names why)
                    for i, g in active:
                        g.close()
                        done[i] = failed(i, g.prompt, e)
                    active = []
                    continue
                for i, g in active:
                    if g.pending is None:
                        done[i] = g.result
                active = [(i, g) for i, g in active if g.pending is not None]
        finally:
            for _, g in active:
                g.close()

    def create_chat_completion(self, messages: Any, stream: bool = False, **params: Any) -> Any:
        """OpenAI-style chat completion (as llama-cpp-python's): an OpenAI ``chat.completion`` dict, or an
        iterator of ``chat.completion.chunk`` dicts with ``stream=True``. See :mod:`parrot.openai_api`."""
        from parrot.openai_api import create_chat_completion
        return create_chat_completion(self, messages, stream, **params)


def _unpack_item(i: int, item: Any) -> Tuple[Any, str, Dict[str, Any]]:
    if isinstance(item, Mapping):
        if "prompt" not in item:
            raise ValueError(f"item {i} has no 'prompt'")
        opts = {k: v for k, v in item.items() if k not in ("image", "prompt")}
        return item.get("image"), item["prompt"], opts
    if isinstance(item, (tuple, list)) and len(item) == 2:
        return item[0], item[1], {}
    raise TypeError(f"item {i} must be (image, prompt) or a dict with 'image' and 'prompt', got "
                    f"{type(item).__name__}")


# ---- loading
def load(path: "os.PathLike[str] | str", *, threads: Optional[int] = None, dtype: str = "f16",
         clip: "os.PathLike[str] | str | None" = None, image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES,
         progress: bool = True, revision: Optional[str] = None) -> Model:
    """Loads a model: a parrot GGUF file, a Hugging Face Parrot (or Qwen2) checkpoint directory, or a Hugging
    Face Hub id such as ``"AIDC-AI/Parrot-7B"`` (at ``revision``; needs ``parrot-vlm[hub]``).

    A checkpoint is converted once (to ``dtype``, with the CLIP tower from ``clip`` — a directory or Hub id —
    or else the one its config names) into the cache directory (``$PARROT_CACHE``, default
    ``~/.cache/parrot``) and the conversion is reused: see :func:`parrot.hub.resolve_model`. ``threads``
    defaults to the number of physical cores; ``image_cache_bytes`` bounds the image-feature cache."""
    from parrot.hub import resolve_model

    path = resolve_model(path, revision=revision, dtype=dtype, clip=clip, progress=progress)
    return Model(path, threads=threads, image_cache_bytes=image_cache_bytes)


_default: Optional[Model] = None
_default_lock = threading.Lock()


def default_model_path() -> str:
    """``$PARROT_MODEL`` (a .gguf file, checkpoint directory or Hub id), else the model shipped inside the
    package (``parrot/models/*.gguf``)."""
    env = os.environ.get("PARROT_MODEL")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models")
    shipped = sorted(glob.glob(os.path.join(here, "*.gguf")))
    if shipped:
        return shipped[0]
    raise ModelError("no default model: set PARROT_MODEL to a parrot .gguf file (or a Hugging Face Parrot "
                     "directory or Hub id), or convert one with `parrot convert HF_DIR -o model.gguf`; this installation "
                     f"ships no model in {here}")


def default_model() -> Model:
    """The default model (see :func:`default_model_path`), loaded once and shared."""
    global _default
    with _default_lock:
        if _default is None:
            _default = load(default_model_path())
        return _default


@overload
def generate(image: ImageInput, prompt: str, *, model: "Model | str | os.PathLike[str] | None" = None,
             return_details: Literal[False] = ..., **options: Any) -> str: ...


@overload
def generate(image: ImageInput, prompt: str, *, model: "Model | str | os.PathLike[str] | None" = None,
             return_details: Literal[True], **options: Any) -> Result: ...


def generate(image: ImageInput, prompt: str, *, model: "Model | str | os.PathLike[str] | None" = None,
             return_details: bool = False, **options: Any) -> "str | Result":
    """``parrot.generate(image, prompt)``: :meth:`Model.generate` on ``model`` (a Model or a path), by
    default :func:`default_model`."""
    if model is None:
        m = default_model()
    elif isinstance(model, Model):
        m = model
    else:
        m = load(model)
    return m.generate(image, prompt, return_details=return_details, **options)
