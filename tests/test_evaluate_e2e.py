"""parrot.evaluate end to end on a real (tiny) model: MMMB-format TSVs in six languages sharing their images and
an MMBench-style TSV with circular rotations, through the Python API, the ``parrot eval`` command, two worker
processes, and a run killed with SIGKILL then resumed.

Independent references: pandas reads the TSVs (as VLMEvalKit does), the prompts are built here from the rule of
docs/model.md §11, Pillow re-encodes each image as JPEG (VLMEvalKit's decode_base64_to_image_file), ``model.run``
answers each prompt directly, and the wrapper clean-up, letter matching and vanilla/circular scoring are
re-implemented here in a few lines for these rows (docs/model.md §12)."""
import base64
import csv
import io
import json
import os
import re
import signal
import string
import subprocess
import sys
import time
import warnings
from collections import OrderedDict

import numpy as np
import pytest

import parrot

pd = pytest.importorskip("pandas")
torch = pytest.importorskip("torch")
from PIL import Image

import tiny_parrot
from evaluate_fakes import write_tsv

torch.set_num_threads(1)
# every file here is named like a published one, so each run warns that its MD5 differs (checked once, below)
pytestmark = pytest.mark.filterwarnings("ignore:.*differs from the published:UserWarning")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_NEW = 12          # short replies keep the file fast; the journal records it, so every run here uses it
CIRCULAR_BASE = 1_000_000

# docs/model.md §11: the instruction of each language (zh when the file is _cn or the
# prompt has a CJK ideograph); rows without options get the open-question instruction (VLMEvalKit's
# Parrot.build_multi_choice_prompt: Chinese when the prompt has a CJK ideograph)
INSTRUCTION = {
    "en": "Answer with the option's letter from the given choices directly.",
    "zh": "请直接用给定选项中的选项字母回答。",
    "pt": "Responda diretamente com a letra da opção das escolhas dadas.",
    "ar": "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
    "ru": "Ответьте буквой варианта из предложенных вариантов напрямую.",
    "tr": "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
}
OPEN_EN, OPEN_ZH = "Answer the question using a single word or phrase.", "请用单个词或短语回答问题。"
FILE_LANG = OrderedDict([("mmmb_en", "en"), ("mmmb_cn", "zh"), ("mmmb_pt", "pt"), ("mmmb_ar", "ar"),
                         ("mmmb_tr", "tr"), ("mmmb_ru", "ru")])
# question text and four option texts per language (row 4 of the English file has a CJK ideograph in it)
WORDS = {
    "en": (["What colour is it?", "How many are there?", "Which animal?", "Where is it?",
            "What does 猫 mean?", "Day or night?", "Name it."], ["red", "blue", "green", "yellow"]),
    "zh": (["这是什么颜色？", "有几个？", "哪种动物？", "在哪里？", "猫是什么意思？", "白天还是晚上？", "这是什么？"],
           ["红色", "蓝色", "绿色", "黄色"]),
    "pt": (["Qual é a cor?", "Quantos há?", "Que animal?", "Onde está?", "O que significa gato?", "Dia ou noite?",
            "Diga o nome."], ["vermelho", "azul", "verde", "amarelo"]),
    "ar": (["ما اللون؟", "كم عددها؟", "أي حيوان؟", "أين هو؟", "ماذا تعني قطة؟", "نهار أم ليل؟", "ما اسمه؟"],
           ["أحمر", "أزرق", "أخضر", "أصفر"]),
    "tr": (["Rengi nedir?", "Kaç tane var?", "Hangi hayvan?", "Nerede?", "Kedi ne demek?", "Gündüz mü gece mi?",
            "Adı ne?"], ["kırmızı", "mavi", "yeşil", "sarı"]),
    "ru": (["Какого цвета?", "Сколько их?", "Какое животное?", "Где это?", "Что значит кот?", "День или ночь?",
            "Как это называется?"], ["красный", "синий", "зелёный", "жёлтый"]),
}


