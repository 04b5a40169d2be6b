"""``parrot serve`` against the official ``openai`` client (and raw ``httpx`` for malformed requests), on a live
server on 127.0.0.1 — in-process on a thread, or as a subprocess for SIGTERM.

Reference answers are ``parrot.generate``'s on the shipped model, which answers shape, colour and count
questions in six languages (parrot.demo's scenes and questions)."""
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
openai = pytest.importorskip("openai")
import httpx  # noqa: E402

import parrot  # noqa: E402
from parrot.demo import LANGS, QUESTIONS, SCENES, WORDS, draw_scene, mc_prompt  # noqa: E402
from parrot.server import ServerConfig, create_app  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_TOKENS = 24  # parrot demo's answer length


def png_uri(rgb):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_message(uri, text):
    return [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": uri}},
                                         {"type": "text", "text": text}]}]


class LiveServer:
    """uvicorn on a thread, on a socket bound to a free port of 127.0.0.1; always shut down by stop()."""

    def __init__(self, model, **config):
        import uvicorn
        self.model = model
        self.app = create_app(model, ServerConfig(model_name="tiny", **config))
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.01)

    @property
    def scheduler(self):
        return self.app.state.scheduler

    def client(self, **kw):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=kw.pop("api_key", "none"), max_retries=0, **kw)

    def health(self):
        return httpx.get(self.url + "/health").json()

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def model():
    return parrot.load(parrot.model.default_model_path())


@pytest.fixture(scope="module")
def live(model):
    s = LiveServer(model)
    yield s
    s.stop()


def questions():
    """(scene index, question) for every scene, language and question kind of parrot demo."""
    out = []
    for i, scene in enumerate(SCENES):
        for lang in LANGS:
            out.append((i, QUESTIONS[lang][scene.open_kind]))
            opts = [WORDS[lang][o] for o in scene.options]
            out.append((i, mc_prompt(QUESTIONS[lang][scene.mc_kind], opts, lang)))
    return out


@pytest.fixture(scope="module")
def expected(model):
    """parrot.generate's answer (and routing) per (scene, question): the reference of every server answer."""
    imgs = [draw_scene(s) for s in SCENES]
    return {q: parrot.generate(imgs[q[0]], q[1], model=model, max_new_tokens=MAX_TOKENS, return_details=True)
            for q in questions()}


@pytest.fixture(scope="module")
def uris():
    return [png_uri(draw_scene(s)) for s in SCENES]


def ask(client, uri, question, stream, **kw):
    """The answer's text, the routing weights and the finish reason, through the openai client."""
    msgs = image_message(uri, question)
    if not stream:
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_TOKENS, temperature=0, **kw)
        return r.choices[0].message.content, r.routing, r.choices[0].finish_reason, r.usage
    text, routing, finish, usage = "", None, None, None
    for chunk in client.chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_TOKENS, temperature=0,
                                                stream=True, stream_options={"include_usage": True}, **kw):
        if getattr(chunk, "routing", None) is not None:
            routing = chunk.routing
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    return text, routing, finish, usage


def test_six_languages_streamed_and_not_eight_clients(live, expected, uris):
    """Every demo question (4 scenes × 6 languages × 2 kinds), streamed and not, from 8 concurrent clients:
    each answer and its routing equal parrot.generate's."""
    jobs = [(q, stream) for q in expected for stream in (False, True)]
    clients = [live.client() for _ in range(8)]

    def run(k):
        (i, question), stream = jobs[k]
        return ask(clients[k % 8], uris[i], question, stream)

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(run, range(len(jobs))))
    for ((i, question), stream), (text, routing, finish, usage) in zip(jobs, got):
        want = expected[(i, question)]
        assert text == want.text, (question, stream)
        np.testing.assert_allclose(routing, want.routing, atol=1e-6)  # the same computation, same thread count
        assert finish == ("length" if want.finish_reason == "length" else "stop")
        assert usage.prompt_tokens == want.timings["prompt_tokens"]
        assert usage.completion_tokens == len(want.token_ids)
    h = live.health()
    assert h["active"] == 0 and h["queued"] == 0


