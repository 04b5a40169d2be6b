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
On what people type and draw (issue 20: 96 pictures from tests/people_pictures.py, a second renderer written apart
from the training generator, each asked in every language with paraphrases training never saw), the targets are
>= 85 % of the open and >= 85 % of the multiple-choice questions per language, the open answers in the question's
language >= 99 % of the time, and never U+FFFD (with the engine's default decoding, valid_utf8=True, which never lets
an answer break a character; the model alone, decoded as the reference does, starts 2 Arabic answers with half a
letter). A second English held-out set (data.HELDOUT_ENGLISH_2, written after the first set's English misses were
known and before any model trained on training/grammar.py was measured) is held to the same >= 85 % as a blind
check. Where the shipped model misses a target the test is a strict xfail stating its measured number
(SHIPPED_MISSES), to become a plain test when a model that meets it ships.
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


def test_demo_with_paraphrases_says_they_were_not_trained_on(engine):
    """`parrot demo --paraphrases`: a third, held-out wording per picture and language, plainly marked."""
    import io

    from parrot import demo
    out = io.StringIO()
    assert demo.run(engine, max_new_tokens=MAX_NEW_TOKENS, paraphrases=True, out=out) == 0
    text = out.getvalue()
    assert "NOT trained on" in text and text.count("(a wording not trained on)") == 24
    for lang in LANGS:  # four pictures: an open, a multiple-choice and a paraphrased question each
        assert text.count(f"[{lang}]") == 12
        assert any(q in text for kind in data.OPEN_KINDS for q in data.HELDOUT_PHRASINGS[lang][kind]), lang
    assert "/24 paraphrased" in text


# ---- what people type and draw: unseen paraphrases on a second renderer's pictures ---------------------------
# tests/people_pictures.py draws the shapes with its own code (numpy signed distances, CSS colours, other sizes
# and canvases); the questions are parrot.demo.HELDOUT_PHRASINGS, which training never sees. Every picture is
# asked in all six languages: one open question (colour, shape, count or "describe", in turn) and one
# multiple-choice question (colour, shape or count, in turn), each worded by a held-out paraphrase.
import people_pictures  # noqa: E402

# Where the shipped model misses a people target, its measured value (from `python3 -m pytest -s` on this file):
# the test is then a strict xfail naming the number, and becomes a failure, to be made a plain test again, as soon
# as a model that meets the target ships.
SHIPPED_MISSES: dict = {  # (lang, what): measured fraction; the shipped model (run 13c) meets every target
}


def shipped_param(lang, what, value=None):
    """`value` (default `lang`), as a strict xfail stating the shipped model's number where it misses the target."""
    value = lang if value is None else value
    measured = SHIPPED_MISSES.get((lang, what))
    if measured is None:
        return value
    return pytest.param(value, marks=pytest.mark.xfail(strict=True, reason=(
        f"shipped model: {measured:.3f} ({what}); training/README.md, status of the shipped checkpoint")))


PEOPLE_PICTURES = 96  # every (shape, colour, count) once: 96 open + 96 multiple-choice questions per language
PEOPLE_SEED = 4242
# Targets of issue 20: >= 85 % per language and form; the answer in the question's language >= 99 %.
PEOPLE_TARGET, LANGUAGE_TARGET = 0.85, 0.99


def _lexicon(lang):
    """Every word (every character for Chinese) of the language's answers: single words and descriptions."""
    answers = [str(w) for w in data.WORDS[lang].values()]
    answers += [data.describe(lang, c, s, n) for c in data.COLOURS for s in data.SHAPES for n in data.COUNTS]
    return {p for a in answers for p in (a if lang == "zh" else a.split())}


LEXICON = {lang: _lexicon(lang) for lang in LANGS}


def in_language(text, lang):
    """The answer is made only of the question language's answer words (so "kırmızı" to a Russian question, or
    a broken word like "кmelho", is not)."""
    pieces = list(text) if lang == "zh" else text.split()
    return bool(pieces) and all(p in LEXICON[lang] for p in pieces)


