"""The wake-word floor: PyAudio capture plus pymicro-wakeword, and nothing else.

What the cheapest program that listens for a wake word costs: one blocking
read of CHUNK_SIZE frames at 16 kHz (Google's Live API starter's size) after
another, each fed to microWakeWord's features and model. No link, no event
loop. Prints READY once the stream is open, and ``heard`` for each
detection; runs until killed.

    python bench/wake_floor.py [MODEL]   (default okay_nabu)
"""

import sys

import pyaudio
from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model

CHUNK_SIZE = 1024


def main(model: str) -> None:
    detector = MicroWakeWord.from_builtin(Model(model))
    features = MicroWakeWordFeatures()
    pa = pyaudio.PyAudio()
    stream = pa.open(
        format=pyaudio.paInt16,
        channels=1,
        rate=16000,
        input=True,
        frames_per_buffer=CHUNK_SIZE,
    )
    print("READY", flush=True)
    while True:
        data = stream.read(CHUNK_SIZE, exception_on_overflow=False)
        for window in features.process_streaming(data):
            if detector.process_streaming(window):
                print("heard", flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "okay_nabu")
