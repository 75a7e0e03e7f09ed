"""Echo return loss enhancement (ERLE) of the daemon's echo canceller on a
real echo path: PortAudio plays espeak-ng speech on the room's speaker, the
loopback brings it back into the mic, and the mic pipeline's stages (the
speaker's tap, FarEnd, MicCleaner) cancel it. ERLE is the mic's energy over
the cleaned energy while the speaker talks, after ``settle_s`` for the
canceller to converge. Run inside a room's environment (bench/room.py):

    python -m bench.echo            # prints one JSON line
"""

from __future__ import annotations

import asyncio
import json
import math
import sys

import numpy as np

from edge_daemon.audio.pyaudio_backend import open_pyaudio
from edge_daemon.voice.echo import MicCleaner
from edge_daemon.voice.far_end import FarEnd

from .speech import espeak_pcm

TEXT = (
    "The weather today is mild, with a light wind from the west and a chance of rain "
    "in the evening. Tomorrow will be sunny and a little warmer."
)


def espeak_24k(text: str) -> bytes:
    return espeak_pcm(text, 24000)


def energy(chunks: list[bytes]) -> float:
    x = np.frombuffer(b"".join(chunks), "<i2").astype(np.float64)
    return float(np.sum(x * x)) + 1e-9


async def measure(settle_s: float = 2.0) -> dict[str, float]:
    mic, speaker = open_pyaudio(input_device="edge_mic", output_device="edge_spk")
    far = FarEnd(speaker.open_tap())
    cleaner = MicCleaner(echo=True, noise="off", gain=False)
    await mic.start()
    await speaker.start()
    try:
        for _ in range(10):  # let both streams run before the speech starts
            await mic.read()
        reply = espeak_24k(TEXT)
        speaker.play(reply)
        raw: list[bytes] = []
        clean: list[bytes] = []
        chunk_s = mic.chunk_bytes / 2 / 16000
        skip = round(settle_s / chunk_s)
        n = 0
        while speaker.playing:
            chunk = await mic.read()
            f = far.take(mic.last_capture_time or 0.0, len(chunk) // 2)
            out = cleaner.process(chunk, f)
            n += 1
            if n > skip:
                raw.append(chunk)
                clean.append(out)
    finally:
        await mic.close()
        await speaker.close()
    erle = 10 * math.log10(energy(raw) / energy(clean))
    level = 10 * math.log10(energy(raw) / max(1, len(raw) * mic.chunk_bytes // 2) / 32768**2)
    return {
        "erle_db": round(erle, 1),
        "echo_level_dbfs": round(level, 1),
        "seconds": round(len(raw) * chunk_s, 1),
        "far_resyncs": far.resyncs,
    }


def main() -> int:
    print(json.dumps(asyncio.run(measure())))
    return 0


if __name__ == "__main__":
    sys.exit(main())
