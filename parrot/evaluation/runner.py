"""Running the model over benchmark rows: serially, on N local processes, or as a Ray Data job.

Every finished row becomes one JSON line appended to a journal (``predictions.jsonl``) and flushed, so a run
that is killed loses at most the row in flight; ``resume`` reads the journal, drops a torn last line, and runs
only the rows it does not hold. A file that is not a journal (junk, a line that is not a record) is an error
naming the line unless ``overwrite``. Rows are keyed by (dataset name, index), so a row is never counted twice.

Rows are ordered so that rows sharing an image (MMMB's language splits of one picture) are adjacent and go to
the same worker: the model's image-feature cache then encodes the picture once.

What the model sees, as VLMEvalKit feeds Parrot (vlmeval/dataset/image_base.py ``dump_image`` →
vlmeval/smp/vlm.py ``decode_base64_to_image_file``): the base64 field is decoded, an RGBA/P/LA image converted
to RGB, and the picture saved as ``{index}.jpg`` — a JPEG re-encode with Pillow's defaults — which Parrot then
opens. ``reference_jpeg=True`` (the default) repeats that re-encode (it needs Pillow); ``False`` passes the
decoded bytes straight to the model.
"""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

from parrot.evaluation.extract import postprocess
from parrot.evaluation.prompts import build_prompt
from parrot.evaluation.tsv import Benchmark, decode_image
from parrot.image import load_image

__all__ = ["ModelSpec", "Journal", "make_tasks", "run_tasks", "JournalError", "WorkerError"]

JOURNAL_VERSION = 1
JSONDict = Dict[str, Any]  # a task, a journal record, the run's metadata


class JournalError(RuntimeError):
    """The journal in the output directory does not belong to this run."""


class WorkerError(RuntimeError):
    """A Ray worker could not load the model (or start at all). Raised once the dataset has run to its end:
    rows that other workers answered are in the journal, so a resume runs only the rest."""


@dataclass(frozen=True)
class ModelSpec:
    """How each process gets its model: a model file path (``parrot.load(path, threads=threads)``) or a
    picklable zero-argument factory (for workers/Ray it must be importable by name)."""

    source: Union[str, Callable[[], Any]]
    threads: Optional[int] = None

    def load(self) -> Any:
        if callable(self.source):
            return self.source()
        import parrot
        return parrot.load(self.source, threads=self.threads)

    def describe(self) -> str:
        if callable(self.source):
            return f"{getattr(self.source, '__module__', '?')}.{getattr(self.source, '__qualname__', '?')}"
        return os.path.abspath(os.fspath(self.source))


def make_tasks(benches: Sequence[Benchmark], done: Dict[Tuple[str, str], JSONDict]) -> List[List[JSONDict]]:
    """The rows still to run, as groups of rows sharing one image, in first-appearance order."""
    groups: Dict[str, List[JSONDict]] = {}
    for b in benches:
        for row in b.rows:
            if (b.name, str(row.index)) in done:
                continue
            groups.setdefault(row.image_key, []).append({
                "dataset": b.name, "index": row.index, "prompt": build_prompt(row, b.name),
                "image": row.image, "image_error": row.image_error, "key": row.image_key})
    return list(groups.values())


def _reference_jpeg(data: bytes) -> bytes:
    """VLMEvalKit's decode_base64_to_image_file: open, RGBA/P/LA → RGB, save as .jpg (Pillow defaults)."""
    from PIL import Image, UnidentifiedImageError
    from parrot.errors import ImageError
    try:
        im: Image.Image = Image.open(io.BytesIO(data))
        if im.mode in ("RGBA", "P", "LA"):
            im = im.convert("RGB")
        out = io.BytesIO()
        im.save(out, format="JPEG")
    except UnidentifiedImageError:
        raise ImageError(f"not an image Pillow can identify ({len(data)} bytes)") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageError(f"Pillow cannot re-encode it as JPEG: {e}") from None
    return out.getvalue()


