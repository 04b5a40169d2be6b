"""Models named by Hugging Face Hub id, resolved offline from a Hugging Face cache the test builds itself.

The cache has the layout huggingface_hub writes (``models--org--name/{blobs,snapshots/<commit>,refs/<name>}``,
snapshot files symlinked to blobs) and holds a tiny random Parrot without its vision tower, whose config names
its tower by Hub id — ``openai/clip-vit-large-patch14-336``, the id of the built-in configuration table, so the
conversion only works if the tower's own (tiny) config wins over the table — plus that tiny CLIP under that id.
Everything runs with HF_HUB_OFFLINE=1 (set for the whole suite in conftest.py): no test touches the network.

The reference is the torch model the files were saved from (training/modeling_parrot.py); f32 logits agree to
1e-4 relative to the largest magnitude, as in test_vision.py (summation order differences over ~10 layers).
"""
import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import parrot
from tiny_parrot import make_tokenizer, save_tokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPO = "test-org/parrot-tiny"
CLIP_ID = "openai/clip-vit-large-patch14-336"
COMMIT1 = "1" * 40
COMMIT2 = "2" * 40
CLIP_COMMIT = "c" * 40


def add_snapshot(hub_cache, repo_id, src_dir, commit, refs=("main",)):
    """Files of src_dir as huggingface_hub stores a downloaded snapshot: content-addressed blobs + symlinks."""
    repo = os.path.join(hub_cache, "models--" + repo_id.replace("/", "--"))
    snap = os.path.join(repo, "snapshots", commit)
    os.makedirs(snap)
    os.makedirs(os.path.join(repo, "blobs"), exist_ok=True)
    os.makedirs(os.path.join(repo, "refs"), exist_ok=True)
    for name in sorted(os.listdir(src_dir)):
        src = os.path.join(src_dir, name)
        if not os.path.isfile(src):
            continue
        data = open(src, "rb").read()
        blob = hashlib.sha256(data).hexdigest()
        with open(os.path.join(repo, "blobs", blob), "wb") as f:
            f.write(data)
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, name))
    for ref in refs:
        with open(os.path.join(repo, "refs", ref), "w") as f:
            f.write(commit)
    return snap