# ---------------------------------------------------------------- synthetic benchmark files
def _b64(seed, kind):
    """A small picture as base64: PNG (RGB), JPEG, PNG with alpha, or a palette PNG."""
    rng = np.random.default_rng(seed)
    im = Image.fromarray(rng.integers(0, 256, (30 + seed, 44 - seed, 3), dtype=np.uint8))
    fmt = "PNG"
    if kind == "jpeg":
        fmt = "JPEG"
    elif kind == "rgba":
        im = im.convert("RGBA")
        im.putalpha(Image.fromarray(rng.integers(0, 256, (im.height, im.width), dtype=np.uint8)))
    elif kind == "palette":
        im = im.convert("P", palette=Image.ADAPTIVE, colors=16)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return base64.b64encode(buf.getvalue()).decode()


IMAGES = {"png": _b64(1, "png"), "jpeg": _b64(2, "jpeg"), "rgba": _b64(3, "rgba"), "palette": _b64(4, "palette"),
          # a PNG signature followed by junk: neither Pillow nor the model can decode it
          "corrupt": base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(range(7, 90))).decode()}


def mmmb_rows(lang):
    """The same seven questions in every language file, on the same images (as MMMB's splits are)."""
    q, o = WORDS[lang]
    four = dict(zip("ABCD", o))
    return [
        dict(index=0, hint="Look closely.", question=q[0], **four, category="colour", **{"l2-category": "perception"},
             image=IMAGES["png"]),
        dict(index=1, question=q[1], A=o[0], B=o[1], C=o[2], category="count", **{"l2-category": "perception"},
             image=IMAGES["jpeg"]),                                      # D empty
        dict(index=2, question=q[2], A=o[2], B=o[3], category="colour", **{"l2-category": "reasoning"},
             image="0"),                                                 # row 0's image, by index
        dict(index=3, question=q[3], A=o[1], B=o[0], C="None", D=o[3], category="animal",
             **{"l2-category": "reasoning"}, image=IMAGES["rgba"]),       # C is pandas' NA: dropped
        dict(index=4, question=q[4], **four, category="animal", **{"l2-category": "perception"},
             image=IMAGES["palette"]),
        dict(index=5, question=q[5], A=o[0], B=o[1], category="colour", **{"l2-category": "perception"},
             image=IMAGES["corrupt"]),                                   # an error row, not fatal
        dict(index=6, question=q[6], category=None, image=IMAGES["png"]),  # no options; no category
    ] + ([dict(index=7, hint="Read this. " * 300, question=q[1], A=o[0], B=o[1], category="count",
               **{"l2-category": "reasoning"}, image="1")] if lang == "en" else [])  # longer than the context


def mmbench_rows():
    """Four questions with every rotation of their options (index k * 1e6 + i), as circular MMBench files are."""
    base = [(0, "Which colour dominates?", ["red", "blue", "green", "yellow"], "png", "coarse_perception"),
            (1, "Is it bright?", ["yes", "no"], "jpeg", "coarse_perception"),
            (2, "What comes next?", ["one", "two", "three"], "rgba", "logic_reasoning"),
            (3, "Is it a cat?", ["true", "false"], "palette", "logic_reasoning")]
    rows = []
    for i, question, options, img, cat in base:
        for k in range(len(options)):
            rot = options[k:] + options[:k]
            rows.append(dict(index=k * CIRCULAR_BASE + i, hint="MMBench style." if i % 2 else None,
                             question=question, **dict(zip("ABCD", rot)), category=cat,
                             **{"l2-category": "Perception" if cat == "coarse_perception" else "Reasoning"},
                             split="dev", image=IMAGES[img]))
    return rows


COLUMNS = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]


