"""OpenAI-style chat completions on a parrot Model: ``messages`` in, ``chat.completion`` dicts (or
``chat.completion.chunk`` dicts when streaming) out — the shapes llama-cpp-python's
``Llama.create_chat_completion`` and the OpenAI API use, so code written for them ports over.

    model = parrot.load("parrot.gguf")
    r = model.create_chat_completion([{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,..."}},
            {"type": "text", "text": "What colour is the circle?"}]}], max_tokens=32)
    r["choices"][0]["message"]["content"], r["usage"], r["routing"]

The messages become one Parrot prompt (:func:`parrot.prompt.format_messages`): the system message (the model's
default when none is given), then every user and assistant message in ChatML, then the assistant's preface. At
most one image per conversation; its message reads ``"<image>\\n" + text`` as Parrot's query format has it.

Routing. Parrot's MoE routes the image on the text of the prompt, and the reference re-runs a whole
conversation at every turn, so the image rows depend on every text token of the conversation so far:
``routing="exact"`` (the default) computes exactly that. ``routing="first_turn"`` routes on the conversation
only up to the message that brought the image (plus the assistant preface), as a :class:`parrot.ChatSession`
does when it keeps its KV cache between questions: the image rows then stay the same from turn to turn.
"""
from __future__ import annotations

import base64
import binascii
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from parrot.errors import ImageError
from parrot.prompt import IMAGE_PLACEHOLDER, IMAGE_TOKEN, format_messages, user_query

if TYPE_CHECKING:
    from parrot.generation import Generation
    from parrot.model import Model

__all__ = ["RequestError", "ChatRequest", "Pixels", "ChatCompletion", "parse_request", "create_chat_completion",
           "ROUTING_MODES", "decode_data_uri"]

ROUTING_MODES = ("exact", "first_turn")

# request fields that change nothing here: accepted and ignored (OpenAI clients send some of them by default)
_IGNORED = {"model", "user", "metadata", "store", "service_tier", "parallel_tool_calls"}
# fields accepted only with the value that means "off"
_NEUTRAL: Dict[str, Tuple[Any, ...]] = {
    "frequency_penalty": (0, 0.0), "presence_penalty": (0, 0.0), "logprobs": (False,), "logit_bias": ({},),
    "min_p": (0, 0.0), "typical_p": (1, 1.0), "tools": ([],), "tool_choice": ("none",),
    "response_format": ({"type": "text"},)}
_DATA_URI = re.compile(r"data:image/[A-Za-z0-9.+-]+;base64,", re.ASCII)


class RequestError(ValueError):
    """A request the API refuses: ``param`` is the offending field (OpenAI's ``error.param``), ``code`` its
    ``error.code`` (e.g. ``context_length_exceeded``, ``invalid_image``), ``status`` the HTTP status."""

    def __init__(self, message: str, param: Optional[str] = None, code: Optional[str] = None, status: int = 400):
        super().__init__(message)
        self.param, self.code, self.status = param, code, status

    def to_dict(self) -> Dict[str, Any]:
        """The OpenAI error body."""
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": str(self), "type": kind, "param": self.param, "code": self.code}}


def decode_data_uri(url: str, max_bytes: int) -> bytes:
    """The bytes of a ``data:image/...;base64,`` URI (RequestError if malformed or over max_bytes)."""
    m = _DATA_URI.match(url)
    if not m:
        raise RequestError("image_url: only data:image/...;base64, URIs are accepted here", "image_url",
                           "invalid_image_url")
    payload = url[m.end():]
    if len(payload) // 4 * 3 > max_bytes + 3:
        raise RequestError(f"image_url: the image is larger than the limit of {max_bytes} bytes", "image_url",
                           "image_too_large")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as e:
        raise RequestError(f"image_url: the data URI is not valid base64 ({e})", "image_url",
                           "invalid_image_url") from None


def _local_image(url: str, max_bytes: int) -> bytes:
    """A local file named by a path or a ``file://`` URL (the Python API's default loader allows these)."""
    path = url[len("file://"):] if url.startswith("file://") else url
    try:
        size = os.stat(path).st_size
        if size > max_bytes:
            raise RequestError(f"image_url: {path} is {size} bytes, above the limit of {max_bytes}", "image_url",
                               "image_too_large")
        with open(path, "rb") as f:
            return f.read(max_bytes + 1)
    except OSError as e:
        raise RequestError(f"image_url: cannot read {path}: {e.strerror or e}", "image_url",
                           "invalid_image_url") from None


