"""What the user and the model said, as the server transcribes it in
fragments: each side logged as one line when the model's turn ends.

Transcripts are what people said in their home: they reach the journal only
with ``logging.transcripts = true``. Otherwise each line says how long it was
and nothing more. The server sends transcripts independently of the model's
turn, so a piece of the user's words can arrive after that turn ended; it is
logged as a late piece of its own turn, never folded into the next one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

log = logging.getLogger(__name__)


def log_transcript(role: str, text: str, enabled: bool, turn: int | None = None) -> None:
    shown = text if enabled else f"({len(text)} characters; logging.transcripts is off)"
    extra: dict[str, object] = {"EDGE_EVENT": "transcript", "EDGE_ROLE": role.split()[0]}
    if turn is not None:
        extra["EDGE_TURN"] = turn
    log.info("%s: %s", role, shown, extra=extra)


class Transcripts:
    def __init__(self, *, enabled: bool = False, turn: Callable[[], int] = lambda: 0) -> None:
        self.enabled = enabled
        self._turn = turn
        self._user: list[str] = []
        self._model: list[str] = []
        self._flushed_turn: int | None = None  # the user turn whose lines went out last

    def user(self, fragment: str) -> None:
        self._user.append(fragment)
        if self.enabled:
            log.debug("user transcript fragment: %s", fragment)

    def model(self, fragment: str) -> None:
        """A fragment of the transcript of the model's speech."""
        self._model.append(fragment)
        if self.enabled:
            log.debug("model transcript fragment: %s", fragment)

    def model_text(self, text: str) -> None:
        """Text the model wrote rather than spoke."""
        self._model.append(text)

    def new_turn(self) -> None:
        """The user starts another turn: what is still held of the last one is
        a late piece of it, and goes out as such now."""
        if self._user and self._flushed_turn is not None:
            self._log_user(self._flushed_turn, late=True)

    def flush(self) -> None:
        turn = self._turn()
        if self._user:
            self._log_user(turn, late=self._flushed_turn == turn)
        if self._model:
            text = "".join(self._model).strip()
            log_transcript("model", text, self.enabled, turn)
            self._model.clear()
        self._flushed_turn = turn

    def _log_user(self, turn: int, *, late: bool) -> None:
        text = "".join(self._user).strip()
        self._user.clear()
        log_transcript("user (late)" if late else "user", text, self.enabled, turn)
