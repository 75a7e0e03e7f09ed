"""The speaker's own signal, as it is handed to the device: the far-end
reference an echo canceller subtracts from the mic.

A speaker feeds it from wherever it hands audio over (PortAudio's callback
thread, or the paced loop of a simulated speaker), with the moment it did.
Feeding is one bounded deque append, safe from any thread and never
blocking; the reader (the mic pipeline, on the event loop) drains it.
"""

from __future__ import annotations

import time
from collections import deque

# Two seconds of 20 ms blocks: a reader that stalls longer loses the
# oldest, and its echo canceller re-adapts.
_MAX_BLOCKS = 100


class PlaybackTap:
    """What a speaker played, in the speaker's own format (``rate`` Hz,
    ``channels`` interleaved s16le), each block with its ``time.monotonic()``."""

    def __init__(self, rate: int, channels: int = 1) -> None:
        self.rate = rate
        self.channels = channels
        self._blocks: deque[tuple[bytes, float]] = deque(maxlen=_MAX_BLOCKS)

    def feed(self, pcm: bytes, when: float | None = None) -> None:
        """One block handed to the device (silence included: the reference
        must be continuous while the device plays)."""
        self._blocks.append((pcm, time.monotonic() if when is None else when))

    def drain(self) -> list[tuple[bytes, float]]:
        """Everything fed since the last drain, oldest first."""
        out = []
        while self._blocks:
            out.append(self._blocks.popleft())
        return out
