"""training/train.py's options that change how a run is made, not what it learns."""
import os
import subprocess
import sys

import numpy as np
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


def test_a_tower_only_run_gives_the_tower_of_the_full_run(full_run, tmp_path):
    """`--stage1-steps 0 --stage2-steps 0` trains stage 0 only and saves it, also with a recipe's --stage2-restart
    (there is no stage 2 to split; run 6 compared towers this way): --tower-from that checkpoint then gives the full
    run's weights byte for byte, so the tower saved is the one the full run trains."""
    full_dir, full = full_run
    tower = tmp_path / "tower"
    _train(tower, "--tower-steps", "4", "--stage1-steps", "0", "--stage2-steps", "0", "--stage2-restart", "2")
    assert _train(tmp_path / "again", "--tower-steps", "0", "--tower-from", str(tower)) == full


def test_save_every_keeps_the_run_and_saves_its_state_on_the_way(full_run, tmp_path):
    """--save-every N writes OUT-stage2-stepK every N stage-2 steps and changes nothing of the run: the final weights
    are byte for byte those of the same run without it (full_run; its tower via --tower-from, which the test above
    shows to be the same run), the checkpoint at the last step is the final one, and the earlier ones differ from
    it (so they are the states on the way, not copies of the end)."""
    full_dir, full = full_run
    out = tmp_path / "ck"
    assert _train(out, "--tower-steps", "0", "--tower-from", str(full_dir), "--save-every", "1") == full
    saved = {}
    for k in (1, 2, 3):
        with open(tmp_path / f"ck-stage2-step{k}" / "model-00001-of-00001.safetensors", "rb") as f:
            saved[k] = f.read()
    assert saved[3] == full and saved[1] != full and saved[2] != full and saved[1] != saved[2]
    assert not (tmp_path / "ck-stage2-step4").exists()


def test_save_every_counts_across_a_restarted_stage_2(tmp_path):
    """With --stage2-restart the steps are counted over both parts (2 + 2 steps, every 2: step2 and step4)."""
    out = tmp_path / "ck"
    final = _train(out, "--tower-steps", "0", "--stage2-steps", "4", "--stage2-restart", "2", "--save-every", "2")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "ck-stage2-step2", "ck-stage2-step4"]
    with open(tmp_path / "ck-stage2-step4" / "model-00001-of-00001.safetensors", "rb") as f:
        assert f.read() == final


def test_a_recipe_flag_can_be_turned_off(tmp_path):
    """--no-augment / --no-more-phrasings override a recipe that sets them (run 5: people3 on run 1's tower); the
    run's recorded command then no longer has them."""
    import json
    _train(tmp_path / "ck", "--recipe", "people3", "--no-augment", "--no-more-phrasings", "--shapes-share", "0",
           "--tower-steps", "0", "--stage2-steps", "3", "--stage2-restart", "0")
    with open(tmp_path / "ck" / "training_info.json") as f:
        command = json.load(f)["command"].split()
    assert "--augment" not in command and "--more-phrasings" not in command and "--shapes-share" not in command
    assert command[command.index("--stage2-lr") + 1] == "0.001"  # the rest of the recipe still applies


def test_shift_changes_the_tower_and_only_when_asked(full_run, tmp_path):
    """--shift N moves stage 0's pictures (train.shift; its geometry is tested against numpy in
    test_shipped_model.py): a run with it trains another tower than full_run (same options without it), and
    --shift 0 is the run without it, byte for byte (no random numbers are drawn for shifts that are off)."""
    full_dir, full = full_run
    assert _train(tmp_path / "shift", "--tower-steps", "4", "--shift", "6") != full
    assert _train(tmp_path / "noshift", "--tower-steps", "4", "--shift", "0") == full


def test_variety_and_wide_change_the_pool_and_only_when_asked(full_run, tmp_path):
    """--variety draws the people pictures' squares and stars more ways, --wide F makes a share F of them clearly
    wide or tall (data.draw_scene_people, data.canvas_size; tested in test_shipped_model.py): a run with either
    trains on another pool than full_run, --no-variety / --wide 0 is full_run byte for byte, and the run's recorded
    command says which."""
    import json
    full_dir, full = full_run
    assert _train(tmp_path / "variety", "--tower-steps", "4", "--variety") != full
    assert _train(tmp_path / "plain", "--tower-steps", "4", "--no-variety") == full
    assert _train(tmp_path / "wide", "--tower-steps", "4", "--wide", "0.5") != full
    assert _train(tmp_path / "notwide", "--tower-steps", "4", "--wide", "0") == full
    for name, flag in (("variety", "--variety"), ("plain", None), ("wide", "--wide"), ("notwide", None)):
        with open(tmp_path / name / "training_info.json") as f:
            command = json.load(f)["command"].split()
        assert ("--variety" in command) == (flag == "--variety") and ("--wide" in command) == (flag == "--wide")


