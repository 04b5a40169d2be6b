"""parrot.evaluate on Ray Data: a local Ray instance started here (2 CPUs, small object store) gives the
same table as a serial run, and resumes from the same journal."""
import json
import os
import warnings

import pytest

ray = pytest.importorskip("ray", reason="Ray Data is the optional 'ray' extra")

from parrot.evaluate import evaluate  # noqa: E402

from evaluate_fakes import scripted_model  # noqa: E402
from test_evaluate import _table, make_multilingual  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


@pytest.fixture(scope="module")
def local_ray():
    # workers must import parrot and the test's model factory: put the worktree and tests/ on their path
    path = os.pathsep.join([ROOT, HERE] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    ray.init(num_cpus=2, object_store_memory=100 * 1024 * 1024, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}}, configure_logging=False)
    yield
    ray.shutdown()


def test_ray_matches_serial_and_resumes(local_ray, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = make_multilingual(tmp_path)
        serial = evaluate(files, scripted_model, tmp_path / "s", progress=False, verbose=False, plots=False)
        on_ray = evaluate(files, scripted_model, tmp_path / "r", ray=True, workers=2, threads=1,
                          progress=False, verbose=False, plots=False)
    assert _table(on_ray) == _table(serial)
    assert on_ray.summary["errors"] == serial.summary["errors"]
    with open(on_ray.paths["predictions"]) as a, open(serial.paths["predictions"]) as b:
        assert a.read() == b.read()

    # drop the last 5 rows from the Ray run's journal, then resume on Ray: the same table, each row once
    journal = tmp_path / "r" / "predictions.jsonl"
    lines = journal.read_text().splitlines(keepends=True)
    journal.write_text("".join(lines[:-5]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        resumed = evaluate(files, scripted_model, tmp_path / "r", ray=True, workers=2, threads=1, resume=True,
                           progress=False, verbose=False, plots=False)
    assert resumed.summary["throughput"]["rows_run"] == 5
    keys = [(json.loads(l)["dataset"], json.loads(l)["index"]) for l in journal.read_text().splitlines()[1:]]
    assert len(keys) == len(set(keys)) == 16
    assert _table(resumed) == _table(serial)


def test_ray_worker_that_cannot_load_the_model_is_a_clear_error(local_ray, tmp_path):
    from parrot.evaluate.runner import WorkerError
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        files = make_multilingual(tmp_path)
        with pytest.raises(WorkerError, match=f"a Ray worker could not start: ModelError: {bad}"):
            evaluate(files, str(bad), tmp_path / "r", ray=True, workers=2, threads=1, progress=False,
                     verbose=False, plots=False)
