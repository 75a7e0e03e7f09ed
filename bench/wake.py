"""The wake word offline, faster than real time, on espeak-ng speech:

- ``floor``: the wake-word engine alone, CPU-s per minute of audio (the
  floor the daemon's idle cost is compared with);
- ``missed``: each built-in model's phrase, said by the espeak voices at
  three speeds, in quiet and in noise: how many go unheard;
- ``false``: an hour (``--false-minutes``) of sentences without a wake
  word, by the same voices, with noise and pauses: wakes per hour, each
  model on the same audio.

    python -m bench.wake [--false-minutes 60] [--json]
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from edge_daemon.voice.wake import BUILTIN, WakeWord

from .speech import espeak_pcm

RATE = 16000
CHUNK = 1280  # 40 ms, as the daemon reads
VOICES = (
    "en",
    "en-us",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
    "en+f3",
    "en-us+f2",
)
SPEEDS = (140, 175, 210)
PHRASES = {
    "okay_nabu": "okay nabu",
    "alexa": "alexa",
    "hey_mycroft": "hey mycroft",
    "hey_jarvis": "hey jarvis",
}
SUBJECTS = (
    "the kitchen light",
    "my sister",
    "the weather in Paris",
    "a cup of coffee",
    "the garden pump",
    "our neighbour Nadia",
    "the news tonight",
    "a book about boats",
    "the alarm clock",
    "the train to Oxford",
    "a mixed salad",
    "the football match",
    "Alex and Myra",
    "the jar of honey",
    "Jarvis Street",
    "a nice cabin",
    "the nabob",
    "my craft project",
)
VERBS = (
    "is",
    "was",
    "will be",
    "could be",
    "seems",
    "looked",
    "might be",
    "is never",
)
ENDINGS = (
    "ready in ten minutes",
    "much too loud",
    "on the table",
    "better than yesterday",
    "back after lunch",
    "far from here",
    "at the station",
    "full of surprises",
    "in the other room",
    "closed on Sundays",
    "okay by me",
    "not a problem",
)


def espeak(text: str, voice: str = "en", speed: int = 175) -> np.ndarray:
    raw = espeak_pcm(text, RATE, voice=voice, speed=speed)
    return np.frombuffer(raw, "<i2").astype(np.float32)


def noise(n: int, rng: np.random.Generator, level_dbfs: float) -> np.ndarray:
    """Room-like noise (white, plus a low-passed share) at ``level_dbfs`` RMS."""
    white = rng.standard_normal(n).astype(np.float32)
    low = np.convolve(white, np.ones(24, np.float32) / 24, mode="same")
    x = 0.3 * white + 4.0 * low
    x /= np.sqrt(np.mean(x**2)) + 1e-9
    return x * 32768 * 10 ** (level_dbfs / 20)


def as_pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def detections(model: str, pcm: bytes) -> list[float]:
    """Seconds at which ``model`` fired on ``pcm``."""
    ww = WakeWord(model)
    return [i / 2 / RATE for i in range(0, len(pcm), CHUNK) if ww.process(pcm[i : i + CHUNK])]


def floor(seconds: float = 60.0) -> float:
    """CPU-s per minute of audio for one model alone: room noise at -60 dBFS."""
    pcm = as_pcm(noise(int(seconds * RATE), np.random.default_rng(1), -60))
    ww = WakeWord("okay_nabu")
    start = time.process_time()
    for i in range(0, len(pcm), CHUNK):
        ww.process(pcm[i : i + CHUNK])
    return (time.process_time() - start) / (seconds / 60)


def missed(rng: np.random.Generator) -> dict[str, dict[str, object]]:
    """Each phrase by each voice and speed, alone in quiet, and at 10 dB SNR."""
    out: dict[str, dict[str, object]] = {}
    for model, phrase in PHRASES.items():
        trials = heard = heard_noisy = 0
        unheard: list[str] = []
        for voice, speed in itertools.product(VOICES, SPEEDS):
            x = espeak(phrase, voice, speed)
            pad = np.zeros(RATE // 2, np.float32)
            clip = np.concatenate([pad, x, pad, pad])
            trials += 1
            if detections(model, as_pcm(clip)):
                heard += 1
            else:
                unheard.append(f"{voice}@{speed}")
            level = 10 * np.log10(np.mean(x**2) / 32768**2 + 1e-12)
            noisy = clip + noise(len(clip), rng, level - 10)
            heard_noisy += bool(detections(model, as_pcm(noisy)))
        out[model] = {
            "trials": trials,
            "missed_quiet": trials - heard,
            "missed_10db_snr": trials - heard_noisy,
            "unheard_quiet": unheard,
        }
    return out


def sentences(rng: random.Random) -> str:
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ENDINGS)}."


def false_wakes(minutes: float, rng: np.random.Generator) -> dict[str, object]:
    """``minutes`` of sentences without a wake word, pauses and noise between
    (20 dB below the speech), each model on the same audio."""
    pick = random.Random(7)
    target = int(minutes * 60 * RATE)
    pieces: list[np.ndarray] = []
    total = 0
    with ThreadPoolExecutor(max_workers=2) as pool:
        while total < target:
            jobs = []
            for _ in range(max(4, (target - total) // (8 * RATE))):  # ~8 s of speech each
                text = " ".join(sentences(pick) for _ in range(3))
                jobs.append((text, pick.choice(VOICES), pick.choice(SPEEDS)))
            for x in pool.map(lambda j: espeak(*j), jobs):
                gap = np.zeros(int(rng.uniform(0.3, 2.0) * RATE), np.float32)
                pieces += [x, gap]
                total += len(x) + len(gap)
    audio = np.concatenate(pieces)
    level = 10 * np.log10(np.mean(audio**2) / 32768**2 + 1e-12)
    audio = audio + noise(len(audio), rng, level - 20)
    pcm = as_pcm(audio)
    hours = len(audio) / RATE / 3600
    found = {model: detections(model, pcm) for model in BUILTIN}
    return {
        "hours": round(hours, 3),
        "per_hour": {m: round(len(t) / hours, 2) for m, t in found.items()},
        "at_s": {m: [round(s, 1) for s in t] for m, t in found.items() if t},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.wake", description=__doc__)
    parser.add_argument("--false-minutes", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(3)
    result = {
        "floor_cpu_s_per_min": round(floor(), 3),
        "missed": missed(rng),
        "false": false_wakes(args.false_minutes, rng),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"wake-word engine alone: {result['floor_cpu_s_per_min']} CPU-s per minute of audio")
    for model, m in result["missed"].items():
        print(
            f"{model:12} missed {m['missed_quiet']}/{m['trials']} in quiet, "
            f"{m['missed_10db_snr']}/{m['trials']} at 10 dB SNR"
        )
    f = result["false"]
    print(f"false wakes on {f['hours']} h of other speech and noise: {f['per_hour']} per hour")
    return 0


if __name__ == "__main__":
    sys.exit(main())