def test_extra_phrasings_change_the_run_and_only_when_asked(full_run, tmp_path):
    """--extra-phrasings adds data.EXTRA_PHRASINGS to the people questions (and to the tokenizer's corpus): a run with
    it trains on other questions than full_run (which has --more-phrasings), --no-extra-phrasings is full_run byte
    for byte, and the run's recorded command says which."""
    import json
    full_dir, full = full_run
    assert _train(tmp_path / "extra", "--tower-steps", "4", "--extra-phrasings") != full
    assert _train(tmp_path / "noextra", "--tower-steps", "4", "--no-extra-phrasings") == full
    for name, asked in (("extra", True), ("noextra", False)):
        with open(tmp_path / name / "training_info.json") as f:
            command = json.load(f)["command"].split()
        assert ("--extra-phrasings" in command) == asked


def test_word_dropout_changes_the_run_and_only_when_asked(full_run, tmp_path):
    """--word-dropout P shortens half of stage 2's questions (data.drop_words, tested in test_shipped_model.py): a run
    with it trains on other questions than full_run, --word-dropout 0 is full_run byte for byte (no extra random
    numbers drawn), and the run's recorded command says which."""
    import json
    full_dir, full = full_run
    assert _train(tmp_path / "drop", "--tower-steps", "4", "--word-dropout", "0.3") != full
    assert _train(tmp_path / "nodrop", "--tower-steps", "4", "--word-dropout", "0") == full
    for name, asked in (("drop", True), ("nodrop", False)):
        with open(tmp_path / name / "training_info.json") as f:
            command = json.load(f)["command"].split()
        assert ("--word-dropout" in command) == asked


def test_init_continues_the_tower_only_when_asked(full_run, tmp_path):
    """--init CKPT --tower-steps N continues stage 0 on CKPT's tower (run 10), then stage 2: the tower's weights
    move from CKPT's (the patch embedding among them); with --tower-steps 0 (every earlier continuation) the tower
    is CKPT's byte for byte and only stage 2's weights move."""
    from safetensors.numpy import load_file
    full_dir, _ = full_run
    start = load_file(str(full_dir / "model-00001-of-00001.safetensors"))
    tower = [k for k in start if ".vision_tower." in k]
    assert tower
    for steps, moved in (("3", True), ("0", False)):
        out = tmp_path / f"tower{steps}"
        _train(out, "--init", str(full_dir), "--tower-steps", steps, "--stage1-steps", "0", "--log-every", "1")
        after = load_file(str(out / "model-00001-of-00001.safetensors"))
        same = [np.array_equal(after[k], start[k]) for k in tower]
        patches = "model.vision_tower.vision_tower.vision_model.embeddings.patch_embedding.weight"
        assert (not all(same) and not np.array_equal(after[patches], start[patches])) if moved else all(same)
        decoder = "model.layers.0.mlp.down_proj.weight"
        assert not np.array_equal(after[decoder], start[decoder])


