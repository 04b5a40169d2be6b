"""Parrot's prompt format: the ChatML conversation of its ``QwenConversationFormatter``, byte for byte.

A one-image question becomes::

    <|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n<|im_start|>user\\n<image>\\n{question}<|im_end|>\\n<|im_start|>assistant\\n

and is tokenised chunk by chunk around ``<image>``, each chunk on its own (no special-token prefix; the ChatML
markers are special tokens inside a chunk), with :data:`IMAGE_TOKEN` where the image goes. The model's
forward pass replaces that placeholder by the image's feature rows.
"""
from __future__ import annotations

from typing import List, Optional, Protocol, Sequence, Tuple

__all__ = ["DEFAULT_SYSTEM", "IMAGE_PLACEHOLDER", "IMAGE_TOKEN", "IM_START", "IM_END", "user_query",
           "format_conversation", "format_query", "tokenize_prompt", "format_messages"]

#: The system message the reference inserts when the conversation has none.
DEFAULT_SYSTEM = "You are a helpful assistant."
#: Where the image goes in the text.
IMAGE_PLACEHOLDER = "<image>"
#: The id standing for the image in token sequences (the reference's IMAGE_TOKEN_INDEX).
IMAGE_TOKEN = -200
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"

_ROLE = {"system": IM_START + "system\n", "user": IM_START + "user\n", "assistant": IM_START + "assistant\n"}

Turn = Tuple[str, Optional[str]]


class _Encoder(Protocol):
    def encode(self, text: str) -> List[int]: ...


def user_query(text: str, image: bool = True) -> str:
    """The user turn of a question about one image: ``"<image>\\n" + text`` (VLMEvalKit's Parrot wrapper)."""
    return IMAGE_PLACEHOLDER + "\n" + text if image else text


def format_conversation(turns: Sequence[Turn], system: str = DEFAULT_SYSTEM) -> str:
    """The prompt text of a conversation.

    turns: (user, assistant) pairs, oldest first. The last pair's assistant may be None: the prompt then ends
    with the generation preface ``<|im_start|>assistant\\n`` for the model to continue. When every turn has an
    answer, the conversation is closed (the reference's format without generation preface).
    system: the system message (the reference's default unless given).
    """
    if isinstance(turns, tuple) and len(turns) == 2 and all(isinstance(x, (str, type(None))) for x in turns):
        raise TypeError("turns must be a sequence of (user, assistant) pairs, not a single pair")
    if len(turns) == 0:
        raise ValueError("a conversation needs at least one turn")
    if not isinstance(system, str):
        raise TypeError("system must be a str")
    messages = [("system", system)]
    for i, turn in enumerate(turns):
        if not isinstance(turn, (tuple, list)) or len(turn) != 2:
            raise TypeError(f"turns[{i}] must be a (user, assistant) pair")
        user, assistant = turn
        if not isinstance(user, str):
            raise TypeError(f"turns[{i}]: the user message must be a str")
        messages.append(("user", user))
        if assistant is None:
            if i != len(turns) - 1:
                raise ValueError(f"turns[{i}] has no answer but is not the last turn")
        elif isinstance(assistant, str):
            messages.append(("assistant", assistant))
        else:
            raise TypeError(f"turns[{i}]: the assistant message must be a str or None")
    open_end = turns[-1][1] is None
    # Each message is role + text + <|im_end|>, joined by "\n"; an open end adds the bare assistant role.
    prompt = "\n".join(_ROLE[role] + text + IM_END for role, text in messages)
    if open_end:
        prompt += "\n" + _ROLE["assistant"]
    return prompt


def format_query(text: str, *, image: bool = True, system: str = DEFAULT_SYSTEM) -> str:
    """The prompt of one question (about one image, unless image=False), ready for generation."""
    return format_conversation([(user_query(text, image), None)], system)


def tokenize_prompt(tokenizer: _Encoder, text: str) -> List[int]:
    """Token ids of a prompt: text split at ``<image>``, each chunk tokenised alone (special tokens
    recognised), :data:`IMAGE_TOKEN` between chunks."""
    ids: List[int] = []
    for i, chunk in enumerate(text.split(IMAGE_PLACEHOLDER)):
        if i:
            ids.append(IMAGE_TOKEN)
        ids.extend(tokenizer.encode(chunk))
    return ids


def format_messages(messages: Sequence[Tuple[str, str]], system: str = DEFAULT_SYSTEM) -> str:
    """The prompt text of a chat given as ``(role, text)`` messages, oldest first, ready for the assistant's
    next message: every message is ``<|im_start|>{role}\\n{text}<|im_end|>``, joined by ``"\\n"``, then the
    generation preface ``<|im_start|>assistant\\n``.

    Roles are ``"user"`` and ``"assistant"`` in any order (the system message is ``system``); the last message
    must be the user's. For alternating turns this equals :func:`format_conversation`. A message about the
    image carries it as :func:`user_query` does (``"<image>\\n" + text``)."""
    if not isinstance(system, str):
        raise TypeError("system must be a str")
    if len(messages) == 0:
        raise ValueError("a chat needs at least one message")
    for i, m in enumerate(messages):
        if not isinstance(m, (tuple, list)) or len(m) != 2 or not isinstance(m[1], str):
            raise TypeError(f"messages[{i}] must be a (role, text) pair of str")
        if m[0] not in ("user", "assistant"):
            raise ValueError(f"messages[{i}]: role must be 'user' or 'assistant', got {m[0]!r}")
    if messages[-1][0] != "user":
        raise ValueError("the last message must be the user's: the prompt asks for the assistant's reply")
    body = "\n".join(_ROLE[role] + text + IM_END for role, text in [("system", system), *messages])
    return body + "\n" + _ROLE["assistant"]