@pytest.fixture(scope="module")
def people_answers(engine):
    """Per language: [dict(form, kind, question, text, want, ok)] on the second renderer's pictures."""
    pictures = people_pictures.scenes(PEOPLE_PICTURES, PEOPLE_SEED)
    rng = np.random.default_rng(PEOPLE_SEED)
    out = {lang: [] for lang in LANGS}
    for i, (image, truth) in enumerate(pictures):
        pixels = np.asarray(image)
        open_kind, mc_kind = data.OPEN_KINDS[i % 4], data.KINDS[i % 3]
        for lang in LANGS:
            phrasings = data.HELDOUT_PHRASINGS[lang]
            question = phrasings[open_kind][rng.integers(len(phrasings[open_kind]))]
            want = data.answer_text(truth, lang, open_kind)
            text = engine.run(pixels, question, max_new_tokens=MAX_NEW_TOKENS).text
            out[lang].append(dict(form="open", kind=open_kind, question=question, text=text, want=want,
                                  ok=text == want))
            question = phrasings[mc_kind][rng.integers(len(phrasings[mc_kind]))]
            q = data.mc_question(rng, truth, lang, mc_kind, question)
            options = {k: v for k, v in q["options"].items() if v}
            text = engine.run(pixels, q["prompt"], max_new_tokens=MAX_NEW_TOKENS).text
            out[lang].append(dict(form="mc", kind=mc_kind, question=q["prompt"], text=text, want=q["answer"],
                                  ok=correct("mc", text, q["answer"], options)))
    return out


@pytest.fixture(scope="module")
def people_table(people_answers):
    """{(lang, "open" | "mc" | "language"): fraction}, printed per kind with -s."""
    table = {}
    print("\nunseen paraphrases on the second renderer's pictures (C engine, greedy):")
    for lang, rows in people_answers.items():
        for form in ("open", "mc"):
            table[(lang, form)] = float(np.mean([r["ok"] for r in rows if r["form"] == form]))
        table[(lang, "language")] = float(np.mean([in_language(r["text"], lang) for r in rows
                                                   if r["form"] == "open"]))
        per_kind = {(f, k): np.mean([r["ok"] for r in rows if (r["form"], r["kind"]) == (f, k)])
                    for f, ks in (("open", data.OPEN_KINDS), ("mc", data.KINDS)) for k in ks}
        kinds = " ".join(f"{f} {k} {v:.2f}" for (f, k), v in per_kind.items())
        print(f"  {lang}: open {table[(lang, 'open')]:.3f}  multiple choice {table[(lang, 'mc')]:.3f}  "
              f"in the question's language {table[(lang, 'language')]:.3f}   ({kinds})")
    for lang, rows in people_answers.items():
        wrong = [(r["question"].split("\n")[0], r["text"], r["want"]) for r in rows if not r["ok"]][:4]
        print(f"  {lang} wrong, e.g.: {wrong}")
    return table


@pytest.mark.parametrize("lang", [shipped_param(lang, "people open") for lang in LANGS])
def test_people_open_questions_at_least_85_percent(people_table, lang):
    assert people_table[(lang, "open")] >= PEOPLE_TARGET, people_table[(lang, "open")]


@pytest.mark.parametrize("lang", [shipped_param(lang, "people mc") for lang in LANGS])
def test_people_multiple_choice_at_least_85_percent(people_table, lang):
    assert people_table[(lang, "mc")] >= PEOPLE_TARGET, people_table[(lang, "mc")]


@pytest.mark.parametrize("lang", [shipped_param(lang, "people language") for lang in LANGS])
def test_people_answers_come_in_the_question_language(people_table, people_answers, lang):
    bad = [(r["question"], r["text"]) for r in people_answers[lang] if r["form"] == "open"
           and not in_language(r["text"], lang)][:5]
    assert people_table[(lang, "language")] >= LANGUAGE_TARGET, bad


