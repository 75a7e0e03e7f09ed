"""What the user and the model said, as the server transcribes it in
fragments: each side logged as one line when the model's turn ends."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


class Transcripts:
    def __init__(self) -> None:
        self._user: list[str] = []
        self._model: list[str] = []

    def user(self, fragment: str) -> None:
        self._user.append(fragment)
        log.debug("user transcript fragment: %s", fragment)

    def model(self, fragment: str) -> None:
        """A fragment of the transcript of the model's speech."""
        self._model.append(fragment)
        log.debug("model transcript fragment: %s", fragment)

    def model_text(self, text: str) -> None:
        """Text the model wrote rather than spoke."""
        self._model.append(text)

    def flush(self) -> None:
        if self._user:
            text = "".join(self._user).strip()
            log.info("user: %s", text, extra={"EDGE_EVENT": "transcript", "EDGE_ROLE": "user"})
            self._user.clear()
        if self._model:
            text = "".join(self._model).strip()
            log.info("model: %s", text, extra={"EDGE_EVENT": "transcript", "EDGE_ROLE": "model"})
            self._model.clear()
