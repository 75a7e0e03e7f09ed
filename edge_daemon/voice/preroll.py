"""The pre-roll: the last moments the mic heard before a turn opened, so the
first syllable, spoken as the finger lands, is not clipped."""

from __future__ import annotations

from collections import deque


class PreRoll:
    def __init__(self, chunks: int) -> None:
        self._ring: deque[bytes] = deque(maxlen=chunks)

    @property
    def chunks(self) -> int:
        """How many chunks it holds at most."""
        return self._ring.maxlen or 0

    def __len__(self) -> int:
        return len(self._ring)

    def keep(self, chunk: bytes) -> None:
        self._ring.append(chunk)  # the oldest goes: pre-roll is the last moments only

    def trim(self, chunks: int) -> None:
        """Keep only the newest ``chunks`` (a wake word: the turn starts at its end)."""
        while len(self._ring) > chunks:
            self._ring.popleft()

    def clear(self) -> None:
        self._ring.clear()

    def take(self) -> list[bytes]:
        """All of it, oldest first, leaving it empty."""
        chunks = list(self._ring)
        self._ring.clear()
        return chunks