class Worker:
    """One model in one process, answering task dicts with journal records."""

    def __init__(self, spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool):
        self.model = spec.load()
        self.max_new_tokens = max_new_tokens
        self.reference_jpeg = reference_jpeg
        self._last_image: Tuple[Optional[str], bytes] = (None, b"")
        if reference_jpeg:
            try:
                import PIL  # noqa: F401
            except ImportError:
                raise ImportError("reference_jpeg needs Pillow (VLMEvalKit re-encodes every image as JPEG before "
                                  "Parrot sees it); install pillow, or pass --no-reference-jpeg / "
                                  "reference_jpeg=False to feed the TSV's image bytes as they are") from None

    def _image_bytes(self, task: JSONDict) -> bytes:
        if self._last_image[0] == task["key"]:
            return self._last_image[1]
        data = decode_image(task["image"])
        if self.reference_jpeg:
            data = _reference_jpeg(data)
        self._last_image = (task["key"], data)
        return data

    def _cache_saved(self) -> float:
        info = getattr(self.model, "image_cache_info", None)
        if info is None:
            return 0.0
        i = info()
        return float(getattr(i, "seconds_saved", 0.0) if not isinstance(i, dict) else i.get("seconds_saved", 0.0))

    def run(self, task: JSONDict) -> JSONDict:
        rec = {"dataset": task["dataset"], "index": task["index"], "prompt": task["prompt"], "raw": None,
               "prediction": None, "error": None, "routing": None, "cache_hit": None, "seconds": 0.0,
               "saved_seconds": 0.0}
        if task["image_error"]:
            rec["error"] = task["image_error"]
            return rec
        t0 = time.perf_counter()
        saved0 = self._cache_saved()
        try:
            # decoded here without EXIF orientation: VLMEvalKit opens benchmark images as stored (the model's
            # own image loading would turn them upright)
            image = load_image(self._image_bytes(task), exif=False)
            result = None
        except ValueError as e:
            result = e  # bad base64, or Pillow could not re-encode it (parrot.ImageError is a ValueError)
        if not isinstance(result, Exception):
            try:
                result = self.model.run(image, task["prompt"], max_new_tokens=self.max_new_tokens)
            except ValueError as e:
                # parrot.ImageError (the model could not decode it) or a prompt longer than the context:
                # a per-row error, like a bad base64 field
                result = e
        if isinstance(result, Exception):
            rec["error"] = f"{task['dataset']} index {task['index']}: {type(result).__name__}: {result}"
            rec["seconds"] = time.perf_counter() - t0
            return rec
        rec["seconds"] = time.perf_counter() - t0
        rec["saved_seconds"] = max(0.0, self._cache_saved() - saved0)
        rec["raw"] = result.text
        rec["prediction"] = postprocess(result.text, task["prompt"])
        routing = getattr(result, "routing", None)
        rec["routing"] = None if routing is None else [float(x) for x in list(routing)]
        rec["finish_reason"] = getattr(result, "finish_reason", None)
        hit = getattr(result, "image_cache_hit", None)
        rec["cache_hit"] = None if hit is None else bool(hit)
        return rec


def _read_journal(path: str) -> Tuple[Optional[JSONDict], List[JSONDict], int]:
    """The header, the row records and the length of the complete lines of a journal file.

    Anything that is not a journal — binary junk, a line that is not JSON, a first line that is not a header,
    a later one that is not a row record — is a JournalError naming the line, so a resume never silently
    drops someone's file. A last line without its newline is a row torn by a kill: not counted (the caller
    cuts it off before appending)."""
    with open(path, "rb") as f:
        data = f.read()
    end = data.rfind(b"\n") + 1
    lines = data[:end].split(b"\n")[:-1]
    if not lines and data.strip():
        raise JournalError(f"{path}: line 1 is not a parrot eval journal header (not a journal?); pass "
                           "--overwrite to replace it")
    head: Optional[JSONDict] = None
    records: List[JSONDict] = []
    for n, raw in enumerate(lines, start=1):
        try:
            obj = json.loads(raw.decode("utf-8"))
            if n == 1:
                head = obj["_meta"]
                if not isinstance(head, dict):
                    raise TypeError
            else:
                obj["dataset"], obj["index"]  # noqa: B018 - a row record has both
                records.append(obj)
        except (ValueError, KeyError, TypeError, IndexError):
            what = "a parrot eval journal header" if n == 1 else "a row record"
            raise JournalError(f"{path}: line {n} is not {what}; pass --overwrite to start again") from None
    return head, records, end


