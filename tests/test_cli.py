"""The command line in a subprocess (`python -m parrot`), on a small random model built without torch."""
import glob
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import parrot

# the text and image front ends (issue 4) land separately; until they are merged these tests cannot run
pytest.importorskip("parrot.tokenizer", reason="needs parrot.tokenizer (issue 4)")
pytest.importorskip("parrot.image", reason="needs parrot.image (issue 4)")
from parrot.demo import make_random_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ["generate", "chat", "convert", "info", "bench", "demo", "eval"]


def run(*args, stdin=None, env=None, timeout=120):
    e = dict(os.environ, PYTHONPATH=ROOT, PARROT_CACHE=os.environ.get("PARROT_CACHE", ""))
    e.pop("PARROT_MODEL", None)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "parrot", *args], input=stdin, capture_output=True, text=True,
                          cwd=ROOT, env=e, timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    model = make_random_model(str(d / "m.gguf"))
    img = np.zeros((20, 30, 3), np.uint8)
    img[5:15, 10:20] = (200, 30, 30)
    from PIL import Image
    Image.fromarray(img).save(d / "img.png")
    return model, str(d / "img.png"), d


def one_line(s):
    return len(s.strip().splitlines()) == 1 and "Traceback" not in s


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0 and "usage: parrot " + cmd in r.stdout
    if cmd != "convert":   # every command that uses a model names its default (test_info_and_eval_default_...)
        assert "-m PATH, --model PATH" in r.stdout and "(default: $PARROT_MODEL, else the model shipped with the " \
            "package)" in " ".join(r.stdout.split()), r.stdout


def test_wrong_usage_exits_2_with_one_line():
    for args in (["generate"], ["frobnicate"], [], ["generate", "x.png", "hi", "--max-new-tokens", "many"]):
        r = run(*args)
        assert r.returncode == 2, args
        assert one_line(r.stderr) and "error:" in r.stderr, r.stderr


def test_user_errors_exit_1_without_traceback(files, tmp_path):
    model, img, _ = files
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 20)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"not a png at all")
    cases = [["generate", str(tmp_path / "missing.png"), "hi", "-m", model],
             ["generate", img, "hi", "-m", str(tmp_path / "missing.gguf")],
             ["generate", img, "hi", "-m", str(bad)],
             ["generate", str(garbage), "hi", "-m", model],
             ["info", str(tmp_path / "missing.gguf")],
             ["info", "-m", str(bad)]]
    for args in cases:
        r = run(*args)
        assert r.returncode == 1, (args, r.stderr)
        assert one_line(r.stderr) and r.stderr.startswith("parrot: error:"), r.stderr


def test_generate_streams_the_api_answer(files):
    model, img, _ = files
    want = parrot.load(model).generate(img, "What colour is it?", max_new_tokens=20)
    r = run("generate", img, "What colour is it?", "-m", model, "--max-new-tokens", "20")
    assert r.returncode == 0, r.stderr
    assert r.stdout == want + "\n"
    r = run("generate", img, "What colour is it?", "-m", model, "--max-new-tokens", "20", "--json")
    out = json.loads(r.stdout)
    assert out["text"] == want and len(out["routing"]) == 6 and out["finish_reason"] in ("stop", "length")
    assert set(out["timings"]) >= {"preprocess_s", "vision_s", "moe_s", "prefill_s", "decode_s", "prompt_tokens",
                                   "new_tokens", "decode_tokens_per_s"}
    raw = parrot.load(model).run(img, "What colour is it?", max_new_tokens=20, valid_utf8=False)
    r = run("generate", img, "What colour is it?", "-m", model, "--max-new-tokens", "20", "--no-valid-utf8", "--json")
    assert json.loads(r.stdout)["text"] == raw.text


def test_default_model_from_environment(files):
    model, img, _ = files
    r = run("generate", img, "Hi", "--max-new-tokens", "5", env={"PARROT_MODEL": model})
    assert r.returncode == 0, r.stderr


