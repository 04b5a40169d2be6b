"""parrot.evaluate: reading, prompts, answer extraction and scoring as VLMEvalKit does them, and the runner
(resume after SIGKILL, worker processes). Expected values are derived by hand from VLMEvalKit's rules
(vlmeval/vlm/parrot.py, vlmeval/utils/matching_util.py, vlmeval/dataset/utils/multiple_choice.py), not by
running this code."""
import base64
import json
import os
import signal
import subprocess
import sys
import time
import warnings

import pytest

import parrot
from parrot.evaluation import evaluate
from parrot.evaluation.extract import can_infer, postprocess
from parrot.evaluation.prompts import build_prompt
from parrot.evaluation.runner import JournalError
from parrot.evaluation.score import report_acc, score_rows
from parrot.evaluation.tsv import TSVError, load_benchmark, read_tsv

import evaluate_fakes
from evaluate_fakes import ScriptedModel, png_b64, scripted_model, write_tsv

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
EN = "Answer with the option's letter from the given choices directly."
CHOICES = {"A": "a cat", "B": "a dog", "C": "a bird", "D": "a fish"}


# --- reading ---------------------------------------------------------------------------------------------

def test_read_tsv_matches_pandas(tmp_path):
    pd = pytest.importorskip("pandas")
    p = tmp_path / "t.tsv"
    # NA spellings, an int column with a gap (-> float), bools, spaces around numbers, quoted tab/newline,
    # a floats column, a BOM, a blank line
    text = ("\ufeffindex\tA\tB\tC\tD\tE\tquestion\n"
            "1\t2\tTRUE\t 3\t1.50\tNone\t\"a\ttab and\na newline\"\n"
            "\n"
            "2\t\tfalse\t4 \t-.5e1\tnull\tplain \"quote\" inside\n"
            "3\tNA\ttrue\t5\tinf\tok\t#N/A\n")
    p.write_text(text, encoding="utf-8")
    ours = read_tsv(p)
    ref = pd.read_csv(p, sep="\t")
    assert ours.columns == list(ref.columns)
    assert len(ours) == len(ref)
    for c in ref.columns:
        for i, v in enumerate(ref[c]):
            mine = ours.cells[c][i]
            if pd.isna(v):
                assert mine is None, (c, i, mine)
            else:
                assert str(mine) == str(v), (c, i, mine, v)


def test_image_references_missing_images_and_options(tmp_path):
    img = png_b64(1)
    rows = [
        dict(index=10, question="q10", A="x", B="y", C="None", D="", answer="A", image=img),
        dict(index=11, question="q11", A="x", B="y", answer="B", image="10"),       # shares row 10's image
        dict(index=12, question="q12", A="x", B="y", answer="B", image=None),       # no image: dropped
        dict(index=13, question="q13", A="x", B="y", answer="B", image="99"),       # dangling reference
        dict(index=14, question="q14", A="x", B="y", answer="B", image="11"),       # reference to a reference
    ]
    b = load_benchmark(write_tsv(tmp_path / "custom_pt.tsv", rows))
    assert b.lang == "pt" and b.scoring == "vanilla" and b.skipped_no_image == 1
    by = {r.index: r for r in b.rows}
    assert sorted(by) == [10, 11, 13, 14]
    assert by[10].options == {"A": "x", "B": "y"}    # "None" and "" are missing values, as in pandas
    assert by[11].image == img and by[11].image_key == by[10].image_key
    assert by[13].image is None and "refers to index '99'" in by[13].image_error
    assert "custom_pt.tsv" in by[13].image_error
    assert by[14].image is None and by[14].image_error


def test_language_scoring_and_md5(tmp_path):
    rows = [dict(index=1, question="q", A="x", B="y", answer="A", image=png_b64(2))]
    with pytest.warns(UserWarning, match="MMBench_dev_ar.tsv: MD5"):
        assert load_benchmark(write_tsv(tmp_path / "MMBench_dev_ar.tsv", rows)).scoring == "circular"
    assert load_benchmark(write_tsv(tmp_path / "x_cn.tsv", rows)).lang == "zh"
    assert load_benchmark(write_tsv(tmp_path / "x_cn.tsv", rows), lang="ru").lang == "ru"
    with pytest.warns(UserWarning, match="no language suffix"):
        assert load_benchmark(write_tsv(tmp_path / "mine.tsv", rows)).lang == "en"
    with pytest.warns(UserWarning, match=r"mmmb_tr\.tsv: MD5 .* differs from the published "
                                         r"0733739d43090327975294292bc5cd67"):
        load_benchmark(write_tsv(tmp_path / "mmmb_tr.tsv", rows))
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        load_benchmark(write_tsv(tmp_path / "x_cn.tsv", rows), lang="xx")
    bad = tmp_path / "bad_en.tsv"
    bad.write_text("index\tquestion\n1\tq\textra\n")
    with pytest.raises(TSVError, match=r"bad_en\.tsv: line 2: 3 fields"):
        load_benchmark(bad)


