"""The hands-free parts: the wake word model loads, the speech detector is
there, and echo cancellation runs here or the daemon will fall back to
half duplex (pywebrtc-audio has no wheel for armv7)."""

from __future__ import annotations

import importlib.util
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import Config
from .report import Check, fail, ok, skip, warn

VOICE_FIX = "pip install 'edge-daemon[voice]' (systemd/install.sh installs it)"


def check_voice(
    cfg: Config,
    *,
    find_spec: Callable[[str], Any] = importlib.util.find_spec,
    machine: str | None = None,
    load_wake: Callable[[str, Path], Any] | None = None,
) -> Check:
    name = "voice"
    w, a = cfg.wake, cfg.audio
    hands_free = bool(w.model) or w.follow_up_s > 0 or (a.echo_cancel and w.barge_in)
    if not hands_free and not a.echo_cancel:
        return skip(name, "no wake word, follow-up or echo cancellation: the button only")
    said: list[str] = []
    if w.model:
        if find_spec("pymicro_wakeword") is None:
            missing = f"wake.model = {w.model!r} but pymicro-wakeword is missing"
            return fail(name, missing, VOICE_FIX)
        try:
            base = Path(cfg.source).parent if cfg.source else Path()
            if load_wake is None:
                from ..voice.wake import WakeWord

                detector = WakeWord(w.model, base_dir=base)
                phrase = detector.phrase
            else:
                phrase = load_wake(w.model, base)
        except (ValueError, OSError) as exc:
            return fail(
                name,
                f"wake word model does not load: {exc}",
                "set wake.model to okay_nabu, alexa, hey_mycroft, hey_jarvis or the path of a "
                "microWakeWord model's .json (with its .tflite beside it)",
            )
        said.append(f"wake word {phrase!r}")
    if hands_free:
        if find_spec("pymicro_vad") is None:
            return fail(name, "the end of speech needs pymicro-vad, which is missing", VOICE_FIX)
        said.append("end of speech by pymicro-vad")
    if a.echo_cancel:
        if find_spec("pywebrtc_audio") is None:
            arch = machine or platform.machine()
            return warn(
                name,
                "; ".join(said)
                + f"; echo cancellation unavailable here ({arch}: no pywebrtc-audio): half "
                "duplex instead, the mic is not listened to while the speaker plays (and for "
                "audio.echo_tail_ms after), so no barge-in by voice",
                "on aarch64 or x86_64: " + VOICE_FIX + "; on armv7 use a 64-bit OS for it",
            )
        said.append("echo cancellation (WebRTC AEC3)")
    return ok(name, "; ".join(said))