def test_people_answers_never_contain_a_replacement_character(people_answers):
    """Holds through valid_utf8 (checked against Python's codec in test_api); decoded as the reference does, the
    shipped model starts 2 of these answers with half a letter (training/README.md, "Answers that break a letter")."""
    bad = [(lang, r["question"], r["text"]) for lang, rows in people_answers.items() for r in rows
           if "\ufffd" in r["text"]]
    n = sum(len(rows) for rows in people_answers.values())
    assert not bad, (f"{len(bad)} of {n}", bad)


# A blind English check: the same procedure with data.HELDOUT_ENGLISH_2, written after the first held-out set's
# English misses were known and before any model trained on training/grammar.py's wordings was measured, on 192
# other pictures of the second renderer (seed 31337); open and multiple choice, one of each per picture.
ENGLISH_2_PICTURES, ENGLISH_2_SEED = 192, 31337


@pytest.fixture(scope="module")
def english_2_table(engine):
    """{"open" | "mc": fraction} on the second English held-out set, printed per wording with -s."""
    rng = np.random.default_rng(ENGLISH_2_SEED)
    rows = []
    for i, (image, truth) in enumerate(people_pictures.scenes(ENGLISH_2_PICTURES, ENGLISH_2_SEED)):
        pixels = np.asarray(image)
        open_kind, mc_kind = data.OPEN_KINDS[i % 4], data.KINDS[i % 3]
        question = data.HELDOUT_ENGLISH_2[open_kind][rng.integers(len(data.HELDOUT_ENGLISH_2[open_kind]))]
        text = engine.run(pixels, question, max_new_tokens=MAX_NEW_TOKENS).text
        rows.append(("open", question, text == data.answer_text(truth, "en", open_kind)))
        question = data.HELDOUT_ENGLISH_2[mc_kind][rng.integers(len(data.HELDOUT_ENGLISH_2[mc_kind]))]
        q = data.mc_question(rng, truth, "en", mc_kind, question)
        text = engine.run(pixels, q["prompt"], max_new_tokens=MAX_NEW_TOKENS).text
        rows.append(("mc", question, correct("mc", text, q["answer"], {k: v for k, v in q["options"].items() if v})))
    table = {form: float(np.mean([ok for f, _, ok in rows if f == form])) for form in ("open", "mc")}
    print(f"\nsecond English held-out set: open {table['open']:.3f}  multiple choice {table['mc']:.3f}")
    for kind, wordings in data.HELDOUT_ENGLISH_2.items():
        print(f"  {kind}: " + " | ".join(f"{w} {sum(ok for f, q, ok in rows if q == w and f == 'open')}/"
                                        f"{sum(1 for f, q, _ in rows if q == w and f == 'open')}" for w in wordings))
    return table


@pytest.mark.parametrize("form", [shipped_param("en", f"english-2 {form}", form) for form in ("open", "mc")])
def test_second_english_held_out_set_at_least_85_percent(english_2_table, form):
    assert english_2_table[form] >= PEOPLE_TARGET, english_2_table[form]


# ---- the data the numbers rest on ------------------------------------------------------------------------------
def _normalised(text):
    return "".join(c for c in text.casefold() if c.isalnum())


@pytest.fixture(scope="module")
def grammar():
    """data.phrasings_grammar(), built once (a few seconds of difflib) and only when a test asks for it."""
    return data.phrasings_grammar()


