"""The fake's automatic activity detection (the server's VAD, used when the
setup does not disable it): a plain energy detector, not Google's model,
that honours the documented knobs of
``realtimeInputConfig.automaticActivityDetection`` closely enough to
compare a client that relies on them with one that sends its own
activityStart/activityEnd:

- ``prefixPaddingMs``: speech must last this long before a turn starts
  (default 20 ms);
- ``silenceDurationMs``: this much quiet after speech ends the turn
  (default 500 ms, the fake's old fixed value);
- ``startOfSpeechSensitivity``: ``START_SENSITIVITY_HIGH`` (the default)
  counts a chunk peaking above 1000 as speech, ``..._LOW`` above 3000;
- ``endOfSpeechSensitivity``: ``END_SENSITIVITY_HIGH`` (the default) ends
  after ``silenceDurationMs``, ``..._LOW`` after half as long again.

``audioStreamEnd`` ends an open turn at once (rules.py).
"""

from __future__ import annotations

import array
import sys
from dataclasses import dataclass
from typing import Any

from .protocol import VAD_PEAK, VAD_SILENCE_S

DEFAULT_PREFIX_MS = 20
DEFAULT_SILENCE_MS = round(VAD_SILENCE_S * 1000)
PEAKS = {"START_SENSITIVITY_HIGH": VAD_PEAK, "START_SENSITIVITY_LOW": 3 * VAD_PEAK}
END_STRETCH = {"END_SENSITIVITY_HIGH": 1.0, "END_SENSITIVITY_LOW": 1.5}


@dataclass
class ActivityDetector:
    """Per connection: feed each audio message; it says "start", "end" or None."""

    peak: int = PEAKS["START_SENSITIVITY_HIGH"]
    prefix_s: float = DEFAULT_PREFIX_MS / 1000
    silence_s: float = DEFAULT_SILENCE_MS / 1000
    speaking: bool = False
    _loud_s: float = 0.0
    _quiet_s: float = 0.0

    @classmethod
    def from_setup(cls, setup: dict[str, Any] | None) -> ActivityDetector:
        knobs = ((setup or {}).get("realtimeInputConfig") or {}).get(
            "automaticActivityDetection"
        ) or {}
        silence_ms = knobs.get("silenceDurationMs", DEFAULT_SILENCE_MS)
        prefix_ms = knobs.get("prefixPaddingMs", DEFAULT_PREFIX_MS)
        stretch = END_STRETCH.get(str(knobs.get("endOfSpeechSensitivity")), 1.0)
        return cls(
            peak=PEAKS.get(
                str(knobs.get("startOfSpeechSensitivity")), PEAKS["START_SENSITIVITY_HIGH"]
            ),
            prefix_s=max(0, int(prefix_ms)) / 1000,
            silence_s=max(0, int(silence_ms)) / 1000 * stretch,
        )

    def feed(self, pcm: bytes, seconds: float) -> str | None:
        samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
        if sys.byteorder == "big":
            samples.byteswap()
        loud = bool(samples) and max(-min(samples), max(samples)) > self.peak
        if not self.speaking:
            self._loud_s = self._loud_s + seconds if loud else 0.0
            if self._loud_s >= self.prefix_s:
                self.speaking, self._quiet_s = True, 0.0
                return "start"
            return None
        self._quiet_s = 0.0 if loud else self._quiet_s + seconds
        if self._quiet_s >= self.silence_s:
            self.speaking, self._loud_s = False, 0.0
            return "end"
        return None

    def reset(self) -> None:
        self.speaking, self._loud_s, self._quiet_s = False, 0.0, 0.0
