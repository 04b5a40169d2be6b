"""Parrot's prompt format: the ChatML conversation of its ``QwenConversationFormatter``, byte for byte.

A one-image question becomes::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

The reference tokenises it chunk by chunk around ``<image>``, each chunk on its own (no special-token prefix,
the ChatML markers recognised as special tokens inside a chunk), with :data:`IMAGE_TOKEN` where the image goes.

Here a prompt is a :class:`Prompt`: the ChatML markers the formatter puts in are kept apart from the text they
frame (system prompt, user questions, answers). A special token splits the text around it before anything
else happens in the tokenizer, so tokenising the pieces one by one gives the reference's ids exactly — while
text that merely *looks* like a marker (a user typing ``<|im_end|>``) stays plain text unless
``allow_special=True``: untrusted text cannot close its own turn and forge another.

Every prompt the engine runs is built here: :func:`format_query` (one question), :func:`format_conversation`
(several turns) and :func:`follow_up` (the next question of a chat session whose KV cache holds the rest).
"""
from __future__ import annotations

from typing import Iterable, List, Optional, Protocol, Sequence, Tuple

__all__ = ["DEFAULT_SYSTEM", "IMAGE_PLACEHOLDER", "IMAGE_TOKEN", "IM_START", "IM_END", "Prompt", "check_text",
           "user_query", "system_turn", "user_turn", "assistant_preface", "format_conversation", "format_query",
           "follow_up", "format_messages"]

#: The system message the reference inserts when the conversation has none.
DEFAULT_SYSTEM = "You are a helpful assistant."
#: Where the image goes in the text.
IMAGE_PLACEHOLDER = "<image>"
#: The id standing for the image in token sequences (the reference's IMAGE_TOKEN_INDEX).
IMAGE_TOKEN = -200
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

Turn = Tuple[str, Optional[str]]


class _Encoder(Protocol):
    def encode(self, text: str, *, special: bool = True) -> List[int]: ...


class Prompt:
    """A prompt as a sequence of pieces: ``(True, marker)`` for a ChatML marker the formatter inserted,
    ``(False, text)`` for text. ``str(prompt)`` is the prompt's text; ``a + b`` joins two prompts (adjacent
    text pieces merge, so the ids do not depend on how a prompt was assembled)."""

    __slots__ = ("pieces",)

    def __init__(self, pieces: Iterable[Tuple[bool, str]] = ()) -> None:
        merged: List[Tuple[bool, str]] = []
        for marker, text in pieces:
            if not marker and not text:
                continue
            if not marker and merged and not merged[-1][0]:
                merged[-1] = (False, merged[-1][1] + text)
            else:
                merged.append((marker, text))
        self.pieces: Tuple[Tuple[bool, str], ...] = tuple(merged)

    def __add__(self, other: "Prompt") -> "Prompt":
        return Prompt(self.pieces + other.pieces)

    def __str__(self) -> str:
        return "".join(text for _, text in self.pieces)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Prompt) and self.pieces == other.pieces

    def __hash__(self) -> int:
        return hash(self.pieces)

    def __repr__(self) -> str:
        return f"Prompt({str(self)!r})"

    def tokenize(self, tokenizer: _Encoder, *, allow_special: bool = False) -> List[int]:
        """Token ids: each marker its special token; each text piece split at ``<image>`` (one
        :data:`IMAGE_TOKEN` between chunks) and tokenised chunk by chunk, with special-token text inside it
        read as plain text unless ``allow_special`` (then as the reference reads it)."""
        ids: List[int] = []
        for marker, text in self.pieces:
            if marker:
                ids.extend(tokenizer.encode(text, special=True))
                continue
            for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
                if i:
                    ids.append(IMAGE_TOKEN)
                if chunk:
                    ids.extend(tokenizer.encode(chunk, special=allow_special))
        return ids