def test_concurrent_answers_are_decoded_in_batches_and_equal_lone_ones(expected, uris):
    """Continuous batching in the server: 12 questions from 6 concurrent clients (max_active 4) are decoded
    several sequences per step (counted at the core's decode_batch), and every answer equals parrot.generate's
    one-at-a-time answer exactly (decode_batch's logits are each lone sequence's, bit for bit)."""
    m = parrot.load(parrot.model.default_model_path())
    sizes = []
    core = m._core

    class Counting:
        def decode_batch(self, contexts, tokens):
            sizes.append(len(contexts))
            return core.decode_batch(contexts, tokens)

        def __getattr__(self, name):
            return getattr(core, name)

    m._core = Counting()
    s = LiveServer(m, max_active=4)
    try:
        jobs = list(expected)[:12]
        clients = [s.client() for _ in range(6)]

        def run(k):
            i, question = jobs[k]
            return ask(clients[k % 6], uris[i], question, k % 2 == 1)

        with ThreadPoolExecutor(6) as pool:
            got = list(pool.map(run, range(len(jobs))))
        for q, (text, routing, finish, _) in zip(jobs, got):
            assert text == expected[q].text, q
            np.testing.assert_allclose(routing, expected[q].routing, atol=1e-6)
        assert max(sizes) > 1 and max(sizes) <= 4
    finally:
        s.stop()


def test_models_and_health(live, model):
    c = live.client()
    ids = [m.id for m in c.models.list()]
    assert ids == ["tiny"]
    assert c.models.retrieve("tiny").id == "tiny"
    r = httpx.get(live.url + "/v1/models/other")
    assert r.status_code == 404 and r.json()["error"]["code"] == "model_not_found"
    assert live.health()["status"] == "ok"


def test_multi_turn_equals_create_chat_completion(live, model, uris):
    msgs = image_message(uris[1], QUESTIONS["pt"]["shape"]) + [
        {"role": "assistant", "content": WORDS["pt"]["square"]}, {"role": "user", "content": QUESTIONS["pt"]["colour"]}]
    for routing in ("exact", "first_turn"):
        r = live.client().chat.completions.create(model="tiny", messages=msgs, max_tokens=MAX_TOKENS,
                                                  extra_body={"routing": routing})
        want = model.create_chat_completion(msgs, max_tokens=MAX_TOKENS, routing=routing)
        assert r.choices[0].message.content == want["choices"][0]["message"]["content"]
        np.testing.assert_allclose(r.routing, want["routing"], atol=1e-6)


def error_of(resp):
    body = resp.json()
    assert set(body) == {"error"} and {"message", "type", "param", "code"} <= set(body["error"]), body
    return body["error"]


def test_malformed_requests_are_4xx_json(live, uris, tmp_path):
    url = live.url + "/v1/chat/completions"
    ok_msgs = [{"role": "user", "content": "Hi"}]
    one = image_message(uris[0], "a")[0]
    big = np.zeros((1, 1, 3), np.uint8)
    # a PNG whose header claims 10000 x 10000 pixels: refused from the header, before any decoding
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="PNG")
    png = bytearray(buf.getvalue())
    png[16:24] = (10000).to_bytes(4, "big") * 2
    import zlib
    png[29:33] = zlib.crc32(bytes(png[12:29])).to_bytes(4, "big")
    huge = "data:image/png;base64," + base64.b64encode(bytes(png)).decode()
    cases = [
        (b"{not json", 400, "invalid_json", None),
        (b"[" * 100000 + b"]" * 100000, 400, "invalid_json", None),
        (b"\xff\xfe\x00garbage", 400, "invalid_json", None),
        (b"[1, 2]", 400, None, "JSON object"),
        ({"messages": "hi"}, 400, None, "messages"),
        ({"messages": ok_msgs, "n": 3}, 400, "unsupported_value", "n must be 1"),
        ({"messages": ok_msgs, "temperature": 9}, 400, None, "temperature"),
        ({"messages": ok_msgs, "max_tokens": -1}, 400, None, "max_tokens"),
        ({"messages": ok_msgs, "stream": "yes"}, 400, None, "stream"),
        ({"messages": ok_msgs, "functions": []}, 400, "unsupported_parameter", "functions"),
        ({"messages": [one, {"role": "assistant", "content": "b"}, image_message(uris[1], "c")[0]]}, 400,
         "too_many_images", "one image per conversation"),
        ({"messages": image_message("data:image/png;base64,!!!!", "a")}, 400, "invalid_image_url", "base64"),
        ({"messages": image_message("data:image/png;base64," + base64.b64encode(b"GIF89a....").decode(), "a")},
         400, "invalid_image", None),
        ({"messages": image_message(huge, "a")}, 400, "invalid_image", "pixels"),
        ({"messages": image_message("https://example.com/cat.png", "a")}, 400, "invalid_image_url",
         "--allow-remote-images"),
        ({"messages": image_message(str(tmp_path / "x.png"), "a")}, 400, "invalid_image_url", "--allow-local-images"),
        ({"messages": image_message(uris[0], "7" * 5000)}, 400, "context_length_exceeded", "context"),
        ({"messages": [{"role": "user", "content": "\ud800"}]}, 400, None, "not valid Unicode"),
    ]
    for body, status, code, words in cases:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = httpx.post(url, content=raw, headers={"content-type": "application/json"}, timeout=60)
        assert r.status_code == status, (body if len(raw) < 200 else raw[:50], r.status_code, r.text[:300])
        err = error_of(r)
        assert code is None or err["code"] == code, (err, code)
        assert words is None or words in err["message"], (err, words)
    # the same through the openai client: a typed 400 carrying the message
    with pytest.raises(openai.BadRequestError, match="one image per conversation"):
        live.client().chat.completions.create(model="tiny", messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": uris[0]}},
                                         {"type": "image_url", "image_url": {"url": uris[1]}}]}])
    # wrong paths and methods
    assert error_of(httpx.get(live.url + "/v2/nothing"))["code"] == "not_found"
    assert httpx.get(url).status_code == 405
    # the server is still fine
    assert live.client().chat.completions.create(model="tiny", messages=ok_msgs, max_tokens=2).choices


