"""torch ``pytorch_model*.bin`` checkpoints, read without torch and without executing the pickle.

The reference is torch itself: a tiny Parrot saved with ``torch.save`` (sharded, with
``pytorch_model.bin.index.json``) must convert to exactly the tensors the same model's safetensors checkpoint
converts to, in a process where ``torch`` is never imported; tensors that are views into a shared storage
(offset, row of a matrix) read back as torch has them; and a pickle naming any global outside the small allow-list
is refused with a ModelError before it can run.
"""
import io
import json
import os
import pickle
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import torch

import parrot
from parrot._safetensors import Checkpoint, open_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def save_bin_shards(state, d, n_shards):
    """HF's layout for torch checkpoints: pytorch_model-0000i-of-0000N.bin + pytorch_model.bin.index.json."""
    names = list(state)
    weight_map = {}
    for i in range(n_shards):
        fname = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = {k: state[k] for k in names[i::n_shards]}
        torch.save(part, os.path.join(d, fname))
        weight_map.update({k: fname for k in part})
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(d, "pytorch_model.bin.index.json"), "w"))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """The same tiny Parrot as safetensors and as 3 torch .bin shards (f16 weights: HalfStorage)."""
    from training.modeling_parrot import make_tiny_parrot

    tmp = tmp_path_factory.mktemp("bin")
    model = make_tiny_parrot(5)
    st_dir, bin_dir = str(tmp / "st"), str(tmp / "bin")
    model.save_pretrained(st_dir, dtype=torch.float16, max_shard_size=60_000)
    os.makedirs(bin_dir)
    with open(os.path.join(st_dir, "config.json")) as f:
        open(os.path.join(bin_dir, "config.json"), "w").write(f.read())
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_bin_shards(state, bin_dir, 3)
    return st_dir, bin_dir


CONVERT_WITHOUT_TORCH = r"""
import sys, parrot
parrot.convert(sys.argv[1], sys.argv[2], dtype=sys.argv[3], progress=False, log=lambda s: None)
bad = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch."))
print("TORCH MODULES:", bad)
sys.exit(1 if bad else 0)
"""


def tensors_of(path):
    import gguf

    return {t.name: (t.tensor_type, bytes(t.data)) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("dtype", ["f16", "q4_0"])
def test_bin_repo_converts_without_torch_to_the_same_tensors(checkpoints, tmp_path, dtype):
    st_dir, bin_dir = checkpoints
    out_bin = str(tmp_path / "from_bin.gguf")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", CONVERT_WITHOUT_TORCH, bin_dir, out_bin, dtype], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr[-2000:]
    assert "TORCH MODULES: []" in p.stdout
    out_st = parrot.convert(st_dir, tmp_path / "from_st.gguf", dtype=dtype, progress=False, log=lambda s: None)
    a, b = tensors_of(out_bin), tensors_of(str(out_st))
    assert a.keys() == b.keys() and len(a) > 50
    for name in a:
        assert a[name] == b[name], name


def test_views_into_shared_storage_read_as_torch_has_them(tmp_path):
    base = torch.arange(60, dtype=torch.float32).reshape(6, 10)
    state = {"whole": base, "row": base[3], "rows": base[2:5], "bf16": torch.randn(4, 8).to(torch.bfloat16),
             "param": torch.nn.Parameter(torch.randn(3, 2)), "i64": torch.arange(5)}
    d = tmp_path / "c"
    d.mkdir()
    torch.save(state, str(d / "pytorch_model.bin"))
    ck = open_checkpoint(str(d))
    try:
        for name, t in state.items():
            info = ck.tensors[name]
            assert info.shape == tuple(t.shape), name
            got = ck.read(info).reshape(info.shape)
            want = t.detach().view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else \
                t.detach().numpy()
            assert np.array_equal(got, want), name
    finally:
        ck.close()


def write_torch_zip(path, pickle_bytes, extra=None):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle_bytes)
        z.writestr("archive/version", "3\n")
        for name, data in (extra or {}).items():
            z.writestr(name, data)


