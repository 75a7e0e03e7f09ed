"""The far end, lined up with the mic: what the speaker played, at 16 kHz
mono, placed on one clock with the mic's chunks so the echo canceller gets,
for each mic chunk, the speaker audio of the same moments.

Both sides carry ``time.monotonic()`` stamps: the speaker's blocks when
they were handed to the device, the mic's chunks when they were captured.
The speaker's audio is laid on a timeline at 16 000 samples a second from
its stamps (contiguous while it keeps coming, silence across a pause), and
each mic chunk takes the stretch that ends at its own stamp. Successive
chunks take successive stretches, so nothing is repeated or skipped; only
when the two clocks have drifted apart by more than ``SLACK_S`` does the
reader jump to where the stamps say. What is left between the two is the
device's own latency plus the room, which is what the canceller's delay
estimator is for.
"""

from __future__ import annotations

import numpy as np

from ..audio.base import MIC_RATE
from ..audio.reference import PlaybackTap

# Two seconds of far end kept: more than any echo path the canceller handles.
_RING = 2 * MIC_RATE
# A block this much after the last one's end is a new stretch after a pause
# (silence in between); closer is the same stream arriving with jitter.
GAP_S = 0.06
# The reader follows its own count unless the stamps disagree by more.
SLACK_S = 0.08


class FarEnd:
    def __init__(self, tap: PlaybackTap) -> None:
        self.tap = tap
        self._ring = np.zeros(_RING, np.int16)
        self._origin: float | None = None  # the monotonic time of sample index 0
        self._end = 0  # index one past the newest far sample
        self._next: int | None = None  # where the reader continues
        self._converter = _converter(tap.rate, tap.channels)
        self.resyncs = 0

    def _index(self, when: float) -> int:
        assert self._origin is not None
        return round((when - self._origin) * MIC_RATE)

    def _pull(self) -> None:
        for pcm, when in self.tap.drain():
            x = self._converter(pcm)
            if self._origin is None:
                self._origin = when
                self._end = 0
            start = self._index(when)
            at = self._end
            if start > self._end + GAP_S * MIC_RATE or start < self._end - _RING // 2:
                at = start  # a pause (or a clock jump): start a new stretch there
            self._write(at, x)
            self._end = at + len(x)

    def _write(self, at: int, x: np.ndarray) -> None:
        # Indexes grow for ever; the ring holds the last _RING of them.
        if at > self._end:  # silence between the old end and a later stretch
            lo = max(self._end, at - _RING)
            self._ring[np.arange(lo, at) % _RING] = 0
        if len(x) >= _RING:
            x, at = x[-_RING:], at + len(x) - _RING
        self._ring[np.arange(at, at + len(x)) % _RING] = x

    def take(self, captured: float, n: int) -> np.ndarray:
        """The far end for a mic chunk of ``n`` samples captured by ``captured``."""
        self._pull()
        if self._origin is None:
            return np.zeros(n, np.int16)
        want = self._index(captured) - n
        if self._next is None or abs(want - self._next) > SLACK_S * MIC_RATE:
            if self._next is not None:
                self.resyncs += 1
            self._next = want
        start = self._next
        self._next = start + n
        out = np.zeros(n, np.int16)
        # Only what was written and is still in the ring; silence elsewhere.
        lo, hi = max(start, self._end - _RING), min(start + n, self._end)
        if hi > lo:
            out[lo - start : hi - start] = self._ring[np.arange(lo, hi) % _RING]
        return out


def _converter(rate: int, channels: int):  # type: ignore[no-untyped-def]
    """s16le at the speaker's format in, int16 16 kHz mono out."""
    resample = None
    if rate != MIC_RATE:
        import soxr

        # Low quality is plenty for a reference and adds the least delay.
        resample = soxr.ResampleStream(rate, MIC_RATE, 1, dtype="int16", quality="LQ")

    def convert(pcm: bytes) -> np.ndarray:
        x = np.frombuffer(pcm, "<i2", len(pcm) // 2)
        if channels > 1:
            x = x[: len(x) - len(x) % channels].reshape(-1, channels)
            x = (x.astype(np.int32).sum(axis=1) // channels).astype(np.int16)
        if resample is not None:
            x = resample.resample_chunk(x)
        return x.astype(np.int16, copy=False)

    return convert
