"""Echo cancellation (and noise suppression, automatic gain) on the mic,
with WebRTC's audio processing module through pywebrtc-audio.

The canceller subtracts the speaker's own sound, given as the far end
(far_end.py), from each mic chunk: the model's voice then neither reaches
the wake word nor goes back up to the model, and the user can talk over
it. pywebrtc-audio is imported only when one of these is switched on, so a
daemon without them pays nothing; where it has no wheel (armv7) the
pipeline falls back to half duplex (gate.py) and ``doctor`` says so.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np

NS_LEVELS = {"low": 0, "moderate": 1, "high": 2, "very_high": 3}


def available() -> bool:
    """pywebrtc-audio can be imported here (without importing it)."""
    return importlib.util.find_spec("pywebrtc_audio") is not None


class EchoUnavailable(RuntimeError):
    """pywebrtc-audio is missing or will not load on this machine."""


class MicCleaner:
    """One WebRTC AudioProcessor over 16 kHz mono s16le chunks (whole 10 ms
    frames). ``echo``: cancel the far end; ``noise``: a level of NS_LEVELS
    or "off"; ``gain``: adaptive digital gain."""

    def __init__(self, *, echo: bool, noise: str = "off", gain: bool = False) -> None:
        try:
            from pywebrtc_audio import AudioProcessor
        except ImportError as exc:  # ModuleNotFoundError, or a wheel for another CPU
            raise EchoUnavailable(f"pywebrtc-audio is not usable here: {exc}") from None
        self.echo = echo
        self._apm: Any = AudioProcessor(
            sample_rate=16000,
            num_channels=1,
            echo_cancellation=echo,
            noise_suppression=noise in NS_LEVELS,
            auto_gain_control=gain,
            high_pass_filter=True,
            ns_level=NS_LEVELS.get(noise, 1),
        )

    def process(self, chunk: bytes, far: np.ndarray | None) -> bytes:
        near = np.frombuffer(chunk, "<i2")
        if self.echo:
            if far is None:
                far = np.zeros(len(near), np.int16)
            out = self._apm.process(near, far)
        else:
            out = self._apm.process(near)
        return np.asarray(out, dtype="<i2").tobytes()

    @property
    def speech_probability(self) -> float:
        return float(self._apm.speech_probability)

    def reset(self) -> None:
        self._apm.reset()