def test_paraphrases_are_many_distinct_and_held_out_ones_never_trained_on(grammar):
    # the tokenizer corpora hold every string either training data uses (people2: with data.MORE_PHRASINGS;
    # --extra-phrasings: also data.EXTRA_PHRASINGS)
    trained = {_normalised(t) for t in data.all_texts() + data.all_texts_people()
               + data.all_texts_people(data.PHRASINGS_MORE) + data.all_texts_people(data.PHRASINGS_EXTRA)
               + data.all_texts_people(grammar)}
    for lang in LANGS:
        for kind in data.OPEN_KINDS:
            train, held = data.PHRASINGS_MORE[lang][kind], data.HELDOUT_PHRASINGS[lang][kind]
            assert train[:len(data.PHRASINGS[lang][kind])] == data.PHRASINGS[lang][kind]
            assert len(train) >= 15 and len({_normalised(t) for t in train}) == len(train), (lang, kind)
            assert len(held) >= 5 and len({_normalised(t) for t in held}) == len(held), (lang, kind)
            assert not {_normalised(t) for t in held} & trained, (lang, kind)
            # with and without a question mark, as people type
            marks = [t.rstrip()[-1:] in "?？؟" for t in train]
            assert any(marks) and not all(marks), (lang, kind)
            # --extra-phrasings: PHRASINGS_MORE's wordings first, then at least 18 more, all distinct, none held out
            extra = data.PHRASINGS_EXTRA[lang][kind]
            assert extra[:len(train)] == train, (lang, kind)
            assert len(extra) >= len(train) + 18 and len({_normalised(t) for t in extra}) == len(extra), (lang, kind)
            assert not {_normalised(t) for t in extra} & {_normalised(t) for t in held}, (lang, kind)
            marks = [t.rstrip()[-1:] in "?？؟" for t in extra]
            assert any(marks) and not all(marks), (lang, kind)


def test_grammar_wordings_are_many_distinct_and_keep_their_distance_from_both_english_held_out_sets(grammar):
    """training/grammar.py's English wordings: at least 90 per kind (119-523 today), distinct from one another after
    normalising, each kind's key word in every one of them, and none within difflib ratio 0.85 of a wording of either
    English held-out set (computed here with difflib directly, not with the grammar's own filter); the second
    held-out set also keeps that distance from every hand-written training wording and is disjoint from the first."""
    import difflib
    import re

    def norm(text):
        return re.sub(r"[\W_]+", " ", text.lower()).strip().replace("colour", "color")

    held = [norm(w) for kind in data.OPEN_KINDS for w in data.HELDOUT_PHRASINGS["en"][kind]
            + data.HELDOUT_ENGLISH_2[kind]]
    keys = {"colour": ("colour", "color"), "shape": ("shape",), "count": ("how many", "count", "number"),
            "describe": ("describe", "description", "in ", "see", "show", "going on")}
    for kind in data.OPEN_KINDS:
        hand = [w for w in data.PHRASINGS_EXTRA["en"][kind] if w != "What is it?"]  # data.phrasings_grammar
        made = grammar["en"][kind][len(hand):]
        assert grammar["en"][kind][:len(hand)] == hand and len(made) >= 90, (kind, len(made))
        assert len({_normalised(w) for w in made}) == len(made), kind
        for wording in made:
            assert any(k in wording.lower() for k in keys[kind]), (kind, wording)
            close = max(difflib.SequenceMatcher(None, norm(wording), h).ratio() for h in held)
            assert close < 0.85, (kind, wording, close)
        for other in data.LANGS[1:]:
            assert grammar[other][kind] == data.PHRASINGS_EXTRA[other][kind]
    second = [norm(w) for ws in data.HELDOUT_ENGLISH_2.values() for w in ws]
    assert len(set(second)) == 20 and not set(second) & {norm(w) for ws in data.HELDOUT_PHRASINGS["en"].values()
                                                          for w in ws}
    for kind in data.OPEN_KINDS:
        for wording in data.PHRASINGS_EXTRA["en"][kind]:
            close = max(difflib.SequenceMatcher(None, norm(wording), h).ratio() for h in second)
            assert close < 0.85, (kind, wording, close)


def test_extra_wordings_keep_their_distance_from_the_held_out_ones():
    """No wording of data.EXTRA_PHRASINGS is within a word or a few letters of a held-out wording, in any kind:
    difflib's ratio (2 x matching characters / total) on the lower-cased text with punctuation as spaces and "colour"
    spelt "color" stays under 0.85 (0.88 is "What colour is this" against "What colour is it?", 0.91 "告诉我颜色。"
    against "请告诉我颜色。"; those were removed). The older PHRASINGS predate this rule and hold a few such pairs."""
    import difflib
    import re

    def norm(text):
        return re.sub(r"[\W_]+", " ", text.lower()).strip().replace("colour", "color")

    for lang in LANGS:
        held = [norm(h) for kind in data.OPEN_KINDS for h in data.HELDOUT_PHRASINGS[lang][kind]]
        for kind in data.OPEN_KINDS:
            for wording in data.EXTRA_PHRASINGS[lang][kind]:
                close = max(difflib.SequenceMatcher(None, norm(wording), h).ratio() for h in held)
                assert close < 0.85, (lang, kind, wording, close)
    assert difflib.SequenceMatcher(None, norm("What colour is this"), norm("What colour is it?")).ratio() >= 0.85