def default_image_loader(url: str) -> bytes:
    """The Python API's image loader: data URIs and local files (no network), each up to 64 MiB."""
    limit = 64 << 20
    return decode_data_uri(url, limit) if url.startswith("data:") else _local_image(url, limit)


@dataclass(frozen=True)
class Pixels:
    """An image already preprocessed for the model (:meth:`parrot.Model.preprocess`'s output), as an image
    loader may return it so that the decoded image need not be kept until the request runs."""

    array: np.ndarray


@dataclass
class ChatRequest:
    """A validated chat-completion request."""

    messages: List[Tuple[str, str]]     # (role, text) after the system message; the image's text has "<image>\n"
    system: Optional[str]               # None: the model's default
    image: Any                          # what the image loader returned (bytes, array, Pixels...), or None
    image_message: int                  # index in messages of the message that brought the image (-1: none)
    options: Dict[str, Any]             # Model.run's generation options
    stream: bool = False
    include_usage: bool = False
    routing: str = "exact"


def _text_parts(i: int, content: Any, loader: Optional[Callable[[str], Any]],
                image_from: int = -1) -> Tuple[str, Any]:
    """(text, image or None) of messages[i]'s content; image_from: the message that already brought an image."""
    where = f"messages[{i}].content"
    if isinstance(content, str):
        content = [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise RequestError(f"{where} must be a string or a list of content parts", where)
    texts, image = [], None
    for j, part in enumerate(content):
        pw = f"{where}[{j}]"
        if not isinstance(part, Mapping):
            raise RequestError(f"{pw} must be an object with a 'type'", pw)
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise RequestError(f"{pw}.text must be a string", pw)
            texts.append(part["text"])
        elif kind == "image_url":
            iu = part.get("image_url")
            url = iu.get("url") if isinstance(iu, Mapping) else iu
            if not isinstance(url, str):
                raise RequestError(f"{pw}.image_url.url must be a string", pw)
            if loader is None:
                raise RequestError(f"{pw}: images are only accepted in user messages", pw)
            if image is not None or image_from >= 0:  # refused before a second image is read
                first = f"messages[{image_from}]" if image_from >= 0 else "this message"
                raise RequestError(f"{pw}: Parrot takes one image per conversation; {first} already has one",
                                   pw, "too_many_images")
            image = loader(url)
        else:
            raise RequestError(f"{pw}.type must be 'text' or 'image_url', got {kind!r}", pw)
    text = "\n".join(texts)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise RequestError(f"{where}: the text is not valid Unicode ({e.reason} at character {e.start})",
                           where) from None
    return text, image


def _number(body: Mapping[str, Any], name: str, lo: float, hi: float) -> Optional[float]:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not (lo <= v <= hi):
        raise RequestError(f"{name} must be a number from {lo} to {hi}, got {v!r}", name)
    return float(v)


def _int(body: Mapping[str, Any], name: str, lo: int) -> Optional[int]:
    v = body.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < lo:
        raise RequestError(f"{name} must be an integer >= {lo}, got {v!r}", name)
    return v


def parse_request(body: Any, *, load_image: Callable[[str], Any] = default_image_loader,
                  max_new_tokens: int = 512) -> ChatRequest:
    """Checks an OpenAI chat-completion request body and turns it into a :class:`ChatRequest`.

    ``load_image(url)`` turns an ``image_url`` into what :meth:`parrot.Model.preprocess` accepts (it decides
    which URLs are allowed, raising :class:`RequestError`); ``max_new_tokens`` is the answer's length when the
    request gives neither ``max_tokens`` nor ``max_completion_tokens``. Raises :class:`RequestError` naming the
    field."""
    if not isinstance(body, Mapping):
        raise RequestError("the request body must be a JSON object")
    known = {"messages", "stream", "stream_options", "max_tokens", "max_completion_tokens", "temperature", "top_p",
             "top_k", "seed", "stop", "n", "repetition_penalty", "repeat_penalty", "routing"} | _IGNORED | set(_NEUTRAL)
    for k, v in body.items():
        if k not in known:
            raise RequestError(f"unsupported parameter {k!r}", k, "unsupported_parameter")
        if k in _NEUTRAL and v is not None and v not in _NEUTRAL[k]:
            raise RequestError(f"{k}={v!r} is not supported (only {_NEUTRAL[k][0]!r})", k, "unsupported_value")
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs:
        raise RequestError("messages must be a non-empty list", "messages")
    system: Optional[str] = None
    out: List[Tuple[str, str]] = []
    image, image_at, image_from = None, -1, -1   # the image, its index in out and in msgs
    for i, m in enumerate(msgs):
        if not isinstance(m, Mapping):
            raise RequestError(f"messages[{i}] must be an object with 'role' and 'content'", f"messages[{i}]")
        role = m.get("role")
        if role in ("system", "developer"):
            if i != 0:
                raise RequestError(f"messages[{i}]: the system message must come first", f"messages[{i}].role")
            system, _ = _text_parts(i, m.get("content"), None)
            continue
        if role not in ("user", "assistant"):
            raise RequestError(f"messages[{i}].role must be 'system', 'user' or 'assistant', got {role!r}",
                               f"messages[{i}].role")
        text, img = _text_parts(i, m.get("content"), load_image if role == "user" else None, image_from)
        if IMAGE_PLACEHOLDER in text:
            raise RequestError(f"messages[{i}]: the text must not contain {IMAGE_PLACEHOLDER!r} (send the image "
                               "as an image_url part)", f"messages[{i}].content")
        if img is not None:
            image, image_at, image_from, text = img, len(out), i, user_query(text, True)
        out.append((role, text))
    if not out or out[-1][0] != "user":
        raise RequestError("the last message must be the user's", "messages")
    if body.get("n") not in (None, 1):
        raise RequestError(f"n must be 1, got {body['n']!r}", "n", "unsupported_value")
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise RequestError(f"stream must be a boolean, got {stream!r}", "stream")
    so = body.get("stream_options") or {}
    if not isinstance(so, Mapping) or not isinstance(so.get("include_usage", False), bool):
        raise RequestError("stream_options must be an object like {\"include_usage\": true}", "stream_options")
    limit = _int(body, "max_completion_tokens", 1)
    if limit is None:
        limit = _int(body, "max_tokens", 1)
    stop = body.get("stop")
    if isinstance(stop, str):
        stop = [stop]
    if stop is not None and (not isinstance(stop, list) or len(stop) > 4
                             or not all(isinstance(s, str) and s for s in stop)):
        raise RequestError("stop must be a non-empty string or a list of up to 4 of them", "stop")
    routing = body.get("routing") or "exact"
    if routing not in ROUTING_MODES:
        raise RequestError(f"routing must be one of {', '.join(ROUTING_MODES)}, got {routing!r}", "routing")
    options = dict(max_new_tokens=max_new_tokens if limit is None else limit,
                   temperature=_number(body, "temperature", 0.0, 2.0) or 0.0,
                   top_p=_number(body, "top_p", 1e-9, 1.0), top_k=_int(body, "top_k", 1), seed=_int(body, "seed", 0),
                   repetition_penalty=_number(body, "repetition_penalty", 1e-9, 100.0)
                   or _number(body, "repeat_penalty", 1e-9, 100.0),  # llama-cpp-python's name for it
                   stop=stop or None)
    return ChatRequest(out, system, image, image_at, options, stream, bool(so.get("include_usage", False)), routing)


@dataclass
class ChatCompletion:
    """One completion being generated: iterate for the answer's text pieces; afterwards ``finish_reason``
    (OpenAI's ``"stop"`` or ``"length"``), ``completion_tokens`` and ``text`` are set."""

    model: "Model"
    request: ChatRequest
    prompt_tokens: int = 0
    id: str = field(default_factory=lambda: "chatcmpl-" + uuid.uuid4().hex)
    created: int = field(default_factory=lambda: int(time.time()))
    generation: Optional["Generation"] = None
    first_turn_routing: Optional[np.ndarray] = None   # routing="first_turn": the image's routing weights

    def __post_init__(self) -> None:
        self.generation = _start(self)

    def __iter__(self) -> Iterator[str]:
        assert self.generation is not None
        return iter(self.generation)

    @property
    def text(self) -> str:
        return self.generation.text if self.generation is not None else ""

    @property
    def completion_tokens(self) -> int:
        return len(self.generation.token_ids) if self.generation is not None else 0

    @property
    def finish_reason(self) -> str:
        r = self.generation.finish_reason if self.generation is not None else "stop"
        return "length" if r == "length" else "stop"

    @property
    def routing(self) -> Optional[np.ndarray]:
        """The MoE's routing weights (known once the prompt has run), None without an image."""
        if self.first_turn_routing is not None:
            return self.first_turn_routing
        return self.generation.routing if self.generation is not None else None

    def usage(self) -> Dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens}

    def _routing(self) -> Optional[List[float]]:
        return None if self.routing is None else [float(x) for x in self.routing]

    def response(self, model_name: str) -> Dict[str, Any]:
        """The ``chat.completion`` dict (after iterating)."""
        return {"id": self.id, "object": "chat.completion", "created": self.created, "model": model_name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": self.text},
                             "logprobs": None, "finish_reason": self.finish_reason}],
                "usage": self.usage(), "routing": self._routing()}

    def chunk(self, model_name: str, delta: Dict[str, Any], finish_reason: Optional[str] = None,
              **extra: Any) -> Dict[str, Any]:
        """A ``chat.completion.chunk`` dict."""
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created, "model": model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
                **extra}

    def first_chunk(self, model_name: str) -> Dict[str, Any]:
        """The stream's first chunk: the role."""
        return self.chunk(model_name, {"role": "assistant", "content": ""})

    def last_chunks(self, model_name: str) -> List[Dict[str, Any]]:
        """The stream's end (after iterating): the finish reason with the routing weights, then the usage when
        the request asked for it (``stream_options.include_usage``)."""
        out = [self.chunk(model_name, {}, self.finish_reason, routing=self._routing())]
        if self.request.include_usage:
            out.append(dict(self.chunk(model_name, {}, usage=self.usage()), choices=[]))
        return out

    def chunks(self, model_name: str) -> Iterator[Dict[str, Any]]:
        """The whole stream of chunks: the first, one per text piece, the last ones."""
        yield self.first_chunk(model_name)
        for piece in self:
            yield self.chunk(model_name, {"content": piece})
        yield from self.last_chunks(model_name)