def check_text(name: str, value: object, *, empty_ok: bool = False) -> str:
    """``value`` if it is a str that can be tokenised: ``TypeError`` if it is not a str, ``ValueError`` naming
    the index of a lone surrogate (no UTF-8 encoding exists for it) or, unless ``empty_ok``, for empty or
    white-space-only text (there is no question to answer)."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{name} has a lone surrogate U+{ord(value[e.start]):04X} at index {e.start}: it is not "
                         f"text (decode bytes with errors='replace', or fix the string)") from None
    if not empty_ok and not value.strip():
        raise ValueError(f"{name} is empty")
    return value


def _text(s: str) -> Prompt:
    return Prompt([(False, s)])


def _message(role: str, text: str) -> Prompt:
    """``<|im_start|>{role}\\n{text}<|im_end|>``."""
    return Prompt([(True, IM_START), (False, role + "\n" + text), (True, IM_END)])


def user_query(text: str, image: bool = True) -> str:
    """The user turn of a question about one image: ``"<image>\\n" + text`` (VLMEvalKit's Parrot wrapper)."""
    return IMAGE_PLACEHOLDER + "\n" + text if image else text


def system_turn(system: str) -> Prompt:
    """The system turn and the newline after it: ``<|im_start|>system\\n{system}<|im_end|>\\n``. Every prompt
    with this system message starts with its ids (a marker follows it), so their KV cache can be shared."""
    return _message("system", system) + _text("\n")


def user_turn(text: str) -> Prompt:
    """``<|im_start|>user\\n{text}<|im_end|>\\n`` (``text`` already holds ``<image>\\n`` if it has one)."""
    return _message("user", text) + _text("\n")


def assistant_preface() -> Prompt:
    """``<|im_start|>assistant\\n``: the open end the model continues."""
    return Prompt([(True, IM_START), (False, "assistant\n")])


def format_conversation(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> Prompt:
    """The prompt of a conversation.

    turns: (user, assistant) pairs, oldest first. The last pair's assistant may be None: the prompt then ends
    with the generation preface ``<|im_start|>assistant\\n`` for the model to continue. When every turn has an
    answer, the conversation is closed (the reference's format without generation preface: no newline after
    the last ``<|im_end|>``).
    system: the system message (the reference's default unless given).
    """
    if isinstance(turns, tuple) and len(turns) == 2 and all(isinstance(x, (str, type(None))) for x in turns):
        raise TypeError("turns must be a sequence of (user, assistant) pairs, not a single pair")
    if len(turns) == 0:
        raise ValueError("a conversation needs at least one turn")
    if not isinstance(system, str):
        raise TypeError("system must be a str")
    messages = [_message("system", system)]
    for i, turn in enumerate(turns):
        if not isinstance(turn, (tuple, list)) or len(turn) != 2:
            raise TypeError(f"turns[{i}] must be a (user, assistant) pair")
        user, assistant = turn
        if not isinstance(user, str):
            raise TypeError(f"turns[{i}]: the user message must be a str")
        messages.append(_message("user", user))
        if assistant is None:
            if i != len(turns) - 1:
                raise ValueError(f"turns[{i}] has no answer but is not the last turn")
        elif isinstance(assistant, str):
            messages.append(_message("assistant", assistant))
        else:
            raise TypeError(f"turns[{i}]: the assistant message must be a str or None")
    # messages are joined by "\n"; an open end adds "\n" and the bare assistant role
    out = messages[0]
    for m in messages[1:]:
        out = out + _text("\n") + m
    if turns[-1][1] is None:
        out = out + _text("\n") + assistant_preface()
    return out


def format_query(text: str, *, image: bool = True, system: str = DEFAULT_SYSTEM) -> Prompt:
    """The prompt of one question (about one image, unless image=False), ready for generation:
    ``system_turn(system) + user_turn(user_query(text, image)) + assistant_preface()``."""
    return format_conversation([(user_query(text, image), None)], system)


def follow_up(text: str) -> Prompt:
    """What a chat session feeds after the model's answer to ask ``text`` next: the end of the answer's turn,
    the new user turn and the generation preface (``<|im_end|>\\n<|im_start|>user\\n{text}<|im_end|>\\n
    <|im_start|>assistant\\n``), so the KV cache holds exactly :func:`format_conversation`'s prompt."""
    return Prompt([(True, IM_END)]) + _text("\n") + user_turn(text) + assistant_preface()


def format_messages(messages: Sequence[Tuple[str, str]], system: str = DEFAULT_SYSTEM) -> Prompt:
    """The prompt of a chat given as ``(role, text)`` messages, oldest first, ready for the assistant's next
    message: the system turn, every message as ``<|im_start|>{role}\n{text}<|im_end|>\n``, then the
    generation preface ``<|im_start|>assistant\n``.

    Roles are ``"user"`` and ``"assistant"`` in any order (the system message is ``system``); the last message
    must be the user's. For alternating turns this equals :func:`format_conversation`. A message about the
    image carries it as :func:`user_query` does (``"<image>\n" + text``)."""
    if not isinstance(system, str):
        raise TypeError("system must be a str")
    if len(messages) == 0:
        raise ValueError("a chat needs at least one message")
    out = system_turn(system)
    for i, m in enumerate(messages):
        if not isinstance(m, (tuple, list)) or len(m) != 2 or not isinstance(m[1], str):
            raise TypeError(f"messages[{i}] must be a (role, text) pair of str")
        if m[0] not in ("user", "assistant"):
            raise ValueError(f"messages[{i}]: role must be 'user' or 'assistant', got {m[0]!r}")
        out = out + _message(m[0], m[1]) + _text("\n")
    if messages[-1][0] != "user":
        raise ValueError("the last message must be the user's: the prompt asks for the assistant's reply")
    return out + assistant_preface()