# ---------------------------------------------------------------- the reference, re-implemented for these rows
def vlmeval_prompt(row, lang):
    """Parrot.build_multi_choice_prompt on a pandas row (docs/model.md §11): hint, question, options, instruction."""
    text = row["question"]
    if "hint" in row and not pd.isna(row["hint"]):
        text = f"{row['hint']}\n{text}"
    options = {c: str(row[c]) for c in "ABCD" if c in row and not pd.isna(row[c])}
    for c, v in options.items():
        text += f"\n{c}. {v}"
    chinese = re.search("[\u4e00-\u9fff]", text) is not None
    if not options:
        return text + "\n" + (OPEN_ZH if chinese else OPEN_EN), options
    return text + "\n" + INSTRUCTION["zh" if chinese or lang == "zh" else lang], options


def reference_jpeg(field):
    """VLMEvalKit's decode_base64_to_image_file: decode, RGBA/P/LA -> RGB, save as .jpg with Pillow."""
    im = Image.open(io.BytesIO(base64.b64decode(field)))
    if im.mode in ("RGBA", "P", "LA"):
        im = im.convert("RGB")
    out = io.BytesIO()
    im.save(out, format="JPEG")
    return out.getvalue()


def wrapper_answer(raw, prompt):
    """Parrot.generate_inner's clean-up (docs/model.md §12 step 1), for prompts with the English instruction."""
    ans = raw.strip()
    if not prompt.endswith(INSTRUCTION["en"]):
        return ans
    punct = string.punctuation + string.whitespace
    while True:
        ans = ans.strip(punct)
        if len(ans) <= 1:
            return ans
        if ans[0] in string.ascii_uppercase and ans[1] in punct:
            return ans[0]
        if ans[-1] in string.ascii_uppercase and ans[-2] in punct:
            return ans[-1]
        low = ans.lower()
        cut = next((p for p in ("answer is", "answer:") if p in low), None)
        if cut is None:
            return ans
        ans = ans[low.find(cut) + len(cut):]
        if "option" in ans.lower():
            ans = ans[ans.lower().find("option") + len("option"):]


def letter_of(prediction, options):
    """can_infer (docs/model.md §12 step 2) with the prediction read back from a sheet (empty -> "nan"). A refusal
    or a lone "Z" can only score wrong here (every answer is A-D), so they fold into None."""
    pred = prediction if prediction else "nan"
    spaced = pred
    for c in ".()[],:;!*#{}":
        spaced = spaced.replace(c, " ")
    found = [c for c in options if c in spaced.split()]
    if len(found) == 1:
        return found[0]
    texts = [c for c, v in options.items() if v.lower() in pred.lower()]
    return texts[0] if len(texts) == 1 else None


