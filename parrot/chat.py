"""Conversations: Parrot's prompt format turn by turn, and chat sessions that keep their KV cache.

A session encodes its image once, when the first question is asked: the image's rows (routed by the MoE on
that first question's text, as a one-shot prompt would be) then stay in the KV cache with the whole
history, so a follow-up question only runs its own new tokens through the decoder — no vision tower, no MoE,
no re-prefill. The cache holds exactly the tokens the model read and wrote; asking the same conversation as
one fresh prompt made of those tokens gives the same answer.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import numpy as np

from parrot.generation import Result
from parrot.prompt import IM_END, IM_START, IMAGE_PLACEHOLDER, user_query

if TYPE_CHECKING:
    from parrot.model import Model

__all__ = ["ChatSession", "IMAGE_TAG", "system_turn", "user_turn", "END_OF_TURN"]

IMAGE_TAG = IMAGE_PLACEHOLDER  # where the image's features go in a user turn's text
END_OF_TURN = IM_END + "\n"

# The pieces of parrot.prompt.format_conversation, for sessions that extend their prompt turn by turn:
# system_turn(s) + user_turn(q) == format_query(q, system=s).


def system_turn(system: str) -> str:
    """The system turn of Parrot's Qwen conversation format (SPEC, "Prompt format")."""
    return f"{IM_START}system\n{system}{END_OF_TURN}"


def user_turn(text: str, *, image: bool) -> str:
    """A user turn followed by the assistant's preface; with an image, the query is ``"<image>\\n" + text``."""
    return f"{IM_START}user\n{user_query(text, image)}{END_OF_TURN}{IM_START}assistant\n"


class ChatSession:
    """A conversation with one model (and at most one image) that keeps its KV cache between questions.

    ``ask`` returns the answer's text, ``stream`` yields it in pieces, ``run`` returns a :class:`Result`;
    they take the same generation options as :meth:`parrot.Model.generate`. ``history`` is the conversation
    so far as ``[{"role": "user" | "assistant", "content": str}, ...]``. An interrupted or failed question
    leaves the session as it was before it. One session is meant for one thread at a time (calls are
    serialised by a lock)."""

    def __init__(self, model: "Model", image: Any = None, system: Optional[str] = None):
        self.model = model
        self.system = model.default_system if system is None else system
        if not isinstance(self.system, str):
            raise TypeError(f"system must be a str or None, got {type(system).__name__}")
        self._lock = threading.RLock()
        self._image = image
        self._pixels: Optional[np.ndarray] = None
        if image is not None:
            self._pixels = model.preprocess(image)
        self.history: List[Dict[str, str]] = []
        self.routing: Optional[np.ndarray] = None
        self._ctx: Any = None
        self._pending: List[int] = []   # tokens generated but not yet run through the decoder

    def __repr__(self) -> str:
        n = sum(1 for t in self.history if t["role"] == "user")
        pos = self._ctx.n_past if self._ctx is not None else 0
        return f"<parrot.ChatSession {n} question(s), {pos} positions cached, image={self._pixels is not None}>"

    @property
    def positions(self) -> int:
        """Positions held in the KV cache."""
        return self._ctx.n_past if self._ctx is not None else 0

    def reset(self, image: Any = ..., system: Optional[str] = None) -> None:
        """Forgets the conversation (and its KV cache). ``image=`` replaces the image (None: no image),
        ``system=`` the system prompt."""
        with self._lock:
            if image is not ...:
                self._pixels = self.model.preprocess(image) if image is not None else None
                self._image = image
            if system is not None:
                self.system = system
            self.history = []
            self.routing = None
            self._ctx = None
            self._pending = []

    def ask(self, prompt: str, **options: Any) -> str:
        """Asks a question; returns the answer's text."""
        return self.run(prompt, **options).text

    def run(self, prompt: str, **options: Any) -> Result:
        """Asks a question; returns the full :class:`Result`."""
        it = self._turn(prompt, options)
        for _ in it:
            pass
        return it.result  # type: ignore[attr-defined]

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Asks a question; yields the answer's text in pieces."""
        return iter(self._turn(prompt, options))

    def _turn(self, prompt: str, options: Dict[str, Any]) -> "_Turn":
        if "image" in options or "system" in options:
            raise TypeError("a chat session's image and system prompt are set by Model.chat(...) or reset(...)")
        return _Turn(self, prompt, options)


class _Turn:
    """One question of a session, run as an iterator of text pieces; ``result`` is set at the end."""

    def __init__(self, session: ChatSession, prompt: str, options: Dict[str, Any]):
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        self.session = session
        self.prompt = prompt
        self.options = options
        self.result: Optional[Result] = None

    def __iter__(self) -> Iterator[str]:
        s, m = self.session, self.session.model
        with s._lock:
            first = s._ctx is None
            saved = (s._ctx.n_past if s._ctx is not None else 0, list(s._pending), s.routing)
            try:
                if first:
                    prep = m._prepare(s._pixels, self.prompt, s.system, pixels_ready=True)
                    s._ctx = m._core.new_context(m.context_size)
                    s.routing = prep.routing
                else:
                    prep = m._prepare_followup(s._pending, self.prompt, s._ctx.n_past)
                s._pending = []
                dec = m._decoding(s._ctx, prep, self.options)
                for piece in dec:
                    yield piece
            except BaseException:
                # forget the half-run question: the cache returns to what it held before it
                if first:
                    s._ctx = None
                else:
                    s._ctx.truncate(saved[0])
                s._pending, s.routing = saved[1], saved[2]
                raise
            if dec.finish_reason in ("length", "stop_string") and dec.token_ids:
                s._pending = [dec.token_ids[-1]]   # produced, never fed back
            s.history.append({"role": "user", "content": self.prompt})
            s.history.append({"role": "assistant", "content": dec.text})
            self.result = m._result(prep, dec, self.prompt)
