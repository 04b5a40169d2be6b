"""The model that ships in the package (parrot/models/*.gguf), trained by training/train.py.

On the held-out set (training/make_heldout.py: 110 scenes never seen in training, each asked about its colour,
shape and count, as MMMB-style multiple choice and as open questions: 330 + 330 questions per language), the C
engine must
  - answer >= 90 % of the open questions and >= 90 % of the multiple-choice questions correctly in every
    language;
  - give the same greedy answer as the torch reference model (training/modeling_parrot.py on the saved
    checkpoint) on >= 99 % of the questions (in practice all: the engine reproduces the reference's logits
    to ~1e-5 and greedy answers only change where two logits tie that closely);
  - route each language through the MoE differently (mean routing weights per language, printed with -s;
    every pair of languages further apart than any of 200 random relabellings of their questions).
The shipped file must be exactly what `parrot convert` makes of training/checkpoint, and parrot.evaluate on
the held-out MMMB TSVs must give the same multiple-choice accuracy as scoring the answers here.
"""
import base64
import glob
import hashlib
import os

import numpy as np
import pytest

import parrot

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "training", "checkpoint")
SHIPPED = sorted(glob.glob(os.path.join(ROOT, "parrot", "models", "*.gguf")))

torch = pytest.importorskip("torch")
from training import data  # noqa: E402
from training.make_heldout import write_heldout  # noqa: E402

LANGS = data.LANGS
MAX_NEW_TOKENS = 16  # answers are one word or one letter; 16 leaves room to show a runaway answer


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def test_exactly_one_model_ships_and_it_is_small():
    assert len(SHIPPED) == 1, SHIPPED
    assert os.path.getsize(SHIPPED[0]) <= 20 * 1024 * 1024
    assert parrot.model.default_model_path() == SHIPPED[0] or os.environ.get("PARROT_MODEL")


def test_shipped_file_is_the_converter_output_of_the_checkpoint(tmp_path):
    out = parrot.convert(CKPT, str(tmp_path / "converted.gguf"), dtype="f32", progress=False, log=lambda s: None)
    assert sha256(out) == sha256(SHIPPED[0])