def boost_letters(model, tok):
    """Makes the random model favour "A".."D", " " and the end of turn (their lm_head rows scaled up), so its
    replies often hold a letter to extract and the scores are not all zero. With seed 6 most replies are a
    lone letter, the rest run on to max_new_tokens (test_the_synthetic_data_exercises_the_scoring checks
    that this still holds)."""
    ids = [tok.token_to_id(t) for t in ["A", "B", "C", "D", "Ġ", "<|im_end|>"]]
    with torch.no_grad():
        model.lm_head.weight[ids] *= 8.0


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """The model, the TSVs and, for every row, what the reference says: prompt, raw reply, prediction, letter."""
    d = tmp_path_factory.mktemp("e2e")
    _, _, model_path = tiny_parrot.build(d, seed=6, edit=boost_letters)
    model = parrot.load(model_path, threads=1)
    specs = [(name, lang, mmmb_rows(lang)) for name, lang in FILE_LANG.items()]
    specs.append(("mmbench_dev_en", "en", mmbench_rows()))
    files, expect = [], {}
    for name, lang, rows in specs:
        path = write_tsv(d / f"{name}.tsv", rows, COLUMNS + (["split"] if name.startswith("mmbench") else []))
        table = pd.read_csv(path, sep="\t")
        images = {str(r["index"]): str(r["image"]) for _, r in table.iterrows()}
        for _, r in table.iterrows():
            prompt, options = vlmeval_prompt(r, lang)
            image = str(r["image"])
            image = images[image] if len(image) <= 64 else image
            e = dict(prompt=prompt, options=options, image=image, category=r["category"],
                     l2=r["l2-category"], split=r.get("split"), error=False)
            try:
                data = reference_jpeg(image)
            except OSError:                     # Pillow cannot identify the corrupt picture
                e["error"] = "ImageError"
                data = None
            try:
                if data is not None:
                    e["raw"] = model.run(data, prompt, max_new_tokens=MAX_NEW).text
                    e["prediction"] = wrapper_answer(e["raw"], prompt)
                    e["letter"] = letter_of(e["prediction"], options)
            except ValueError as err:           # the prompt does not fit in the model's context
                assert "context" in str(err)
                e["error"] = "ValueError"
            expect[(name, int(r["index"]))] = e
        files.append(path)
    # the answer key, written once the replies are known (answers are not part of the prompt): in MMMB files
    # half the extractable letters are right and half wrong. In the circular file question 0's key is what the
    # model answered in every rotation (all right: a hit); the other questions' right option text is the one
    # their first row's reply points to, keyed consistently through the rotations, so a rotation whose reply
    # names another text is wrong (the model mostly says "B" whatever the order: no hit)
    for name, lang, rows in specs:
        for n, row in enumerate(rows):
            e = expect[(name, row["index"])]
            letters = list(e["options"]) or ["A"]
            got = e.get("letter")
            if name.startswith("mmbench") and row["index"] % CIRCULAR_BASE == 0 and got is not None:
                row["answer"] = got
            elif name.startswith("mmbench"):
                main = expect[(name, row["index"] % CIRCULAR_BASE)]
                right_text = main["options"][main["letter"] or "A"]
                row["answer"] = next(c for c, v in e["options"].items() if v == right_text)
            elif got is not None and got in letters:
                row["answer"] = got if n % 2 == 0 else letters[(letters.index(got) + 1) % len(letters)]
            else:
                row["answer"] = letters[n % len(letters)]
            e["answer"] = row["answer"]
        write_tsv(d / f"{name}.tsv", rows, COLUMNS + (["split"] if name.startswith("mmbench") else []))
    return dict(dir=d, model_path=model_path, model=model, files=[str(f) for f in files], expect=expect,
                names=[s[0] for s in specs], langs={s[0]: s[1] for s in specs})


def hand_scores(bench):
    """Accuracy per file (Overall, then sorted l2-categories, then sorted categories, MMBench names
    abbreviated), per language and overall, from the reference's letters."""
    abbr = {"coarse_perception": "CP", "logic_reasoning": "LR"}
    out, per_lang = {}, {}
    for name in bench["names"]:
        rows = {i: e for (n, i), e in bench["expect"].items() if n == name}

        def right(e):
            return not e["error"] and e["letter"] == e["answer"]

        if name.startswith("mmbench"):   # circular: a question counts only if all its rotations are right
            hits = {i: all(right(x) for j, x in rows.items() if j % CIRCULAR_BASE == i)
                    for i in rows if i < CIRCULAR_BASE}
        else:
            hits = {i: right(e) for i, e in rows.items()}
        acc = OrderedDict(Overall=sum(hits.values()) / len(hits))
        for key in ("l2", "category"):
            for g in sorted({rows[i][key] for i in hits if not pd.isna(rows[i][key])}):
                sel = [hits[i] for i in hits if rows[i][key] == g]
                acc[abbr.get(g, g)] = sum(sel) / len(sel)
        out[name] = acc
        per_lang.setdefault(bench["langs"][name], []).extend(hits.values())
    langs = {k: sum(v) / len(v) for k, v in per_lang.items()}
    every = [h for v in per_lang.values() for h in v]
    return out, langs, sum(every) / len(every), sum(map(int, every))


def expected_cache(bench):
    """Rows that reach the model, and how many of them find their picture already encoded (one model, cache
    big enough for all): every row after the first of each distinct picture."""
    ok = [e for e in bench["expect"].values() if not e["error"]]
    return len(ok), len(ok) - len({e["image"] for e in ok})


