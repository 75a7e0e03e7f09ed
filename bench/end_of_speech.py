"""End of speech to answer, by each way of finding the end of a hands-free
turn, against the fake Gemini in real time:

- ``local``: the daemon's own (voice/activity.py, pymicro-vad) on the mic,
  then ``activityEnd``, automatic activity detection disabled: what the
  daemon does;
- ``server``: automatic activity detection left on, with its knobs
  (``silenceDurationMs``, ``prefixPaddingMs``); the client streams until
  the answer comes, then sends ``audioStreamEnd``. The fake's detector is
  an energy detector (fake_gemini/activity_detection.py), not Google's, so
  this measures the protocol's path and the knob, not Google's model.

Each run streams one espeak-ng question and then quiet room noise, paced in
40 ms chunks. Measured from the moment the last of the speech was sent
(the speech ends there) to the first answer audio received, and how much
audio went up after the speech ended.

    python -m bench.end_of_speech [--runs 5] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
from websockets.asyncio.client import connect

from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.voice.activity import EndOfSpeech, SpeechDetector

from .wake import RATE, as_pcm, espeak, noise

CHUNK = 1280
CHUNK_S = CHUNK / 2 / RATE
QUESTIONS = (
    "what time is it in Tokyo",
    "turn on the lamp in the kitchen please",
    "how far is it to the moon",
    "play something relaxing",
    "what is the weather like tomorrow",
)


def audio_of(text: str, rng: np.random.Generator) -> tuple[bytes, int]:
    """The question, then 4 s of quiet room; and where the speech ends (bytes)."""
    x = espeak(text)
    # Where the voice really stops: espeak pads its output with a little quiet.
    loud = np.flatnonzero(np.abs(x) > 300)
    end = int(loud[-1]) + 1 if len(loud) else len(x)
    tail = np.zeros(4 * RATE, np.float32)
    clip = np.concatenate([x, tail])
    clip = clip + noise(len(clip), rng, -60)
    return as_pcm(clip), 2 * end


def message(chunk: bytes) -> str:
    data = base64.b64encode(chunk).decode()
    return json.dumps(
        {"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}
    )


async def one_run(
    url: str, method: str, pcm: bytes, speech_end: int, silence_ms: int
) -> dict[str, float]:
    if method == "local":
        aad: dict[str, Any] = {"disabled": True}
    else:
        aad = {"silenceDurationMs": silence_ms, "prefixPaddingMs": 20}
    setup = {
        "model": "models/bench",
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "realtimeInputConfig": {"automaticActivityDetection": aad},
    }
    async with connect(url, max_size=16 * 2**20) as ws:
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        answered = asyncio.Event()
        first_audio: list[float] = []

        async def read() -> None:
            async for raw in ws:
                msg = json.loads(raw)
                parts = ((msg.get("serverContent") or {}).get("modelTurn") or {}).get("parts") or []
                if any("inlineData" in p for p in parts) and not first_audio:
                    first_audio.append(time.monotonic())
                    answered.set()

        reader = asyncio.create_task(read())
        end = EndOfSpeech(end_silence_s=silence_ms / 1000, no_speech_s=10, max_s=30)
        vad = SpeechDetector()
        if method == "local":
            await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
        start = time.monotonic()
        speech_end_at = 0.0
        sent_after = 0
        for k, i in enumerate(range(0, len(pcm), CHUNK)):
            chunk = pcm[i : i + CHUNK]
            await asyncio.sleep(max(0.0, start + k * CHUNK_S - time.monotonic()))
            if answered.is_set():
                break
            await ws.send(message(chunk))
            if i < speech_end <= i + CHUNK:
                # The chunk holding the speech's last sample: it ends this far in.
                speech_end_at = time.monotonic() - (i + CHUNK - speech_end) / 2 / RATE
            elif i >= speech_end:
                sent_after += len(chunk)
            if method == "local" and end.feed(vad.frames(chunk)):
                await ws.send(json.dumps({"realtimeInput": {"activityEnd": {}}}))
                break
        if method == "server":
            await answered.wait()
            await ws.send(json.dumps({"realtimeInput": {"audioStreamEnd": True}}))
        await asyncio.wait_for(answered.wait(), 15)
        reader.cancel()
    return {
        "end_to_answer_ms": (first_audio[0] - speech_end_at) * 1000,
        "sent_after_end_s": sent_after / 2 / RATE,
    }


# (method, silence ms): the local detector holds "speech" ~0.6 s after the
# voice stops by itself, so its setting counts from there.
GRID = (
    ("local", 0),
    ("local", 300),
    ("local", 700),
    ("server", 500),
    ("server", 700),
    ("server", 900),
)


async def measure(runs: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(5)
    clips = [audio_of(q, rng) for q in QUESTIONS]
    out: list[dict[str, Any]] = []
    async with FakeGemini(use_speech=False, pace=1.0, reply_text="It is done.") as fake:
        for method, silence_ms in GRID:
            results = []
            for k in range(runs):
                pcm, end = clips[k % len(clips)]
                results.append(await one_run(fake.url, method, pcm, end, silence_ms))
            lat = [r["end_to_answer_ms"] for r in results]
            after = statistics.median(r["sent_after_end_s"] for r in results)
            out.append(
                {
                    "method": method,
                    "silence_ms": silence_ms,
                    "median_ms": round(statistics.median(lat)),
                    "min_ms": round(min(lat)),
                    "max_ms": round(max(lat)),
                    "audio_after_end_s": round(after, 2),
                }
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.end_of_speech", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(measure(args.runs))
    if args.json:
        print(json.dumps(result))
        return 0
    for r in result:
        print(
            f"{r['method']:6} silence {r['silence_ms']:4} ms: end of speech -> first answer "
            f"audio median {r['median_ms']} ms ({r['min_ms']}-{r['max_ms']}); audio sent after "
            f"the speech ended {r['audio_after_end_s']} s"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