def test_tower_from_refuses_a_tower_of_another_size(full_run, tmp_path):
    env = {**os.environ, "PYTHONPATH": ROOT}
    args = [a if a != "96" else "64" for a in TINY]
    args[args.index("--patch-size") + 1] = "8"
    r = subprocess.run([sys.executable, "-m", "training.train", *args, "--tower-steps", "0", "--tower-from",
                        str(full_run[0]), "--out", str(tmp_path / "x")], env=env, cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode != 0 and "vision image_size 96 != this run's 64" in r.stderr


def _lr_expected(steps, peak):
    """Linear warm-up over min(100, steps // 10) steps (at least 1), then cosine from the peak down to 10 % of it,
    written out in numpy."""
    s = np.arange(steps)
    warm = max(1, min(100, steps // 10))
    return peak * np.minimum(1.0, (s + 1) / warm) * (0.1 + 0.45 * (1 + np.cos(np.pi * s / steps)))


def test_stage2_restart_runs_two_schedules(tmp_path, monkeypatch):
    """--stage2-restart N: align, then N stage-2 steps on --lr's schedule, then the rest on a fresh schedule at
    --stage2-lr. The learning rate of every optimizer step, recorded from torch's AdamW, against the schedule
    computed in numpy; each part has its own optimizer (AdamW is built once per part)."""
    import torch
    from training import train as T
    seen = []  # (optimizer id, lr) of every step
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.append((id(self), self.param_groups[0]["lr"]))
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    threads = torch.get_num_threads()
    try:
        T.train(str(tmp_path / "ck"), threads=1, tower_steps=0, stage1_steps=12, stage2_steps=30, stage2_restart=20,
                batch_size=3, pool=16, lr=2e-3, stage2_lr=1e-3, log_every=100)
    finally:
        torch.set_num_threads(threads)
    want = np.concatenate([_lr_expected(12, 2e-3), _lr_expected(20, 2e-3), _lr_expected(10, 1e-3)])
    np.testing.assert_allclose([lr for _, lr in seen], want, rtol=1e-12)
    owners = [o for o, _ in seen]
    assert [len(set(owners[a:b])) for a, b in ((0, 12), (12, 32), (32, 42))] == [1, 1, 1]
    assert len({owners[0], owners[12], owners[32]}) == 3


def test_option_probe_reads_a_linear_rule_and_not_noise():
    """training.option_probe's probe: balanced accuracy against the formula by hand; on held-out points whose
    label is a linear rule (1 right option in 4, as in multiple choice) it is near 1, on random labels near 0.5
    (0.5 +- 0.1: the standard deviation of a balanced accuracy over 500/1500 test points is ~0.013)."""
    from training.option_probe import balanced_accuracy, fit_probe
    assert balanced_accuracy([1, 0, 0, 1, 1], [1, 1, 0, 0, 0]) == 0.5 * (1 / 2 + 1 / 3)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4000, 32))
    score = x @ rng.standard_normal(32)
    y = score > np.quantile(score, 0.75)
    assert balanced_accuracy(fit_probe(x[:2000], y[:2000])(x[2000:]), y[2000:]) > 0.95
    noise = rng.permutation(y)
    assert abs(balanced_accuracy(fit_probe(x[:2000], noise[:2000])(x[2000:]), noise[2000:]) - 0.5) < 0.1


def _tensors(blob):
    from safetensors.torch import load
    return load(blob)


def test_stage2_tower_trains_the_tower_in_stage_2_only(full_run, tmp_path):
    """--stage2-tower F: stage 2 trains the tower too (run 8), at F x the stage's learning rate. Against the same run
    without it (full_run, whose stage 2 leaves the tower as stage 0 made it): the tower weights of stage 2's result
    differ, while a run without stage 2 is byte for byte the same with or without the option."""
    full_dir, full = full_run
    tuned = _tensors(_train(tmp_path / "tuned", "--tower-steps", "4", "--stage2-tower", "0.3"))
    frozen = _tensors(full)
    tower = [k for k in frozen if "vision_tower" in k]
    assert tower and sum(not np.array_equal(tuned[k].numpy(), frozen[k].numpy()) for k in tower) > len(tower) // 2
    no_stage2 = ["--tower-steps", "4", "--stage2-steps", "0"]
    assert _train(tmp_path / "a", *no_stage2, "--stage2-tower", "0.3") == _train(tmp_path / "b", *no_stage2)


def test_stage2_tower_learning_rate_is_its_share_of_the_stage(tmp_path, monkeypatch):
    """The tower's parameter group runs at F x the stage's schedule, every step (recorded from torch's AdamW)."""
    import torch
    from training import train as T
    seen = []
    real_step = torch.optim.AdamW.step

    def step(self, *a, **k):
        seen.append([g["lr"] for g in self.param_groups])
        return real_step(self, *a, **k)
    monkeypatch.setattr(torch.optim.AdamW, "step", step)
    threads = torch.get_num_threads()
    try:
        T.train(str(tmp_path / "ck"), threads=1, tower_steps=0, stage1_steps=2, stage2_steps=10, batch_size=3,
                pool=16, lr=2e-3, log_every=100, stage2_tower=0.25)
    finally:
        torch.set_num_threads(threads)
    assert [len(g) for g in seen] == [1, 1] + [2] * 10
    want = _lr_expected(10, 2e-3)
    np.testing.assert_allclose([g[0] for g in seen[2:]], want, rtol=1e-12)
    np.testing.assert_allclose([g[1] for g in seen[2:]], 0.25 * want, rtol=1e-12)


def test_average_is_the_mean_of_the_snapshots_and_refuses_other_models(full_run, tmp_path):
    """training.average on three snapshots of one run (--save-every 1): every tensor is the mean numpy computes from
    the three files (float32 summed in float64 in the same order, divided, rounded once to float32: bit for bit), the
    tokenizer is the run's, and the command is recorded. A checkpoint with another tokenizer or a missing tensor
    is refused by name."""
    import json
    import shutil
    from safetensors.numpy import load_file, save_file
    name = "model-00001-of-00001.safetensors"
    _train(tmp_path / "run", "--tower-steps", "4", "--save-every", "1")
    snaps = [str(tmp_path / f"run-stage2-step{i}") for i in (1, 2, 3)]
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "training.average", "--out", str(tmp_path / "avg"), *snaps], check=True,
                   env=env, cwd=ROOT)
    got = load_file(str(tmp_path / "avg" / name))
    weights = [load_file(os.path.join(s, name)) for s in snaps]
    assert got.keys() == weights[0].keys()
    moved = 0
    for k, v in got.items():
        want = (sum(w[k].astype(np.float64) for w in weights) / 3).astype(np.float32)
        assert v.dtype == np.float32 and np.array_equal(v, want), k
        moved += not np.array_equal(weights[0][k], weights[2][k])
    assert moved > 0  # stage 2 changed something between the snapshots, so the mean is not a copy
    with open(tmp_path / "avg" / "tokenizer.json", "rb") as a, open(os.path.join(snaps[0], "tokenizer.json"),
                                                                      "rb") as b:
        assert a.read() == b.read()
    with open(tmp_path / "avg" / "training_info.json") as f:
        info = json.load(f)
    assert info["command"].startswith("python -m training.average") and len(info["averaged"]) == 3

    from training.average import average
    other = tmp_path / "other"
    shutil.copytree(snaps[0], other)
    with open(other / "tokenizer.json", "a") as f:
        f.write(" ")
    with pytest.raises(ValueError, match="tokenizer.json differs"):
        average(str(tmp_path / "bad"), [snaps[0], str(other)])
    shutil.copyfile(os.path.join(snaps[0], "tokenizer.json"), other / "tokenizer.json")
    cut = load_file(str(other / name))
    dropped = sorted(cut)[0]
    del cut[dropped]
    save_file(cut, str(other / name))
    with pytest.raises(ValueError, match=f"tensor {dropped}"):
        average(str(tmp_path / "bad"), [snaps[0], str(other)])