def table_of(summary):
    """What must agree between runs: per-file accuracies, counts and errors, per language, overall."""
    return ({b["name"]: (b["accuracy"], b["questions"], b["correct"], b["errors"]) for b in summary["benchmarks"]},
            summary["languages"], summary["overall"], sorted((e["dataset"], e["index"]) for e in summary["errors"]))


def run_cli(*args, timeout=120, wait=True):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, "-m", "parrot", "eval", *args]
    if not wait:
        return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def serial(bench):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        r = parrot.evaluate(bench["files"], bench["model_path"], bench["dir"] / "serial", max_new_tokens=MAX_NEW,
                            progress=False, verbose=False)
    return r, [str(w.message) for w in caught]


# ---------------------------------------------------------------- the tests
def test_the_synthetic_data_exercises_the_scoring(bench):
    """Guards the other tests' strength: the tiny model's replies give letters, hits and misses."""
    ex = bench["expect"]
    ok = [e for e in ex.values() if not e["error"]]
    assert sum(e["letter"] is not None for e in ok) >= len(ok) // 2
    assert any(e["letter"] == e["answer"] for e in ok) and any(e["letter"] != e["answer"] for e in ok)
    # circular questions with every rotation right, and with one right and another wrong (where circular and
    # vanilla scoring differ)
    outcomes = [{x["letter"] == x["answer"] for (m, j), x in ex.items() if m == n and j % CIRCULAR_BASE == i}
                for (n, i), e in ex.items() if n.startswith("mmbench") and i < CIRCULAR_BASE]
    assert {True} in outcomes and {True, False} in outcomes
    # the corrupt picture of each MMMB file, and the English file's question too long for the context
    assert sorted(k for k, e in ex.items() if e["error"]) == sorted([(n, 5) for n in FILE_LANG] + [("mmmb_en", 7)])


def test_every_row_is_the_models_direct_answer(bench, serial):
    r, _ = serial
    with open(r.paths["journal"], encoding="utf-8") as f:
        lines = [json.loads(line) for line in f]
    assert lines[0]["_meta"]["max_new_tokens"] == MAX_NEW
    recs = {(x["dataset"], x["index"]): x for x in lines[1:]}
    assert len(recs) == len(lines) - 1 == len(bench["expect"])
    for key, e in bench["expect"].items():
        rec = recs[key]
        assert rec["prompt"] == e["prompt"], key
        if e["error"]:
            assert rec["error"] and rec["error"].startswith(f"{key[0]} index {key[1]}: {e['error']}: "), \
                rec["error"]
            assert rec["prediction"] is None
            continue
        assert rec["error"] is None, (key, rec["error"])
        assert rec["raw"] == e["raw"], key
        assert rec["prediction"] == e["prediction"], (key, e["raw"])
        # the routing weights are a distribution over the experts
        assert len(rec["routing"]) == bench["model"].config["num_experts"]
        assert abs(sum(rec["routing"]) - 1) < 1e-5         # softmax in f32
    # the open question got the open instruction; row 4 of the English file the Chinese one (it has 猫)
    assert recs[("mmmb_en", 6)]["prompt"].endswith("\n" + OPEN_EN)
    assert recs[("mmmb_cn", 6)]["prompt"].endswith("\n" + OPEN_ZH)
    assert recs[("mmmb_en", 4)]["prompt"].endswith("\n" + INSTRUCTION["zh"])