def test_routing_balance_loss_is_the_kl_divergence_from_uniform():
    """train.balance_loss against the formula computed by hand in numpy: 0 for balanced mean routing (also when
    every conversation goes to its own expert), log(6) when all go to one expert."""
    from training.train import balance_loss
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(6), size=24)
    m = w.mean(0)
    assert abs(float(balance_loss(torch.tensor(w))) - float(np.sum(m * np.log(6 * m)))) < 1e-6
    assert abs(float(balance_loss(torch.eye(6, dtype=torch.float64)))) < 1e-12
    one = torch.zeros(24, 6, dtype=torch.float64)
    one[:, 3] = 1
    assert abs(float(balance_loss(one)) - np.log(6)) < 1e-9


def test_language_routing_loss_is_the_hinge_on_the_own_expert_weight():
    """train.language_routing_loss against the formula by hand in numpy: mean over conversations of
    max(0, log(floor) - log(w[own expert])), own expert = the language's index; 0 once every conversation gives its
    own expert at least the floor, whatever it does with the rest."""
    from training.train import ROUTING_FLOOR, language_routing_loss
    rng = np.random.default_rng(0)
    w = rng.dirichlet(np.ones(6) * 0.3, size=24)
    own = rng.integers(6, size=24)
    want = np.mean(np.maximum(0.0, np.log(ROUTING_FLOOR) - np.log(w[np.arange(24), own])))
    assert want > 0
    got = float(language_routing_loss(torch.tensor(w), torch.tensor(own)))
    assert abs(got - want) < 1e-9, (got, want)
    at_floor = np.full((6, 6), (1 - ROUTING_FLOOR) / 5)
    np.fill_diagonal(at_floor, ROUTING_FLOOR)
    assert float(language_routing_loss(torch.tensor(at_floor), torch.arange(6))) < 1e-9
    assert float(language_routing_loss(torch.eye(6, dtype=torch.float64), torch.arange(6))) == 0
    one = torch.zeros(6, 6, dtype=torch.float64)
    one[:, 2] = 1  # every language on one expert: only the language whose own expert it is pays nothing
    per = float(language_routing_loss(one, torch.arange(6)))
    assert abs(per - 5 / 6 * (np.log(ROUTING_FLOOR) - np.log(1e-12))) < 1e-6


def test_sampler_records_each_conversations_language():
    """Sampler.batch keeps the language of every conversation it makes (what --language-routing needs), and the
    questions are in that language."""
    from tokenizers import Tokenizer

    from training.train import Sampler
    tok = Tokenizer.from_file(os.path.join(CKPT, "tokenizer.json"))
    sampler = Sampler(tok, 8, 3)
    _, convs = sampler.batch(12, LANGS, 0.0)
    assert len(sampler.batch_langs) == 12 and set(sampler.batch_langs) <= set(LANGS)
    for (ids, _, _), lang in zip(convs, sampler.batch_langs):
        text = tok.decode([i for i in ids if i >= 0], skip_special_tokens=False)
        assert any(q in text for q in data.QUESTIONS[lang].values()), (lang, text)
        others = [q for other in LANGS if other != lang for q in data.QUESTIONS[other].values()]
        assert not any(q in text for q in others), (lang, text)


