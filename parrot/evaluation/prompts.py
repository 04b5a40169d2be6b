"""The question text Parrot is asked, built as VLMEvalKit's Parrot wrapper builds it.

Source: VLMEvalKit vlmeval/vlm/parrot.py, ``Parrot.build_multi_choice_prompt`` (the model's custom prompt for
MCQ datasets, used instead of the dataset's generic one because ``use_custom_prompt`` is true for MCQ):
``hint + "\\n"`` (if any) + question, ``"\\n{L}. {option}"`` per non-missing option in letter order, then the
instruction after a ``"\\n"``. A row without options gets the open-question instruction. ``Parrot.prepare_inputs``
then makes the user turn ``"<image>\\n" + prompt`` (one image, one text) — that part is the model's prompt format
(``model.run`` adds it).

Which instruction: :func:`instruction_language`, a function of the dataset name and the prompt only — never of
the language a file is reported under (``--lang``), so it is the reference's choice for every row.
"""
from __future__ import annotations

import re

from parrot.evaluation.tsv import Row

__all__ = ["INSTRUCTIONS", "EN_INSTRUCTION", "OPEN_INSTRUCTION", "cn_string", "instruction_language",
           "build_prompt"]

EN_INSTRUCTION = "Answer with the option's letter from the given choices directly."
INSTRUCTIONS = {
    "en": EN_INSTRUCTION,
    "zh": "请直接用给定选项中的选项字母回答。",
    "pt": "Responda diretamente com a letra da opção das escolhas dadas.",
    "ar": "أجب مباشرةً بحرف الخيار من الاختيارات المعطاة.",
    "ru": "Ответьте буквой варианта из предложенных вариантов напрямую.",
    "tr": "Verilen seçeneklerden doğrudan seçeneğin harfi ile cevap verin.",
}
#: For rows without options (Parrot.build_multi_choice_prompt's ``else`` branch).
OPEN_INSTRUCTION = {"zh": "请用单个词或短语回答问题。", "en": "Answer the question using a single word or phrase."}

#: Only the CJK Unified Ideographs block, as ``cn_string`` (vlmeval/smp/misc.py) tests it: no extension A
#: (U+3400..U+4DBF), no compatibility ideographs, no kana or CJK punctuation.
_CJK = re.compile("[\u4e00-\u9fff]")
#: The dataset-name endings the wrapper tests after Chinese, in its order: ``dataset[-3:] == '_pt'`` etc.
_SUFFIX_INSTRUCTION = {"_pt": "pt", "_ar": "ar", "_ru": "ru", "_tr": "tr"}


def cn_string(s: str) -> bool:
    """VLMEvalKit's test for Chinese text: any character in U+4E00..U+9FFF."""
    return _CJK.search(s) is not None


def instruction_language(dataset: str, prompt: str) -> str:
    """The language of the multiple-choice instruction the reference wrapper appends.

    Chinese when the dataset name's last three characters are exactly ``_cn`` or the prompt (hint, question
    and options) has a CJK ideograph; else Portuguese, Arabic, Russian or Turkish when they are exactly
    ``_pt``, ``_ar``, ``_ru``, ``_tr``; else English. The tests are case-sensitive (``_PT`` is English) and
    ``_zh`` is not among them (a ``_zh`` file without ideographs gets the English instruction).
    """
    if dataset[-3:] == "_cn" or cn_string(prompt):
        return "zh"
    return _SUFFIX_INSTRUCTION.get(dataset[-3:], "en")


def build_prompt(row: Row, dataset: str) -> str:
    """The text of the user turn (without the ``<image>`` line) for a row of the dataset named ``dataset``
    (the file name without ``.tsv``, as VLMEvalKit names a local dataset)."""
    question = row.question
    if row.hint is not None:
        question = row.hint + "\n" + question
    for letter, option in row.options.items():
        question += f"\n{letter}. {option}"
    if row.options:
        return question + "\n" + INSTRUCTIONS[instruction_language(dataset, question)]
    return question + "\n" + (OPEN_INSTRUCTION["zh"] if cn_string(question) else OPEN_INSTRUCTION["en"])