@pytest.fixture(scope="module")
def heldout(tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout")
    write_heldout(str(d), n_scenes=110, seed=2024)
    return d


@pytest.fixture(scope="module")
def engine():
    return parrot.load(SHIPPED[0], threads=1)


@pytest.fixture(scope="module")
def reference():
    from tokenizers import Tokenizer

    from training.modeling_parrot import ParrotQwen2ForCausalLM
    torch.set_num_threads(1)
    return ParrotQwen2ForCausalLM.from_pretrained(CKPT), Tokenizer.from_file(os.path.join(CKPT, "tokenizer.json"))


def questions(heldout, lang):
    """[(form, category, image PNG bytes, user text, expected answer, options)] for one language."""
    from training.evaluate import read_tsv
    code = data.MMMB_FILE_CODE[lang]
    out = []
    for r in read_tsv(os.path.join(heldout, f"mmmb_tiny_{code}.tsv")):
        options = {k: r[k] for k in "ABCD" if r[k]}
        out.append(("mc", r["category"], base64.b64decode(r["image"]),
                    data.mmmb_prompt(r["question"], options, lang), r["answer"], options))
    for r in read_tsv(os.path.join(heldout, f"open_tiny_{code}.tsv")):
        out.append(("open", r["category"], base64.b64decode(r["image"]), r["question"], r["answer"], None))
    return out


def correct(form, text, answer, options):
    if form == "mc":
        from parrot.evaluation.extract import extract_letter
        return extract_letter(text, options) == answer
    return text == answer


@pytest.fixture(scope="module")
def answers(heldout, engine, reference):
    """Per language: the engine's and the reference's answers, correctness, and the engine's routing."""
    from PIL import Image
    import io

    from training.evaluate import answer as reference_answer
    model, tok = reference
    out = {}
    for lang in LANGS:
        rows = []
        for form, cat, png, user, want, options in questions(heldout, lang):
            r = engine.run(png, user, max_new_tokens=MAX_NEW_TOKENS)
            ref_text, ref_w = reference_answer(model, tok, Image.open(io.BytesIO(png)), user)
            rows.append(dict(form=form, category=cat, text=r.text, ref=ref_text, routing=r.routing,
                             ref_routing=ref_w, ok=correct(form, r.text, want, options)))
        out[lang] = rows
    return out


def test_heldout_set_is_big_enough(heldout):
    for lang in LANGS:
        qs = questions(heldout, lang)
        assert sum(q[0] == "mc" for q in qs) >= 300 and sum(q[0] == "open" for q in qs) >= 300


@pytest.fixture(scope="module")
def accuracy_table(answers):
    """{(lang, "mc" | "open"): accuracy}, printed once (with -s)."""
    table = {(lang, form): float(np.mean([r["ok"] for r in rows if r["form"] == form]))
             for lang, rows in answers.items() for form in ("mc", "open")}
    print("\naccuracy per language (C engine, greedy, held-out):")
    for lang in LANGS:
        print(f"  {lang}: open {table[(lang, 'open')]:.3f}   multiple choice {table[(lang, 'mc')]:.3f}")
    return table


def test_open_question_accuracy_at_least_90_percent_in_every_language(accuracy_table):
    low = {k: v for k, v in accuracy_table.items() if k[1] == "open" and v < 0.90}
    assert not low, low


@pytest.mark.parametrize("lang", LANGS)
def test_multiple_choice_accuracy_at_least_90_percent(accuracy_table, lang):
    assert accuracy_table[(lang, "mc")] >= 0.90, accuracy_table[(lang, "mc")]


def test_engine_answers_equal_the_torch_reference(answers):
    rows = [r for rs in answers.values() for r in rs]
    same = np.mean([r["text"] == r["ref"] for r in rows])
    diff = [(r["text"], r["ref"]) for r in rows if r["text"] != r["ref"]][:10]
    print(f"\nengine == torch reference on {same:.4f} of {len(rows)} answers; differences: {diff}")
    assert same >= 0.99, diff
    # the routing weights are the reference's too (float32 sums in a different order: 1e-5 absolute)
    worst = max(float(np.max(np.abs(r["routing"] - np.asarray(r["ref_routing"]).ravel()))) for r in rows)
    assert worst < 1e-4, worst


def test_mean_routing_differs_by_language(answers):
    weights = {lang: np.array([r["routing"] for r in answers[lang]]) for lang in LANGS}
    mean = np.stack([weights[lang].mean(axis=0) for lang in LANGS])
    print("\nmean routing weights (rows: " + ", ".join(LANGS) + "; columns: experts 0-5)")
    for lang, row in zip(LANGS, mean):
        print(f"  {lang}  " + " ".join(f"{v:.3f}" for v in row))
    # Every pair of languages is routed apart by more than the spread within the languages' own questions
    # explains: a permutation test. The L1 distance between the two languages' mean weights must exceed the
    # distance for each of 200 random relabellings of the same 2 x 660 questions (p < 1/200 per pair).
    rng = np.random.default_rng(0)
    for i in range(len(LANGS)):
        for j in range(i + 1, len(LANGS)):
            a, b = weights[LANGS[i]], weights[LANGS[j]]
            observed = np.abs(a.mean(0) - b.mean(0)).sum()
            both = np.concatenate([a, b])
            null = []
            for _ in range(200):
                perm = rng.permutation(len(both))
                null.append(np.abs(both[perm[:len(a)]].mean(0) - both[perm[len(a):]].mean(0)).sum())
            print(f"  {LANGS[i]}-{LANGS[j]}: L1 {observed:.3f}, relabelled at most {max(null):.3f}")
            assert observed > max(null), (LANGS[i], LANGS[j], observed, max(null))


def test_evaluation_tool_on_the_heldout_tsvs(heldout, engine, answers, tmp_path):
    """parrot.evaluate on the MMMB-format held-out files scores what this test scores by hand (images as the
    PNGs the files hold: reference_jpeg=False)."""
    files = sorted(glob.glob(os.path.join(heldout, "mmmb_tiny_*.tsv")))
    res = parrot.evaluate(files, engine, tmp_path / "eval", max_new_tokens=MAX_NEW_TOKENS, reference_jpeg=False,
                          progress=False, verbose=False, plots=False)
    langs = res.summary["languages"]
    for lang in LANGS:
        want = [r["ok"] for r in answers[lang] if r["form"] == "mc"]
        assert langs[lang]["questions"] == len(want), (lang, langs[lang])
        assert langs[lang]["correct"] == sum(want), (lang, langs[lang], sum(want))


def test_module_level_generate_uses_the_shipped_model(monkeypatch):
    import parrot.model as pm
    from parrot.demo import QUESTIONS, SCENES, WORDS, draw_scene
    monkeypatch.setattr(pm, "_default", None)
    monkeypatch.delenv("PARROT_MODEL", raising=False)
    scene = SCENES[0]
    assert parrot.generate(draw_scene(scene), QUESTIONS["pt"]["colour"]) == WORDS["pt"][scene.colour]
    assert os.path.samefile(parrot.default_model().path, SHIPPED[0])


def test_demo_runs_on_the_shipped_model():
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "PARROT_MODEL"}
    r = subprocess.run([sys.executable, "-m", "parrot", "demo"], capture_output=True, text=True, env=env,
                       timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    print(r.stdout[-600:])
    assert "RANDOM" not in r.stdout and os.path.basename(SHIPPED[0]) in r.stdout
    for lang in LANGS:
        assert r.stdout.count(f"[{lang}]") == 8  # four pictures, an open and a multiple-choice question each
    assert r.stdout.count("routing") == 48
    import re
    right, asked = map(int, re.search(r"answers as expected: (\d+)/(\d+) open", r.stdout).groups())
    assert asked == 24 and right >= 0.9 * asked, r.stdout