def test_accuracy_table_equals_hand_scoring(bench, serial):
    r, caught = serial
    files, langs, overall, correct = hand_scores(bench)
    got = {b["name"]: b for b in r.summary["benchmarks"]}
    for name, acc in files.items():
        split = "dev" if name.startswith("mmbench") else "none"
        assert list(got[name]["accuracy"]) == [split]
        assert got[name]["accuracy"][split] == pytest.approx(acc), name
        assert list(got[name]["accuracy"][split]) == list(acc), name       # the report's order too
    assert got["mmbench_dev_en"]["scoring"] == "circular" and got["mmmb_en"]["scoring"] == "vanilla"
    assert got["mmbench_dev_en"]["questions"] == 4
    assert {k: v["accuracy"] for k, v in r.summary["languages"].items()} == pytest.approx(langs)
    assert r.accuracy == pytest.approx(overall) and r.summary["overall"]["correct"] == correct
    assert 0 < correct < r.summary["overall"]["questions"]
    # the corrupt pictures and the too long question: reported, counted wrong, the run went on
    assert sorted((e["dataset"], e["index"]) for e in r.summary["errors"]) == \
        sorted(k for k, e in bench["expect"].items() if e["error"])
    # every file is named like a published one, so each MD5 mismatch is warned about, naming the file
    for name in bench["names"]:
        assert any(f"{name}.tsv" in m and "differs from the published" in m for m in caught), name


def test_image_cache_hit_rate_across_languages(bench, serial):
    r, _ = serial
    looked, hits = expected_cache(bench)
    t = r.summary["throughput"]
    assert (t["cache_lookups"], t["cache_hits"]) == (looked, hits)
    assert t["cache_hit_rate"] == pytest.approx(hits / looked) and t["cache_hit_rate"] > 0.8
    assert t["seconds_saved"] > 0
    assert f"image cache hits {hits}/{looked}" in r.table


def test_output_files_parse_and_agree(bench, serial):
    r, _ = serial
    out = bench["dir"] / "serial"
    with open(out / "accuracy.json", encoding="utf-8") as f:
        assert json.load(f) == json.loads(json.dumps(r.summary))
    with open(out / "accuracy.csv", encoding="utf-8", newline="") as f:
        acc = list(csv.DictReader(f))
    files, langs, overall, _ = hand_scores(bench)
    for name, want in files.items():
        got = {x["name"]: float(x["accuracy"]) for x in acc if x["benchmark"] == name}
        assert got == pytest.approx(dict(want)), name
    assert {x["lang"]: float(x["accuracy"]) for x in acc if x["group"] == "language"} == pytest.approx(langs)
    assert [float(x["accuracy"]) for x in acc if x["group"] == "overall" and x["benchmark"] == "*"] == \
        pytest.approx([overall])
    with open(out / "predictions.csv", encoding="utf-8", newline="") as f:
        preds = list(csv.DictReader(f))
    assert len(preds) == len(bench["expect"])
    for p in preds:
        e = bench["expect"][(p["dataset"], int(p["index"]))]
        assert p["answer"] == e["answer"]
        if e["error"]:
            assert p["error"] and p["correct"] == "0"
        else:
            assert p["raw"] == e["raw"] and p["prediction"] == e["prediction"]
            assert p["extracted"] == (e["letter"] or "")
            assert p["correct"] == str(int(e["letter"] == e["answer"]))
    for png in ("accuracy.png", "routing.png"):
        with Image.open(out / png) as im:
            assert im.format == "PNG" and im.width > 100 and im.height > 100
            assert np.asarray(im.convert("L")).std() > 0       # something was drawn


def test_cli_gives_the_same_results(bench, serial):
    out = bench["dir"] / "cli"
    p = run_cli(*bench["files"], "--model", bench["model_path"], "-o", str(out),
                "--max-new-tokens", str(MAX_NEW), "-q")
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    with open(out / "accuracy.json", encoding="utf-8") as f:
        summary = json.load(f)
    assert table_of(summary) == table_of(json.loads(json.dumps(serial[0].summary)))
    assert summary["throughput"]["cache_hits"] == expected_cache(bench)[1]
    # the table is printed: a line per file, then the per-language line
    for name in bench["names"]:
        assert re.search(rf"^{name}\b", p.stdout, re.M), p.stdout
    assert "per language: en" in p.stdout
    block = p.stdout[p.stdout.index("benchmark"):].split("\n\n")[0].splitlines()
    assert len({len(line) for line in block}) == 1, block      # columns aligned (mmbench_dev_en/dev too)
    for f in ("predictions.jsonl", "predictions.csv", "accuracy.csv", "accuracy.png", "routing.png"):
        assert (out / f).stat().st_size > 0, f


