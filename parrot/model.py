"""The Model: a loaded parrot GGUF file, and everything users ask of it.

    import parrot
    model = parrot.load("parrot.gguf")                      # or a Hugging Face Parrot directory
    model.generate("cat.jpg", "What animal is this?")       # greedy, as the reference evaluation
    for piece in model.stream("cat.jpg", "Что это?"):       # streamed text
        print(piece, end="", flush=True)
    r = model.run("cat.jpg", "这是什么?")                    # text, token ids, MoE routing, timings
    chat = model.chat("cat.jpg"); chat.ask("Describe it."); chat.ask("What colour is it?")

Concurrency: one Model may be used from several threads. Every call into the C core (a prefill, one decoded
token, the vision tower) takes the model's lock, so those calls queue rather than run in parallel — the core
already spreads each of them over all the model's threads — and generations in different threads interleave
token by token, each with its own KV cache. Long C calls release the GIL. Ctrl-C (KeyboardInterrupt) stops a
generation within a token; the Model stays usable (the interrupted generation's KV cache is discarded).
"""
from __future__ import annotations

import glob
import os
import threading
import time
from dataclasses import dataclass
from typing import (TYPE_CHECKING, Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    Union)

import numpy as np

from parrot import _core
from parrot.cache import (DEFAULT_IMAGE_CACHE_BYTES, ImageCacheInfo, ImageFeatureCache, ImageFeatures,
                          pixel_key)
from parrot.chat import END_OF_TURN, IMAGE_TAG, ChatSession, system_turn, user_turn
from parrot.prompt import DEFAULT_SYSTEM, IMAGE_TOKEN, tokenize_prompt
from parrot.errors import ModelError
from parrot.generation import Decoding, Result, normalize_stop
from parrot.sampling import Sampler, SamplingOptions

if TYPE_CHECKING:
    from parrot.tokenizer import Tokenizer

__all__ = ["IMAGE_TOKEN", "DEFAULT_SYSTEM", "Model", "load", "default_model", "generate", "ImageInput"]


DEFAULT_MAX_NEW_TOKENS = 512

IdsLike = Union[Sequence[int], np.ndarray]
#: A path (str / os.PathLike), encoded PNG/JPEG bytes, a uint8 numpy array (H×W, H×W×3, H×W×4) or a PIL image.
ImageInput = Any

_GENERATION_OPTIONS = ("max_new_tokens", "temperature", "top_k", "top_p", "repetition_penalty", "seed", "stop")


@dataclass
class _Prepared:
    """A prompt ready for the decoder."""

    inputs: np.ndarray             # int32 ids, or float32 embeddings with the image spliced in
    positions: int                 # rows of inputs
    text_ids: List[int]            # the prompt's text token ids (for the repetition penalty)
    routing: Optional[np.ndarray]
    cache_hit: bool
    timings: Dict[str, float]
    room: int                      # positions left in the context after the prompt
    thumbnail: Optional[np.ndarray]


