"""Audio backends behind the Microphone and Speaker protocols (see ``base``).

``open_audio`` is the one entry point the daemon uses. Backends that need
optional native libraries are imported only when chosen, so importing this
package never loads PortAudio.
"""

from __future__ import annotations

from types import ModuleType

from .base import (
    MIC_RATE,
    SAMPLE_WIDTH,
    SPEAKER_RATE,
    AudioBackendMissing,
    AudioConfigError,
    Microphone,
    PacedMicrophone,
    PacedSpeaker,
    Speaker,
    StandbyMicrophone,
)
from .null import NullMicrophone, NullSpeaker
from .wav import WavMicrophone, WavSpeaker

__all__ = [
    "BACKENDS",
    "MIC_RATE",
    "SAMPLE_WIDTH",
    "SPEAKER_RATE",
    "AudioBackendMissing",
    "AudioConfigError",
    "Microphone",
    "NullMicrophone",
    "NullSpeaker",
    "PacedMicrophone",
    "PacedSpeaker",
    "Speaker",
    "StandbyMicrophone",
    "WavMicrophone",
    "WavSpeaker",
    "load_pyaudio_backend",
    "open_audio",
]

BACKENDS = ("pyaudio", "wav", "null")


def open_audio(
    backend: str,
    *,
    input_wav: str = "",
    output_wav: str = "",
    chunk_ms: int = 40,
    speed: float = 1.0,
    input_device: str = "",
    output_device: str = "",
    volume: float = 1.0,
) -> tuple[Microphone, Speaker]:
    """A (microphone, speaker) pair for ``backend``; AudioConfigError if it cannot be used.

    ``wav`` replays ``input_wav`` (silence if empty) and records to ``output_wav``
    (discarded, but still paced, if empty). ``speed`` paces simulated backends
    faster than real time (0 = unpaced); real devices ignore it. ``pyaudio``
    opens ``input_device``/``output_device`` (an index, part of a name, or an
    ALSA ``plughw:`` name; "" for the default) and plays at ``volume`` (0..2);
    the simulated backends ignore those.
    """
    if backend == "null":
        return NullMicrophone(chunk_ms, speed), NullSpeaker(speed=speed)
    if backend == "wav":
        mic = WavMicrophone(input_wav or None, chunk_ms, speed)
        speaker: Speaker = WavSpeaker(output_wav, speed) if output_wav else NullSpeaker(speed=speed)
        return mic, speaker
    if backend == "pyaudio":
        return _open_pyaudio(
            chunk_ms=chunk_ms, input_device=input_device, output_device=output_device, volume=volume
        )
    raise AudioConfigError(
        f"unknown audio backend {backend!r}; expected one of {', '.join(BACKENDS)}"
    )


def load_pyaudio_backend() -> ModuleType:
    """The PortAudio backend module; AudioBackendMissing if PyAudio is not installed."""
    # Lazy: PyAudio is an optional extra, and loading PortAudio probes every ALSA
    # device (slow and noisy) even on runs that never use it.
    try:
        from . import pyaudio_backend
    except ModuleNotFoundError as exc:
        if exc.name != "pyaudio":
            raise  # something else is missing: let it say what
        raise AudioBackendMissing(
            "the pyaudio audio backend needs PyAudio: pip install 'edge-daemon[audio]' "
            "(apt-get install portaudio19-dev first, to build it)"
        ) from None
    return pyaudio_backend


def _open_pyaudio(
    *, chunk_ms: int, input_device: str, output_device: str, volume: float
) -> tuple[Microphone, Speaker]:
    mic, speaker = load_pyaudio_backend().open_pyaudio(
        chunk_ms=chunk_ms, input_device=input_device, output_device=output_device, volume=volume
    )
    return mic, speaker