def test_chat_session(files):
    model, img, _ = files
    m = parrot.load(model)
    chat = m.chat(img)
    a1 = chat.ask("First?", max_new_tokens=8)
    a2 = chat.ask("Second\nline?", max_new_tokens=8)
    fresh = m.chat(img).ask("First?", max_new_tokens=8)
    stdin = "First?\nSecond\\\nline?\n/history\n/reset\nFirst?\n/nope\n/exit\n"
    r = run("chat", img, "-m", model, "--max-new-tokens", "8", stdin=stdin)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"{a1}\n{a2}\nuser: First?\nassistant: {a1}\nuser: Second\nline?\n"
                               f"assistant: {a2}\n{fresh}\n")
    assert "conversation cleared" in r.stderr and "unknown command /nope" in r.stderr


def test_chat_help_lists_the_commands_it_accepts(files):
    """/help (and `chat --help`) name every command; each one named is accepted (none is "unknown")."""
    from parrot.cli import CHAT_COMMANDS
    model, img, _ = files
    names = ["/reset", "/image PATH", "/history", "/help", "/exit, /quit"]
    assert [n for n, _ in CHAT_COMMANDS] == names
    r = run("chat", img, "-m", model, stdin="/help\n/exit\n")
    assert r.returncode == 0 and "unknown command" not in r.stderr, r.stderr
    listed = r.stderr.split("commands:\n", 1)[1]   # /help's list (the banner names them on one line)
    for n in names:
        assert f"  {n} " in listed, n
    helptext = " ".join(run("chat", "--help").stdout.split())
    for n in names:
        assert n in helptext, n
    stdin = f"/reset\n/history\n/image {img}\n/image\n/help\n/quit\nnot read\n"
    r = run("chat", img, "-m", model, "--max-new-tokens", "2", stdin=stdin)
    assert r.returncode == 0 and "unknown command" not in r.stderr and "parrot:" not in r.stderr, r.stderr
    assert "new conversation about no image" in r.stderr and r.stdout == ""   # /quit left before "not read"