# --- prompts ---------------------------------------------------------------------------------------------

def _row(tmp_path, name, **kw):
    base = dict(index=1, question="What is it?", A="cat", B="dog", C=None, D=None, answer="A", image=png_b64(3))
    base.update(kw)
    return load_benchmark(write_tsv(tmp_path / name, [base])), base


def test_prompts_per_language(tmp_path):
    expected = {
        "en": "Answer with the option's letter from the given choices directly.",
        "cn": "请直接用给定选项中的选项字母回答。",
        "pt": "Responda diretamente com a letra da opção das escolhas dadas.",
        "ar": "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
        "ru": "Ответьте буквой варианта из предложенных вариантов напрямую.",
        "tr": "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
    }
    for suffix, instr in expected.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # synthetic mmmb_* files: MD5 mismatch warnings
            b, _ = _row(tmp_path, f"mmmb_{suffix}.tsv")
        assert build_prompt(b.rows[0], b.name) == "What is it?\nA. cat\nB. dog\n" + instr
    # hint first; a missing option skipped; numbers in an all-number column with a gap print as floats
    img = png_b64(3)
    b = load_benchmark(write_tsv(tmp_path / "h_en.tsv", [
        dict(index=1, question="What is it?", hint="Look closely.", A=1, B=2, C=None, D=4, image=img),
        dict(index=2, question="And this?", A=None, B=3, C=None, D=5, image=img)]))
    assert build_prompt(b.rows[0], b.name) == ("Look closely.\nWhat is it?\nA. 1.0\nB. 2\nD. 4\n" + EN)
    assert build_prompt(b.rows[1], b.name) == "And this?\nB. 3\nD. 5\n" + EN
    # a CJK ideograph anywhere in the prompt selects the Chinese instruction, whatever the file says
    b, _ = _row(tmp_path, "c_pt.tsv", B="狗")
    assert build_prompt(b.rows[0], b.name).endswith("\nB. 狗\n请直接用给定选项中的选项字母回答。")
    # no options at all: the open-question instruction
    b, _ = _row(tmp_path, "o_en.tsv", A=None, B=None)
    assert build_prompt(b.rows[0], b.name) == "What is it?\nAnswer the question using a single word or phrase."


ZH = "请直接用给定选项中的选项字母回答。"


def test_instruction_follows_the_dataset_name_exactly(tmp_path):
    """Parrot.build_multi_choice_prompt tests ``dataset[-3:] == '_cn'`` or cn_string(prompt), then '_pt', '_ar',
    '_ru', '_tr', case-sensitively; it never tests '_zh'. The language a file is reported under is separate."""
    latin = dict(question="What is 2 + 2?", A="3", B="4")   # no CJK ideograph anywhere
    cases = [  # file name, --lang, reported language, instruction
        ("mmbench_dev_cn.tsv", None, "zh", ZH),          # '_cn' alone picks Chinese, without any ideograph
        ("quiz_zh.tsv", None, "zh", EN),                 # reported as Chinese, but the wrapper never tests '_zh'
        ("quiz_CN.tsv", None, "zh", EN),                 # case-sensitive
        ("quiz_PT.tsv", None, "pt", EN),
        ("quiz_Ru.tsv", None, "ru", EN),
        ("quiz_tr.tsv", None, "tr", "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin."),
        ("quiz_cn.tsv", "en", "en", ZH),                 # --lang changes the report, not the prompt
        ("quiz_ar.tsv", "ru", "ru", "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة."),
        ("quiz.tsv", "pt", "pt", EN),                    # no suffix: English, whatever --lang says
        ("quiz_en.tsv", "zh", "zh", EN),
    ]
    for name, lang, reported, instr in cases:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # MD5 of the synthetic mmbench_dev_cn
            b = load_benchmark(write_tsv(tmp_path / name, [dict(latin, index=1, answer="B", image=png_b64(3))]),
                               lang=lang)
        assert b.lang == reported, name
        assert build_prompt(b.rows[0], b.name) == "What is 2 + 2?\nA. 3\nB. 4\n" + instr, (name, lang)


