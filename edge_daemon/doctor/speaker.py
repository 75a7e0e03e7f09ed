"""The speaker opens, and with --beep plays a tone."""

from __future__ import annotations

import array
import math
from collections.abc import Callable
from typing import Any

from ..config import Config
from .portaudio import (
    HELD,
    PYAUDIO_FIX,
    audio_backend,
    close_quietly,
    describe_format,
    load_pyaudio,
    open_stream,
    portaudio,
)
from .report import Check, fail, ok, skip

SPEAKER_RATE = 24000


def tone_s16(
    freq: float = 880.0, seconds: float = 0.4, rate: int = SPEAKER_RATE, channels: int = 1
) -> bytes:
    """A quiet sine with 10 ms ramps, so the beep does not click."""
    n = int(seconds * rate)
    ramp = max(1, rate // 100)
    samples = array.array("h")
    for i in range(n):
        gain = min(1.0, i / ramp, (n - 1 - i) / ramp)
        value = int(0.25 * 32767 * gain * math.sin(2 * math.pi * freq * i / rate))
        samples.extend([value] * channels)
    return samples.tobytes()


def check_speaker(
    cfg: Config,
    *,
    simulate: bool = False,
    beep: bool = False,
    service_active: bool = False,
    loader: Callable[[], Any] = load_pyaudio,
) -> Check:
    name = "speaker"
    backend = audio_backend(cfg, simulate)
    if backend != "pyaudio":
        why = " (--simulate)" if simulate and "audio.backend" not in cfg.explicit else ""
        return skip(name, f"audio.backend is {backend!r}{why}: no speaker is used")
    if service_active:
        return skip(name, HELD.format(what="the speaker"))
    try:
        with portaudio(loader, cfg.audio.output_device) as (module, pa):
            opened = open_stream(name, module, pa, cfg.audio.output_device, "output", SPEAKER_RATE)
            if isinstance(opened, Check):
                return opened
            try:
                if beep:
                    opened.stream.write(tone_s16(rate=opened.rate, channels=opened.channels))
            finally:
                close_quietly(opened.stream)
    except ImportError as exc:
        return fail(name, f"PyAudio is not installed ({exc})", PYAUDIO_FIX)
    except OSError as exc:
        return fail(name, f"PortAudio cannot start or play: {exc}", PYAUDIO_FIX)
    opens = f"{opened.label} opens at {describe_format(opened, SPEAKER_RATE)}"
    if beep:
        return ok(name, f"{opens} and played a beep (did you hear it?)")
    return ok(name, f"{opens}; --beep plays a tone")