# every numeric option: (command line, option named in the error); each must fail before anything is loaded
# (the model path does not exist, so a late check would exit 1 with "no such model file" instead)
BAD_NUMBERS = [
    (["chat", "--temperature", "-1"], "--temperature"),
    (["chat", "--temperature", "nan"], "--temperature"),
    (["generate", "x.png", "hi", "--temperature", "inf"], "--temperature"),
    (["generate", "x.png", "hi", "--top-p", "0"], "--top-p"),
    (["generate", "x.png", "hi", "--top-p", "1.5"], "--top-p"),
    (["generate", "x.png", "hi", "--top-k", "0"], "--top-k"),
    (["chat", "--repetition-penalty", "0"], "--repetition-penalty"),
    (["chat", "--seed", "-1"], "--seed"),
    (["chat", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["generate", "x.png", "hi", "-t", "0"], "--threads"),
    (["bench", "--runs", "0"], "--runs"),
    (["bench", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["demo", "--max-new-tokens", "-3"], "--max-new-tokens"),
    (["eval", "x_en.tsv", "-o", "out", "--workers", "0"], "--workers"),
    (["eval", "x_en.tsv", "-o", "out", "--max-new-tokens", "0"], "--max-new-tokens"),
    (["eval", "x_en.tsv", "-o", "out", "--threads", "0"], "--threads"),
]


@pytest.mark.parametrize("args,option", BAD_NUMBERS)
def test_out_of_range_numbers_are_usage_errors(args, option, tmp_path):
    r = run(*args, "-m", str(tmp_path / "missing.gguf"))
    assert r.returncode == 2, (args, r.returncode, r.stderr)
    assert one_line(r.stderr) and "error: argument " in r.stderr and option in r.stderr, r.stderr
    assert "no such model" not in r.stderr


def test_boundary_numbers_are_accepted():
    from parrot.cli import build_parser
    a = build_parser().parse_args(["chat", "--temperature", "0", "--top-p", "1", "--top-k", "1", "--seed", "0",
                                   "--max-new-tokens", "1", "-t", "1", "--repetition-penalty", "1e-3"])
    assert (a.temperature, a.top_p, a.top_k, a.seed, a.max_new_tokens, a.threads) == (0.0, 1.0, 1, 0, 1, 1)
    assert build_parser().parse_args(["bench", "--runs", "1"]).runs == 1


def _text_only_model(d):
    """A plain Qwen2 (no vision tower): the random checkpoint without its vision, projector and MoE parts."""
    from parrot._safetensors import open_checkpoint
    from parrot.converter import convert
    from parrot.demo import _write_safetensors, write_random_checkpoint
    write_random_checkpoint(str(d))
    st = os.path.join(d, "model.safetensors")
    ckpt = open_checkpoint(str(d))
    keep = {n: ckpt.read(t).reshape(t.shape) for n, t in ckpt.tensors.items()
            if n.startswith(("model.embed_tokens.", "model.layers.", "model.norm.", "lm_head."))}
    ckpt.close()
    _write_safetensors(st, keep)
    with open(os.path.join(d, "config.json")) as fh:
        cfg = json.load(fh)
    cfg = {k: v for k, v in cfg.items()
           if not k.startswith(("mm_", "moe_", "vision", "num_experts", "use_moe", "image_"))}
    cfg.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    with open(os.path.join(d, "config.json"), "w") as fh:
        json.dump(cfg, fh)
    return convert(str(d), os.path.join(d, "text.gguf"), dtype="f32", progress=False)


def test_text_only_model_gets_command_line_hints(files, tmp_path):
    """A picture given to a text-only model: the CLI says which option or command to use, not the Python API's
    "pass image=None"; without the picture the same command answers."""
    _, img, _ = files
    text = _text_only_model(tmp_path / "qwen2")
    assert parrot.load(text).config["has_vision"] is False
    r = run("generate", img, "hi", "-m", text)
    assert r.returncode == 1 and one_line(r.stderr) and "--no-image" in r.stderr, r.stderr
    assert "image=None" not in r.stderr
    want = parrot.load(text).generate(None, "hi", max_new_tokens=4)
    r = run("generate", img, "hi", "-m", text, "--no-image", "--max-new-tokens", "4")
    assert r.returncode == 0 and r.stdout == want + "\n", r.stderr
    r = run("chat", img, "-m", text)
    assert r.returncode == 1 and "without IMAGE" in r.stderr and "image=None" not in r.stderr, r.stderr
    r = run("chat", "-m", text, "--max-new-tokens", "2", stdin=f"/image {img}\n/exit\n")
    assert r.returncode == 0 and "/image alone" in r.stderr and "image=None" not in r.stderr, r.stderr


def test_info_and_eval_default_to_the_default_model(files, tmp_path):
    """`info` and `eval` without a model use $PARROT_MODEL, else the shipped model, as the other commands do."""
    from evaluate_fakes import png_b64, write_tsv
    model, _, _ = files
    r = run("info", env={"PARROT_MODEL": model})
    assert r.returncode == 0 and r.stdout.startswith(f"{model}: "), r.stderr
    shipped = sorted(glob.glob(os.path.join(ROOT, "parrot", "models", "*.gguf")))[0]
    assert json.loads(run("info", "--json").stdout)["gguf"] == shipped
    tsv = write_tsv(tmp_path / "q_en.tsv", [dict(index=1, question="Which?", A="x", B="y", answer="A",
                                                 image=png_b64(5))])
    for env, want in (({"PARROT_MODEL": model}, model), ({}, shipped)):
        out = tmp_path / ("env" if env else "shipped")
        r = run("eval", tsv, "-o", str(out), "-q", "--no-plots", env=env)
        assert r.returncode == 0, r.stderr
        with open(out / "accuracy.json") as f:
            assert json.load(f)["model"] == os.path.abspath(want)


def test_info_on_a_checkpoint_directory(files, tmp_path):
    """A Hugging Face directory is converted once into the cache (as `parrot.load` does) and its file shown."""
    from parrot.demo import write_random_checkpoint
    model, _, _ = files
    hf = write_random_checkpoint(str(tmp_path / "hf"))
    cache = str(tmp_path / "cache")
    r = run("info", hf, "--json", env={"PARROT_CACHE": cache})
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["path"] == hf and info["gguf"].startswith(cache) and os.path.isfile(info["gguf"])
    ref = parrot.convert(hf, str(tmp_path / "ref.gguf"), progress=False)   # the default dtype, independently
    assert [(t["name"], t["dtype"], tuple(t["shape"]), t["bytes"]) for t in info["tensors"]] == \
        parrot.load(ref).tensors()
    r = run("info", hf, env={"PARROT_CACHE": cache})
    assert r.returncode == 0 and r.stdout.startswith(f"{hf}: Hugging Face checkpoint, converted to "), r.stdout


def test_info(files):
    model, _, _ = files
    r = run("info", model)
    assert r.returncode == 0, r.stderr
    m = parrot.load(model)
    for name, dtype, shape, nbytes in m.tensors():
        assert f"{name} " in r.stdout
    assert "vocab_size" in r.stdout and "tokenizer.ggml.tokens" in r.stdout and "[259 entries]" in r.stdout
    info = json.loads(run("info", model, "--json").stdout)
    assert [(t["name"], t["dtype"], tuple(t["shape"]), t["bytes"]) for t in info["tensors"]] == m.tensors()
    assert info["config"]["num_experts"] == 6


def test_convert(files, tmp_path):
    """convert a checkpoint directory, refuse to overwrite without --force, then overwrite with it."""
    from parrot.demo import write_random_checkpoint

    model, img, _ = files
    hf = write_random_checkpoint(str(tmp_path / "hf"))  # the same checkpoint the files fixture converted
    out = tmp_path / "cli.gguf"
    r = run("convert", hf, "-o", str(out), "--dtype", "f32", "-q")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(out)
    assert parrot.load(out).tensors() == parrot.load(model).tensors()
    assert parrot.load(out).generate(img, "Hi", max_new_tokens=8) == parrot.load(model).generate(img, "Hi",
                                                                                               max_new_tokens=8)
    r = run("convert", hf, "-o", str(out), "-q")
    assert r.returncode == 1 and "exists" in r.stderr and one_line(r.stderr)
    r = run("convert", hf, "-o", str(out), "-q", "--force", "--dtype", "bf16")
    assert r.returncode == 0 and {d for _, d, _, _ in parrot.load(out).tensors()} == {"bf16", "f32"}
    r = run("convert", hf, "-o", str(out), "--dtype", "q3")
    assert r.returncode == 1 and "--dtype" in r.stderr
    os.unlink(os.path.join(hf, "config.json"))
    r = run("convert", hf, "-o", str(tmp_path / "x.gguf"))
    assert r.returncode == 1 and "config.json" in r.stderr and one_line(r.stderr)


def test_bench(files):
    model, _, _ = files
    r = run("bench", "-m", model, "--runs", "1", "--max-new-tokens", "4")
    assert r.returncode == 0, r.stderr
    assert "built-in quick timing" in r.stdout and "tokens/s" in r.stdout and "vision" in r.stdout


def test_bench_decodes_the_tokens_it_reports():
    """On the shipped model, whose greedy continuation of bench's decoding prompt (as many token ids 0, 1, 2, ... as
    its real prompt has positions) ends after a few tokens, bench still times 24 decoding steps (end-of-text
    ignored) and says so, with a finite positive rate."""
    m = parrot.load(sorted(glob.glob(os.path.join(ROOT, "parrot", "models", "*.gguf")))[0])
    img = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)   # bench's picture
    positions = m.run(img, "Describe the picture in detail.", max_new_tokens=1).timings["prompt_tokens"]
    natural = m.generate_ids(np.arange(positions) % m.config["vocab_size"], 24, stop_ids=m.stop_ids)
    assert len(natural) < 24 and natural[-1] in m.stop_ids, natural   # what would fool a bench that stopped
    r = run("bench", "--runs", "3", "--max-new-tokens", "24")   # no -m: the shipped model
    assert r.returncode == 0, r.stderr
    line = next(l for l in r.stdout.splitlines() if l.strip().startswith("decode"))
    assert "(24 tokens after the " in line and "-position prompt, end-of-text ignored)" in line, line
    rate = float(line.split()[1])
    assert np.isfinite(rate) and rate > 0, line


def test_demo_without_a_model_builds_a_random_one():
    shipped = os.path.join(ROOT, "parrot", "models")
    if os.path.isdir(shipped) and any(f.endswith(".gguf") for f in os.listdir(shipped)):
        pytest.skip("a trained model ships: the demo uses it (covered by the shipped-model tests)")
    r = run("demo", "--max-new-tokens", "6")
    assert r.returncode == 0, r.stderr
    assert "RANDOM" in r.stdout and "meaningless" in r.stdout
    for lang in ("[en]", "[zh]", "[pt]", "[ar]", "[tr]", "[ru]"):
        assert r.stdout.count(lang) == 8   # four pictures, an open and a multiple-choice question each
    assert r.stdout.count("routing") == 48 and "44 hits, 4 misses" in r.stdout