def test_body_limit_api_key_and_queue_bound(model):
    s = LiveServer(model, api_key="sesame", max_active=1, max_queue=1, max_body_bytes=10_000)
    try:
        url = s.url + "/v1/chat/completions"
        msgs = [{"role": "user", "content": "Hello"}]
        with pytest.raises(openai.AuthenticationError):
            s.client(api_key="wrong").chat.completions.create(model="tiny", messages=msgs)
        assert httpx.post(url, json={"messages": msgs}).status_code == 401
        assert httpx.get(s.url + "/v1/models").status_code == 401
        auth = {"Authorization": "Bearer sesame"}
        r = httpx.post(url, json={"messages": [{"role": "user", "content": "x" * 20_000}]}, headers=auth)
        assert r.status_code == 413 and error_of(r)["code"] == "request_too_large"

        # hold the model's lock: the first request is taken from the queue and stops at its first call into the
        # core (admitted or not yet), the second waits, the third finds the server full
        results = {}

        def call(k):
            results[k] = s.client(api_key="sesame").chat.completions.create(model="tiny", messages=msgs,
                                                                            max_tokens=4)

        with model._lock:
            t1 = threading.Thread(target=call, args=(1,))
            t1.start()
            wait_for(lambda: held_job(s.scheduler) is not None)
            t2 = threading.Thread(target=call, args=(2,))
            t2.start()
            wait_for(lambda: s.health_auth(auth)["queued"] == 1)
            r = httpx.post(url, json={"messages": msgs}, headers=auth)
            assert r.status_code == 503 and r.headers["retry-after"] == "1"
            assert error_of(r)["code"] == "server_busy"
            with pytest.raises(openai.InternalServerError):  # the client's name for 5xx: here, 503
                s.client(api_key="sesame").chat.completions.create(model="tiny", messages=msgs)
        t1.join(30)
        t2.join(30)
        want = model.generate(None, "Hello", max_new_tokens=4)
        assert results[1].choices[0].message.content == results[2].choices[0].message.content == want
    finally:
        s.stop()


def held_job(scheduler):
    """The job the scheduler thread is working on while the test holds the model's lock: the one being
    admitted, or the (only) active one."""
    active = list(scheduler.active)
    return scheduler.admitting or (active[0][0] if active else None)


def wait_for(cond, timeout=20.0):
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


LiveServer.health_auth = lambda self, headers: httpx.get(self.url + "/health", headers=headers).json()


