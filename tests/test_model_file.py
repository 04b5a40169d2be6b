"""The converter and the GGUF loader reject bad input with ModelError naming the file and the problem."""
import json
import os
import struct

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import parrot
from conftest import make_qwen2


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("qwen")
    model, d = make_qwen2(tmp, shard="10MB")  # one shard: model.safetensors
    gg = parrot.convert(d, tmp / "good.gguf", dtype="f32", progress=False)
    return d, gg


def rewrite(d, fn):
    path = os.path.join(d, "model.safetensors")
    tensors = load_file(path)
    fn(tensors)
    save_file(tensors, path, metadata={"format": "pt"})


def copy_ckpt(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return str(dst)


def test_missing_and_misshaped_tensors_reported_together(qwen, tmp_path):
    d = copy_ckpt(qwen[0], tmp_path / "c")

    def damage(t):
        del t["model.layers.1.mlp.up_proj.weight"]
        t["model.layers.0.self_attn.k_proj.weight"] = np.zeros((5, 64), np.float32)
    rewrite(d, damage)
    with pytest.raises(parrot.ModelError) as e:
        parrot.convert(d, tmp_path / "o.gguf", progress=False)
    msg = str(e.value)
    assert "missing tensor 'model.layers.1.mlp.up_proj.weight'" in msg
    assert "'model.layers.0.self_attn.k_proj.weight'" in msg and "[5, 64]" in msg and "[32, 64]" in msg
    assert not os.path.exists(tmp_path / "o.gguf")


def test_unsupported_dtype(qwen, tmp_path):
    d = copy_ckpt(qwen[0], tmp_path / "c")
    rewrite(d, lambda t: t.__setitem__("model.norm.weight", np.ones(64, np.int32)))
    with pytest.raises(parrot.ModelError, match=r"model.norm.weight.*I32"):
        parrot.convert(d, tmp_path / "o.gguf", progress=False)


def test_corrupt_safetensors_header(qwen, tmp_path):
    d = copy_ckpt(qwen[0], tmp_path / "c")
    p = os.path.join(d, "model.safetensors")
    data = bytearray(open(p, "rb").read())
    data[8:20] = b"{not json!!!"
    open(p, "wb").write(data)
    with pytest.raises(parrot.ModelError, match=r"model.safetensors: corrupt safetensors header"):
        parrot.convert(d, tmp_path / "o.gguf", progress=False)
    open(p, "wb").write(struct.pack("<Q", 10 ** 12) + b"{}")
    with pytest.raises(parrot.ModelError, match=r"header length .* exceeds the file size"):
        parrot.convert(d, tmp_path / "o.gguf", progress=False)


def test_truncated_shard(qwen, tmp_path):
    d = copy_ckpt(qwen[0], tmp_path / "c")
    p = os.path.join(d, "model.safetensors")
    data = open(p, "rb").read()
    open(p, "wb").write(data[:len(data) - 1000])
    with pytest.raises(parrot.ModelError, match=r"model.safetensors: truncated: tensor '.*' needs bytes"):
        parrot.convert(d, tmp_path / "o.gguf", progress=False)


def test_unknown_projector_and_select_feature(tmp_path):
    d = os.path.join(tmp_path, "c")
    os.makedirs(d)
    for key, val in (("mm_projector_type", "mlp3x_relu"), ("mm_vision_select_feature", "cls")):
        cfg = dict(model_type="parrot_qwen2", vocab_size=8, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=8, mm_vision_tower="openai/clip-vit-large-patch14-336", **{key: val})
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        save_file({"model.vision_tower.vision_tower.vision_model.embeddings.class_embedding": np.zeros(1024, np.float32)},
                  os.path.join(d, "model.safetensors"))
        with pytest.raises(parrot.ModelError, match=f"{key} '{val}' is not supported"):
            parrot.convert(d, tmp_path / "o.gguf", progress=False)


def test_existing_output_kept_unless_force(qwen, tmp_path):
    out = tmp_path / "o.gguf"
    out.write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="o.gguf exists"):
        parrot.convert(qwen[0], out, progress=False)
    assert out.read_bytes() == b"precious"
    parrot.convert(qwen[0], out, progress=False, force=True)
    assert parrot.load(out).config["hidden_size"] == 64


def test_output_gets_the_usual_file_mode(qwen, tmp_path):
    """Written through a private temporary file, the result still gets 0666 less the umask, as open() gives."""
    old = os.umask(0o022)
    try:
        out = parrot.convert(qwen[0], tmp_path / "o.gguf", progress=False)
    finally:
        os.umask(old)
    assert os.stat(out).st_mode & 0o777 == 0o644