def save_parrot(model, d, clip_dir):
    model.save_pretrained(d, vision_inside=False, clip_dir=clip_dir, max_shard_size=60_000)
    save_tokenizer(make_tokenizer(300), d)
    p = os.path.join(d, "config.json")
    cfg = json.load(open(p))
    cfg["mm_vision_tower"] = CLIP_ID
    json.dump(cfg, open(p, "w"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """HF_HOME with REPO at COMMIT1 (main, seed 1) and COMMIT2 (tag v2, seed 2), and the tiny CLIP."""
    from training.modeling_parrot import make_tiny_parrot

    tmp = tmp_path_factory.mktemp("hub")
    hf_home = str(tmp / "hf_home")
    cache = os.path.join(hf_home, "hub")
    refs = {}
    for seed, commit, ref in ((1, COMMIT1, "main"), (2, COMMIT2, "v2")):
        # the same vision tower for both revisions (one CLIP repo), different language side
        model = make_tiny_parrot(seed, vocab_size=300)
        if seed == 2:
            model.model.vision_tower.load_state_dict(refs[1].model.vision_tower.state_dict())
        src = str(tmp / f"src{seed}")
        save_parrot(model, src, str(tmp / f"clip{seed}"))
        add_snapshot(cache, REPO, src, commit, refs=(ref,))
        refs[seed] = model
    add_snapshot(cache, CLIP_ID, str(tmp / "clip1"), CLIP_COMMIT)
    return dict(hf_home=hf_home, cache=cache, refs=refs, tmp=tmp)


@pytest.fixture
def offline_cache(hub, monkeypatch, tmp_path):
    """huggingface_hub pointed at the test cache in this process (it reads HF_HOME at import), and an empty
    $PARROT_CACHE."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["cache"])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("PARROT_CACHE", str(tmp_path / "parrot-cache"))
    return str(tmp_path / "parrot-cache")


def rel(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def check_logits(m, ref):
    from training.modeling_parrot import IMAGE_TOKEN_INDEX

    S = ref.vision_config.image_size
    px = np.random.default_rng(0).normal(0, 1, (3, S, S)).astype(np.float32)
    ids = [5, 17, 9, IMAGE_TOKEN_INDEX, 40, 2, 77, 100]
    with torch.no_grad():
        want = ref(ids, torch.from_numpy(px)[None]).numpy()
    got = m.logits(ids, pixels=px)
    assert got.shape == want.shape
    assert rel(got, want) <= 1e-4


def test_hub_id_and_hub_clip_load_and_give_the_reference_logits(hub, offline_cache, monkeypatch):
    m = parrot.load(REPO, dtype="f32", threads=1, progress=False)
    assert m.path == os.path.join(offline_cache, "hub", "test-org--parrot-tiny", f"{COMMIT1}-f32.gguf")
    assert m.config["has_vision"]
    check_logits(m, hub["refs"][1])
    # converted once: a second load reuses the file
    from parrot import converter

    monkeypatch.setattr(converter, "convert", lambda *a, **k: pytest.fail("converted again"))
    assert parrot.load(REPO, dtype="f32", threads=1, progress=False).path == m.path


def test_revision_selects_tag_or_commit_and_keys_the_cache(hub, offline_cache):
    m2 = parrot.load(REPO, revision="v2", dtype="f32", threads=1, progress=False)
    assert os.path.basename(m2.path) == f"{COMMIT2}-f32.gguf"
    check_logits(m2, hub["refs"][2])
    m1 = parrot.load(REPO, revision=COMMIT1, dtype="f32", threads=1, progress=False)
    assert os.path.basename(m1.path) == f"{COMMIT1}-f32.gguf"
    check_logits(m1, hub["refs"][1])


def test_missing_repo_or_revision_offline_is_a_model_error(hub, offline_cache):
    with pytest.raises(parrot.ModelError, match=r"test-org/absent: not in the Hugging Face cache .*HF_HUB_OFFLINE"):
        parrot.load("test-org/absent", progress=False)
    with pytest.raises(parrot.ModelError, match=r"test-org/parrot-tiny@v9: not in the Hugging Face cache"):
        parrot.load(REPO, revision="v9", progress=False)
    with pytest.raises(FileNotFoundError, match="not a Hugging Face Hub id"):
        parrot.load("no/such/path.gguf")


def test_allow_patterns_token_and_bin_fallback(monkeypatch, tmp_path):
    """What is asked of huggingface_hub: config/tokenizer + safetensors only; torch .bin only when a repository
    has no safetensors; token and revision passed through; progress bars off when asked."""
    import huggingface_hub
    from huggingface_hub.utils import are_progress_bars_disabled

    from parrot import hub as phub

    calls = []
    snap = tmp_path / "snap"
    snap.mkdir()
    (snap / "pytorch_model.bin").write_bytes(b"")

    def fake(repo_id, **kw):
        calls.append(dict(kw, repo_id=repo_id, bars_off=are_progress_bars_disabled()))
        return str(snap)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake)
    before = are_progress_bars_disabled()
    assert phub.snapshot("a/b", revision="r1", token="tok", progress=False) == str(snap)
    assert are_progress_bars_disabled() == before
    assert [c["repo_id"] for c in calls] == ["a/b", "a/b"]
    first, second = calls[0]["allow_patterns"], calls[1]["allow_patterns"]
    assert "*.safetensors" in first and not any("bin" in p or "h5" in p or "msgpack" in p for p in first)
    assert "pytorch_model*.bin" in second and "*.safetensors" not in second
    assert all(c["revision"] == "r1" and c["token"] == "tok" and c["bars_off"] for c in calls)
    calls.clear()
    (snap / "model.safetensors").write_bytes(b"")
    phub.snapshot("a/b")
    assert len(calls) == 1 and calls[0]["revision"] is None


def run_cli(args, hub, parrot_cache):
    env = dict(os.environ, HF_HOME=hub["hf_home"], HF_HUB_OFFLINE="1", PARROT_CACHE=parrot_cache,
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-m", "parrot", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_converts_a_hub_id_to_q4_0(hub, offline_cache, tmp_path):
    """`parrot convert ID -o x.gguf --dtype q4_0` in a fresh process that finds the cache through HF_HOME: the
    same tensors as the Python API's q4_0 conversion of the snapshot directory, decoder matrices in q4_0 and
    the rest of the matrices in q8_0."""
    import gguf

    out = str(tmp_path / "x.gguf")
    p = run_cli(["convert", REPO, "-o", out, "--dtype", "q4_0", "-q"], hub, str(tmp_path / "pc"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == out
    snap = os.path.join(hub["cache"], "models--test-org--parrot-tiny", "snapshots", COMMIT1)
    api = parrot.convert(snap, tmp_path / "api.gguf", dtype="q4_0", progress=False, log=lambda s: None)
    a = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(out).tensors}
    b = {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(str(api)).tensors}
    assert a == b
    Q = gguf.GGMLQuantizationType
    assert a["blk.0.ffn_up.weight"][0] == Q.Q4_0 and a["token_embd.weight"][0] == Q.Q8_0
    assert a["moe.exp.0.ffn_up.weight"][0] == Q.Q8_0
    assert a["v.blk.0.attn_q.weight"][0] == Q.F16  # the tiny tower's rows (40 values) are not whole 32-blocks


def test_cli_generate_with_a_hub_id(hub, tmp_path, monkeypatch):
    """`parrot generate -m ID` answers as parrot.load(ID) does in this process."""
    from PIL import Image
    from huggingface_hub import constants

    img = str(tmp_path / "img.png")
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)).save(img)
    pc = str(tmp_path / "pc")
    p = run_cli(["generate", "-m", REPO, "--revision", "v2", "--json", "--max-new-tokens", "6", img, "What?"], hub, pc)
    assert p.returncode == 0, p.stderr[-2000:]
    got = json.loads(p.stdout)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", hub["cache"])
    monkeypatch.setenv("PARROT_CACHE", pc)
    m = parrot.load(REPO, revision="v2", threads=1, progress=False)
    assert os.path.basename(m.path) == f"{COMMIT2}-f16.gguf"  # the CLI's conversion, reused
    r = m.run(img, "What?", max_new_tokens=6)
    assert got["token_ids"] == list(r.token_ids) and len(got["token_ids"]) > 0