def test_two_workers_match_serial(bench, serial):
    r = parrot.evaluate(bench["files"], bench["model_path"], bench["dir"] / "workers", workers=2,
                        max_new_tokens=MAX_NEW, progress=False, verbose=False, plots=False)
    assert table_of(r.summary) == table_of(serial[0].summary)
    with open(r.paths["predictions"], encoding="utf-8") as a, \
            open(serial[0].paths["predictions"], encoding="utf-8") as b:
        assert a.read() == b.read()
    # rows sharing a picture go to one worker, so the cache still serves the other languages
    assert r.summary["throughput"]["cache_hits"] == expected_cache(bench)[1]


def test_resume_after_sigkill(bench, serial):
    out = bench["dir"] / "killed"
    journal = out / "predictions.jsonl"
    args = [*bench["files"], "--model", bench["model_path"], "-o", str(out), "--max-new-tokens", str(MAX_NEW),
            "-q", "--no-plots"]
    proc = run_cli(*args, wait=False)
    total = len(bench["expect"])
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_bytes().count(b"\n") >= 1 + 3:
            break
        time.sleep(0.001)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    done = journal.read_bytes().count(b"\n") - 1
    assert 3 <= done < total, done
    p = run_cli(*args, "--resume")
    assert p.returncode == 0, p.stderr
    assert f"resuming: {done} rows already done, {total - done} to run" in p.stderr
    with open(journal, encoding="utf-8") as f:
        recs = [json.loads(line) for line in f][1:]
    keys = [(x["dataset"], x["index"]) for x in recs]
    assert len(keys) == len(set(keys)) == total                    # every row once
    with open(out / "accuracy.json", encoding="utf-8") as f:
        summary = json.load(f)
    assert table_of(summary) == table_of(json.loads(json.dumps(serial[0].summary)))
    assert summary["throughput"]["rows_run"] == total - done


# ---------------------------------------------------------------- the command line's manners
def test_eval_help():
    p = run_cli("--help")
    assert p.returncode == 0 and p.stdout.startswith("usage: parrot eval")
    for opt in ("--model", "--out", "--resume", "--workers", "--ray", "--lang", "--max-new-tokens"):
        assert opt in p.stdout, opt


def test_eval_wrong_usage_exits_2_with_one_line(bench):
    for args in ([], [bench["files"][0]], [bench["files"][0], "-m", bench["model_path"], "-o", "x", "-j", "two"],
                 [bench["files"][0], "-m", bench["model_path"], "-o", "x", "--scoring", "fancy"]):
        p = run_cli(*args)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and "Traceback" not in p.stderr, (args, p.stderr)


def test_eval_missing_tsv_is_one_line_naming_it(bench, tmp_path):
    missing = tmp_path / "mmmb_xx.tsv"
    p = run_cli(bench["files"][0], str(missing), "-m", bench["model_path"], "-o", str(tmp_path / "o"), "-q")
    assert p.returncode == 1, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0] and "Traceback" not in p.stderr, p.stderr


def test_a_model_that_fails_to_load_in_workers_is_an_error_not_a_hang(bench, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + bytes(60))
    out = tmp_path / "o"
    p = run_cli(bench["files"][0], "-m", str(bad), "-o", str(out), "--workers", "2", "-q", timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
    assert p.stderr.strip().splitlines()[-1].startswith(f"parrot eval: error: {bad}"), p.stderr
    # that run finished no row, so its journal does not stand in the way of the next one (no --overwrite)
    r = parrot.evaluate(bench["files"][:1], bench["model_path"], out, max_new_tokens=MAX_NEW, progress=False,
                        verbose=False, plots=False)
    assert r.summary["throughput"]["rows_run"] == len(mmmb_rows("en"))
