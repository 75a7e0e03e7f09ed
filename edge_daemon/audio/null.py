"""Null audio: a mic nobody talks into and a speaker nobody hears, both in real time.

The null speaker still takes as long to "play" as the audio lasts, so the
daemon's speaking state, barge-in and turn timing behave as on a device.
"""

from __future__ import annotations

from .base import PacedMicrophone, PacedSpeaker


class NullMicrophone(PacedMicrophone):
    """Silence, chunk by chunk, at real-time pace."""

    def __init__(self, chunk_ms: int = 40, speed: float = 1.0) -> None:
        super().__init__(chunk_ms=chunk_ms, speed=speed)

    def _next_chunk(self) -> bytes:
        return self._silence


class NullSpeaker(PacedSpeaker):
    """Plays into nothing, but paced and counted like a real speaker."""

    def _write(self, block: bytes) -> None:
        pass