def test_interrupted_conversion_leaves_nothing(qwen, tmp_path, monkeypatch):
    import parrot.converter as conv
    calls = {"n": 0}
    real = conv._convert_array

    def boom(*a, **k):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt
        return real(*a, **k)
    monkeypatch.setattr(conv, "_convert_array", boom)
    with pytest.raises(KeyboardInterrupt):
        parrot.convert(qwen[0], tmp_path / "o.gguf", progress=False)
    assert os.listdir(tmp_path) == []


def gguf_bytes(qwen):
    return bytearray(open(qwen[1], "rb").read())


def test_truncated_gguf(qwen, tmp_path):
    data = gguf_bytes(qwen)
    for cut in (0, 3, 10, 24, 100, 1000, len(data) // 2, len(data) - 1):
        p = tmp_path / f"t{cut}.gguf"
        p.write_bytes(data[:cut])
        with pytest.raises(parrot.ModelError, match=f"t{cut}.gguf"):
            parrot.load(p)


def test_tensor_past_end_of_file(qwen, tmp_path):
    import gguf
    r = gguf.GGUFReader(qwen[1])
    t = r.tensors[-1]
    # the last tensor's info ends with its u64 offset: find and enlarge it
    data = gguf_bytes(qwen)
    name = t.name.encode()
    pos = data.rfind(name)
    off_pos = pos + len(name) + 4 + 8 * len(t.shape) + 4
    (off,) = struct.unpack_from("<Q", data, off_pos)
    assert off == t.data_offset - r.data_offset if hasattr(r, "data_offset") else True
    struct.pack_into("<Q", data, off_pos, off + 1024 * 1024)
    p = tmp_path / "past.gguf"
    p.write_bytes(data)
    with pytest.raises(parrot.ModelError, match=rf"past.gguf: tensor '{t.name}' .* extends past the end of the file"):
        parrot.load(p)


def test_foreign_and_non_gguf_files(qwen, tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"PK\x03\x04" + bytes(100))
    with pytest.raises(parrot.ModelError, match="x.gguf: not a GGUF file"):
        parrot.load(p)
    import gguf
    w = gguf.GGUFWriter(str(tmp_path / "llama.gguf"), "llama")
    w.add_tensor("a", np.zeros(4, np.float32))
    w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
    with pytest.raises(parrot.ModelError, match="general.architecture is 'llama'"):
        parrot.load(tmp_path / "llama.gguf")
    with pytest.raises(OSError):
        parrot.load(tmp_path / "does-not-exist.gguf")


def test_random_corruption_never_crashes(qwen, tmp_path):
    """Flip bytes in the header region: loading either fails with ModelError or yields a usable model."""
    data = gguf_bytes(qwen)
    rng = np.random.default_rng(7)
    header_end = 4096
    for i in range(300):
        bad = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            bad[rng.integers(0, header_end)] = rng.integers(0, 256)
        p = tmp_path / "f.gguf"
        p.write_bytes(bad)
        try:
            m = parrot.load(p)
        except parrot.ModelError:
            continue
        m.logits([1, 2, 3])


def test_chunked_conversion_is_byte_identical_and_reports_the_index(qwen, tmp_path, monkeypatch):
    """Tensors cut into many chunks (a few rows each, converted by several threads) give the same file as whole
    tensors, and a NaN in a late chunk is reported at its index in the whole tensor."""
    import parrot.converter as conv

    whole = {dt: open(parrot.convert(qwen[0], tmp_path / f"w-{dt}.gguf", dtype=dt, progress=False), "rb").read()
             for dt in ("f16", "q4_0")}
    monkeypatch.setattr(conv, "CHUNK_ELEMENTS", 3 * 64 + 5)  # 3 rows of 64: chunks end mid-tensor
    for dt in ("f16", "q4_0"):
        assert open(parrot.convert(qwen[0], tmp_path / f"c-{dt}.gguf", dtype=dt, progress=False), "rb").read() \
            == whole[dt]
    d = copy_ckpt(qwen[0], tmp_path / "c")
    rewrite(d, lambda t: t["model.embed_tokens.weight"].__setitem__((200, 9), np.inf))
    with pytest.raises(parrot.ModelError, match=r"tensor 'model.embed_tokens.weight' \(token_embd.weight\) holds "
                                                r"inf at index \[200, 9\]"):
        parrot.convert(d, tmp_path / "o.gguf", dtype="q8_0", progress=False)


MEMORY_CHILD = r"""
import resource, sys
import parrot, parrot.converter as conv
from parrot import _core
conv.CHUNK_ELEMENTS = 1 << 20
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
parrot.convert(sys.argv[1], sys.argv[2], dtype=sys.argv[3], progress=False, log=lambda s: None)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
"""


@pytest.mark.parametrize("dtype", ["f16", "q4_0"])
def test_converter_memory_is_bounded_by_a_chunk_not_the_tensor(tmp_path, dtype):
    """A checkpoint whose embedding and lm_head are 64 MiB each (f32) converts with peak RSS growing by less
    than one such tensor (40 MiB): the converter holds a few 4 MiB chunks, not tensors or the mapped input (the
    old memory-mapped converter grew by > 128 MiB here: every input page it touched stayed resident)."""
    import subprocess
    import sys

    _, d = make_qwen2(tmp_path, vocab=65536, hidden=256, layers=1, heads=4, kv_heads=2, ff=64, shard="1GB")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-c", MEMORY_CHILD, d, str(tmp_path / "o.gguf"), dtype], env=env,
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip()) < 40, p.stdout


