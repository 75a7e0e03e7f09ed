"""Real speech for the hands-free tests: espeak-ng phrases as 16 kHz mono
s16le, and a live microphone that says them when told (silence otherwise)."""

from __future__ import annotations

import functools
import shutil

import pytest

from bench.speech import espeak_pcm
from edge_daemon.audio.base import PacedMicrophone


def have_espeak() -> bool:
    return bool(shutil.which("espeak-ng") and shutil.which("sox"))


@functools.lru_cache(maxsize=64)
def speech(text: str, voice: str = "en", rate: int = 16000) -> bytes:
    """``text`` spoken by espeak-ng, as s16le mono at ``rate``."""
    if not have_espeak():
        pytest.skip("espeak-ng and sox are needed for real speech (apt-get install espeak-ng sox)")
    return espeak_pcm(text, rate, voice=voice)


def silence(seconds: float, rate: int = 16000) -> bytes:
    return bytes(2 * int(seconds * rate))


class SpeakingMic(PacedMicrophone):
    """A microphone in a quiet room: silence, except what ``say`` queues,
    which it "hears" once, in order, at its own pace. Live: what it hears
    before a turn is real pre-roll."""

    live = True

    def __init__(self, chunk_ms: int = 40, speed: float = 1.0) -> None:
        super().__init__(chunk_ms=chunk_ms, speed=speed)
        self._queue = bytearray()
        self.heard = 0  # bytes of queued speech delivered so far

    def say(self, pcm: bytes) -> None:
        self._queue += pcm

    @property
    def quiet(self) -> bool:
        """Everything queued has been heard."""
        return not self._queue

    def _next_chunk(self) -> bytes:
        if not self._queue:
            return self._silence
        chunk = bytes(self._queue[: self.chunk_bytes])
        del self._queue[: self.chunk_bytes]
        self.heard += len(chunk)
        return chunk + self._silence[len(chunk) :]