def test_tower_augmentation_is_the_eight_flips_and_quarter_turns():
    """train.dihedral(x, k), k = 0-7, gives exactly numpy's 8 rotations/reflections of each picture."""
    from training.train import dihedral
    x = np.random.default_rng(1).standard_normal((2, 3, 5, 5)).astype(np.float32)
    want = [np.rot90(y, r, axes=(-2, -1)) for y in (x, np.swapaxes(x, -1, -2)) for r in range(4)]
    got = [dihedral(torch.from_numpy(x), k).numpy() for k in range(8)]
    for g, w in zip(got, want):
        assert np.array_equal(g, w)
    assert len({g.tobytes() for g in got}) == 8


def test_tower_shift_moves_the_content_and_fills_with_the_border():
    """train.shift(x, offsets, m) against numpy by hand: an object (a 3x2 block on a plain background) lands exactly
    (dy, dx) pixels further down / right, the strip the shift uncovers holds the picture's border row / column
    (np.pad mode "edge", then the crop a shift of (dy, dx) selects), nothing wraps round, and each picture of the
    batch gets its own offset."""
    from training.train import shift
    m = 6
    rng = np.random.default_rng(3)
    x = np.zeros((4, 3, 96, 96), np.float32) + rng.standard_normal((4, 3, 1, 1)).astype(np.float32)  # backgrounds
    x[:, :, 40:43, 50:52] = 5.0  # the object
    offsets = np.array([[0, 0], [6, -6], [-3, 5], [2, 1]])
    got = shift(torch.from_numpy(x), torch.from_numpy(offsets), m).numpy()
    assert got.shape == x.shape
    for i, (dy, dx) in enumerate(offsets):
        where = np.argwhere(got[i, 0] == 5.0)
        assert (where.min(0) == [40 + dy, 50 + dx]).all() and (where.max(0) == [42 + dy, 51 + dx]).all()
        assert len(where) == 6  # the whole object, once
        padded = np.pad(x[i], ((0, 0), (m, m), (m, m)), mode="edge")
        assert np.array_equal(got[i], padded[:, m - dy:m - dy + 96, m - dx:m - dx + 96])
    # content at a border: shifted inward it is repeated into the uncovered strip (edge fill), shifted outward it is
    # cut, never wrapped to the opposite border as torch.roll would
    y = np.zeros((1, 1, 8, 8), np.float32)
    y[0, 0, :, 0] = np.arange(8)  # left column
    right = shift(torch.from_numpy(y), torch.tensor([[0, 2]]), 2).numpy()[0, 0]
    assert np.array_equal(right[:, :3], np.repeat(np.arange(8.0)[:, None], 3, axis=1)) and not right[:, 3:].any()
    left = shift(torch.from_numpy(y), torch.tensor([[0, -2]]), 2).numpy()[0, 0]
    assert not left.any()


def test_describe_answers_agree_in_number_and_gender():
    """Hand-written grammar: plural after 2-4 (en, pt), the dual (ar), genitive after 2-4 (ru), none (tr, zh)."""
    cases = {("en", "red", "circle", 2): "two red circles", ("en", "blue", "star", 1): "one blue star",
             ("zh", "red", "circle", 2): "两个红色圆形", ("pt", "yellow", "star", 2): "duas estrelas amarelas",
             ("pt", "blue", "circle", 3): "três círculos azuis", ("ar", "red", "circle", 2): "دائرتان حمراوان",
             ("ar", "green", "square", 3): "ثلاثة مربعات خضراء", ("ar", "red", "star", 1): "نجمة حمراء واحدة",
             ("tr", "red", "circle", 2): "iki kırmızı daire", ("ru", "red", "circle", 2): "два красных круга",
             ("ru", "blue", "star", 2): "две синие звезды", ("ru", "yellow", "star", 1): "одна жёлтая звезда"}
    for (lang, colour, shape, count), want in cases.items():
        assert data.describe(lang, colour, shape, count) == want


def test_people_training_pictures_vary_canvas_and_aspect_ratio():
    rng = np.random.default_rng(5)
    sizes = [data.canvas_size(rng) for _ in range(2000)]
    ratios = np.array([w / h for w, h in sizes])
    assert ratios.min() >= 1 / 4 - 0.05 and ratios.max() <= 4 + 0.25  # rounding of the short side (>= 16 px)
    assert (ratios < 1 / 3).any() and (ratios > 3).any()
    assert min(max(s) for s in sizes) >= 64 and max(max(s) for s in sizes) <= 320