class Journal:
    """The append-only JSONL of finished rows, with a first line describing the run."""

    def __init__(self, path: str, meta: JSONDict, *, resume: bool, overwrite: bool):
        self.path = path
        self.records: Dict[Tuple[str, str], JSONDict] = {}
        if os.path.exists(path) and (resume or not overwrite):
            head, records, end = _read_journal(path)
            # a journal without a finished row (a run that failed before its first row, e.g. on a missing
            # model) holds nothing to keep, so it does not stand in the way of the next run
            if records and not resume:
                raise JournalError(f"{path} exists: pass resume=True (--resume) to continue that run, or "
                                   "overwrite=True (--overwrite) to start again")
            if records:
                self._load(meta, head or {}, records, end)
                self.f = open(path, "a", encoding="utf-8")
                return
        self.f = open(path, "w", encoding="utf-8")
        self._write({"_meta": meta})

    def _load(self, meta: JSONDict, head: JSONDict, records: List[JSONDict], end: int) -> None:
        for k in ("version", "model", "max_new_tokens", "reference_jpeg"):
            if head.get(k) != meta.get(k):
                raise JournalError(f"{self.path}: was written with {k}={head.get(k)!r}, this run has "
                                   f"{meta.get(k)!r}; use another output directory or --overwrite")
        if os.path.getsize(self.path) > end:
            # the run was killed while writing its last line: drop the torn part
            with open(self.path, "r+b") as f:
                f.truncate(end)
        for rec in records:
            self.records.setdefault((rec["dataset"], str(rec["index"])), rec)

    def _write(self, obj: JSONDict) -> None:
        self.f.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self.f.flush()

    def add(self, rec: JSONDict) -> None:
        key = (rec["dataset"], str(rec["index"]))
        if key in self.records:
            return
        self.records[key] = rec
        self._write(rec)

    def close(self) -> None:
        self.f.close()


# --- executors -------------------------------------------------------------------------------------------

def _serial(groups: Sequence[List[JSONDict]], spec: ModelSpec, max_new_tokens: int,
            reference_jpeg: bool) -> Iterator[JSONDict]:
    worker = Worker(spec, max_new_tokens, reference_jpeg)
    for group in groups:
        for task in group:
            yield worker.run(task)


_WORKER: Optional[Worker] = None
_WORKER_ERROR: Optional[BaseException] = None


def _pool_init(spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool) -> None:
    # an exception here would make the pool replace the worker forever (a hang): keep it for the first task,
    # which sends it to the parent
    global _WORKER, _WORKER_ERROR
    try:
        _WORKER = Worker(spec, max_new_tokens, reference_jpeg)
    except Exception as e:
        _WORKER_ERROR = e


def _pool_group(group: List[JSONDict]) -> List[JSONDict]:
    if _WORKER_ERROR is not None:
        raise _WORKER_ERROR
    assert _WORKER is not None  # _pool_init made it, or kept the error raised above
    return [_WORKER.run(task) for task in group]


def _processes(groups: Sequence[List[JSONDict]], spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool,
               workers: int) -> Iterator[JSONDict]:
    import multiprocessing as mp
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no inherited threads or model state
    with ctx.Pool(workers, initializer=_pool_init, initargs=(spec, max_new_tokens, reference_jpeg)) as pool:
        for recs in pool.imap_unordered(_pool_group, groups, chunksize=1):
            yield from recs


class RayPredictor:
    """A Ray Data actor: loads the model once, then answers batches of serialized tasks."""

    def __init__(self, spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool):
        # raised here (or in __call__), the error would reach the driver as an ActorDiedError or a
        # UserCodeException holding only a traceback text: send it back as a record instead
        self.error: Optional[str] = None
        try:
            self.worker = Worker(spec, max_new_tokens, reference_jpeg)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"

    def __call__(self, batch: Dict[str, Any]) -> Dict[str, Any]:
        import numpy as np
        if self.error is not None:
            failed = json.dumps({"_worker_error": self.error}, ensure_ascii=False)
            return {"record": np.array([failed] * len(batch["task"]), dtype=object)}
        out = [json.dumps(self.worker.run(json.loads(t)), ensure_ascii=False) for t in batch["task"]]
        return {"record": np.array(out, dtype=object)}


