"""Earcons: short sounds that say what the device is doing, made here from
sine tones (no files to ship), as 24 kHz mono s16le for the speaker.

Each is a few notes with 5 ms fades, so none clicks: rising for "I am
listening", falling for "I stopped listening", low for an error, a falling
and a rising triple for the link lost and back.
"""

from __future__ import annotations

import array
import functools
import math
import sys

from .base import SPEAKER_RATE

# (frequency Hz, seconds) per note; 0 Hz is a rest.
NOTES: dict[str, tuple[tuple[float, float], ...]] = {
    "wake": ((660.0, 0.07), (880.0, 0.09)),
    "listen_end": ((880.0, 0.07), (660.0, 0.09)),
    "error": ((220.0, 0.15), (0.0, 0.05), (220.0, 0.15)),
    "link_lost": ((784.0, 0.07), (659.0, 0.07), (523.0, 0.11)),
    "link_back": ((523.0, 0.07), (659.0, 0.07), (784.0, 0.11)),
    "mute": ((440.0, 0.06), (330.0, 0.1)),
    "unmute": ((330.0, 0.06), (440.0, 0.1)),
    "volume": ((1000.0, 0.05),),
}
_FADE_S = 0.005


@functools.lru_cache(maxsize=32)
def earcon(name: str, level: float = 0.3, rate: int = SPEAKER_RATE) -> bytes:
    """The named sound at ``level`` (0..1 of full scale)."""
    peak = max(0.0, min(1.0, level)) * 32767
    fade = max(1, int(_FADE_S * rate))
    samples = array.array("h")
    for freq, seconds in NOTES[name]:
        n = int(seconds * rate)
        for i in range(n):
            if freq <= 0:
                samples.append(0)
                continue
            ramp = min(1.0, i / fade, (n - 1 - i) / fade)
            samples.append(int(peak * ramp * math.sin(2 * math.pi * freq * i / rate)))
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
