"""``parrot.evaluate``: score a model on VLMEvalKit TSVs (MMMB, multilingual MMBench, or your own)."""
from __future__ import annotations

import logging
import math
import os
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from parrot.evaluation.report import format_table, summarize, write_outputs
from parrot.evaluation.runner import JOURNAL_VERSION, Journal, ModelSpec, make_tasks, run_tasks
from parrot.evaluation.score import score_rows
from parrot.evaluation.tsv import Benchmark, TSVError, load_benchmark

__all__ = ["evaluate", "EvalResult"]

log = logging.getLogger("parrot.evaluation")

PathLike = Union[str, "os.PathLike[str]"]


@dataclass
class EvalResult:
    """What :func:`evaluate` found: the summary (as written to accuracy.json), the printed table, the
    per-question scores of each benchmark, and the paths of the files written."""

    summary: Dict[str, Any]
    table: str
    scored: Dict[str, List[Dict[str, Any]]]
    paths: Dict[str, str]

    @property
    def accuracy(self) -> float:
        """Overall accuracy over all questions of all files (a fraction)."""
        return float(self.summary["overall"]["accuracy"])


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and math.isnan(x):
        return None
    if isinstance(x, dict):
        return {k: _nan_to_none(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def evaluate(files: Union[PathLike, Sequence[PathLike]], model: Any, out_dir: PathLike, *,
             lang: Optional[str] = None, scoring: str = "auto", max_new_tokens: int = 512,
             threads: Optional[int] = None, workers: int = 1, ray: bool = False,
             ray_address: Optional[str] = None, resume: bool = False, overwrite: bool = False,
             reference_jpeg: bool = True, plots: bool = True, progress: bool = True,
             verbose: bool = True) -> EvalResult:
    """Evaluates ``model`` on VLMEvalKit multiple-choice TSVs as VLMEvalKit scores Parrot.

    files: one or more TSVs; each file's name picks the instruction as the reference does (``_cn``, ``_pt``,
        ``_ar``, ``_ru``, ``_tr``, case-sensitive; see docs/evaluation.md) and the language it is reported
        under (``_en``, ``_cn``/``_zh``, ``_pt``, ``_ar``, ``_tr``, ``_ru``); ``lang`` sets the latter only.
        Names containing "mmbench" are scored circularly, others (MMMB) vanilla; ``scoring`` forces one.
    model: a model file path (each process calls ``parrot.load(path, threads=threads)``), a zero-argument
        factory returning a model (picklable for ``workers``/``ray``), or a loaded model (serial runs only).
    out_dir: gets ``predictions.jsonl`` (the resumable journal), ``predictions.csv``, ``accuracy.csv``,
        ``accuracy.json``, ``accuracy.png`` and ``routing.png``.
    max_new_tokens: 512 as the reference; decoding is greedy.
    workers: processes on this machine, each with its own model (``threads`` each; default cores/workers).
    ray: run as a Ray Data job (actor pool of ``workers`` actors) on the cluster ``ray.init(ray_address)``
        reaches, or on the one already initialised. Needs ``pip install 'parrot-vlm[ray]'``. A Ray that this call
        starts is shut down at its end, and the process's SIGTERM/SIGINT handlers are put back.
    resume: continue the journal in ``out_dir`` (rows already there are not run again).
    reference_jpeg: re-encode each image as JPEG first, as VLMEvalKit does before Parrot sees it (Pillow).
    progress: a tqdm bar on stderr. verbose: log a resumed run's counts (INFO) and the table (DEBUG) on the
        ``parrot.evaluation`` logger; nothing is printed (``parrot eval`` prints the table). Rows that could
        not be evaluated are reported with :func:`warnings.warn`.
    """
    if isinstance(files, (str, os.PathLike)):
        files = [files]
    files = [os.fspath(f) for f in files]
    if not files:
        raise ValueError("no TSV files given")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be a positive int, got {workers!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if threads is None and (workers > 1 or ray):
        threads = max(1, (os.cpu_count() or 1) // workers)

    if isinstance(model, (str, os.PathLike)):
        if not os.path.exists(model):  # before anything is written to out_dir
            raise FileNotFoundError(f"{os.fspath(model)}: no such model file or checkpoint directory")
        spec = ModelSpec(os.fspath(model), threads)
    elif hasattr(model, "run"):
        if workers > 1 or ray:
            raise ValueError("a loaded model cannot be shared with worker processes: pass its path or a "
                             "picklable factory")
        spec = ModelSpec(lambda: model, threads)
    elif callable(model):
        spec = ModelSpec(model, threads)
    else:
        raise TypeError(f"model must be a path, a factory or a loaded model, got {type(model).__name__}")

    for f in files:  # every file can be opened before any is read (and warned about)
        try:
            open(f, "rb").close()
        except OSError as e:
            raise TSVError(f"{f}: cannot open: {e.strerror}") from None
    benches: List[Benchmark] = [load_benchmark(f, lang=lang, scoring=scoring) for f in files]
    names = [b.name for b in benches]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two files share the dataset name {dup[0]!r}: rows are keyed by file name + index")

    out_dir = os.fspath(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    if isinstance(spec.source, str):
        described = spec.describe()
    elif hasattr(model, "run"):
        described = "instance:" + os.fspath(getattr(model, "path", type(model).__qualname__))
    else:
        described = "factory:" + spec.describe()
    meta = {"version": JOURNAL_VERSION, "model": described, "max_new_tokens": max_new_tokens, "reference_jpeg": reference_jpeg}
    journal = Journal(os.path.join(out_dir, "predictions.jsonl"), meta, resume=resume, overwrite=overwrite)
    try:
        groups = make_tasks(benches, journal.records)
        total = sum(len(g) for g in groups)
        if verbose and journal.records and total:
            log.info("resuming: %d rows already done, %d to run", len(journal.records), total)
        bar = None
        if progress and total:
            from tqdm import tqdm
            bar = tqdm(total=total, unit="row", desc="eval", dynamic_ncols=True)
        t0 = time.perf_counter()
        run = 0
        for rec in run_tasks(groups, spec, max_new_tokens=max_new_tokens, reference_jpeg=reference_jpeg,
                             workers=workers, ray=ray, ray_address=ray_address):
            journal.add(rec)
            run += 1
            if bar is not None:
                bar.update(1)
        seconds = time.perf_counter() - t0
        if bar is not None:
            bar.close()
    finally:
        journal.close()

    records = journal.records
    scored = {b.name: score_rows(b, {k[1]: v for k, v in records.items() if k[0] == b.name}) for b in benches}
    summary = summarize(benches, scored, records, described)
    mine = [records[(b.name, str(r.index))] for b in benches for r in b.rows if (b.name, str(r.index)) in records]
    looked = [r for r in mine if r.get("cache_hit") is not None]
    hits = sum(1 for r in looked if r["cache_hit"])
    summary["throughput"] = {
        "rows_run": run, "seconds": seconds, "rows_per_second": run / seconds if seconds > 0 else 0.0,
        "cache_lookups": len(looked), "cache_hits": hits,
        "cache_hit_rate": hits / len(looked) if looked else 0.0,
        "seconds_saved": sum(r.get("saved_seconds") or 0.0 for r in mine),
        "workers": workers, "ray": bool(ray)}
    summary["errors"] = [{"dataset": r["dataset"], "index": r["index"], "error": r["error"]}
                         for r in mine if r.get("error")]
    summary = _nan_to_none(summary)
    table = format_table(summary)
    paths = write_outputs(summary, benches, scored, records, out_dir, plots=plots)
    paths["journal"] = journal.path
    if verbose:
        log.debug("%s", table)
    if summary["errors"]:
        warnings.warn(f"{len(summary['errors'])} rows could not be evaluated (counted wrong); first: "
                      f"{summary['errors'][0]['error']}", stacklevel=2)
    return EvalResult(summary=summary, table=table, scored=scored, paths=paths)
