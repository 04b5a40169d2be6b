"""The ``parrot`` command line (also ``python -m parrot``).

    parrot generate cat.jpg "What is in the picture?"     # streams the answer
    parrot chat cat.jpg                                    # interactive; /help lists its commands
    parrot convert Parrot-7B/ -o parrot-7b.gguf --clip clip-vit-large-patch14-336/
    parrot info parrot-7b.gguf
    parrot bench
    parrot demo
    parrot eval mmmb_en.tsv mmmb_cn.tsv -o out/
    parrot serve -m parrot-7b.gguf --port 8000             # OpenAI-compatible HTTP server

Every command that uses a model takes ``-m/--model`` (default ``$PARROT_MODEL``, else the shipped model).

Wrong usage (an out-of-range number too) exits with status 2 and a one-line reason; a user error (missing
file, bad model, bad image) prints one line, without a traceback, and exits with status 1; Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


# ---- option values, checked by argparse (a bad one is a usage error, exit status 2)
def int_at_least(low: int) -> Callable[[str], int]:
    """An argparse ``type``: an integer >= low."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = "integer"  # argparse names the type in its own messages
    return parse


def float_in(low: float, *, low_open: bool, high: Optional[float] = None) -> Callable[[str], float]:
    """An argparse ``type``: a finite number above ``low`` (or at least ``low``) and at most ``high``."""
    bounds = (f"> {low:g}" if low_open else f">= {low:g}") + (f" and <= {high:g}" if high is not None else "")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or (value <= low if low_open else value < low) or \
                (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be a finite number {bounds}, got {text}")
        return value
    parse.__name__ = "number"
    return parse


positive_int = int_at_least(1)

MODEL_HELP = ("a parrot .gguf file, a Hugging Face Parrot directory or a Hub id such as AIDC-AI/Parrot-7B "
              "(default: $PARROT_MODEL, else the model shipped with the package)")


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", metavar="PATH", help=MODEL_HELP)
    p.add_argument("--revision", metavar="REV", help="Hub branch, tag or commit of a -m Hub id (default: main)")
    p.add_argument("-t", "--threads", type=positive_int, metavar="N", help="worker threads (default: physical cores)")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N",
                   help="longest answer in tokens, at least 1 (default 512)")
    p.add_argument("--temperature", type=float_in(0.0, low_open=False), default=0.0, metavar="T",
                   help="0 = greedy, as the reference (default); above 0 samples")
    p.add_argument("--top-k", type=positive_int, metavar="K", help="sample from the K most likely tokens only")
    p.add_argument("--top-p", type=float_in(0.0, low_open=True, high=1.0), metavar="P",
                   help="sample from the smallest set of tokens holding probability P, 0 < P <= 1")
    p.add_argument("--repetition-penalty", type=float_in(0.0, low_open=True), metavar="R",
                   help="R > 0 penalises tokens already in the prompt or answer, as Hugging Face does (1 = "
                        "none, above 1 discourages repeats; applies to greedy decoding too)")
    p.add_argument("--seed", type=int_at_least(0), metavar="N", help="seed of the sampler (reproducible answers)")
    p.add_argument("--stop", action="append", metavar="TEXT",
                   help="end the answer before this text, which is not printed (repeatable)")
    p.add_argument("--system", metavar="TEXT", help="system prompt (default: the model's)")
    p.add_argument("--valid-utf8", action=argparse.BooleanOptionalAction, default=True,
                   help="never let the answer break a character (default); --no-valid-utf8 decodes exactly as the "
                        "reference, which shows a broken character as U+FFFD")


def _options(a: argparse.Namespace) -> Dict[str, Any]:
    return dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                repetition_penalty=a.repetition_penalty, seed=a.seed, stop=a.stop, valid_utf8=a.valid_utf8)


def _load(a: argparse.Namespace) -> "Any":
    import parrot
    from parrot.model import default_model_path
    return parrot.load(a.model or default_model_path(), threads=a.threads, revision=a.revision)


def _check_vision(model: Any, hint: str) -> None:
    """A picture given to a text-only model: one line saying what to type instead (the library's message
    speaks Python)."""
    if not model.config["has_vision"]:
        raise UserError(f"{model.path} has no vision tower (a text-only model): {hint}")


def _image_arg(path: str) -> Any:
    if path == "-":
        return sys.stdin.buffer.read()
    if not os.path.exists(path):
        raise UserError(f"{path}: no such image file")
    return path