def test_wide_makes_that_share_of_the_canvases_clearly_wide_or_tall():
    """canvas_size(rng, F): a share F of the canvases with aspect ratio 1.5-4 either way, the rest as without it.
    Without it, 40 % are log-uniform in +-log 4, of which (log 4 - log 1.5) / log 4 = 0.707 lie beyond 1.5, so the
    expected share beyond 1.5 is F + (1 - F) 0.4 0.707 (0.641 for F = 0.5; 0.283 for F = 0). With
    4000 canvases the share's standard error is below 0.008; 0.03 is ~4 of them (the rounding of the short side to
    whole pixels moves a ratio by < 1 %)."""
    import math
    beyond_default = 0.4 * (math.log(4) - math.log(1.5)) / math.log(4)
    for f in (0.0, 0.5):
        rng = np.random.default_rng(9)
        ratios = np.array([max(w, h) / min(w, h) for w, h in (data.canvas_size(rng, f) for _ in range(4000))])
        assert abs((ratios > 1.5).mean() - (f + (1 - f) * beyond_default)) < 0.03, f
        assert ratios.max() <= 4 + 0.25
    tall = [w < h for w, h in (data.canvas_size(np.random.default_rng(s), 1.0) for s in range(400))]
    assert 0.4 < np.mean(tall) < 0.6  # either way, half each (standard error 0.025)