def test_cn_string_is_the_unified_ideographs_block_only(tmp_path):
    """cn_string is re.search('[\\u4e00-\\u9fff]'): both ends of the block count; extension A, compatibility
    ideographs, kana, the ideographic zero and full-width punctuation do not."""
    for ch, chinese in [("\u4e00", True), ("\u9fff", True), ("\u3400", False), ("\u4dbf", False),
                        ("\ua000", False), ("\uf900", False), ("\u3042", False), ("\u3007", False),
                        ("\uff0c", False), ("\U00020000", False)]:
        b, _ = _row(tmp_path, "x_pt.tsv", B=f"dog {ch}")
        want = ZH if chinese else "Responda diretamente com a letra da opção das escolhas dadas."
        assert build_prompt(b.rows[0], b.name).endswith("\n" + want), hex(ord(ch))
        b, _ = _row(tmp_path, "x_en.tsv", A=None, B=None, question=f"What is {ch}?")
        want = "请用单个词或短语回答问题。" if chinese else "Answer the question using a single word or phrase."
        assert build_prompt(b.rows[0], b.name).endswith("\n" + want), hex(ord(ch))


def test_post_processing_follows_the_instruction_not_the_reported_language(tmp_path):
    """The same Latin-only rows in a '_zh' and a '_cn' file, both reported as Chinese: the '_zh' rows get the
    English instruction and so the wrapper's English clean-up ("A or B" -> "A", right), the '_cn' rows the
    Chinese one and no clean-up ("A or B" names two letters: no answer, wrong)."""
    rows = [dict(index=1, question="Which one? {{A or B}}", A="cat", B="dog", answer="A", image=png_b64(7))]
    files = [write_tsv(tmp_path / "quiz_zh.tsv", rows), write_tsv(tmp_path / "quiz_cn.tsv", rows)]
    r = evaluate(files, ScriptedModel(), tmp_path / "out", progress=False, verbose=False, plots=False)
    with open(r.paths["journal"], encoding="utf-8") as f:
        recs = {rec["dataset"]: rec for rec in map(json.loads, f.readlines()[1:])}
    assert recs["quiz_zh"]["prompt"] == "Which one? {{A or B}}\nA. cat\nB. dog\n" + EN
    assert recs["quiz_cn"]["prompt"] == "Which one? {{A or B}}\nA. cat\nB. dog\n" + ZH
    assert recs["quiz_zh"]["raw"] == recs["quiz_cn"]["raw"] == "A or B"
    assert recs["quiz_zh"]["prediction"] == "A" and recs["quiz_cn"]["prediction"] == "A or B"
    s = r.summary
    assert [(b["name"], b["lang"], b["accuracy"]["none"]["Overall"]) for b in s["benchmarks"]] == \
        [("quiz_zh", "zh", 1.0), ("quiz_cn", "zh", 0.0)]
    assert s["languages"]["zh"]["questions"] == 2 and s["languages"]["zh"]["correct"] == 1


# --- answer extraction -----------------------------------------------------------------------------------

# (reply, prompt language, expected letter or None). English prompts go through the Parrot wrapper's
# clean-up first; the others only through can_infer.
EXTRACTION = [
    ("B", "en", "B"),
    ("B.", "en", "B"),
    ("(B) a cat", "en", "B"),                     # "(" stripped, then "B" followed by ")"
    ("(B) a cat", "pt", "B"),                     # can_infer: "(", ")" become spaces, "B" stands alone
    ("The answer is B", "en", "B"),               # last char a capital after a space
    ("The answer is (C).", "en", "C"),
    ("answer: b", "en", None),                    # prefix removed, leaves "b": lower case is not a choice
    ("答案是B", "zh", None),                      # no separator around B, no option text
    ("答案是B", "en", None),                      # clean-up needs white space/punctuation before the letter
    ("الإجابة هي B", "ar", "B"),                  # Arabic sentence ending in a separate letter
    ("الإجابة هي B", "en", "B"),
    ("I think it is a dog", "tr", "B"),           # no letter: the one option text it contains
    ("I do not know", "ru", None),                # no letter and no option text
    ("A or B", "pt", None),                       # two letters: ambiguous
    ("A or B", "en", "A"),                        # the wrapper keeps a leading capital + space
    ("Cannot determine the answer", "en", "Z"),   # refusal
    ("Answer: Option D", "en", "D"),
    ("", "en", None),
]


