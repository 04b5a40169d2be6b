"""Hostile checkpoints: every converter row of the hostile-input table ends in a one-line ModelError naming the
file and the field or tensor, within a time and memory limit, and writes nothing.

The bad conversions run in one child process (so a regression that exhausts memory kills the child, not the test
run; the child also has an address-space limit of 3 GB as a backstop). For each case the child records the
exception, the seconds ``parrot.convert`` took and its peak RSS (ru_maxrss) minus the RSS after a warm-up
conversion of the good checkpoint (imports, C core and tokenizer code loaded).

Limits: 5 s and 300 MB extra per case. A correct refusal takes milliseconds and a few MB (the checkpoint is a
few hundred KB); before the validator, these inputs took minutes, GBs, or ended in the OOM killer (10⁹ layers),
so the margins are > 50x on both sides while still catching any work proportional to a claimed size.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIME_LIMIT_S = 5.0
MEMORY_LIMIT_MB = 300
LAYER = "model.layers.1.mlp.up_proj.weight"         # (ff, d) matrix of decoder layer 1
VISION = "model.vision_tower.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight"


def _write_header(path, header, data):
    """A safetensors file from a header given as JSON text (to write values json.dumps would not)."""
    raw = header.encode()
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw + data)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """A tiny Parrot (vision tower inside, MoE) saved in one f32 safetensors shard."""
    from training.modeling_parrot import make_tiny_parrot

    d = str(tmp_path_factory.mktemp("good") / "hf")
    make_tiny_parrot(3).save_pretrained(d, max_shard_size=10 ** 9)
    os.remove(os.path.join(d, "model.safetensors.index.json"))  # one unindexed shard, as small repos have
    (shard,) = [n for n in os.listdir(d) if n.endswith(".safetensors")]
    os.rename(os.path.join(d, shard), os.path.join(d, "model.safetensors"))
    return d


def _edit_config(fn):
    def apply(d):
        p = os.path.join(d, "config.json")
        cfg = json.load(open(p))
        out = fn(cfg)
        with open(p, "w") as f:
            json.dump(cfg if out is None else out, f)  # json writes NaN / Infinity as such
    return apply


def _set(key, value, sub=None):
    def fn(cfg):
        (cfg[sub] if sub else cfg)[key] = value
    return _edit_config(fn)


def _edit_tensor(name, fn, dtype=None):
    def apply(d):
        p = os.path.join(d, "model.safetensors")
        t = load_file(p)
        if dtype is not None:
            t[name] = t[name].astype(dtype)
        fn(t[name])
        save_file(t, p, metadata={"format": "pt"})
    return apply


def _weight_map_list(d):
    p = os.path.join(d, "model.safetensors")
    names = list(load_file(p))
    json.dump({"metadata": {}, "weight_map": [[n, "model.safetensors"] for n in names]},
              open(os.path.join(d, "model.safetensors.index.json"), "w"))


def _offsets_5e5520(d):
    p = os.path.join(d, "model.safetensors")
    raw = open(p, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    name = "model.norm.weight"
    text = json.dumps(header).replace(json.dumps(header[name]["data_offsets"]), "[0, 5E5520]", 1)
    _write_header(p, text, raw[8 + n:])


def _set_nan(idx):
    def fn(a):
        a[idx] = np.nan
    return fn


def _set_inf(idx):
    def fn(a):
        a[idx] = np.inf
    return fn


# (id, how to damage the checkpoint, output dtype, regex the one-line message must match)
CASES = [
    ("layers_1e6", _set("num_hidden_layers", 10 ** 6), "f16",
     r"config.json: config field 'num_hidden_layers' is 1000000, but the checkpoint holds tensors of 2 such"),
    ("layers_1e9", _set("num_hidden_layers", 10 ** 9), "f16",
     r"config.json: config field 'num_hidden_layers' is 1000000000, but the checkpoint holds"),
    ("layers_minus_1", _set("num_hidden_layers", -1), "f16",
     r"config.json: config field 'num_hidden_layers' is -1, outside \[0, "),
    ("heads_0", _set("num_attention_heads", 0), "f16",
     r"config.json: config field 'num_attention_heads' is 0, outside \[1, "),
    ("kv_heads_0", _set("num_key_value_heads", 0), "f16",
     r"config.json: config field 'num_key_value_heads' is 0, outside \[1, "),
    ("patch_size_0", _set("patch_size", 0, sub="vision_config"), "f16",
     r"config.json \(vision_config\): config field 'patch_size' is 0, outside \[1, "),
    ("rope_scaling_string", _set("rope_scaling", "linear"), "f16",
     r"config.json: config field rope_scaling 'linear' is not supported"),
    ("rope_scaling_yarn", _set("rope_scaling", {"rope_type": "yarn", "factor": 4.0}), "f16",
     r"config.json: rope scaling 'yarn' \(rope_scaling\) is not supported"),
    ("config_list", _edit_config(lambda cfg: [cfg]), "f16",
     r"config.json: expected a JSON object, found a list"),
    ("weight_map_list", _weight_map_list, "f16",
     r"model.safetensors.index.json: 'weight_map' is not an object"),
    ("max_position_2_62", _set("max_position_embeddings", 2 ** 62), "f16",
     r"config.json: config field 'max_position_embeddings' is 4611686018427387904, outside \[1, 2147483647\]"),
    ("data_offsets_5e5520", _offsets_5e5520, "f16",
     r"model.safetensors: tensor 'model.norm.weight': data_offsets \[0, inf\] are not two non-negative integers"),
    ("hidden_size_infinity", _set("hidden_size", math.inf), "f16",
     r"config.json: config field 'hidden_size' must be an integer, got inf"),
    ("moe_weight_nan", _set("moe_weight", math.nan), "f16",
     r"config.json: config field 'moe_weight' is nan; it must be finite"),
    ("rms_norm_eps_nan", _set("rms_norm_eps", math.nan), "f16",
     r"config.json: config field 'rms_norm_eps' is nan; it must be finite"),
    ("rope_theta_inf", _set("rope_theta", math.inf), "f16",
     r"config.json: config field 'rope_theta' is inf; it must be finite"),
    ("f16_overflow", _edit_tensor(LAYER, lambda a: a.__setitem__((2, 3), 1e6)),
     "f16", r"model.safetensors: tensor '" + LAYER + r"' \(blk.1.ffn_up.weight\) holds 1e\+06, beyond f16's "
            r"range ±65504 at index \[2, 3\]"),
] + [
    (f"nan_f32_weight_to_{dt}", _edit_tensor(LAYER, _set_nan((4, 7))), dt,
     r"model.safetensors: tensor '" + LAYER + r"' \(blk.1.ffn_up.weight\) holds NaN at index \[4, 7\]")
    for dt in ("f32", "f16", "bf16", "q8_0", "q4_0")
] + [
    (f"inf_f16_weight_to_{dt}", _edit_tensor(VISION, _set_inf((5, 1)), dtype=np.float16), dt,
     r"model.safetensors: tensor '" + VISION + r"' \(v.blk.0.ffn_up.weight\) holds inf at index \[5, 1\]")
    for dt in ("f32", "f16", "bf16", "q8_0", "q4_0")
]

CHILD = r"""
import json, os, resource, sys, time
if "asan" not in os.environ.get("LD_PRELOAD", ""):  # ASan reserves terabytes of shadow address space
    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