class Model:
    """A Parrot (or plain Qwen2) model loaded from a GGUF file made by :func:`parrot.convert`.

    Weights stay in the mapped file in their stored dtype, so loading is fast and resident memory is about the
    file size plus the KV caches. ``image_cache_bytes`` bounds the image-feature cache (0 disables it).
    See the module docstring for threads and interrupts."""

    def __init__(self, path: "os.PathLike[str] | str", *, threads: Optional[int] = None,
                 image_cache_bytes: int = DEFAULT_IMAGE_CACHE_BYTES):
        path = os.fspath(path)
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive int or None, got {threads!r}")
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path}: no such model file")
        self._core = _core.Model(path, threads or 0)
        self.path = path
        self.config: Dict[str, Any] = dict(self._core.config)
        self._lock = threading.RLock()
        self.last_routing: Optional[np.ndarray] = None
        self.image_cache = ImageFeatureCache(image_cache_bytes)
        #: How many times the vision tower has run (cache misses); handy to see the cache work.
        self.vision_runs = 0
        self._tokenizer: Optional["Tokenizer"] = None
        self._metadata: Optional[Dict[str, Any]] = None
        self._stop_ids: Optional[Tuple[int, ...]] = None
        core_tok = self._core.tokenizer  # built by the C loader from the same file, or None
        if core_tok is not None:
            from parrot.tokenizer import Tokenizer
            self._tokenizer = Tokenizer(core_tok)

    def __repr__(self) -> str:
        c = self.config
        kind = "Parrot" if c["has_vision"] else "Qwen2"
        return (f"<parrot.Model {kind} {os.path.basename(self.path)}: {c['num_hidden_layers']} layers, "
                f"hidden {c['hidden_size']}, vocab {c['vocab_size']}, {self.threads} threads>")

    # ---- facts about the model
    @property
    def threads(self) -> int:
        """Worker threads used by the C core."""
        return self._core.threads

    @property
    def context_size(self) -> int:
        """Longest sequence (prompt + image tokens + answer) the model accepts."""
        return int(self.config["max_position_embeddings"])

    @property
    def metadata(self) -> Dict[str, Any]:
        """The file's GGUF metadata (long arrays shown as ``("array", length)``)."""
        if self._metadata is None:
            self._metadata = self._core.metadata()
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
            raise ModelError(f"{self.path} has no tokenizer (it was converted from a checkpoint without tokenizer "
                             f"files); only token ids can be used with it (Model.generate_ids / Model.logits)")
        return self._tokenizer

    def tokenize(self, text: str, *, special: bool = True) -> List[int]:
        """Token ids of ``text`` (special tokens such as ``<|im_end|>`` recognised unless ``special=False``)."""
        return self.tokenizer.encode(text, special=special)

    def detokenize(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of token ids."""
        return self.tokenizer.decode(ids, skip_special=skip_special)

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

    def _tokenize_prompt(self, text: str) -> List[int]:
        """Parrot's tokenisation of a prompt (:func:`parrot.prompt.tokenize_prompt`)."""
        return tokenize_prompt(self.tokenizer, text)

    # ---- images
    def preprocess(self, image: ImageInput) -> np.ndarray:
        """The ``(3, S, S)`` float32 pixels the vision tower sees (Parrot's pad-to-square + CLIP
        preprocessing with the size, mean and std stored in the file)."""
        self._require_vision()
        from parrot.image import preprocess
        c = self.config
        pad = self.metadata.get("parrot.vision.image_aspect_ratio", "pad") == "pad"
        return preprocess(image, size=int(c["image_size"]), mean=c["image_mean"], std=c["image_std"], pad=pad)

    def _require_vision(self) -> None:
        if not self.config["has_vision"]:
            raise ValueError(f"{self.path} has no vision tower (a text-only model); pass image=None")

    def image_features(self, pixels: np.ndarray) -> Tuple[ImageFeatures, bool]:
        """What the model computes from an image alone (projected features and each expert's output), from
        the image-feature cache when present: ``(features, cache_hit)``."""
        key = pixel_key(pixels)
        hit = self.image_cache.get(key)
        if hit is not None:
            return hit, True
        t0 = time.perf_counter()
        feats = self.encode_image(pixels)
        t1 = time.perf_counter()
        experts = None
        if self.config.get("use_moe", False):
            with self._lock:
                experts = self._core.moe_experts(feats)
        item = ImageFeatures(feats, experts, vision_s=t1 - t0, experts_s=time.perf_counter() - t1)
        self.image_cache.put(key, item)
        return item, False

    def image_cache_info(self) -> ImageCacheInfo:
        """Hits, misses, entries, bytes held, the bound, and the seconds of vision + expert work saved."""
        return self.image_cache.info()

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
            out = self._core.encode_image(np.ascontiguousarray(pixels, dtype=np.float32))
            self.vision_runs += 1
            return out

    def moe(self, features: np.ndarray, text_ids: IdsLike) -> "tuple[np.ndarray, Optional[np.ndarray]]":
        """The multilingual MoE on image ``features`` guided by the prompt's text token ids: returns
        ``(rewritten features, routing weights)``. With ``use_moe`` false, the features unchanged and None."""
        if not self.config.get("use_moe", False):
            return features, None
        with self._lock:
            experts = self._core.moe_experts(features)
        return self._moe_combine(features, experts, text_ids)

    def _moe_combine(self, features: np.ndarray, experts: Optional[np.ndarray],
                     text_ids: IdsLike) -> "tuple[np.ndarray, Optional[np.ndarray]]":
        if experts is None:
            return features, None
        ids = np.asarray(text_ids, dtype=np.int32)
        if ids.size == 0:
            raise ValueError("the MoE routes on the prompt's text, but the prompt has no text tokens")
        text = self._core.embed(ids)
        with self._lock:
            w = self._core.moe_routing(features, text)
            return self._core.moe_combine(features, experts, w), w

    def _splice(self, ids: np.ndarray, image_rows: np.ndarray) -> np.ndarray:
        """Input embeddings of ids with the one IMAGE_TOKEN replaced by image_rows (SPEC §5)."""
        pos = int(np.flatnonzero(ids == IMAGE_TOKEN)[0])
        text = self._core.embed(np.concatenate([ids[:pos], ids[pos + 1:]]).astype(np.int32))
        return np.concatenate([text[:pos], image_rows, text[pos:]]).astype(np.float32)

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
        text_ids = ids[ids != IMAGE_TOKEN].astype(np.int32)
        feats = self.encode_image(pixels)
        out, w = self.moe(feats, text_ids)
        self.last_routing = w
        return self._splice(ids, out)

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
        ctx = self._core.new_context(min(self.context_size, n + max_new_tokens))
        with self._lock:
            logits = ctx.decode(inputs)
        while True:
            tok = int(np.argmax(logits))
            out.append(tok)
            if tok in stop or len(out) >= max_new_tokens:
                return out
            with self._lock:
                logits = ctx.decode(np.array([tok], dtype=np.int32))

    # ---- prompts to decoder inputs
    def _prepare(self, image: Any, prompt: str, system: Optional[str], *, pixels_ready: bool = False,
                 n_past: int = 0) -> _Prepared:
        """Tokenises a one-question prompt and, with an image, runs (or fetches) the image's features and the
        MoE: the inputs of a fresh KV cache."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        system = self.default_system if system is None else system
        if not isinstance(system, str):
            raise TypeError(f"system must be a str or None, got {type(system).__name__}")
        timings: Dict[str, float] = {"preprocess_s": 0.0, "vision_s": 0.0, "moe_s": 0.0}
        pixels = None
        if image is not None:
            self._require_vision()
            t0 = time.perf_counter()
            pixels = image if pixels_ready else self.preprocess(image)
            timings["preprocess_s"] = time.perf_counter() - t0
        text = system_turn(system) + user_turn(prompt, image=pixels is not None)
        ids = np.asarray(self._tokenize_prompt(text), dtype=np.int64)
        n_img = 0
        routing, hit, thumb = None, False, None
        if pixels is not None:
            if int((ids == IMAGE_TOKEN).sum()) != 1:
                raise ValueError(f"the prompt must not contain {IMAGE_TAG!r} itself: the image goes in once")
            n_img = int(self.config["image_tokens"])
        positions = len(ids) - (1 if n_img else 0) + n_img
        self._check_room(positions, n_img, n_past)
        text_ids = [int(i) for i in ids if i != IMAGE_TOKEN]
        if pixels is None:
            inputs = ids.astype(np.int32)
        else:
            item, hit = self.image_features(pixels)
            t0 = time.perf_counter()
            rows, routing = self._moe_combine(item.features, item.experts, text_ids)
            timings["vision_s"] = 0.0 if hit else item.vision_s
            timings["moe_s"] = (0.0 if hit else item.experts_s) + time.perf_counter() - t0
            self.last_routing = routing
            inputs = self._splice(ids, rows)
            thumb = _thumbnail(pixels, self.config["image_mean"], self.config["image_std"])
        timings["prompt_tokens"] = positions
        return _Prepared(inputs, positions, text_ids, routing, hit, timings,
                         self.context_size - n_past - positions, thumb)

    def _prepare_followup(self, pending: List[int], prompt: str, n_past: int) -> _Prepared:
        """Inputs of a follow-up question in a chat session whose cache holds n_past positions."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        ids = list(pending) + self._tokenize_prompt(END_OF_TURN + user_turn(prompt, image=False))
        if IMAGE_TOKEN in ids:
            raise ValueError(f"a follow-up question must not contain {IMAGE_TAG!r}: the session's image is "
                             f"already in its cache (start a new session or reset(image=...) for another image)")
        self._check_room(len(ids), 0, n_past)
        timings = {"preprocess_s": 0.0, "vision_s": 0.0, "moe_s": 0.0, "prompt_tokens": len(ids)}
        return _Prepared(np.asarray(ids, dtype=np.int32), len(ids), ids, None, False, timings,
                         self.context_size - n_past - len(ids), None)

    def _check_room(self, positions: int, n_img: int, n_past: int) -> None:
        if n_past + positions > self.context_size:
            img = f" ({n_img} of them the image's)" if n_img else ""
            before = f" after the {n_past} positions of the conversation so far" if n_past else ""
            raise ValueError(f"the prompt is {positions} positions long{img}{before}, but the model's context is "
                             f"{self.context_size}")

    def _decoding(self, ctx: Any, prep: _Prepared, options: Mapping[str, Any]) -> Decoding:
        unknown = set(options) - set(_GENERATION_OPTIONS)
        if unknown:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(unknown))}")
        max_new = options.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)
        if isinstance(max_new, bool) or not isinstance(max_new, int) or max_new < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new!r}")
        sampling = SamplingOptions(**{k: options[k] for k in ("temperature", "top_k", "top_p",
                                                              "repetition_penalty", "seed")
                                      if options.get(k) is not None})
        stops = normalize_stop(options.get("stop"))
        sampler = Sampler(sampling, int(self.config["vocab_size"]))
        sampler.observe(prep.text_ids)
        return Decoding(self, ctx, prep.inputs, max_new_tokens=min(max_new, prep.room), sampler=sampler,
                        stop_ids=self.stop_ids, stops=stops, detok=self.tokenizer.stream(skip_special=True),
                        timings=prep.timings)

    def _result(self, prep: _Prepared, dec: Decoding, prompt: str) -> Result:
        return Result(text=dec.text, token_ids=list(dec.token_ids), routing=prep.routing,
                      timings=dict(prep.timings), finish_reason=dec.finish_reason, image_cache_hit=prep.cache_hit,
                      prompt=prompt, thumbnail=prep.thumbnail)

    def _start(self, image: Any, prompt: str, system: Optional[str],
               options: Mapping[str, Any]) -> Tuple[_Prepared, Decoding]:
        prep = self._prepare(image, prompt, system)
        # the cache grows on demand; its size only bounds it
        ctx = self._core.new_context(min(self.context_size, prep.positions + max(1, prep.room)))
        return prep, self._decoding(ctx, prep, options)

    # ---- the API
    def run(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
            temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
            repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
            stop: "str | Sequence[str] | None" = None, system: Optional[str] = None) -> Result:
        """Answers ``prompt`` about ``image`` (None for a text-only prompt) and returns a :class:`Result`:
        the text, its token ids, the MoE's routing weights, timings and why it stopped.

        Greedy by default (``temperature=0``), as the reference evaluation; stops at the end of the assistant's
        turn, after ``max_new_tokens`` (capped by the room left in the context) or at a ``stop`` string (the
        text is cut before it). ``system`` replaces the default system prompt. The text is decoded with special
        tokens skipped and surrounding white space stripped, as the reference does.

        Raises ``ValueError`` if the prompt (with the image's tokens) does not fit in the context, naming both
        lengths; ``parrot.ImageError`` for an unreadable image; ``TypeError``/``ValueError`` for bad options."""
        prep, dec = self._start(image, prompt, system, dict(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop))
        for _ in dec:
            pass
        return self._result(prep, dec, prompt)

    def generate(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
                 temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
                 repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
                 stop: "str | Sequence[str] | None" = None, system: Optional[str] = None,
                 return_details: bool = False) -> "str | Result":
        """The answer's text (or, with ``return_details=True``, the :class:`Result` of :meth:`run`).

        ``image``: a path, PNG/JPEG bytes, a uint8 numpy array, a PIL image, or None for a text-only prompt.
        Options as in :meth:`run`."""
        r = self.run(image, prompt, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k,
                     top_p=top_p, repetition_penalty=repetition_penalty, seed=seed, stop=stop, system=system)
        return r if return_details else r.text

    def stream(self, image: ImageInput, prompt: str, *, max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
               temperature: float = 0.0, top_k: Optional[int] = None, top_p: Optional[float] = None,
               repetition_penalty: Optional[float] = None, seed: Optional[int] = None,
               stop: "str | Sequence[str] | None" = None, system: Optional[str] = None) -> Iterator[str]:
        """Yields the answer's text in pieces as it is decoded; ``"".join(pieces)`` equals :meth:`generate`'s
        text. No piece ends inside a UTF-8 character. The prompt is checked (and the image encoded) before the
        first piece. Options as in :meth:`run`."""
        _, dec = self._start(image, prompt, system, dict(
            max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, seed=seed, stop=stop))
        return iter(dec)

    def chat(self, image: ImageInput = None, system: Optional[str] = None) -> ChatSession:
        """A conversation about ``image`` (or none) that keeps its KV cache: follow-up questions neither
        re-encode the image nor re-run the history. See :class:`parrot.chat.ChatSession`."""
        return ChatSession(self, image, system)

    def generate_many(self, items: Iterable[Any], *, progress: bool = True, **options: Any) -> Iterator[Result]:
        """Answers many questions, yielding one :class:`Result` per item, in order.

        Each item is ``(image, prompt)`` or a dict with ``image``, ``prompt`` and optionally ``system`` and
        per-item generation options; ``options`` apply to all items. A bad item (unreadable image, prompt too
        long, ...) yields a Result with ``finish_reason == "error"``, empty text and ``error`` set, and the
        batch goes on. Repeated images hit the image-feature cache. ``progress`` shows a tqdm bar."""
        bad = set(options) - set(_GENERATION_OPTIONS) - {"system"}
        if bad:
            raise TypeError(f"unknown generation option(s): {', '.join(sorted(bad))}")
        total = len(items) if hasattr(items, "__len__") else None  # type: ignore[arg-type]
        bar = None
        if progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=total, unit="item", desc="parrot")
        try:
            for i, item in enumerate(items):
                prompt = ""
                try:
                    image, prompt, opts = _unpack_item(i, item)
                    kw = dict(options)
                    kw.update(opts)
                    system = kw.pop("system", None)
                    prep, dec = self._start(image, prompt, system, kw)
                    for _ in dec:
                        pass
                    r = self._result(prep, dec, prompt)
                except Exception as e:  # one bad item must not lose the batch
                    r = Result(text="", token_ids=[], routing=None, timings={}, finish_reason="error",
                               prompt=prompt if isinstance(prompt, str) else "", error=e)
                if bar is not None:
                    bar.update(1)
                yield r
        finally:
            if bar is not None:
                bar.close()


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


def _thumbnail(pixels: np.ndarray, mean: Sequence[float], std: Sequence[float], max_side: int = 112) -> np.ndarray:
    """The (padded, resized) image the model saw, back in uint8 RGB and at most max_side pixels wide."""
    step = max(1, -(-pixels.shape[1] // max_side))
    px = pixels[:, ::step, ::step]
    rgb = (px * np.asarray(std, np.float32)[:, None, None] + np.asarray(mean, np.float32)[:, None, None]) * 255
    return np.ascontiguousarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8).transpose(1, 2, 0))


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


def generate(image: ImageInput, prompt: str, *, model: "Model | str | os.PathLike[str] | None" = None,
             **options: Any) -> "str | Result":
    """``parrot.generate(image, prompt)``: :meth:`Model.generate` on ``model`` (a Model or a path), by
    default :func:`default_model`."""
    if model is None:
        m = default_model()
    elif isinstance(model, Model):
        m = model
    else:
        m = load(model)
    return m.generate(image, prompt, **options)