@pytest.mark.parametrize("reply,lang,expected", EXTRACTION)
def test_letter_extraction(reply, lang, expected):
    from parrot.evaluation.prompts import INSTRUCTIONS
    prompt = "Which animal?\nA. a cat\nB. a dog\nC. a bird\nD. a fish\n" + INSTRUCTIONS[lang]
    got = can_infer(postprocess(reply, prompt), dict(CHOICES))
    assert (got or None) == expected


def test_postprocess_only_for_english_instruction():
    assert postprocess("  (B) a cat \n", "q\n" + EN) == "B"
    assert postprocess("  (B) a cat \n", "q\nResponda diretamente com a letra da opção das escolhas dadas.") \
        == "(B) a cat"
    assert postprocess("the answer is option c", "q\n" + EN) == "c"
    assert postprocess("x", "q\n请直接回答选项字母。") == "x"


# --- scoring ---------------------------------------------------------------------------------------------

def _circular_tsv(tmp_path):
    # two questions, each with its three rotations (index + k * 1,000,000); options rotate, answers follow
    rows = []
    opts = ["red", "green", "blue", "black"]
    for q, ans in ((1, 0), (2, 2)):
        for k in range(4):
            rot = opts[k:] + opts[:k]
            letter = "ABCD"[rot.index(opts[ans])]
            rows.append(dict(index=q + k * 1_000_000, question=f"colour {q}?", A=rot[0], B=rot[1], C=rot[2],
                             D=rot[3], answer=letter, category="colour", image=png_b64(q)))
    return load_benchmark(write_tsv(tmp_path / "mmbench_dev_en.tsv", rows), check_md5=False)


def test_circular_scoring_one_rotation_wrong(tmp_path):
    b = _circular_tsv(tmp_path)
    assert b.scoring == "circular"
    records = {str(r.index): {"prediction": r.answer, "error": None} for r in b.rows}
    records["2000002"]["prediction"] = "A" if b.rows[6].answer != "A" else "B"   # one rotation of q2 wrong
    assert [r.index for r in b.rows][6] == 2000002
    scored = score_rows(b, records)
    assert [(e["index"], e["hit"], e["rotations"]) for e in scored] == [(1, 1, 4), (2, 0, 4)]
    assert report_acc(scored)["none"]["Overall"] == 0.5
    # the same predictions scored vanilla count 7 of 8 rows right
    b.scoring = "vanilla"
    assert sum(e["hit"] for e in score_rows(b, records)) == 7
    # a rotation answered by option text (no letter) still counts, as can_infer falls back to the text
    b.scoring = "circular"
    records["2000002"]["prediction"] = "It is " + b.rows[6].options[b.rows[6].answer]
    assert [e["hit"] for e in score_rows(b, records)] == [1, 1]


def test_report_acc_groups_sorted_and_abbreviated():
    scored = [dict(hit=h, split=None, category=c, **{"l2-category": l2})
              for h, c, l2 in [(1, "b_cat", "coarse_perception"), (0, "a_cat", "coarse_perception"),
                               (1, "a_cat", "logic_reasoning"), (1, None, "logic_reasoning")]]
    acc = report_acc(scored)
    assert list(acc) == ["none"]
    assert list(acc["none"].items()) == [("Overall", 0.75), ("CP", 0.5), ("LR", 1.0), ("a_cat", 0.5),
                                         ("b_cat", 1.0)]


def test_empty_prediction_scored_as_nan_text(tmp_path):
    # VLMEvalKit reads predictions back from a sheet: an empty one becomes "nan", which contains option "n"
    rows = [dict(index=1, question="q", A="n", B="yes", answer="A", image=png_b64(4))]
    b = load_benchmark(write_tsv(tmp_path / "e_tr.tsv", rows))
    assert [e["hit"] for e in score_rows(b, {"1": {"prediction": "", "error": None}})] == [1]


# --- end to end with the scripted model ------------------------------------------------------------------