def pickle_calling(module, name, args=()):
    """Protocol-2 pickle of {'w': module.name(*args)}, written opcode by opcode (no object needed)."""
    out = io.BytesIO()
    out.write(b"\x80\x02}q\x00X\x01\x00\x00\x00w")
    out.write(b"c" + module.encode() + b"\n" + name.encode() + b"\n")
    out.write(pickle.dumps(tuple(args), protocol=2)[2:-1])  # the argument tuple, without PROTO / STOP
    out.write(b"Rs.")  # REDUCE, SETITEM, STOP
    return out.getvalue()


def test_crafted_pickles_do_call_their_global():
    """The hostile inputs below are real: plain pickle runs the global they name."""
    assert pickle.loads(pickle_calling("builtins", "len", ("abc",))) == {"w": 3}


@pytest.mark.parametrize("module,name", [
    ("posix", "system"), ("os", "system"), ("builtins", "eval"), ("builtins", "exec"), ("subprocess", "Popen"),
    ("torch", "load"), ("torch._utils", "_rebuild_device_tensor_from_numpy"), ("numpy.core.multiarray", "_reconstruct"),
    ("__builtin__", "getattr"), ("collections", "defaultdict"),
])
def test_pickle_naming_any_other_global_is_refused(tmp_path, module, name):
    marker = tmp_path / "pwned"
    d = tmp_path / "c"
    d.mkdir()
    write_torch_zip(str(d / "pytorch_model.bin"), pickle_calling(module, name, (f"touch {marker}",)))
    with pytest.raises(parrot.ModelError, match=rf"pytorch_model.bin:archive/data.pkl: refuses to load global "
                                                rf"'{module}.{name}'"):
        open_checkpoint(str(d))
    assert not marker.exists()


def test_os_system_pickle_made_by_pickle_itself_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    d = tmp_path / "c"
    d.mkdir()
    write_torch_zip(str(d / "pytorch_model.bin"), pickle.dumps({"w": Evil()}, protocol=2))
    with pytest.raises(parrot.ModelError, match=r"refuses to load global '(posix|os)\.system'.*could run code"):
        open_checkpoint(str(d))
    assert not marker.exists()


@pytest.mark.parametrize("case", ["not_zip", "no_pickle", "bad_pickle", "missing_storage", "overrun", "compressed",
                                  "not_dict"])
def test_corrupt_bin_is_a_model_error(tmp_path, case):
    d = tmp_path / "c"
    d.mkdir()
    p = str(d / "pytorch_model.bin")
    good = io.BytesIO()
    torch.save({"w": torch.ones(4, 4)}, good)
    good = good.getvalue()
    zin = zipfile.ZipFile(io.BytesIO(good))
    members = {n: zin.read(n) for n in zin.namelist()}
    pkl = next(n for n in members if n.endswith("data.pkl"))
    storage = next(n for n in members if "/data/" in n)
    if case == "not_zip":
        open(p, "wb").write(b"\x80\x02}q\x00.")
        match = "not a torch zip checkpoint"
    elif case == "no_pickle":
        write_torch_zip(p, b"", {})
        with zipfile.ZipFile(p, "w") as z:
            z.writestr("archive/version", "3")
        match = "expected one data.pkl"
    elif case == "bad_pickle":
        members[pkl] = members[pkl][:20]
        match = "corrupt pickle"
    elif case == "missing_storage":
        del members[storage]
        match = "which the archive lacks"
    elif case == "overrun":
        members[storage] = members[storage][:32]
        match = "holds 32 bytes, the pickle says 16 x 4"
    elif case == "compressed":
        match = "is compressed"
    else:
        members[pkl] = pickle.dumps([1, 2], protocol=2)
        match = "not a state dict"
    if case not in ("not_zip", "no_pickle"):
        with zipfile.ZipFile(p, "w") as z:
            for n, data in members.items():
                z.writestr(n, data, zipfile.ZIP_DEFLATED if case == "compressed" and n == storage else
                           zipfile.ZIP_STORED)
    with pytest.raises(parrot.ModelError, match=match):
        open_checkpoint(p.rsplit("/", 1)[0])