def ray_dataset(groups: Sequence[List[JSONDict]], spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool,
                actors: int, batch_size: int = 4) -> Any:
    """The evaluation as a Ray Dataset of JSON records (lazy; iterate it to run). Rows of one image stay
    adjacent, so a batch mostly holds one image's languages and its actor's cache serves them."""
    import ray.data
    items = [{"task": json.dumps(task, ensure_ascii=False)} for group in groups for task in group]
    ds = ray.data.from_items(items)
    return ds.map_batches(RayPredictor, batch_size=batch_size,
                          compute=ray.data.ActorPoolStrategy(size=actors),
                          num_cpus=spec.threads or 1,
                          fn_constructor_kwargs=dict(spec=spec, max_new_tokens=max_new_tokens,
                                                     reference_jpeg=reference_jpeg))


def _close_ray_rows(rows: Any, threads_before: "set[threading.Thread]", timeout: float = 10.0) -> None:
    """Stops a Ray Data row iteration that may have been left early (the caller stopped, Ctrl-C).

    Ray Data hands batches to the consumer through daemon threads (named "iter_threaded" in Ray 2.x); closing
    the iterator only asks them to stop, and one still fetching a block when ray.shutdown runs makes Ray end
    the whole process with status 1 ("The core worker has already been shutdown"), whoever calls
    ray.shutdown. So wait, boundedly, for the threads this iteration started."""
    close = getattr(rows, "close", None)
    if close is not None:
        close()
    deadline = time.monotonic() + timeout
    for t in set(threading.enumerate()) - threads_before:
        if t.name == "iter_threaded" and t is not threading.current_thread():
            t.join(max(0.0, deadline - time.monotonic()))


def _ray(groups: Sequence[List[JSONDict]], spec: ModelSpec, max_new_tokens: int, reference_jpeg: bool,
         workers: int, ray_address: Optional[str]) -> Iterator[JSONDict]:
    try:
        import ray
    except ImportError:
        raise ImportError("--ray needs Ray Data: pip install 'parrot-vlm[ray]' (ray[data], pandas)") from None
    started = not ray.is_initialized()
    if started:
        # ray.init replaces the process's SIGTERM handler with one that exits with status 1; a Ray that parrot
        # starts is parrot's to stop, and the caller's handlers come back afterwards
        handlers = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        ray.init(address=ray_address)
    threads_before = set(threading.enumerate())
    rows = None
    try:
        ds = ray_dataset(groups, spec, max_new_tokens, reference_jpeg, workers)
        rows = iter(ds.iter_rows())
        worker_error = None
        for row in rows:
            rec = json.loads(row["record"])
            if "_worker_error" in rec:
                # the dataset is drained, not abandoned (see below); a failed actor answers each batch with
                # this record at once, and the rows healthy actors finish still reach the journal
                worker_error = worker_error or rec["_worker_error"]
                continue
            yield rec
        if worker_error is not None:
            raise WorkerError(f"a Ray worker could not start: {worker_error}")
    finally:
        if rows is not None:
            _close_ray_rows(rows, threads_before)
        if started:
            ray.shutdown()
            if threading.current_thread() is threading.main_thread():  # signal.signal's own rule
                for sig, h in handlers.items():
                    if h is not None:
                        signal.signal(sig, h)


def run_tasks(groups: List[List[JSONDict]], spec: ModelSpec, *, max_new_tokens: int, reference_jpeg: bool,
              workers: int = 1, ray: bool = False, ray_address: Optional[str] = None) -> Iterator[JSONDict]:
    """Records of the given task groups, as they finish (order depends on the executor)."""
    if not groups:
        return iter(())
    if ray:
        return _ray(groups, spec, max_new_tokens, reference_jpeg, max(1, workers), ray_address)
    if workers > 1:
        return _processes(groups, spec, max_new_tokens, reference_jpeg, workers)
    return _serial(groups, spec, max_new_tokens, reference_jpeg)
