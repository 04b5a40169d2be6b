"""The Ray Data checks of tests/test_evaluate_ray.py, run as a script in a process of their own.

Ray's driver side changes process-wide state (signal handlers that turn SIGTERM into exit(1), child processes
that share the process group, atexit hooks), so the checks run here, in a separate session, and report through
their exit code and output: whatever Ray does at start-up or shut-down cannot take the test run down with it.

    python tests/ray_checks.py CHECK WORKDIR
"""
import json
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]

import ray  # noqa: E402

from parrot.evaluation import evaluate  # noqa: E402
from parrot.evaluation.runner import WorkerError  # noqa: E402

from evaluate_fakes import scripted_model  # noqa: E402
from test_evaluate import _table, make_multilingual  # noqa: E402


def matches_serial_and_resumes(tmp):
    files = make_multilingual(tmp)
    serial = evaluate(files, scripted_model, tmp / "s", progress=False, verbose=False, plots=False)
    on_ray = evaluate(files, scripted_model, tmp / "r", ray=True, workers=2, threads=1,
                      progress=False, verbose=False, plots=False)
    assert _table(on_ray) == _table(serial), (_table(on_ray), _table(serial))
    assert on_ray.summary["errors"] == serial.summary["errors"]
    with open(on_ray.paths["predictions"]) as a, open(serial.paths["predictions"]) as b:
        assert a.read() == b.read()

    # drop the last 5 rows from the Ray run's journal, then resume on Ray: the same table, each row once
    journal = tmp / "r" / "predictions.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-5]))
    resumed = evaluate(files, scripted_model, tmp / "r", ray=True, workers=2, threads=1, resume=True,
                       progress=False, verbose=False, plots=False)
    assert resumed.summary["throughput"]["rows_run"] == 5, resumed.summary["throughput"]
    keys = [(json.loads(l)["dataset"], json.loads(l)["index"]) for l in journal.read_text().splitlines()[1:]]
    assert len(keys) == len(set(keys)) == 16, keys
    assert _table(resumed) == _table(serial)


def worker_that_cannot_load_the_model_is_a_clear_error(tmp):
    bad = tmp / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    files = make_multilingual(tmp)
    try:
        evaluate(files, str(bad), tmp / "r", ray=True, workers=2, threads=1, progress=False, verbose=False,
                 plots=False)
    except WorkerError as e:
        expected = f"a Ray worker could not start: ModelError: {bad}"
        assert str(e).startswith(expected), (str(e), expected)
    else:
        raise AssertionError("no WorkerError")


def stopping_early_then_ray_shutdown_keeps_the_process(tmp):
    """A caller that stops reading the records (an exception, Ctrl-C, a break) and then shuts Ray down at once:
    Ray Data must have stopped its threads by then, or Ray ends this process with status 1."""
    from parrot.evaluation.runner import ModelSpec, make_tasks, run_tasks
    from parrot.evaluation.tsv import load_benchmark
    groups = make_tasks([load_benchmark(f, check_md5=False) for f in make_multilingual(tmp)], {})
    for _ in range(3):
        records = run_tasks(groups, ModelSpec(scripted_model, 1), max_new_tokens=512, reference_jpeg=True,
                            workers=2, ray=True)
        assert "dataset" in next(records)
        records.close()
    ray.shutdown()  # main's own shutdown then finds nothing to do


def starts_and_stops_its_own_ray(tmp):
    """Without ray.init by the caller, evaluate starts a local Ray, and leaves no Ray and no handler behind."""
    import signal
    assert not ray.is_initialized()
    before = signal.getsignal(signal.SIGTERM)
    files = make_multilingual(tmp)
    serial = evaluate(files, scripted_model, tmp / "s", progress=False, verbose=False, plots=False)
    on_ray = evaluate(files, scripted_model, tmp / "r", ray=True, workers=1, threads=1,
                      progress=False, verbose=False, plots=False)
    assert _table(on_ray) == _table(serial)
    assert not ray.is_initialized()
    assert signal.getsignal(signal.SIGTERM) is before, signal.getsignal(signal.SIGTERM)


def main():
    import pathlib
    check, tmp = sys.argv[1], pathlib.Path(sys.argv[2])
    # a local Ray instance of 2 CPUs with a small object store; workers import parrot and the test fakes
    path = os.pathsep.join([os.path.dirname(HERE), HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    if check == "starts_and_stops_its_own_ray":
        os.environ["PYTHONPATH"] = path  # inherited by the Ray that evaluate starts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            starts_and_stops_its_own_ray(tmp)
        print(f"ray check {check}: passed", flush=True)
        return
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}}, configure_logging=False)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the synthetic mmmb_* files do not have the published MD5s
            globals()[check](tmp)
    finally:
        ray.shutdown()
    print(f"ray check {check}: passed", flush=True)


if __name__ == "__main__":
    main()
