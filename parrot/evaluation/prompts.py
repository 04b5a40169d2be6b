"""The question text Parrot is asked, built as VLMEvalKit's Parrot wrapper builds it.

Source: VLMEvalKit vlmeval/vlm/parrot.py, ``Parrot.build_multi_choice_prompt`` (the model's custom prompt for
MCQ datasets, used instead of the dataset's generic one because ``use_custom_prompt`` is true for MCQ):
``hint + "\\n"`` (if any) + question, ``"\\n{L}. {option}"`` per non-missing option in letter order, then the
language's instruction after a ``"\\n"``. The Chinese instruction is chosen when the dataset name ends in
``_cn`` *or* the prompt contains any CJK ideograph (``cn_string``, vlmeval/smp/misc.py), whatever the file's
language; the other languages by the dataset name's suffix; English otherwise. A row without options gets the
open-question instruction. ``Parrot.prepare_inputs`` then makes the user turn ``"<image>\\n" + prompt`` (one
image, one text) — that part is the model's prompt format (``model.run`` adds it).
"""
from __future__ import annotations

import re

from parrot.evaluation.tsv import Row

__all__ = ["INSTRUCTIONS", "EN_INSTRUCTION", "OPEN_INSTRUCTION", "cn_string", "build_prompt"]

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

_CJK = re.compile("[\u4e00-\u9fff]")


def cn_string(s: str) -> bool:
    """VLMEvalKit's test for Chinese text: any character in U+4E00..U+9FFF."""
    return _CJK.search(s) is not None


def build_prompt(row: Row, lang: str) -> str:
    """The text of the user turn (without the ``<image>`` line) for a multiple-choice row."""
    question = row.question
    if row.hint is not None:
        question = row.hint + "\n" + question
    for letter, option in row.options.items():
        question += f"\n{letter}. {option}"
    prompt = question
    if row.options:
        if lang == "zh" or cn_string(prompt):
            prompt += "\n" + INSTRUCTIONS["zh"]
        else:
            prompt += "\n" + INSTRUCTIONS.get(lang, EN_INSTRUCTION)
    else:
        prompt += "\n" + (OPEN_INSTRUCTION["zh"] if cn_string(prompt) else OPEN_INSTRUCTION["en"])
    return prompt