def test_grown_decoder_computes_what_the_checkpoint_computes_and_trains_on(full_run, tmp_path):
    """training.grow --layers 2: the torch reference of the grown checkpoint gives every logit of the original
    exactly (its new layers add exact zeros to the residual stream), and so does the C engine on both converted
    files; train.py continues from it (--init), and stage 2 moves the new layers' zero projections."""
    import torch
    from safetensors.numpy import load_file

    import parrot
    from training.modeling_parrot import IMAGE_TOKEN_INDEX, ParrotQwen2ForCausalLM
    full_dir, _ = full_run
    env = {**os.environ, "PYTHONPATH": ROOT}
    subprocess.run([sys.executable, "-m", "training.grow", "--layers", "2", "--out", str(tmp_path / "grown"),
                    str(full_dir)], check=True, env=env, cwd=ROOT)
    a = ParrotQwen2ForCausalLM.from_pretrained(str(full_dir)).eval()
    b = ParrotQwen2ForCausalLM.from_pretrained(str(tmp_path / "grown")).eval()
    assert len(b.model.layers) == len(a.model.layers) + 2
    ids = [5, 17, 300, IMAGE_TOKEN_INDEX, 42, 9, 700]
    pixels = torch.from_numpy(np.random.default_rng(0).standard_normal((3, 96, 96)).astype(np.float32))
    with torch.no_grad():
        la = a.logits_from_embeds(a.prepare_inputs_embeds(ids, pixels)[0])
        lb = b.logits_from_embeds(b.prepare_inputs_embeds(ids, pixels)[0])
    assert torch.equal(la, lb)
    files = [parrot.convert(d, str(tmp_path / f"{n}.gguf"), dtype="f32", progress=False, log=lambda s: None)
             for n, d in (("a", str(full_dir)), ("b", str(tmp_path / "grown")))]
    ea, eb = (parrot.load(f, threads=1) for f in files)
    assert eb.config["num_hidden_layers"] == ea.config["num_hidden_layers"] + 2
    px = pixels.numpy()
    np.testing.assert_array_equal(ea.logits(ids, pixels=px), eb.logits(ids, pixels=px))

    _train(tmp_path / "on", "--init", str(tmp_path / "grown"), "--tower-steps", "0", "--stage1-steps", "0")
    new = len(a.model.layers)
    trained = load_file(str(tmp_path / "on" / "model-00001-of-00001.safetensors"))
    assert np.abs(trained[f"model.layers.{new}.self_attn.o_proj.weight"]).max() > 0
    assert np.abs(trained[f"model.layers.{new + 1}.mlp.down_proj.weight"]).max() > 0