def _xor_words(raw: bytes) -> int:
    """every 8-byte little-endian word of raw XORed together, a short last word zero-padded"""
    raw = raw + bytes(-len(raw) % 8)
    return int(np.bitwise_xor.reduce(np.frombuffer(raw, dtype="<u8"))) if raw else 0


@pytest.mark.parametrize("dtype", ["f32", "q8_0", "q4_0"])
def test_read_tensors_reads_every_byte_of_the_named_tensors(qwen, tmp_path, dtype):
    """The benchmarks' bandwidth bound over the model's own weights (`read_tensors`) reads each named tensor's
    bytes exactly once: its byte count and the XOR of all its 8-byte words against the gguf package's reading of
    the file (the same bytes in memory for f32 and q8_0; q4_0 rows are rearranged at load, so only the byte
    count is comparable there), over 1 and 2 threads."""
    from gguf import GGUFReader
    d, _ = qwen
    path = parrot.convert(d, tmp_path / f"{dtype}.gguf", dtype=dtype, progress=False)
    file = {t.name: t.data.tobytes() for t in GGUFReader(path).tensors}
    names = sorted(file)[::2]  # a subset: only these are read
    for threads in (1, 2):
        m = parrot.load(path, threads=threads)
        nbytes, seconds, x = m._core.read_tensors(names, 2)
        assert nbytes == sum(len(file[n]) for n in names)
        assert seconds > 0
        if dtype != "q4_0":
            want = 0
            for n in names:
                want ^= _xor_words(file[n])
            assert x == want
        m.close()


def test_read_tensors_refuses_bad_arguments(qwen):
    m = parrot.load(qwen[1])
    with pytest.raises(KeyError, match="no tensor named 'nope'"):
        m._core.read_tensors(["nope"], 1)
    with pytest.raises(ValueError, match="repeat must be positive"):
        m._core.read_tensors([], 0)
    with pytest.raises(TypeError):
        m._core.read_tensors(5, 1)
    with pytest.raises(TypeError, match="not one str"):
        m._core.read_tensors("output_norm.weight", 1)
    assert m._core.read_tensors([], 1)[0] == 0


def test_benchmarks_count_the_decoder_weights_a_token_reads():
    """bench_decode's and bench_full's bound divides by these tensors' bytes: a Parrot file's vision tower,
    projector and experts run once per image, not per token; an untied embedding is read one row at a time."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
    from bench_parrot import decoder_tensors_per_token
    parrot_file = ["token_embd.weight", "output.weight", "output_norm.weight", "blk.0.attn_q.weight",
                   "blk.0.ffn_norm.weight", "v.blk.0.attn_q.weight", "v.patch_embd.weight", "mm.0.weight",
                   "moe.gate.weight", "moe.exp.0.ffn_up.weight"]
    assert decoder_tensors_per_token(parrot_file) == ["blk.0.attn_q.weight", "blk.0.ffn_norm.weight",
                                                      "output.weight", "output_norm.weight"]
    tied = [n for n in parrot_file if n != "output.weight"]
    assert decoder_tensors_per_token(tied) == ["blk.0.attn_q.weight", "blk.0.ffn_norm.weight",
                                               "output_norm.weight", "token_embd.weight"]
