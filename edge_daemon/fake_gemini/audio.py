"""Reply audio: espeak-ng speech when it is installed (so a demo through a
real speaker sounds like something), else a tone."""

from __future__ import annotations

import array
import functools
import logging
import math
import shutil
import subprocess
import sys

from .protocol import OUTPUT_RATE

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def synthesize_speech(text: str) -> bytes | None:
    """espeak-ng speech as 24 kHz mono s16le, or None when espeak-ng/sox are missing or fail."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox or not text.strip():
        return None
    try:
        # --stdin rather than argv: a reply starting with "-" must not become an option.
        wav = subprocess.run(
            [espeak, "--stdout", "--stdin"],
            input=text.encode(),
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        raw = subprocess.run(
            [
                sox,
                "-t",
                "wav",
                "-",
                "-r",
                str(OUTPUT_RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-L",
                "-t",
                "raw",
                "-",
            ],
            input=wav,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("espeak-ng/sox failed (%s); replying with a tone", exc)
        return None
    return raw[: len(raw) - len(raw) % 2] or None


@functools.lru_cache(maxsize=4)
def tone_pcm(freq: float = 440.0, seconds: float = 1.5, rate: int = OUTPUT_RATE) -> bytes:
    """A sine tone as mono s16le, with short fades so playback does not click."""
    n, fade = int(seconds * rate), int(0.01 * rate)
    samples = array.array(
        "h",
        (
            int(9000 * min(1.0, i / fade, (n - i) / fade) * math.sin(2 * math.pi * freq * i / rate))
            for i in range(n)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()
