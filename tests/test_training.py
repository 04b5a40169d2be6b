"""training/train.py's options that change how a run is made, not what it learns."""
import os
import subprocess
import sys

import pytest

pytest.importorskip("torch")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# a few steps of every stage on a small pool, people data with the options of the people recipes
TINY = ["--data", "people", "--image-size", "96", "--patch-size", "12", "--pool", "48", "--stage1-steps", "3",
        "--stage2-steps", "3", "--batch-size", "4", "--threads", "1", "--augment", "--more-phrasings",
        "--shapes-share", "0.2", "--balance", "0.1"]


def _train(out, *args):
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "training.train", *TINY, *args, "--out", str(out)], check=True, env=env,
                   cwd=ROOT, stdout=subprocess.DEVNULL)
    with open(os.path.join(out, "model-00001-of-00001.safetensors"), "rb") as f:
        return f.read()


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("full")
    return out, _train(out, "--tower-steps", "4")


def test_tower_from_a_checkpoint_gives_the_same_model_as_training_the_tower(full_run, tmp_path):
    """--tower-from CKPT --tower-steps 0 replaces stage 0 by CKPT's tower: with the checkpoint of a run with the
    same options, every weight of the result is byte for byte that run's (the tower is frozen after stage 0, and
    torch's random stream is left as stage 0 leaves it). Without stage 0 (an untrained tower) the weights differ,
    so the comparison can fail."""
    full_dir, full = full_run
    assert _train(tmp_path / "again", "--tower-steps", "0", "--tower-from", str(full_dir)) == full
    assert _train(tmp_path / "untrained", "--tower-steps", "0") != full


def test_tower_from_refuses_a_tower_of_another_size(full_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    args = [a if a != "96" else "64" for a in TINY]
    args[args.index("--patch-size") + 1] = "8"
    r = subprocess.run([sys.executable, "-m", "training.train", *args, "--tower-steps", "0", "--tower-from",
                        str(full_run[0]), "--out", str(tmp_path / "x")], env=env, cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode != 0 and "vision image_size 96 != this run's 64" in r.stderr