def make_multilingual(tmp_path, n=6):
    """MMMB-like files: n questions in en and zh sharing images (one by reference), known replies."""
    paths = []
    for lang, ok in (("en", "The answer is {a}."), ("cn", "{a}")):
        rows = []
        for i in range(n):
            ans = "ABCD"[i % 4]
            reply = ok.format(a=ans) if i % 3 else "I have no idea"          # every third one wrong
            rows.append(dict(index=i, question=f"Q{i} {{{{{reply}}}}}", A="a cat", B="a dog", C="a bird",
                             D="a fish", answer=ans, category=f"cat{i % 2}", **{"l2-category": "perception"},
                             image=png_b64(100 + i) if i != 4 else "3"))
        rows.append(dict(index=n, question="broken", A="x", B="y", answer="A", image="!!notbase64" * 10))
        rows.append(dict(index=n + 1, question="not an image", A="x", B="y", answer="A",
                         image=base64.b64encode(b"hello world, not an image " * 4).decode()))
        paths.append(write_tsv(tmp_path / f"mmmb_{lang}.tsv", rows))
    return paths


def expected_table(n=6):
    # per language: questions 0..n-1 right unless i % 3 == 0; the two bad-image rows count wrong
    right = sum(1 for i in range(n) if i % 3)
    return right / (n + 2)


def _table(result):
    s = result.summary
    return [(b["name"], b["lang"], b["questions"], b["errors"], json.dumps(b["accuracy"], sort_keys=True))
            for b in s["benchmarks"]]


