"""``parrot serve``: an OpenAI-compatible HTTP server (Starlette + uvicorn) for one parrot Model.

    POST /v1/chat/completions    chat completions, JSON or (``"stream": true``) server-sent events
    GET  /v1/models              the served model
    GET  /health                 {"status": "ok", "active": ..., "queued": ...}

Scheduling. One thread, the :class:`Scheduler`, drives every generation (continuous batching). Between
decode steps it admits waiting requests (up to ``max_active`` at once: image, MoE routing and prefill run
then, and the first token is sampled), and each step advances every active generation by one token through
one batched decode (:meth:`parrot.Model.decode_step`: one pass over the weights for all of them, each
sequence's logits exactly what it would get alone), so concurrent requests progress together, a request
admitted later starts at once rather than after the others end, and a finished one leaves the batch.
Requests beyond ``max_active`` wait in a bounded queue (``max_queue``); beyond that the server answers 503
with ``Retry-After``.

Limits: the request body (``max_body_bytes``), the image's encoded size (``max_image_bytes``) and its pixels
(``max_image_pixels``, checked before decoding); http(s) image URLs and local paths only when enabled, with a
size and a time limit. Errors are OpenAI-shaped JSON (``{"error": {"message", "type", "param", "code"}}``)
with a 4xx status. A client that disconnects cancels its generation. SIGTERM (or Ctrl-C) stops accepting
connections, finishes the running requests, then exits.
"""
from __future__ import annotations

import asyncio
import collections
import hmac
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Deque, Dict, List, Optional, Tuple

from parrot.errors import ImageError
from parrot.openai_api import ChatCompletion, ChatRequest, Pixels, RequestError, decode_data_uri, parse_request

if TYPE_CHECKING:
    from parrot.generation import Generation
    from parrot.model import Model

__all__ = ["ServerConfig", "Scheduler", "create_app", "serve"]


@dataclass
class ServerConfig:
    """What the server accepts and how much work it holds at once."""

    model_name: str = "parrot"
    api_key: Optional[str] = None          # when set, requests need "Authorization: Bearer <key>"
    max_active: int = 8                    # generations advancing together
    max_queue: int = 64                    # requests waiting for a slot; more get 503
    max_body_bytes: int = 32 << 20         # request body
    max_image_bytes: int = 20 << 20        # one image, encoded
    max_image_pixels: int = 25_000_000     # one image, decoded (width × height)
    max_tokens: int = 512                  # answer length when the request names none
    allow_remote_images: bool = False      # http(s) image URLs
    allow_local_images: bool = False       # file paths / file:// URLs (trusted clients only)
    fetch_timeout_s: float = 10.0          # per remote image
    retry_after_s: int = 1                 # the Retry-After of a 503


def _error(status: int, message: str, param: Optional[str] = None, code: Optional[str] = None,
           headers: Optional[Dict[str, str]] = None) -> Any:
    from starlette.responses import JSONResponse
    return JSONResponse(RequestError(message, param, code, status).to_dict(), status_code=status, headers=headers)


# ---- the scheduler
class Job:
    """One request on its way through the scheduler; events go back to the request's event loop."""

    def __init__(self, request: ChatRequest, loop: asyncio.AbstractEventLoop):
        self.request = request
        self.loop = loop
        self.events: "asyncio.Queue[Tuple[str, Any]]" = asyncio.Queue()
        self.cancelled = False

    def post(self, kind: str, value: Any = None) -> None:
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is gone (server shut down): nobody is listening
            self.cancelled = True


