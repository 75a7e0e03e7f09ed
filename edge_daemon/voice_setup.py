"""The mic pipeline's optional stages, from the config: the wake word, the
speech detector, echo cancellation with the speaker's reference. Each
package is imported only when its stage is switched on.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .audio.base import Speaker
from .config import Config
from .voice.activity import SpeechDetector, SpeechDetectorError
from .voice.pipeline import Detectors

log = logging.getLogger(__name__)


class VoiceSetupError(ValueError):
    """A hands-free part is configured but cannot run; the message says why."""


def hands_free_wanted(cfg: Config) -> bool:
    """Anything that opens a turn without the button: the wake word, the
    follow-up window, speech over the model (echo cancellation on)."""
    w = cfg.wake
    return bool(w.model) or w.follow_up_s > 0 or (cfg.audio.echo_cancel and w.barge_in)


def build_detectors(cfg: Config, speaker: Speaker) -> tuple[Detectors, bool]:
    """The stages ``cfg`` asks for, and whether the pipeline must fall back
    to half duplex (echo cancellation asked for but not available here)."""
    a, w = cfg.audio, cfg.wake
    d = Detectors(
        barge_in=w.barge_in,
        end_silence_s=w.end_silence_s,
        no_speech_s=w.no_speech_s,
        max_turn_s=w.max_turn_s,
        echo_tail_s=a.echo_tail_ms / 1000.0,
    )
    half_duplex = False
    if w.model:
        from .voice.wake import WakeWord, WakeWordError

        try:
            base_dir = Path(cfg.source).parent if cfg.source else Path()
            d.wake = WakeWord(w.model, base_dir=base_dir, threshold=w.threshold)
        except WakeWordError as exc:
            raise VoiceSetupError(f"wake.model: {exc}") from None
    if hands_free_wanted(cfg):
        try:
            d.speech = SpeechDetector()
        except SpeechDetectorError as exc:
            raise VoiceSetupError(f"wake: {exc}") from None
    if a.echo_cancel or a.noise_suppression != "off" or a.auto_gain:
        from .voice.echo import EchoUnavailable, MicCleaner

        try:
            d.cleaner = MicCleaner(echo=a.echo_cancel, noise=a.noise_suppression, gain=a.auto_gain)
        except EchoUnavailable as exc:
            if a.noise_suppression != "off" or a.auto_gain:
                log.warning("mic noise suppression / auto gain off: %s", exc)
            if a.echo_cancel:
                half_duplex = True
                log.warning(
                    "audio.echo_cancel: %s; half duplex instead (the mic is not listened to "
                    "while the speaker plays, nor for audio.echo_tail_ms after)",
                    exc,
                    extra={"EDGE_EVENT": "echo_cancel_unavailable"},
                )
    if d.cleaner is not None and d.cleaner.echo:
        open_tap = getattr(speaker, "open_tap", None)
        if open_tap is None:
            log.warning("this speaker gives no reference: echo cancellation cannot work with it")
        else:
            from .voice.far_end import FarEnd

            d.far = FarEnd(open_tap())
    return d, half_duplex