# ---- commands
def cmd_generate(a: argparse.Namespace) -> int:
    model = _load(a)
    if not a.no_image:
        _check_vision(model, "add --no-image to ask without a picture")
    image = None if a.no_image else _image_arg(a.image)
    opts = _options(a)
    if a.json:
        r = model.run(image, a.prompt, system=a.system, **opts)
        print(json.dumps({"text": r.text, "token_ids": r.token_ids, "finish_reason": r.finish_reason,
                          "routing": None if r.routing is None else [float(x) for x in r.routing],
                          "image_cache_hit": r.image_cache_hit, "timings": r.timings}, ensure_ascii=False))
        return 0
    for piece in model.stream(image, a.prompt, system=a.system, **opts):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    return 0


def _read_message(prompt: str) -> Optional[str]:
    """One message; a line ending in a backslash continues on the next line. None at end of input."""
    lines: List[str] = []
    while True:
        shown = prompt if not lines else "... "
        try:
            if sys.stdin.isatty():
                line = input(shown)
            else:  # piped: keep stdout for the answers
                sys.stderr.write(shown)
                sys.stderr.flush()
                line = input()
        except EOFError:
            return "\n".join(lines) if lines else None
        if line.endswith("\\"):
            lines.append(line[:-1])
            continue
        lines.append(line)
        return "\n".join(lines)


#: The chat's commands and what they do (``/help`` prints this).
CHAT_COMMANDS = (
    ("/reset", "forget the conversation, keep the image"),
    ("/image PATH", "start a new conversation about another image (/image alone: without an image)"),
    ("/history", "print the conversation so far"),
    ("/help", "list these commands"),
    ("/exit, /quit", "leave (so does Ctrl-D)"),
)


def _chat_help() -> str:
    return "commands:\n" + "\n".join(f"  {name:14s} {what}" for name, what in CHAT_COMMANDS)


def cmd_chat(a: argparse.Namespace) -> int:
    import parrot
    model = _load(a)
    if a.image is not None:
        _check_vision(model, "start parrot chat without IMAGE")
    image = None if a.image is None else _image_arg(a.image)
    session = model.chat(image, system=a.system)
    opts = _options(a)
    names = ", ".join(name for name, _ in CHAT_COMMANDS)
    print(f"{model}\nAsk about the image. End a line with \\ to continue it. Commands: {names}.",
          file=sys.stderr)
    while True:
        try:
            msg = _read_message(">>> ")
        except KeyboardInterrupt:
            print(file=sys.stderr)
            return 0
        if msg is None:
            return 0
        text = msg.strip()
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return 0
        if text == "/reset":
            session.reset()
            print("(conversation cleared)", file=sys.stderr)
            continue
        if text == "/history":
            for turn in session.history:
                print(f"{turn['role']}: {turn['content']}")
            continue
        if text == "/help":
            print(_chat_help(), file=sys.stderr)
            continue
        if text == "/image" or text.startswith("/image "):
            path = text[len("/image"):].strip()
            try:
                if path:
                    _check_vision(model, "type /image alone for a conversation without an image")
                session.reset(image=_image_arg(path) if path else None)
            except (UserError, parrot.ParrotError, OSError, ValueError, TypeError) as e:
                print(f"parrot: {e}", file=sys.stderr)
                continue
            print(f"(new conversation about {path or 'no image'})", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; commands: {names} (/help explains them)",
                  file=sys.stderr)
            continue
        try:
            for piece in session.stream(msg, **opts):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        except KeyboardInterrupt:
            print("\n(interrupted; that question was forgotten)", file=sys.stderr)
        except (parrot.ParrotError, ValueError) as e:
            print(f"parrot: {e}", file=sys.stderr)


