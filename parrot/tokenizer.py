"""Parrot's text tokenizer: Qwen2's byte-level BPE, implemented in C and read from a GGUF file.

It gives the same ids as Hugging Face ``tokenizers`` with Qwen2's ``tokenizer.json`` (NFC, Qwen2's split regex,
byte-level BPE; ``<|im_start|>``, ``<|im_end|>``, ``<|endoftext|>`` recognised as special tokens), and decodes
back to text, also incrementally for streaming generation::

    tok = Tokenizer("model.gguf")
    ids = tok.encode("<|im_start|>user\\nBonjour !<|im_end|>")
    text = tok.decode(ids, skip_special=True)
    stream = tok.stream()
    for i in ids:
        print(stream.push(i), end="")
    print(stream.flush())
"""
from __future__ import annotations

import os
from typing import Iterable, List, Optional, Union

from parrot import _core

__all__ = ["Tokenizer", "StreamDecoder"]


class StreamDecoder:
    """Incremental decoder: :meth:`push` one id at a time and get the text it completes.

    Text is never cut inside a UTF-8 sequence: bytes that may still become a character are held back until a
    later token completes them. ``"".join(pushes) + flush()`` equals ``Tokenizer.decode`` of the same ids.
    """

    __slots__ = ("_stream",)

    def __init__(self, stream: "_core.DetokStream") -> None:
        self._stream = stream

    def push(self, token_id: int) -> str:
        """The text completed by token_id (often ``""`` while a multi-byte character is incomplete)."""
        return self._stream.push(token_id)

    def flush(self) -> str:
        """Ends the sequence: held-back bytes that never completed come out as U+FFFD. The decoder can then
        be reused for a new sequence."""
        return self._stream.flush()


class Tokenizer:
    """Qwen2 byte-level BPE tokenizer.

    Build it from a GGUF file holding ``tokenizer.*`` metadata (a model file, or one with only the tokenizer),
    or wrap the ``_core.Tokenizer`` that a loaded model hands out.
    """

    __slots__ = ("_tok",)

    def __init__(self, source: Union[str, "os.PathLike[str]", "_core.Tokenizer"]) -> None:
        if isinstance(source, _core.Tokenizer):
            self._tok = source
        else:
            self._tok = _core.Tokenizer(os.fspath(source))

    def encode(self, text: Union[str, bytes], *, special: bool = True) -> List[int]:
        """Token ids of text.

        special: recognise special tokens (``<|im_start|>`` ...) written in the text; with False their text is
        tokenised as ordinary characters. Added tokens that are not special are always recognised.
        text may also be UTF-8 ``bytes``; invalid UTF-8 raises :class:`parrot.TokenizerError` with the byte
        offset (a ``str`` with lone surrogates raises ``UnicodeEncodeError``).
        """
        return self._tok.encode(text, special)

    def decode(self, ids: Iterable[int], *, skip_special: bool = False) -> str:
        """Text of ids. Ill-formed byte sequences (e.g. a character cut in half) become U+FFFD; ids of unused
        vocabulary slots decode to nothing; ids outside ``range(n_tokens)`` raise ``ValueError``."""
        if not isinstance(ids, (list, tuple)):
            ids = list(ids)
        return self._tok.decode(ids, skip_special)

    def stream(self, *, skip_special: bool = False) -> StreamDecoder:
        """A new incremental decoder (see :class:`StreamDecoder`)."""
        return StreamDecoder(self._tok.stream(skip_special))

    def token_id(self, token: str) -> Optional[int]:
        """Id of an added/special token by its text (e.g. ``"<|im_end|>"``), else of a vocabulary entry by its
        stored byte-alphabet text; None if there is none."""
        return self._tok.token_id(token)

    def token_text(self, token_id: int) -> str:
        """The stored text of a token (byte-alphabet form for ordinary tokens)."""
        return self._tok.token_text(token_id)

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes token_id decodes to (possibly part of a UTF-8 character)."""
        return self._tok.token_bytes(token_id)

    @property
    def n_tokens(self) -> int:
        """Number of ids, including unused padding slots."""
        return self._tok.n_tokens

    @property
    def eos_id(self) -> Optional[int]:
        return self._tok.eos_id

    @property
    def pad_id(self) -> Optional[int]:
        return self._tok.pad_id

    def __len__(self) -> int:
        return self._tok.n_tokens

    def __repr__(self) -> str:
        return f"Tokenizer(n_tokens={self.n_tokens}, eos_id={self.eos_id})"
