"""Speech for benchmarks and tests: espeak-ng, converted by sox to raw
s16le mono at the rate asked for."""

from __future__ import annotations

import subprocess


def espeak_pcm(text: str, rate: int, *, voice: str = "en", speed: int | None = None) -> bytes:
    speaking = ["espeak-ng", "-v", voice, *(["-s", str(speed)] if speed else []), "--stdout", text]
    wav = subprocess.run(speaking, check=True, capture_output=True).stdout
    raw = ["-r", str(rate), "-c", "1", "-b", "16", "-e", "signed", "-L", "-t", "raw", "-"]
    return subprocess.run(
        ["sox", "-t", "wav", "-", *raw], input=wav, check=True, capture_output=True
    ).stdout