class Scheduler:
    """Admits requests (bounded) and advances every active generation together; see the module docstring."""

    def __init__(self, model: "Model", max_active: int, max_queue: int):
        self.model = model
        self.max_active = max_active
        self.max_queue = max_queue
        self.waiting: Deque[Job] = collections.deque()
        self.active: List[Tuple[Job, ChatCompletion, "Generation"]] = []   # started, decoding
        self.cond = threading.Condition()
        self.stopping = False
        self.inflight = 0   # reserved places: requests being read, waiting or active
        self.admitting: Optional[Job] = None   # the job whose prompt is being prepared
        #: requests answered in full, dropped because their client went away, failed
        self.stats = {"finished": 0, "cancelled": 0, "failed": 0}
        self.thread = threading.Thread(target=self._run, name="parrot-scheduler", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ends the thread once every admitted request is done."""
        with self.cond:
            self.stopping = True
            self.cond.notify()
        self.thread.join()

    def counts(self) -> Tuple[int, int]:
        with self.cond:
            return len(self.active), len(self.waiting)

    def reserve(self) -> bool:
        """Holds a place for a request about to be read (so that reading and decoding request bodies is bounded
        too); False when max_active + max_queue requests are already in. Then submit() or release()."""
        with self.cond:
            if self.inflight >= self.max_active + self.max_queue:
                return False
            self.inflight += 1
            return True

    def release(self) -> None:
        with self.cond:
            self.inflight -= 1

    def submit(self, job: Job) -> None:
        """Queues a job on a reserved place; the place is released when the job ends (answered, failed or
        dropped), whatever its client does."""
        with self.cond:
            self.waiting.append(job)
            self.cond.notify()

    def _admit(self) -> None:
        while len(self.active) < self.max_active:
            with self.cond:
                if not self.waiting:
                    return
                job = self.waiting.popleft()
            if job.cancelled:
                self._drop(job)
                continue
            self.admitting = job   # until its prefill is done
            try:
                c = ChatCompletion(self.model, job.request)
            except Exception as e:  # noqa: BLE001 - bad input (or a bug) answers its request, never the thread
                self._fail(job, e)
                self.admitting = None
                continue
            job.post("start", c)
            gen = c.generation
            assert gen is not None
            try:
                piece = gen.start()   # the prefill and the first token
                if job.cancelled:   # its client went away meanwhile (e.g. while it waited for the model): dropped,
                    gen.close()     # also when that first token already ended the answer
                    self._drop(job)
                elif self._advanced(job, c, gen, piece):
                    self.active.append((job, c, gen))
            except Exception as e:  # noqa: BLE001 - report it on that request's stream
                gen.close()
                self._fail(job, e)
            finally:
                self.admitting = None

    def _advanced(self, job: Job, c: ChatCompletion, gen: "Generation", piece: str) -> bool:
        """Posts a generation's new text; True while it goes on decoding, else ends its request."""
        if piece:
            job.post("piece", piece)
        if gen.pending is not None:
            return True
        self._end(job, "finished", "done", c)
        return False

    def _step(self) -> None:
        """One token for every active generation, all through one batched decode."""
        live = []
        for job, c, gen in self.active:
            if job.cancelled:
                gen.close()
                self._drop(job)
            else:
                live.append((job, c, gen))
        try:
            pieces = self.model.decode_step([gen for _, _, gen in live])
        except Exception as e:  # noqa: BLE001 - the step failed for every sequence in it: report it on each
            for job, _, gen in live:
                gen.close()
                self._fail(job, e)
            self.active = []
            return
        self.active = [a for a, piece in zip(live, pieces) if self._advanced(*a, piece)]

    def _drop(self, job: Job) -> None:
        self._end(job, "cancelled", "cancelled")

    def _fail(self, job: Job, e: BaseException) -> None:
        self._end(job, "failed", "error", e)

    def _end(self, job: Job, stat: str, kind: str, value: Any = None) -> None:
        self.stats[stat] += 1
        self.release()
        job.post(kind, value)

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.waiting and not self.active and not self.stopping:
                    self.cond.wait()
                if self.stopping and not self.waiting and not self.active:
                    return
            self._admit()
            self._step()


# ---- images
def _image_loader(model: "Model", cfg: ServerConfig) -> Callable[[str], Any]:
    from parrot.image import load_image

    def load(url: str) -> Any:
        if not model.config["has_vision"]:
            raise RequestError(f"{os.path.basename(model.path)} has no vision tower: it takes no image", "image_url")
        if url.startswith("data:"):
            data = decode_data_uri(url, cfg.max_image_bytes)
        elif url.startswith(("http://", "https://")):
            if not cfg.allow_remote_images:
                raise RequestError("image_url: http(s) URLs are not enabled on this server (start it with "
                                   "--allow-remote-images); send a data:image/...;base64, URI", "image_url",
                                   "invalid_image_url")
            data = _fetch(url, cfg)
        else:
            if not cfg.allow_local_images:
                raise RequestError("image_url must be a data:image/...;base64, URI (local paths need "
                                   "--allow-local-images, http(s) URLs --allow-remote-images)", "image_url",
                                   "invalid_image_url")
            from parrot.openai_api import _local_image
            data = _local_image(url, cfg.max_image_bytes)
        try:  # preprocessed here, in the request's thread: a waiting request holds 3·S² floats, not the image
            return Pixels(model.preprocess(load_image(data, max_pixels=cfg.max_image_pixels)))
        except ImageError as e:
            raise RequestError(f"image_url: {e}", "image_url", "invalid_image") from None

    return load


def _fetch(url: str, cfg: ServerConfig) -> bytes:
    import httpx
    deadline = time.monotonic() + cfg.fetch_timeout_s
    try:
        with httpx.stream("GET", url, timeout=cfg.fetch_timeout_s, follow_redirects=True) as r:
            if r.status_code != 200:
                raise RequestError(f"image_url: fetching {url} gave HTTP {r.status_code}", "image_url",
                                   "invalid_image_url")
            out = bytearray()
            for chunk in r.iter_bytes():
                out += chunk
                if len(out) > cfg.max_image_bytes:
                    raise RequestError(f"image_url: {url} is larger than {cfg.max_image_bytes} bytes", "image_url",
                                       "image_too_large")
                if time.monotonic() > deadline:
                    raise RequestError(f"image_url: fetching {url} took longer than {cfg.fetch_timeout_s} s",
                                       "image_url", "invalid_image_url")
            return bytes(out)
    except httpx.HTTPError as e:
        raise RequestError(f"image_url: cannot fetch {url}: {e}", "image_url", "invalid_image_url") from None


# ---- the app
def create_app(model: "Model", config: Optional[ServerConfig] = None) -> Any:
    """The Starlette application serving ``model``."""
    import anyio
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    cfg = config or ServerConfig()
    load_image = _image_loader(model, cfg)
    scheduler = Scheduler(model, cfg.max_active, cfg.max_queue)

    def authorized(request: Request) -> bool:
        if cfg.api_key is None:
            return True
        got = request.headers.get("authorization", "")
        return hmac.compare_digest(got.encode(), f"Bearer {cfg.api_key}".encode())

    def unauthorized() -> Any:
        return _error(401, "missing or wrong API key (send 'Authorization: Bearer <key>')", None, "invalid_api_key",
                      {"WWW-Authenticate": "Bearer"})

    async def read_body(request: Request) -> bytes:
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > cfg.max_body_bytes:
            raise RequestError(f"the request body is {size} bytes, above the limit of {cfg.max_body_bytes}",
                               None, "request_too_large", 413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > cfg.max_body_bytes:
                raise RequestError(f"the request body is above the limit of {cfg.max_body_bytes} bytes", None,
                                   "request_too_large", 413)
        return bytes(body)

    async def watch_disconnect(request: Request, job: Job) -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                job.cancelled = True
                return

    async def chat_completions(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        if not scheduler.reserve():
            return _error(503, f"the server is busy ({cfg.max_active} running, {cfg.max_queue} waiting); retry later",
                          None, "server_busy", {"Retry-After": str(cfg.retry_after_s)})
        try:
            raw = await read_body(request)
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as e:
                raise RequestError(f"the request body is not valid JSON: {e}", None, "invalid_json") from None
            req = await anyio.to_thread.run_sync(
                lambda: parse_request(body, load_image=load_image, max_new_tokens=cfg.max_tokens))
        except (RequestError, ValueError, TypeError) as e:
            scheduler.release()
            return _failure(e)
        except BaseException:
            scheduler.release()
            raise
        job = Job(req, asyncio.get_running_loop())
        scheduler.submit(job)
        watcher = asyncio.ensure_future(watch_disconnect(request, job))
        try:
            kind, value = await job.events.get()
        except BaseException:
            job.cancelled = True
            watcher.cancel()
            raise
        if kind != "start":
            watcher.cancel()
            return _failure(value if kind == "error" else RequestError("cancelled: the client went away"))
        completion: ChatCompletion = value
        if req.stream:
            watcher.cancel()  # Starlette's streaming response watches for the disconnect itself
            return StreamingResponse(sse(job, completion), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        try:
            while True:
                kind, value = await job.events.get()
                if kind == "done":
                    return JSONResponse(completion.response(cfg.model_name))
                if kind in ("error", "cancelled"):
                    return _failure(value if kind == "error" else RequestError("cancelled: the client went away"))
        finally:
            job.cancelled = True  # harmless when done; stops the generation when the client went away
            watcher.cancel()

    async def sse(job: Job, completion: ChatCompletion) -> AsyncIterator[bytes]:
        def event(obj: Any) -> bytes:
            return b"data: " + json.dumps(obj, ensure_ascii=False).encode() + b"\n\n"

        try:
            yield event(completion.first_chunk(cfg.model_name))
            while True:
                kind, value = await job.events.get()
                if kind == "piece":
                    yield event(completion.chunk(cfg.model_name, {"content": value}))
                elif kind == "error":
                    yield event(_error_body(value))
                    return
                elif kind == "cancelled":
                    return
                else:
                    for c in completion.last_chunks(cfg.model_name):
                        yield event(c)
                    break
            yield b"data: [DONE]\n\n"
        finally:
            job.cancelled = True

    async def models(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        return JSONResponse({"object": "list", "data": [_model_card(model, cfg)]})

    async def model_card(request: Request) -> Any:
        if not authorized(request):
            return unauthorized()
        name = request.path_params["name"]
        if name != cfg.model_name:
            return _error(404, f"the model {name!r} does not exist here (this server serves {cfg.model_name!r})",
                          "model", "model_not_found")
        return JSONResponse(_model_card(model, cfg))

    async def health(request: Request) -> Any:
        active, queued = scheduler.counts()
        return JSONResponse({"status": "ok", "model": cfg.model_name, "active": active, "queued": queued,
                             **scheduler.stats})

    async def http_error(request: Request, exc: Exception) -> Any:
        status = getattr(exc, "status_code", 500)
        return _error(status, str(getattr(exc, "detail", "")) or "error", None,
                      {404: "not_found", 405: "method_not_allowed"}.get(status))

    async def server_error(request: Request, exc: Exception) -> Any:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}", None, "internal_error")

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        scheduler.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(scheduler.stop)

    app = Starlette(routes=[Route("/v1/chat/completions", chat_completions, methods=["POST"]),
                            Route("/v1/models", models, methods=["GET"]),
                            Route("/v1/models/{name:path}", model_card, methods=["GET"]),
                            Route("/health", health, methods=["GET"])],
                    exception_handlers={HTTPException: http_error, Exception: server_error}, lifespan=lifespan)
    app.state.scheduler = scheduler
    app.state.config = cfg
    return app


def _error_body(e: BaseException) -> Dict[str, Any]:
    if isinstance(e, RequestError):
        return e.to_dict()
    if isinstance(e, (ValueError, TypeError)):  # ImageError, a prompt too long, a bad option
        code = "context_length_exceeded" if "context" in str(e) else None
        return RequestError(str(e), None, code).to_dict()
    return RequestError(f"internal error: {type(e).__name__}: {e}", None, "internal_error", 500).to_dict()


def _failure(e: BaseException) -> Any:
    from starlette.responses import JSONResponse
    body = _error_body(e)
    status = e.status if isinstance(e, RequestError) else (500 if body["error"]["code"] == "internal_error" else 400)
    return JSONResponse(body, status_code=status)


def _model_card(model: "Model", cfg: ServerConfig) -> Dict[str, Any]:
    return {"id": cfg.model_name, "object": "model", "created": int(os.path.getmtime(model.path)),
            "owned_by": "parrot", "context_length": model.context_size}


def serve(model: "Model", host: str = "127.0.0.1", port: int = 8000, config: Optional[ServerConfig] = None,
          shutdown_timeout_s: Optional[int] = 60, log_level: str = "info") -> None:
    """Runs the server until SIGTERM / Ctrl-C (running requests are finished first, for up to
    ``shutdown_timeout_s``)."""
    import uvicorn
    uvicorn.run(create_app(model, config), host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=shutdown_timeout_s)