@pytest.mark.parametrize("stream", [True, False])
def test_disconnect_cancels_generation(live, model, stream):
    """A client that goes away while its request waits (here: for the model's lock, held by the test) is
    dropped by the scheduler without generating its answer."""
    before = dict(live.health())
    body = {"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 500, "stream": stream}
    with model._lock:
        with pytest.raises(httpx.ReadTimeout):
            with httpx.stream("POST", live.url + "/v1/chat/completions", json=body, timeout=1.0) as r:
                r.read()
        wait_for(lambda: held_job(live.scheduler) is not None and held_job(live.scheduler).cancelled)
    wait_for(lambda: live.health()["cancelled"] == before["cancelled"] + 1)
    after = live.health()
    assert after["active"] == 0 and after["finished"] == before["finished"]


def rss_bytes():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def test_load_300_requests_16_clients(live, expected, uris):
    """300 requests from 16 clients (more than the 8 generated at once, fewer than the queue bound): every one
    answered once and correctly, and the process' memory flat after warm-up."""
    qs = list(expected)
    clients = [live.client() for _ in range(16)]
    failed_before = live.health()["failed"]
    seen_ids = []
    lock = threading.Lock()

    def run(k):
        i, question = qs[k % len(qs)]
        r = clients[k % 16].chat.completions.create(model="tiny", messages=image_message(uris[i], question),
                                                    max_tokens=MAX_TOKENS, temperature=0, stream=k % 3 == 0)
        if k % 3 == 0:
            chunks = list(r)
            text, rid = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks[0].id
        else:
            text, rid = r.choices[0].message.content, r.id
        with lock:
            seen_ids.append(rid)
        return k, text

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(run, range(100)))          # warm-up: allocator pools, image cache, thread stacks
        rss0 = rss_bytes()
        got = list(pool.map(run, range(100, 300)))
        rss1 = rss_bytes()
    assert sorted(k for k, _ in got) == list(range(100, 300))    # none lost
    assert len(set(seen_ids)) == len(seen_ids) == 300               # none duplicated
    for k, text in got:
        assert text == expected[qs[k % len(qs)]].text
    # a leaked KV cache per request would be >= 1 MB each (200 MB here); 20 MB leaves room for allocator noise.
    # Under ASan the RSS is the quarantine's (freed memory held back to catch use-after-free, 256 MB), not ours.
    if "libasan" not in os.environ.get("LD_PRELOAD", ""):
        assert rss1 - rss0 < 20 << 20, (rss0, rss1)
    h = live.health()
    assert h["active"] == 0 and h["queued"] == 0 and h["failed"] == failed_before


def sigterm_during_requests(uris, expected):
    """One server process, 192 requests on 1 slot, SIGTERM once all are taken in: every answer is checked and
    the process must end by the signal. Returns whether some request was still running when the signal came
    (the shipped model answers one in a few ms, so the queue may drain before the last client connects)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "parrot", "serve", "--port", str(port), "--log-level", "warning",
                             "--parallel", "1", "--max-queue", "200"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=ROOT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.05)
        qs = list(expected) * 4   # most of them wait in the queue for a while
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0)
        done_at = {}

        def run(k):
            i, question = qs[k]
            text = ask(client, uris[i], question, stream=k % 2 == 0)[0]
            done_at[k] = time.monotonic()
            return text

        with ThreadPoolExecutor(len(qs)) as pool:
            futures = [pool.submit(run, k) for k in range(len(qs))]
            def all_in():   # every request connected and taken in (a connection opened after SIGTERM is refused)
                h = httpx.get(url + "/health").json()
                return h["queued"] + h["active"] + h["finished"] >= len(qs)

            wait_for(all_in, timeout=60)
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            texts = [f.result(timeout=60) for f in futures]
        assert texts == [expected[q].text for q in qs]       # every running and queued request was answered
        # uvicorn's convention: after the graceful shutdown it re-raises the signal with the default handler, so
        # the parent sees "terminated by SIGTERM" (what it asked for), not a crash
        assert proc.wait(60) == -signal.SIGTERM
        assert b"Traceback" not in proc.stderr.read()
        return max(done_at.values()) > sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_sigterm_finishes_running_requests_then_exits(uris, expected):
    # up to 3 servers: each is checked in full; at least one must have had requests running at the signal
    assert any(sigterm_during_requests(uris, expected) for _ in range(3)), \
        "every request ended before the signal, 3 times: nothing was tested"


def test_text_only_model_without_tokenizer_gives_400s(tmp_path, uris):
    """A plain Qwen2 file (no vision tower, converted without tokenizer files): an image, or any text, is a
    clear 400, never a 500."""
    from conftest import make_qwen2
    _, d = make_qwen2(tmp_path)
    m = parrot.load(parrot.convert(d, str(tmp_path / "q.gguf"), dtype="f32", progress=False, log=lambda s: None),
                    threads=1)
    s = LiveServer(m)
    try:
        url = s.url + "/v1/chat/completions"
        r = httpx.post(url, json={"messages": image_message(uris[0], "a")})
        assert r.status_code == 400 and "no vision tower" in error_of(r)["message"]
        r = httpx.post(url, json={"messages": [{"role": "user", "content": "Hi"}]})
        assert r.status_code == 400 and "tokenizer" in error_of(r)["message"]
    finally:
        s.stop()


def test_cli_refuses_bad_limits(capsys):
    from parrot.cli import main
    for args, words in ((["--parallel", "0"], "--parallel: must be at least 1"),
                        (["--max-queue", "-1"], "--max-queue: must be at least 0")):
        with pytest.raises(SystemExit) as e:   # a usage error, as every out-of-range option of the CLI
            main(["serve", *args])
        assert e.value.code == 2 and words in capsys.readouterr().err