def test_rounded_square_polygon_is_the_square_with_arcs_at_its_corners():
    """data._shape_polygon with `rounding` f, checked in the square's own frame by hand: half side h = 0.85 r, corner
    radius f h; every vertex lies on a quarter arc about (+-(h - f h), +-(h - f h)) at distance f h, none outside the
    unrounded square, the polygon is its 4 x 6 arc points in order round the centre, and f = 0 is the 4 corners."""
    import math
    cx, cy, r, angle, f = 50.0, 40.0, 20.0, 0.7, 0.25
    h, rr = 0.85 * r, 0.85 * r * f
    pts = data._shape_polygon("square", cx, cy, r, angle, True, rounding=f)
    assert len(pts) == 24
    c, s = math.cos(angle), math.sin(angle)
    local = [((x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c) for x, y in pts]  # undo the turn
    for k, (u, v) in enumerate(local):
        ox, oy = math.copysign(h - rr, u), math.copysign(h - rr, v)
        assert math.isclose(math.hypot(u - ox, v - oy), rr, rel_tol=1e-9)
        assert abs(u) <= h + 1e-9 and abs(v) <= h + 1e-9
        assert abs(u) >= h - rr - 1e-9 and abs(v) >= h - rr - 1e-9  # on the corner's quarter, not beyond it
    turns = np.unwrap([math.atan2(v, u) for u, v in local])
    assert (np.diff(turns) > 0).all() and turns[-1] - turns[0] < 2 * math.pi
    sharp = data._shape_polygon("square", cx, cy, r, angle, True, rounding=0.0)
    assert len(sharp) == 4 and all(math.isclose(math.hypot(x - cx, y - cy), h * math.sqrt(2)) for x, y in sharp)


def test_variety_changes_only_squares_and_stars():
    """--variety draws its extra random numbers only for squares and stars: with the same seed, circles and triangles
    are the same pictures pixel for pixel with and without it, squares and stars are not; and a star's `inner`
    moves its inner vertices to that fraction of r."""
    import math

    def picture(shape, variety, seed):
        rng = np.random.default_rng(seed)
        while (img := data.draw_scene_people(rng, shape, "blue", 3, variety)) is None:
            pass
        return np.asarray(img)

    for seed in range(6):
        for shape in ("circle", "triangle"):
            assert np.array_equal(picture(shape, True, seed), picture(shape, False, seed))
    for shape in ("square", "star"):
        assert any(not np.array_equal(picture(shape, True, s), picture(shape, False, s)) for s in range(6))
    star = data._shape_polygon("star", 0.0, 0.0, 10.0, 0.3, inner=0.36)
    assert [round(math.hypot(x, y), 9) for x, y in star] == [10.0, 3.6] * 5


def test_drop_words_leaves_out_words_in_order_and_keeps_one():
    """data.drop_words: the result is the question's words (characters in Chinese) in their order with some left
    out, never none; each is left out at the asked rate (20000 words at p = 0.3: the binomial's standard deviation
    is 0.003, so 0.3 +- 0.015 is five of them); p = 1 keeps exactly one."""
    rng = np.random.default_rng(0)
    kept = total = 0
    for lang in LANGS:
        for question in data.PHRASINGS[lang]["colour"] + data.PHRASINGS[lang]["count"]:
            pieces = list(question) if lang == "zh" else question.split()
            for _ in range(200 // len(LANGS)):
                out = data.drop_words(rng, question, lang, 0.3)
                got = list(out) if lang == "zh" else out.split()
                it = iter(pieces)
                assert got and all(w in it for w in got), (question, out)  # a non-empty subsequence
                kept, total = kept + len(got), total + len(pieces)
            assert len(data.drop_words(rng, question, lang, 1.0).split() if lang != "zh"
                       else data.drop_words(rng, question, lang, 1.0)) == 1
    assert total > 20000 and abs(1 - kept / total - 0.3) < 0.015, (kept, total)


def test_second_renderer_colours_lie_in_the_named_ranges():
    """Its CSS colours (Pillow's table, not the trainer's numbers) are inside parrot.demo.COLOUR_HSV."""
    import colorsys

    from PIL import ImageColor
    for colour, names in people_pictures.CSS_COLOURS.items():
        h0, h1, s0, v0 = data.COLOUR_HSV[colour]
        for name in names:
            h, s, v = colorsys.rgb_to_hsv(*(c / 255 for c in ImageColor.getrgb(name)[:3]))
            h = h * 360 - (360 if h * 360 > h1 + 30 else 0)  # red wraps around 0
            assert h0 <= h <= h1 and s >= s0 and v >= v0, (colour, name, h, s, v)


@pytest.mark.parametrize("shape", people_pictures.SHAPES)
def test_second_renderer_shapes_match_pillow(shape):
    """Its signed-distance rasteriser covers the same pixels as Pillow's ImageDraw for the same outline (circle,
    or the polygon through the same vertices). Both put each edge within a pixel of the true edge, so they can
    disagree only on a one-pixel band along the outline: 1 - IoU <= perimeter / area, which is computed here from
    the vertices (shoelace formula), 3.3 % for the circle of radius 60."""
    from PIL import Image, ImageDraw

    size, cx, cy, r = 160, 80.0, 80.0, 60.0
    py, px = np.mgrid[0:size, 0:size].astype(np.float64) + 0.5
    obj_pose = people_pictures.pose(shape, np.random.default_rng(3))
    if shape == "square":
        obj_pose = (obj_pose[0], 0.0)  # sharp corners, as Pillow's polygon has
    mask = people_pictures.shape_sdf(shape, px, py, cx, cy, r, obj_pose) <= 0
    ref = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(ref)
    if shape == "circle":
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        perimeter, area = 2 * np.pi * r, np.pi * r * r
    else:
        pts = people_pictures.shape_vertices(shape, cx, cy, r, obj_pose)
        draw.polygon(pts, fill=255)
        xy = np.array(pts)
        nxt = np.roll(xy, -1, axis=0)
        perimeter = np.hypot(*(nxt - xy).T).sum()
        area = abs((xy[:, 0] * nxt[:, 1] - nxt[:, 0] * xy[:, 1]).sum()) / 2
    ref = np.asarray(ref) > 0
    iou = (mask & ref).sum() / (mask | ref).sum()
    assert 1 - iou <= perimeter / area, (iou, perimeter / area)
    assert abs(mask.sum() - area) <= 0.5 * perimeter  # and the covered area is the shape's
