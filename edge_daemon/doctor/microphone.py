"""The microphone opens, and with --listen hears more than silence."""

from __future__ import annotations

import array
import math
import threading
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

MIC_RATE = 16000
# Below this RMS (of 32767) a second of input is silence: a dead or muted mic
# reads 0-10, a quiet room through a working USB mic 30-300.
SILENCE_RMS = 20.0


def read_with_deadline(stream: Any, frames: int, timeout_s: float) -> bytes | None:
    """A blocking read that cannot hang the doctor: a stuck device gives None."""
    result: list[bytes] = []
    failure: list[BaseException] = []

    def read() -> None:
        try:
            result.append(stream.read(frames, exception_on_overflow=False))
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    reader = threading.Thread(target=read, name="doctor-mic", daemon=True)
    reader.start()
    reader.join(timeout_s)
    if failure:
        raise failure[0]
    return result[0] if result else None


def rms_s16(pcm: bytes) -> tuple[float, int]:
    """(RMS, peak) of signed 16-bit native-endian PCM."""
    samples = array.array("h", pcm[: len(pcm) - len(pcm) % 2])
    if not samples:
        return 0.0, 0
    return math.sqrt(sum(s * s for s in samples) / len(samples)), max(abs(s) for s in samples)


def check_microphone(
    cfg: Config,
    *,
    simulate: bool = False,
    listen: bool = False,
    service_active: bool = False,
    loader: Callable[[], Any] = load_pyaudio,
    prompt: Callable[[str], None] | None = None,
) -> Check:
    name = "microphone"
    backend = audio_backend(cfg, simulate)
    if backend != "pyaudio":
        why = " (--simulate)" if simulate and "audio.backend" not in cfg.explicit else ""
        return skip(name, f"audio.backend is {backend!r}{why}: no microphone is used")
    if service_active:
        return skip(name, HELD.format(what="the microphone"))
    try:
        with portaudio(loader, cfg.audio.input_device) as (module, pa):
            opened = open_stream(name, module, pa, cfg.audio.input_device, "input", MIC_RATE)
            if isinstance(opened, Check):
                return opened
            opens = f"{opened.label} opens at {describe_format(opened, MIC_RATE)}"
            try:
                if not listen:
                    return ok(name, f"{opens}; --listen to hear it")
                if prompt is not None:
                    prompt("listening for 1 s: say something...")
                pcm = read_with_deadline(opened.stream, opened.rate, 5.0)
            finally:
                close_quietly(opened.stream)
    except ImportError as exc:
        return fail(name, f"PyAudio is not installed ({exc})", PYAUDIO_FIX)
    except OSError as exc:
        return fail(name, f"PortAudio cannot start or record: {exc}", PYAUDIO_FIX)
    if pcm is None:
        return fail(
            name,
            f"{opened.label} opened but delivered no audio within 5 s",
            "the device is stuck or used by another program: sudo fuser -v /dev/snd/*",
        )
    rms, peak = rms_s16(pcm)
    if rms < SILENCE_RMS:
        return fail(
            name,
            f"{opened.label} heard only silence for 1 s (RMS {rms:.0f}, peak {peak} of 32767)",
            "check the mic is plugged in and not muted: alsamixer (F4 shows capture; raise the "
            "gain, unmute with space), and speak while `edge-daemon doctor --listen` runs",
        )
    return ok(name, f"{opens} and hears sound (RMS {rms:.0f}, peak {peak})")
