"""From Parrot's reply to an option letter, exactly as VLMEvalKit does in exact-matching mode.

Two stages, each a transcription of VLMEvalKit's rules (the rules, not the code, are reproduced):

1. :func:`postprocess` — ``Parrot.generate_inner`` in vlmeval/vlm/parrot.py. The decoded reply is stripped of
   ASCII white space. Only when the query ends with the English instruction (or "请直接回答选项字母。") it is then
   repeatedly stripped of ASCII punctuation and white space at both ends; a reply longer than one character
   whose first character is an ASCII capital followed by white space/punctuation becomes that letter; else one
   whose last character is an ASCII capital preceded by white space/punctuation becomes that letter; else if
   the lower-cased reply contains "answer is" or "answer:", the text after the first such prefix is kept (then
   the text after "option", if present) and the loop repeats; otherwise it stops. Replies to prompts in the
   other languages are kept as they are.

2. :func:`can_infer` — ``can_infer`` / ``can_infer_option`` / ``can_infer_text`` in
   vlmeval/utils/matching_util.py, as called by ``extract_answer_from_item`` / ``prefetch_answer`` in
   vlmeval/dataset/utils/multiple_choice.py with no judge model. We follow the version in use when Parrot and
   MMMB were added to VLMEvalKit (2024; also what docs/model.md §12 describes): no length gate on the
   prediction and no "letter must be near the end" rule, both of which later revisions added.
"""
from __future__ import annotations

import string
from typing import Dict, Iterable, Optional, Union

from parrot.evaluation.prompts import EN_INSTRUCTION

__all__ = ["postprocess", "can_infer", "can_infer_option", "can_infer_text", "REFUSALS"]

_PUNCT_WS = string.punctuation + string.whitespace
_CN_SHORT_INSTRUCTION = "请直接回答选项字母。"

#: can_infer_option's ``reject_to_answer``: any of these in the reply means "Z" (no answer).
REFUSALS = (
    "Sorry, I can't help with images of people yet.",
    "I can't process this file.",
    "I'm sorry, but without the image provided",
    "Cannot determine the answer",
)
_SEPARATORS = ".()[],:;!*#{}"


def _after_prefix(answer: str, prefixes: Iterable[str]) -> str:
    # Parrot.process_answer_prefix: position found in the lower-cased text, applied to the original
    low = answer.lower()
    for prefix in prefixes:
        if prefix in low:
            return answer[low.find(prefix) + len(prefix):]
    return answer


def postprocess(response: str, prompt: str) -> str:
    """The answer the Parrot wrapper returns for a decoded reply to ``prompt`` (the user text)."""
    answer = response.strip(string.whitespace)
    if not (prompt.endswith(EN_INSTRUCTION) or prompt.endswith(_CN_SHORT_INSTRUCTION)):
        return answer
    while True:
        answer = answer.strip(_PUNCT_WS)
        if len(answer) <= 1:
            break
        if answer[0] in string.ascii_uppercase and answer[1] in _PUNCT_WS:
            answer = answer[0]
            break
        if answer[-1] in string.ascii_uppercase and answer[-2] in _PUNCT_WS:
            answer = answer[-1]
            break
        low = answer.lower()
        if "answer is" in low or "answer:" in low:
            answer = _after_prefix(answer, ["answer is", "answer:"])
            answer = _after_prefix(answer, ["option"])
        else:
            break
    return answer


def can_infer_option(answer: str, choices: Dict[str, str]) -> Union[str, bool]:
    """A choice letter standing alone in the answer (after separators become spaces), "Z" or False."""
    if "Failed to obtain answer via API" in answer:
        return False
    for refusal in REFUSALS:
        if refusal in answer:
            return "Z"
    mod = answer
    for c in _SEPARATORS:
        mod = mod.replace(c, " ")
    pieces = [x.strip() for x in mod.split()]
    found = [c for c in choices if c in pieces]
    if len(found) == 1:
        return found[0]
    if not found and "Z" in pieces:
        return "Z"
    return False


def can_infer_text(answer: str, choices: Dict[str, str]) -> Union[str, bool]:
    """The one option whose lower-cased text occurs in the lower-cased answer, else False."""
    low = answer.lower()
    hits = [k for k, v in choices.items() if str(v).lower() in low]
    return hits[0] if len(hits) == 1 else False


def can_infer(answer: object, choices: Dict[str, str]) -> Union[str, bool]:
    """VLMEvalKit's ``can_infer``: a letter of ``choices``, "Z" (refusal), or False (nothing inferable)."""
    answer = str(answer)
    found = can_infer_option(answer, choices)
    return found if found else can_infer_text(answer, choices)


def extract_letter(prediction: str, choices: Dict[str, str]) -> Optional[str]:
    """``can_infer`` with "nothing" as None."""
    found = can_infer(prediction, choices)
    return found if isinstance(found, str) and found else None