def _start(c: ChatCompletion) -> "Generation":
    """The conversation's prompt, checked, and the generation that answers it (nothing runs yet, except the
    first turn's prefill with ``routing="first_turn"``)."""
    from parrot.prompt import IM_START, Prompt, assistant_preface, system_turn
    model, req = c.model, c.request
    system = model.default_system if req.system is None else req.system
    ids = model.encode_prompt(format_messages(req.messages, system))
    positions, pixels = len(ids), None
    if req.image is not None:
        if not model.config["has_vision"]:
            raise RequestError(f"{os.path.basename(model.path)} has no vision tower: it takes no image", "messages")
        positions += int(model.config["image_tokens"]) - 1
    if positions >= model.context_size:
        raise RequestError(f"the prompt is {positions} positions long, but the model's context is "
                           f"{model.context_size}: no room for an answer", "messages", "context_length_exceeded")
    c.prompt_tokens = positions
    if req.image is not None:
        try:
            pixels = req.image.array if isinstance(req.image, Pixels) else model.preprocess(req.image)
        except ImageError as e:
            raise RequestError(f"image_url: {e}", "image_url", "invalid_image") from None
    if pixels is None or req.routing == "exact":   # the MoE routes on every text token of ids
        # the system turn (and the next <|im_start|>) is the same for every request with this system message:
        # its KV cache comes from the model's prefix cache, as for Model.run
        shared = len(model.encode_prompt(system_turn(system) + Prompt([(True, IM_START)])))
        return model.generation(ids, pixels=pixels, shared_prefix=shared, **req.options)
    # first_turn: run the conversation up to the image's message (+ the assistant preface) so the MoE routes on
    # that text, keep its KV cache without the preface (the conversation goes on from there: the ids are cut at
    # ChatML markers, so they are a prefix of the whole conversation's), then append the rest.
    first = model.encode_prompt(format_messages(req.messages[:req.image_message + 1], system))
    head = len(first) - len(model.encode_prompt(assistant_preface()))
    assert first[:head] == ids[:head]
    ctx = model.new_context()
    opening = model.generation(first, pixels=pixels, context=ctx, max_new_tokens=1)
    opening.run()
    c.first_turn_routing = opening.routing
    ctx.truncate(head - 1 + int(model.config["image_tokens"]))
    gen = model.generation(ids[head:], context=ctx, **req.options)
    gen.sampler.observe(i for i in ids[:head] if i != IMAGE_TOKEN)  # the repetition penalty sees the whole prompt
    return gen


def create_chat_completion(model: "Model", messages: Any, stream: bool = False, *, routing: str = "exact",
                           load_image: Callable[[str], Any] = default_image_loader,
                           **params: Any) -> "Dict[str, Any] | Iterator[Dict[str, Any]]":
    """:meth:`parrot.Model.create_chat_completion`: see the module docstring."""
    body = dict(params, messages=messages, stream=stream, routing=routing)
    req = parse_request(body, load_image=load_image)
    name = os.path.splitext(os.path.basename(model.path))[0]
    c = ChatCompletion(model, req)
    if stream:
        return c.chunks(name)
    for _ in c:
        pass
    return c.response(name)
