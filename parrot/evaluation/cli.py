"""``parrot eval FILE.tsv [FILE.tsv ...] [--model M] -o OUTDIR``: the command-line face of parrot.evaluate.

The CLI owner mounts it with ``add_parser(subparsers)``; ``python -m parrot.evaluation.cli ...`` runs it alone.
"""
from __future__ import annotations

import argparse
import logging
import sys
import warnings
from typing import Any, List, Optional

from parrot.cli import MODEL_HELP, positive_int

__all__ = ["add_parser", "main", "build_parser"]

DESCRIPTION = """Evaluate a Parrot model on VLMEvalKit multiple-choice TSVs (MMMB, multilingual MMBench, or
your own) and score it exactly as VLMEvalKit scores Parrot: the Parrot wrapper's prompt and answer clean-up,
exact matching of the option letter, vanilla scoring (MMMB) or circular scoring (names containing "mmbench").
Writes predictions.jsonl (resumable with --resume), predictions.csv, accuracy.csv/.json, accuracy.png and
routing.png to OUTDIR."""


def _configure(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("files", nargs="+", metavar="FILE.tsv",
                   help="benchmark TSVs (the _xx suffix of each name picks its instruction and language)")
    p.add_argument("-m", "--model", metavar="PATH", help=MODEL_HELP)
    p.add_argument("-o", "--out", "--output", dest="out", required=True, metavar="OUTDIR",
                   help="output directory")
    p.add_argument("--lang", help="report every file under this language (en, zh/cn, pt, ar, tr, ru) instead of "
                                  "its name's suffix; the prompts still follow the file names, as in VLMEvalKit")
    p.add_argument("--scoring", choices=["auto", "vanilla", "circular"], default="auto",
                   help="auto: circular for names containing 'mmbench', else vanilla (default)")
    p.add_argument("--max-new-tokens", type=positive_int, default=512, metavar="N",
                   help="longest answer, at least 1 (default 512, as the reference evaluation)")
    p.add_argument("-t", "--threads", type=positive_int, default=None, metavar="N",
                   help="threads per model (default: physical cores; with -j N or --ray: cores / N)")
    p.add_argument("-j", "--workers", type=positive_int, default=1, metavar="N",
                   help="model processes on this machine (default 1)")
    p.add_argument("--ray", action="store_true", help="run as a Ray Data job (pip install 'parrot-vlm[ray]')")
    p.add_argument("--ray-address", default=None, help="Ray cluster address for ray.init (default: local/auto)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUTDIR")
    p.add_argument("--overwrite", action="store_true", help="discard a previous run in OUTDIR")
    p.add_argument("--no-reference-jpeg", dest="reference_jpeg", action="store_false",
                   help="feed the TSV's image bytes as they are instead of re-encoding them as JPEG the way "
                        "VLMEvalKit does (which needs Pillow)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=main)
    return p


def add_parser(subparsers: "argparse._SubParsersAction[Any]") -> argparse.ArgumentParser:
    """Adds the ``eval`` subcommand to an argparse subparsers object."""
    p = subparsers.add_parser("eval", help="evaluate on MMMB / multilingual MMBench TSVs",
                              description=DESCRIPTION)
    return _configure(p)


def build_parser() -> argparse.ArgumentParser:
    return _configure(argparse.ArgumentParser(prog="parrot eval", description=DESCRIPTION))


def _warn(message: "Warning | str", category: type, filename: str, lineno: int, file: Any = None,
          line: Optional[str] = None) -> None:
    # a warning (an MD5 mismatch, a file without a language suffix) is one line for the user, not a source line
    print(f"parrot eval: warning: {message}", file=sys.stderr)


def main(args: argparse.Namespace) -> int:
    """Runs ``parrot eval`` with parsed arguments; returns the exit status: 0, or 1 when the run cannot be
    done (a missing or unreadable TSV or model, a journal of another run); argparse exits 2 on bad usage."""
    from parrot.evaluation.api import evaluate
    from parrot.evaluation.runner import JournalError, WorkerError
    from parrot.evaluation.tsv import TSVError
    from parrot.model import default_model_path
    import parrot

    log = logging.getLogger("parrot.evaluation")   # the library logs the resume line: show it on stderr
    handler = logging.StreamHandler(sys.stderr)
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        model = args.model or default_model_path()
        with warnings.catch_warnings():
            warnings.showwarning = _warn
            r = evaluate(args.files, model, args.out, lang=args.lang, scoring=args.scoring,
                         max_new_tokens=args.max_new_tokens, threads=args.threads, workers=args.workers,
                         ray=args.ray, ray_address=args.ray_address, resume=args.resume, overwrite=args.overwrite,
                         reference_jpeg=args.reference_jpeg, plots=args.plots, progress=not args.quiet)
    except (TSVError, JournalError, WorkerError, parrot.ParrotError, ImportError, ValueError, OSError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"parrot eval: error: {first}", file=sys.stderr)
        return 1
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    print(r.table)
    return 0


if __name__ == "__main__":
    sys.exit(main(build_parser().parse_args(sys.argv[1:])))
