"""parrot.evaluate on Ray Data: on a local Ray instance (2 CPUs, small object store) the evaluation gives the
same table as a serial run, resumes from the same journal, a worker that cannot load the model is a clear
error, and a caller that stops reading early can shut Ray down at once. Each check runs in tests/ray_checks.py,
in a process session of its own (see there why)."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("ray", reason="Ray Data is the optional 'ray' extra")

# scripts/test-sanitized.sh preloads the ASan runtime into every process the tests start, Ray's own daemons
# included, and Ray does not survive it: its setproctitle (in ray._raylet) reads freed or out-of-bounds heap
# memory, ASan halts the dashboard or runtime-env agent, the raylet goes down with it and ray.init times out
# ("The current node timed out during startup"). That failed CI once, and 2 of 16 sanitized runs of this file
# here, each with such an ASan report in the session's agent log. The checks drive a scripted Python model (and
# one model-load error, which the loader tests run under ASan in process), so the sanitized core adds nothing
# to them; they run in the normal pass.
pytestmark = pytest.mark.skipif("libasan" in os.environ.get("LD_PRELOAD", ""),
                                reason="Ray's own processes fail under a preloaded ASan runtime (see module)")

HERE = os.path.dirname(os.path.abspath(__file__))


def run_check(name, tmp_path):
    p = subprocess.run([sys.executable, os.path.join(HERE, "ray_checks.py"), name, str(tmp_path)],
                       capture_output=True, text=True, timeout=600, start_new_session=True,
                       stdin=subprocess.DEVNULL)
    out = f"exit code {p.returncode}\n--- stdout\n{p.stdout[-4000:]}\n--- stderr\n{p.stderr[-8000:]}"
    assert p.returncode == 0, out
    assert f"ray check {name}: passed" in p.stdout, out


def test_ray_matches_serial_and_resumes(tmp_path):
    run_check("matches_serial_and_resumes", tmp_path)


def test_ray_worker_that_cannot_load_the_model_is_a_clear_error(tmp_path):
    run_check("worker_that_cannot_load_the_model_is_a_clear_error", tmp_path)


def test_ray_stopping_early_then_shutting_ray_down_keeps_the_process(tmp_path):
    run_check("stopping_early_then_ray_shutdown_keeps_the_process", tmp_path)


def test_ray_that_evaluate_starts_is_stopped_and_signal_handlers_restored(tmp_path):
    run_check("starts_and_stops_its_own_ray", tmp_path)