import parrot
good, cases, out_dir = json.loads(sys.argv[1])
parrot.convert(good, out_dir + "/warmup.gguf", dtype="q4_0", progress=False, log=lambda s: None)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
results = {}
for name, d, dtype in cases:
    t = time.perf_counter()
    try:
        parrot.convert(d, out_dir + "/" + name + ".gguf", dtype=dtype, progress=False, log=lambda s: None)
        err = None
    except Exception as e:
        err = [type(e).__name__, str(e)]
    results[name] = dict(error=err, seconds=time.perf_counter() - t,
                         extra_mb=(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def results(good, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad")
    out_dir = tmp / "out"
    out_dir.mkdir()
    cases = []
    for name, damage, dtype, _ in CASES:
        d = str(tmp / name)
        shutil.copytree(good, d)
        damage(d)
        cases.append((name, d, dtype))
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", CHILD, json.dumps([good, cases, str(out_dir)])], env=env,
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    res = json.loads(p.stdout.strip().splitlines()[-1])
    print(f"\nhostile checkpoints: slowest {max(r['seconds'] for r in res.values()):.3f} s, largest RSS growth "
          f"{max(r['extra_mb'] for r in res.values()):.1f} MB over {len(res)} cases")
    res["_outputs"] = sorted(os.listdir(out_dir))
    return res


@pytest.mark.parametrize("name,damage,dtype,pattern", CASES, ids=[c[0] for c in CASES])
def test_hostile_checkpoint_is_a_one_line_model_error(results, name, damage, dtype, pattern):
    import re

    r = results[name]
    assert r["error"] is not None, f"{name}: converted without an error"
    kind, msg = r["error"]
    assert kind == "ModelError", (kind, msg)
    assert "\n" not in msg, msg
    assert re.search(pattern, msg), msg
    assert r["seconds"] <= TIME_LIMIT_S, r
    assert r["extra_mb"] <= MEMORY_LIMIT_MB, r
    assert not any(o.startswith(name + ".gguf") for o in results["_outputs"]), results["_outputs"]


def test_good_checkpoint_converts_in_every_dtype(good, tmp_path):
    """The validator refuses nothing it should accept (the same tiny Parrot, every dtype)."""
    import parrot

    for dt in ("f32", "f16", "bf16", "q8_0", "q4_0"):
        out = parrot.convert(good, tmp_path / f"{dt}.gguf", dtype=dt, progress=False, log=lambda s: None)
        assert parrot.load(out, threads=1).config["has_vision"]