@pytest.fixture
def multi(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the synthetic mmmb_* files do not have the published MD5s
        yield make_multilingual(tmp_path)


def test_end_to_end_scripted(multi, tmp_path):
    model = ScriptedModel()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = evaluate(multi, model, tmp_path / "out", progress=False, verbose=False)
    s = r.summary
    assert [(b["name"], b["lang"], b["scoring"]) for b in s["benchmarks"]] == [("mmmb_en", "en", "vanilla"),
                                                                                ("mmmb_cn", "zh", "vanilla")]
    for b in s["benchmarks"]:
        assert b["questions"] == 8 and b["errors"] == 2
        assert b["accuracy"]["none"]["Overall"] == pytest.approx(expected_table())
        assert list(b["accuracy"]["none"]) == ["Overall", "perception", "cat0", "cat1"]
    assert s["languages"]["en"]["correct"] == 4 and s["languages"]["zh"]["correct"] == 4
    errs = {e["index"]: e["error"] for e in s["errors"] if e["dataset"] == "mmmb_en"}
    assert "not valid base64" in errs[6] and "ImageError: not an image" in errs[7] and "mmmb_en index 7" in errs[7]
    # rows sharing an image are run back to back: 5 distinct images (row 4 reuses row 3's), 2 languages
    t = s["throughput"]
    assert t["cache_lookups"] == 12 and t["cache_hits"] == 12 - 5 and t["seconds_saved"] == pytest.approx(7 * .25)
    keys = [k for k, _ in model.calls]
    assert all(keys[2 * j] == keys[2 * j + 1] for j in range(6))   # en, zh of one image adjacent
    # routing heat map data: the scripted routing peaks on the prompt's language
    assert max(range(6), key=lambda e: s["routing"]["zh"][e]) == 1
    for k in ("csv", "json", "predictions", "journal", "accuracy", "routing"):
        assert os.path.getsize(r.paths[k]) > 0
    with open(r.paths["json"]) as f:
        assert json.load(f)["overall"]["correct"] == 8
    assert "mmmb_cn" in r.table and "perception" in r.table


def test_journal_guards(multi, tmp_path):
    out = tmp_path / "out"
    evaluate(multi[:1], ScriptedModel(), out, progress=False, verbose=False, plots=False)
    with pytest.raises(JournalError, match="exists: pass resume=True"):
        evaluate(multi[:1], ScriptedModel(), out, progress=False, verbose=False, plots=False)
    with pytest.raises(JournalError, match="max_new_tokens=512, this run has 64"):
        evaluate(multi[:1], ScriptedModel(), out, resume=True, max_new_tokens=64, progress=False, verbose=False)
    # resuming a finished run runs nothing and gives the same numbers
    model = ScriptedModel()
    r = evaluate(multi[:1], model, out, resume=True, progress=False, verbose=False, plots=False)
    assert model.calls == [] and r.summary["overall"]["correct"] == 4


def _run_script(files, out, extra=""):
    return ("import sys, warnings; warnings.simplefilter('ignore'); "
            f"sys.path[:0] = [{ROOT!r}, {HERE!r}]; "
            "import parrot; from evaluate_fakes import scripted_model; "
            f"parrot.evaluate({[str(f) for f in files]!r}, scripted_model, {str(out)!r}, progress=False, "
            f"verbose=False, plots=False{extra})")


def test_resume_after_sigkill(multi, tmp_path):
    full = evaluate(multi, scripted_model, tmp_path / "full", progress=False, verbose=False, plots=False)
    out = tmp_path / "killed"
    env = dict(os.environ, PARROT_FAKE_DELAY="0.15")
    proc = subprocess.Popen([sys.executable, "-c", _run_script(multi, out)], env=env)
    journal = out / "predictions.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline:
        if journal.exists() and journal.read_text().count("\n") >= 1 + 5:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = journal.read_text().count("\n") - 1
    assert 5 <= done_before < 16, done_before        # killed part-way
    r = evaluate(multi, scripted_model, out, resume=True, progress=False, verbose=False, plots=False)
    assert 0 < len(evaluate_fakes.CREATED[-1].calls) <= 16 - done_before        # only what was missing ran
    lines = journal.read_text().splitlines()[1:]
    keys = [(json.loads(l)["dataset"], json.loads(l)["index"]) for l in lines]
    assert len(keys) == len(set(keys)) == 16                 # every row once
    assert _table(r) == _table(full)


def test_workers_match_serial(multi, tmp_path):
    serial = evaluate(multi, scripted_model, tmp_path / "s", progress=False, verbose=False, plots=False)
    par = evaluate(multi, scripted_model, tmp_path / "p", workers=2, progress=False, verbose=False, plots=False)
    assert _table(par) == _table(serial)
    assert par.summary["errors"] == serial.summary["errors"]
    with open(par.paths["predictions"]) as a, open(serial.paths["predictions"]) as b:
        assert a.read() == b.read()


def test_loaded_model_cannot_go_to_workers(multi, tmp_path):
    with pytest.raises(ValueError, match="cannot be shared with worker processes"):
        evaluate(multi, ScriptedModel(), tmp_path / "x", workers=2, progress=False, verbose=False)


def test_raw_image_bytes_without_reference_jpeg(multi, tmp_path):
    # without the JPEG re-encode the TSV's bytes are decoded as they are (no EXIF orientation, as VLMEvalKit);
    # undecodable ones are a row's parrot.ImageError
    model = ScriptedModel()
    r = evaluate(multi, model, tmp_path / "raw", reference_jpeg=False, progress=False, verbose=False,
                 plots=False)
    errs = {e["index"]: e["error"] for e in r.summary["errors"] if e["dataset"] == "mmmb_en"}
    assert errs[7].startswith("mmmb_en index 7: ImageError: <bytes>: not a PNG or JPEG image")
    assert r.summary["overall"]["correct"] == 8
    # the model was given the TSV's PNG bytes themselves
    png = base64.b64decode(png_b64(100))
    from PIL import Image
    import hashlib
    import io
    assert model.calls[0][0] == hashlib.sha1(Image.open(io.BytesIO(png)).convert("RGB").tobytes()).hexdigest()


def test_parrot_evaluate_is_the_function_and_cli_mounts(multi, tmp_path):
    import argparse
    import types
    import parrot
    from parrot.evaluation import cli
    assert isinstance(parrot.evaluate, types.FunctionType) and parrot.evaluate is evaluate
    assert isinstance(parrot.evaluation, types.ModuleType)
    r = parrot.evaluate(multi[:1], ScriptedModel(), tmp_path / "c", progress=False, verbose=False, plots=False)
    assert r.summary["overall"]["questions"] == 8
    top = argparse.ArgumentParser(prog="parrot")
    cli.add_parser(top.add_subparsers(dest="cmd"))
    args = top.parse_args(["eval", *multi, "--model", str(tmp_path / "missing.gguf"), "-o", str(tmp_path / "o"),
                           "--workers", "2", "--no-plots", "-q"])
    assert args.workers == 2 and args.files == multi and args.func is cli.main
    # a model file that does not exist: exit status 1 and a message naming it, no traceback
    proc = subprocess.run([sys.executable, "-m", "parrot.evaluation.cli", *multi, "--model",
                           str(tmp_path / "missing.gguf"), "-o", str(tmp_path / "o"), "-q"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "parrot eval: error:" in proc.stderr and "missing.gguf" in proc.stderr
