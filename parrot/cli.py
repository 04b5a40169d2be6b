"""The ``parrot`` command line (also ``python -m parrot``).

    parrot generate cat.jpg "What is in the picture?"     # streams the answer
    parrot chat cat.jpg                                    # interactive; /reset, /image PATH, /history, /exit
    parrot convert Parrot-7B/ -o parrot-7b.gguf --clip clip-vit-large-patch14-336/
    parrot info parrot-7b.gguf
    parrot bench
    parrot demo

Wrong usage exits with status 2 and a one-line reason; a user error (missing file, bad model, bad image)
prints one line, without a traceback, and exits with status 1; Ctrl-C exits with 130.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

__all__ = ["main", "build_parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error message."""

    def error(self, message: str) -> "None":  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class UserError(Exception):
    """A problem the user can fix; printed as one line."""


def _model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", metavar="MODEL",
                   help="a parrot .gguf file, a Hugging Face Parrot directory or Hub id such as AIDC-AI/Parrot-7B "
                        "(default: $PARROT_MODEL, else the model shipped with the package)")
    p.add_argument("--revision", metavar="REV", help="Hub branch, tag or commit of a -m Hub id (default: main)")
    p.add_argument("-t", "--threads", type=int, metavar="N", help="worker threads (default: physical cores)")


def _generation_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-new-tokens", type=int, default=512, metavar="N", help="longest answer (default 512)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy, as the reference (default)")
    p.add_argument("--top-k", type=int, metavar="K")
    p.add_argument("--top-p", type=float, metavar="P")
    p.add_argument("--repetition-penalty", type=float, metavar="R")
    p.add_argument("--seed", type=int)
    p.add_argument("--stop", action="append", metavar="TEXT", help="stop at this text (repeatable)")
    p.add_argument("--system", metavar="TEXT", help="system prompt (default: the model's)")


def _options(a: argparse.Namespace) -> Dict[str, Any]:
    return dict(max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_k=a.top_k, top_p=a.top_p,
                repetition_penalty=a.repetition_penalty, seed=a.seed, stop=a.stop)


def _load(a: argparse.Namespace) -> "Any":
    import parrot
    if a.threads is not None and a.threads < 1:
        raise UserError(f"--threads must be at least 1, got {a.threads}")
    from parrot.model import default_model_path
    return parrot.load(a.model or default_model_path(), threads=a.threads, revision=a.revision)


def _image_arg(path: str) -> Any:
    if path == "-":
        return sys.stdin.buffer.read()
    if not os.path.exists(path):
        raise UserError(f"{path}: no such image file")
    return path


# ---- commands
def cmd_generate(a: argparse.Namespace) -> int:
    model = _load(a)
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


def cmd_chat(a: argparse.Namespace) -> int:
    import parrot
    model = _load(a)
    image = None if a.image is None else _image_arg(a.image)
    session = model.chat(image, system=a.system)
    opts = _options(a)
    print(f"{model}\nAsk about the image. End a line with \\ to continue it. Commands: /reset, /image PATH, "
          f"/history, /exit.", file=sys.stderr)
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
        if text.startswith("/image"):
            path = text[len("/image"):].strip()
            try:
                session.reset(image=_image_arg(path) if path else None)
            except (UserError, parrot.ParrotError, OSError, ValueError, TypeError) as e:
                print(f"parrot: {e}", file=sys.stderr)
                continue
            print(f"(new conversation about {path or 'no image'})", file=sys.stderr)
            continue
        if text.startswith("/"):
            print(f"unknown command {text.split()[0]}; commands: /reset, /image PATH, /history, /exit",
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


def cmd_info(a: argparse.Namespace) -> int:
    import parrot
    if not os.path.isfile(a.model):
        raise UserError(f"{a.model}: no such model file")
    m = parrot.Model(a.model, threads=1)
    tensors = m.tensors()
    meta = {k: v for k, v in m.metadata.items() if not (isinstance(v, tuple) and v and v[0] == "array")}
    arrays = {k: v[1] for k, v in m.metadata.items() if isinstance(v, tuple) and v and v[0] == "array"}
    if a.json:
        print(json.dumps({"path": a.model, "file_bytes": os.path.getsize(a.model), "config": m.config,
                          "metadata": meta, "arrays": arrays,
                          "tensors": [{"name": n, "dtype": d, "shape": list(s), "bytes": b}
                                      for n, d, s, b in tensors]}, ensure_ascii=False, default=str))
        return 0
    print(f"{a.model}: {_size(os.path.getsize(a.model))}, {len(tensors)} tensors")
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
        r = model.run(img, prompt, max_new_tokens=a.max_new_tokens, temperature=0.0)
        rows.append(r.timings)
    best = {k: min(t[k] for t in rows) for k in ("preprocess_s", "vision_s", "moe_s", "prefill_s")}
    tps = max(t["decode_tokens_per_s"] for t in rows)
    n = rows[-1]
    print(f"  preprocess   {best['preprocess_s'] * 1000:9.1f} ms")
    print(f"  vision       {best['vision_s'] * 1000:9.1f} ms")
    print(f"  moe          {best['moe_s'] * 1000:9.1f} ms")
    print(f"  prefill      {best['prefill_s'] * 1000:9.1f} ms  ({n['prompt_tokens']:.0f} positions, "
          f"{n['prompt_tokens'] / max(best['prefill_s'], 1e-9):.0f} positions/s)")
    print(f"  decode       {tps:9.1f} tokens/s  ({n['new_tokens']:.0f} tokens)")
    print(f"  best of {a.runs} run(s), {model.threads} threads")
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from parrot import demo
    model = _load(a) if a.model else None
    return demo.run(model, max_new_tokens=a.max_new_tokens)


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
                                   "kept between questions.")
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

    i = sub.add_parser("info", help="show a model file's configuration, metadata and tensors",
                       description="Show a parrot .gguf file's configuration, metadata and tensors.")
    i.add_argument("model", metavar="MODEL")
    i.add_argument("--json", action="store_true")
    i.set_defaults(func=cmd_info)

    b = sub.add_parser("bench", help="time preprocessing, vision, MoE, prefill and decoding",
                       description="A quick built-in timing of each stage on one model.")
    _model_args(b)
    b.add_argument("--runs", type=int, default=3)
    b.add_argument("--max-new-tokens", type=int, default=32)
    b.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="ask about coloured shapes in six languages",
                       description="Ask about pictures of coloured shapes in the six MMMB languages (en, zh, pt, ar, "
                                   "tr, ru); print answers, MoE routing weights and timings. Without a trained "
                                   "model it builds a random one (meaningless answers).")
    _model_args(d)
    d.add_argument("--max-new-tokens", type=int, default=24)
    d.set_defaults(func=cmd_demo)

    try:  # the evaluation engineer's command, when present
        from parrot.evaluate import cli as eval_cli
    except ImportError:
        eval_cli = None
    if eval_cli is not None:
        eval_cli.add_parser(sub)
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``parrot`` console script; returns the exit status."""
    import parrot
    args = build_parser().parse_args(argv)
    try:
        func = getattr(args, "func", None)
        if func is None:  # a command added by a plug-in parser without set_defaults(func=...)
            from parrot.evaluate import cli as eval_cli
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
