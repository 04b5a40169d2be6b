"""Chat sessions: a conversation that keeps its KV cache between questions.

A session encodes its image once, when the first question is asked: the image's rows (routed by the MoE on
that first question's text, as a one-shot prompt would be) then stay in the KV cache with the whole
history, so a follow-up question only runs its own new tokens through the decoder — no vision tower, no MoE,
no re-prefill. The cache holds exactly the tokens the model read and wrote, in the format of
:func:`parrot.prompt.format_conversation`; asking the same conversation as one fresh prompt made of those
tokens gives the same answer. (The reference re-runs the whole conversation each turn and so re-routes the
image on all of it; a session keeps the first turn's routing.)

A session is built only on :class:`parrot.Model`'s public methods: ``preprocess``, ``encode_prompt``,
``new_context`` and ``generation``.
"""
from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional

import numpy as np

from parrot.generation import Generation, Result
from parrot.prompt import check_text, follow_up, format_query

if TYPE_CHECKING:
    from parrot.model import Model

__all__ = ["ChatSession"]


class ChatSession:
    """A conversation with one model (and at most one image) that keeps its KV cache between questions.

    ``ask`` returns the answer's text, ``stream`` yields it in pieces, ``run`` returns a :class:`Result`;
    they take the same generation options as :meth:`parrot.Model.generate`. ``history`` is the conversation
    so far as ``[{"role": "user" | "assistant", "content": str}, ...]``. An interrupted or failed question
    leaves the session as it was before it. One session is meant for one thread at a time (calls are
    serialised by a lock). Special-token text in questions is plain text unless ``allow_special``."""

    def __init__(self, model: "Model", image: Any = None, system: Optional[str] = None, *,
                 allow_special: bool = False):
        self.model = model
        self.system = model.default_system if system is None else system
        check_text("system", self.system, empty_ok=True)
        self.allow_special = bool(allow_special)
        self._lock = threading.RLock()
        self._pixels: Optional[np.ndarray] = None
        if image is not None:
            self._pixels = model.preprocess(image)
        self.history: List[Dict[str, str]] = []
        self.routing: Optional[np.ndarray] = None
        self._ctx: Any = None
        self._pending: List[int] = []   # tokens generated but not yet run through the decoder

    def __repr__(self) -> str:
        n = sum(1 for t in self.history if t["role"] == "user")
        return (f"<parrot.ChatSession {n} question(s), {self.positions} positions cached, "
                f"image={self._pixels is not None}>")

    @property
    def positions(self) -> int:
        """Positions held in the KV cache."""
        return int(self._ctx.n_past) if self._ctx is not None else 0

    def reset(self, image: Any = ..., system: Optional[str] = None) -> None:
        """Forgets the conversation (and its KV cache). ``image=`` replaces the image (None: no image),
        ``system=`` the system prompt."""
        with self._lock:
            if image is not ...:
                self._pixels = self.model.preprocess(image) if image is not None else None
            if system is not None:
                check_text("system", system, empty_ok=True)
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
        turn = _Turn(self, prompt, options)
        for _ in turn:
            pass
        assert turn.result is not None
        return turn.result

    def stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Asks a question; yields the answer's text in pieces."""
        return iter(_Turn(self, prompt, options))


class _Turn:
    """One question of a session, run as an iterator of text pieces; ``result`` is set at the end."""

    def __init__(self, session: ChatSession, prompt: str, options: Dict[str, Any]):
        if "image" in options or "system" in options:
            raise TypeError("a chat session's image and system prompt are set by Model.chat(...) or reset(...)")
        check_text("prompt", prompt)
        self.session = session
        self.prompt = prompt
        self.options = options
        self.result: Optional[Result] = None

    def _generation(self) -> Generation:
        s, m = self.session, self.session.model
        if s._ctx is None:
            ids = m.encode_prompt(format_query(self.prompt, image=s._pixels is not None, system=s.system),
                                  allow_special=s.allow_special)
            s._ctx = m.new_context()
            return m.generation(ids, pixels=s._pixels, context=s._ctx, prompt=self.prompt, **self.options)
        ids = s._pending + m.encode_prompt(follow_up(self.prompt), allow_special=s.allow_special)
        return m.generation(ids, context=s._ctx, prompt=self.prompt, **self.options)

    def __iter__(self) -> Iterator[str]:
        s = self.session
        with s._lock:
            saved = (s._ctx, s.positions, list(s._pending), s.routing)
            try:
                gen = self._generation()
                yield from gen
            except BaseException:
                # forget the half-run question: the cache returns to what it held before it
                s._ctx, s._pending, s.routing = saved[0], saved[2], saved[3]
                if s._ctx is not None:
                    s._ctx.truncate(saved[1])
                raise
            s._pending = []
            if gen.finish_reason in ("length", "stop_string") and gen.token_ids:
                s._pending = [gen.token_ids[-1]]   # produced, never fed back
            if saved[0] is None:
                s.routing = gen.routing
            s.history.append({"role": "user", "content": self.prompt})
            s.history.append({"role": "assistant", "content": gen.text})
            self.result = gen.result
