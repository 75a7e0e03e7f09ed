"""Speech or not, 10 ms at a time (pymicro-vad), and the two decisions made
from it: when a hands-free turn's speaker has stopped (``EndOfSpeech``),
and when someone has started talking without the wake word, in the
follow-up window or over the model (``SpeechOnset``).

The detector runs only while one of those questions is asked: idle, with
the wake word listening, it costs nothing.
"""

from __future__ import annotations

from collections import deque
from typing import Any

FRAME_BYTES = 320  # 10 ms of 16 kHz mono s16le
FRAME_S = 0.01


class SpeechDetectorError(RuntimeError):
    """pymicro-vad is missing or will not load here."""


class SpeechDetector:
    """pymicro-vad over whole 10 ms frames; ``threshold`` on its probability."""

    def __init__(self, threshold: float = 0.5) -> None:
        try:
            from pymicro_vad import MicroVad
        except ImportError as exc:
            raise SpeechDetectorError(
                f"end of speech needs pymicro-vad: pip install 'edge-daemon[voice]' ({exc})"
            ) from None
        self._vad: Any = MicroVad()
        # 2.x spells it process_10ms, 1.0 (the last with an armv7 wheel) Process10ms.
        self._process = getattr(self._vad, "process_10ms", None) or self._vad.Process10ms
        self.threshold = threshold
        self._carry = b""

    def frames(self, chunk: bytes) -> list[bool]:
        """Speech or not for each whole 10 ms frame in ``chunk`` (a partial
        frame waits for the next chunk)."""
        data = self._carry + chunk
        cut = len(data) - len(data) % FRAME_BYTES
        self._carry = data[cut:]
        return [
            self._process(data[i : i + FRAME_BYTES]) > self.threshold
            for i in range(0, cut, FRAME_BYTES)
        ]

    def reset(self) -> None:
        self._vad.reset()
        self._carry = b""


class EndOfSpeech:
    """A hands-free turn's end: ``end_silence_s`` of quiet after at least
    ``min_speech_s`` of speech; nobody spoke within ``no_speech_s``; or the
    turn reached ``max_s``. ``feed`` returns why it ended, or None."""

    SILENCE = "silence"
    NO_SPEECH = "no speech"
    MAX_LENGTH = "max length"

    def __init__(
        self,
        *,
        end_silence_s: float,
        no_speech_s: float,
        max_s: float,
        min_speech_s: float = 0.15,
    ) -> None:
        self.end_silence_s = end_silence_s
        self.no_speech_s = no_speech_s
        self.max_s = max_s
        self.min_speech_s = min_speech_s
        self.elapsed_s = 0.0
        self.speech_s = 0.0
        self.quiet_s = 0.0

    @property
    def heard_speech(self) -> bool:
        return self.speech_s >= self.min_speech_s

    def feed(self, frames: list[bool]) -> str | None:
        for speech in frames:
            self.elapsed_s += FRAME_S
            if speech:
                self.speech_s += FRAME_S
                self.quiet_s = 0.0
            else:
                self.quiet_s += FRAME_S
            quiet_enough = self.quiet_s > 0 and self.quiet_s >= self.end_silence_s - 1e-9
            if self.heard_speech and quiet_enough:
                return self.SILENCE
            if not self.heard_speech and self.elapsed_s >= self.no_speech_s - 1e-9:
                return self.NO_SPEECH
            if self.elapsed_s >= self.max_s - 1e-9:
                return self.MAX_LENGTH
        return None


class SpeechOnset:
    """Someone started talking: ``min_speech_s`` of speech, gaps shorter than
    ``max_gap_s`` bridged (the pauses inside a word). With ``window_s``
    instead: ``min_speech_s`` of speech within any ``window_s`` (over the
    model's voice, where the echo canceller's leftovers hide stretches of
    the user's speech from the detector)."""

    def __init__(
        self, *, min_speech_s: float = 0.2, max_gap_s: float = 0.1, window_s: float = 0.0
    ) -> None:
        self.min_speech_s = min_speech_s
        self.max_gap_s = max_gap_s
        self._run_s = 0.0
        self._gap_s = 0.0
        self._window: deque[bool] | None = (
            deque(maxlen=max(1, round(window_s / FRAME_S))) if window_s > 0 else None
        )
        self._in_window = 0

    def feed(self, frames: list[bool]) -> bool:
        if self._window is not None:
            return self._feed_window(frames)
        started = False
        for speech in frames:
            if speech:
                self._run_s += FRAME_S
                self._gap_s = 0.0
            else:
                self._gap_s += FRAME_S
                if self._gap_s > self.max_gap_s:
                    self._run_s = 0.0
            if self._run_s >= self.min_speech_s - 1e-9:
                started = True
        if started:
            self.reset()
        return started

    def _feed_window(self, frames: list[bool]) -> bool:
        window = self._window
        assert window is not None
        need = round(self.min_speech_s / FRAME_S)
        for speech in frames:
            if len(window) == window.maxlen and window[0]:
                self._in_window -= 1
            window.append(speech)
            self._in_window += speech
            if self._in_window >= need:
                self.reset()
                return True
        return False

    def reset(self) -> None:
        self._run_s = 0.0
        self._gap_s = 0.0
        if self._window is not None:
            self._window.clear()
            self._in_window = 0