def cmd_convert(a: argparse.Namespace) -> int:
    from parrot.converter import DTYPES, convert
    from parrot.hub import is_hub_id, snapshot
    if a.dtype not in DTYPES:
        raise UserError(f"--dtype must be one of {', '.join(DTYPES)}, got {a.dtype!r}")
    source = a.hf_dir
    if not os.path.exists(source) and is_hub_id(source):
        source = snapshot(source, revision=a.revision, progress=not a.quiet)
    out = convert(source, a.output, clip=a.clip, dtype=a.dtype, force=a.force, progress=not a.quiet)
    print(out)
    return 0


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class _ModelOnce(argparse.Action):
    """``parrot info MODEL`` and ``parrot info -m MODEL`` both set ``model``; giving two is a usage error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: Optional[str] = None) -> None:
        if values is None:  # the optional positional, absent
            return
        if getattr(namespace, self.dest, None) not in (None, values):
            parser.error("give the model once: as MODEL or with -m/--model")
        setattr(namespace, self.dest, values)


def cmd_info(a: argparse.Namespace) -> int:
    import parrot
    from parrot.model import default_model_path
    given = a.model or default_model_path()
    # a checkpoint directory is converted once into the cache, as every command loads it; its file is shown
    m = parrot.load(given, threads=1)
    tensors = m.tensors()
    meta = {k: v for k, v in m.metadata.items() if not (isinstance(v, tuple) and v and v[0] == "array")}
    arrays = {k: v[1] for k, v in m.metadata.items() if isinstance(v, tuple) and v and v[0] == "array"}
    if a.json:
        print(json.dumps({"path": given, "gguf": m.path, "file_bytes": os.path.getsize(m.path), "config": m.config,
                          "metadata": meta, "arrays": arrays,
                          "tensors": [{"name": n, "dtype": d, "shape": list(s), "bytes": b}
                                      for n, d, s, b in tensors]}, ensure_ascii=False, default=str))
        return 0
    if os.path.isdir(given):
        print(f"{given}: Hugging Face checkpoint, converted to {m.path}")
    print(f"{m.path}: {_size(os.path.getsize(m.path))}, {len(tensors)} tensors")
    print("\nconfig:")
    for k, v in m.config.items():
        print(f"  {k:28s} {v}")
    print("\nmetadata:")
    for k, v in meta.items():
        print(f"  {k:40s} {v}")
    for k, n in arrays.items():
        print(f"  {k:40s} [{n} entries]")
    by_dtype: Dict[str, List[int]] = {}
    for _, d, _, b in tensors:
        by_dtype.setdefault(d, [0, 0])
        by_dtype[d][0] += 1
        by_dtype[d][1] += b
    print("\ntensors by dtype: " + ", ".join(f"{d}: {c} ({_size(b)})" for d, (c, b) in sorted(by_dtype.items())))
    print()
    for n, d, s, b in tensors:
        print(f"  {n:48s} {d:5s} {str(list(s)):20s} {_size(b)}")
    return 0


def _decode_seconds(model: Any, positions: int, steps: int) -> Tuple[float, int]:
    """Seconds for ``steps`` greedy decoding steps after a prompt of ``positions`` positions, timed alone and
    not stopped by end-of-text (a model may answer in a token or two), and the steps run (fewer only when
    the context runs out). What a step costs depends on the model and the KV cache's length, not on which
    tokens are in it, so the prompt is filler ids."""
    import numpy as np
    steps = max(0, min(steps, model.context_size - positions))
    ctx = model._core.new_context(positions + steps)
    logits = ctx.decode((np.arange(positions) % model.config["vocab_size"]).astype(np.int32))
    token = np.zeros(1, dtype=np.int32)
    t0 = time.perf_counter()
    for _ in range(steps):
        token[0] = int(np.argmax(logits))
        logits = ctx.decode(token)
    return time.perf_counter() - t0, steps


def cmd_bench(a: argparse.Namespace) -> int:
    """A small built-in timing of the stages on one model."""
    import numpy as np
    model = _load(a)
    print(f"parrot bench (built-in quick timing; the full benchmark suite lives in benchmarks/)\n{model}")
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8) if model.config["has_vision"] else None
    prompt = "Describe the picture in detail."
    rows = []
    for i in range(a.runs):
        model.image_cache.clear()
        r = model.run(img, prompt, max_new_tokens=1, temperature=0.0)
        rows.append(r.timings)
    best = {k: min(t[k] for t in rows) for k in ("preprocess_s", "vision_s", "moe_s", "prefill_s")}
    positions = int(rows[-1]["prompt_tokens"])
    decode = [_decode_seconds(model, positions, a.max_new_tokens) for _ in range(a.runs)]
    steps, decode_s = decode[0][1], min(t for t, _ in decode)
    print(f"  preprocess   {best['preprocess_s'] * 1000:9.1f} ms")
    print(f"  vision       {best['vision_s'] * 1000:9.1f} ms")
    print(f"  moe          {best['moe_s'] * 1000:9.1f} ms")
    print(f"  prefill      {best['prefill_s'] * 1000:9.1f} ms  ({positions} positions, "
          f"{positions / max(best['prefill_s'], 1e-9):.0f} positions/s)")
    if steps > 0:
        print(f"  decode       {steps / max(decode_s, 1e-9):9.1f} tokens/s  ({steps} tokens after the "
              f"{positions}-position prompt, end-of-text ignored)")
    else:
        print(f"  decode       not measured: the {positions}-position prompt fills the context")
    print(f"  best of {a.runs} run(s), {model.threads} threads")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from parrot import demo
    model = _load(a) if a.model or a.threads is not None else None  # None: the demo finds one (or builds one)
    return demo.run(model, max_new_tokens=a.max_new_tokens, paraphrases=a.paraphrases)


def cmd_serve(a: argparse.Namespace) -> int:
    try:
        from parrot.server import ServerConfig, serve
        import starlette, uvicorn  # noqa: F401
    except ImportError as e:
        raise UserError(f"parrot serve needs Starlette and uvicorn ({e}); install the [serve] extra, e.g. "
                        f"pip install -e '.[serve]'") from None
    model = _load(a)
    name = a.name or os.path.splitext(os.path.basename(model.path))[0]
    key = a.api_key if a.api_key is not None else os.environ.get("PARROT_API_KEY")
    cfg = ServerConfig(model_name=name, api_key=key or None, max_active=a.parallel, max_queue=a.max_queue,
                       max_body_bytes=a.max_body_bytes, max_image_bytes=min(a.max_body_bytes, 20 << 20),
                       max_image_pixels=a.max_image_pixels, max_tokens=a.max_tokens,
                       allow_remote_images=a.allow_remote_images, allow_local_images=a.allow_local_images)
    print(f"{model}\nserving {name!r} on http://{a.host}:{a.port}/v1 (Ctrl-C or SIGTERM to stop)", file=sys.stderr)
    serve(model, host=a.host, port=a.port, config=cfg, log_level=a.log_level)
    return 0


def build_parser() -> argparse.ArgumentParser:
    import parrot
    p = _Parser(prog="parrot", description="Fast CPU inference for Parrot, the multilingual vision-language "
                                           "model.")
    p.add_argument("--version", action="version", version=f"parrot {parrot.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    g = sub.add_parser("generate", help="answer a question about an image (streamed)",
                       description="Answer PROMPT about IMAGE, streaming the text to stdout.")
    g.add_argument("image", metavar="IMAGE", help="image file (PNG/JPEG), or - to read it from stdin")
    g.add_argument("prompt", metavar="PROMPT")
    g.add_argument("--no-image", action="store_true", help="ignore IMAGE: a text-only prompt")
    g.add_argument("--json", action="store_true", help="print one JSON object (text, token ids, routing, timings)")
    _model_args(g)
    _generation_args(g)
    g.set_defaults(func=cmd_generate)

    c = sub.add_parser("chat", help="interactive conversation about an image",
                       description="Chat about IMAGE. The image is encoded once and the conversation's KV cache is "
                                   "kept between questions. End a line with \\ to continue it on the next. "
                                   "Commands: " + "; ".join(f"{n}: {w}" for n, w in CHAT_COMMANDS) + ".")
    c.add_argument("image", metavar="IMAGE", nargs="?", help="image file (optional)")
    _model_args(c)
    _generation_args(c)
    c.set_defaults(func=cmd_chat)

    v = sub.add_parser("convert", help="convert a Hugging Face checkpoint to a parrot .gguf file",
                       description="Convert a Hugging Face Parrot (or Qwen2) checkpoint — a directory or a Hub id — "
                                   "to one GGUF file.")
    v.add_argument("hf_dir", metavar="HF_DIR_OR_ID")
    v.add_argument("-o", "--output", required=True, metavar="OUT")
    v.add_argument("--revision", metavar="REV", help="Hub branch, tag or commit (default: main)")
    v.add_argument("--clip", metavar="DIR_OR_ID",
                   help="CLIP checkpoint (directory or Hub id), if the checkpoint does not hold the tower and its "
                        "config's mm_vision_tower is not the one to use")
    v.add_argument("--dtype", default="f16",
                   help="weight type: f32, f16 (default), bf16, q8_0 or q4_0 (see README: size, speed, accuracy)")
    v.add_argument("--force", action="store_true", help="overwrite OUT")
    v.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    v.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="show a model's configuration, metadata and tensors",
                       description="Show a parrot .gguf file's configuration, metadata and tensors. A Hugging Face "
                                   "checkpoint directory is converted first (once, into the cache), as every "
                                   "command does; the converted file is shown.")
    i.add_argument("model", metavar="MODEL", nargs="?", action=_ModelOnce, help=MODEL_HELP)
    i.add_argument("-m", "--model", dest="model", metavar="PATH", action=_ModelOnce, help="the same as MODEL")
    i.add_argument("--json", action="store_true", help="print one JSON object")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time preprocessing, vision, MoE, prefill and decoding",
                       description="A quick built-in timing of each stage on one model (a random 640x480 picture, "
                                   "a fixed prompt): the best of --runs runs. Decoding is timed over "
                                   "--max-new-tokens tokens, generated even past the model's end of text.")
    _model_args(b)
    b.add_argument("--runs", type=positive_int, default=3, metavar="N", help="runs, at least 1 (default 3)")
    b.add_argument("--max-new-tokens", type=positive_int, default=32, metavar="N",
                   help="tokens decoded per run, at least 1 (default 32)")
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="ask about coloured shapes in six languages",
                       description="Ask about pictures of coloured shapes in the six MMMB languages (en, zh, pt, ar, "
                                   "tr, ru); print answers, MoE routing weights and timings. An installation "
                                   "without a model builds a random one (meaningless answers).")
    _model_args(d)
    d.add_argument("--max-new-tokens", type=positive_int, default=24, metavar="N",
                   help="longest answer in tokens, at least 1 (default 24)")
    d.add_argument("--paraphrases", action="store_true",
                   help="also ask each picture in a wording the shipped model was not trained on (held-out "
                        "paraphrases; expect many wrong answers)")
    d.set_defaults(func=cmd_demo)

    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (chat completions)",
                       description="Serve the model over HTTP with the OpenAI chat-completions API: POST "
                                   "/v1/chat/completions (JSON or server-sent events), GET /v1/models, GET /health. "
                                   "See docs/serving.md.")
    _model_args(s)
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    s.add_argument("--port", type=positive_int, default=8000, help="port (default 8000)")
    s.add_argument("--name", metavar="ID", help="the model id clients see (default: the file name)")
    s.add_argument("--api-key", metavar="KEY", help="require 'Authorization: Bearer KEY' (default $PARROT_API_KEY)")
    s.add_argument("--parallel", type=positive_int, default=8, metavar="N", help="requests generated together (default 8)")
    s.add_argument("--max-queue", type=int_at_least(0), default=64, metavar="N",
                   help="requests waiting beyond --parallel; more get 503 with Retry-After (default 64)")
    s.add_argument("--max-tokens", type=positive_int, default=512, metavar="N",
                   help="answer length when a request gives no max_tokens (default 512)")
    s.add_argument("--max-body-bytes", type=positive_int, default=32 << 20, metavar="N", help="request body limit (32 MiB)")
    s.add_argument("--max-image-pixels", type=positive_int, default=25_000_000, metavar="N",
                   help="image width x height limit (default 25000000)")
    s.add_argument("--allow-remote-images", action="store_true", help="accept http(s) image URLs (fetched with a "
                                                                        "10 s and size limit)")
    s.add_argument("--allow-local-images", action="store_true",
                   help="accept local file paths as image URLs (only for trusted clients)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    s.set_defaults(func=cmd_serve)

    try:  # the evaluation command, when its package imports
        from parrot.evaluation import cli as eval_cli
    except ImportError:
        pass
    else:
        eval_cli.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``parrot`` console script; returns the exit status."""
    import parrot
    args = build_parser().parse_args(argv)
    try:
        func = getattr(args, "func", None)
        if func is None:  # a command added by a plug-in parser without set_defaults(func=...)
            from parrot.evaluation import cli as eval_cli
            return int(eval_cli.main(args) or 0)
        return int(func(args) or 0)
    except KeyboardInterrupt:
        print("\nparrot: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except (UserError, parrot.ParrotError, FileNotFoundError, FileExistsError, IsADirectoryError,
            PermissionError, ValueError, TypeError) as e:
        if os.environ.get("PARROT_TRACEBACK"):
            raise
        msg = str(e).splitlines()
        first = msg[0] if msg else type(e).__name__
        print(f"parrot: error: {first}", file=sys.stderr)
        for line in msg[1:]:
            print(f"  {line}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
