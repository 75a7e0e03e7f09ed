"""What the microphone and speaker checks share: PortAudio started as the daemon
starts it, and the device opened as the daemon would open it."""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from ..config import Config
from .machine import SERVICE
from .report import Check, fail


def audio_backend(cfg: Config, simulate: bool) -> str:
    """The backend `run` would use: --simulate replaces only an unset one."""
    if simulate and "audio.backend" not in cfg.explicit:
        return "wav" if cfg.audio.input_wav or cfg.audio.output_wav else "null"
    return cfg.audio.backend


def load_pyaudio() -> Any:
    return importlib.import_module("pyaudio")


PYAUDIO_FIX = (
    "sudo apt-get install python3-pyaudio (the service's venv sees system packages); "
    "in a venv of your own: sudo apt-get install portaudio19-dev && pip install pyaudio"
)


@contextlib.contextmanager
def portaudio(loader: Callable[[], Any], *specs: str) -> Iterator[tuple[Any, Any]]:
    """(pyaudio module, PyAudio instance), terminated afterwards; ImportError if absent."""
    from ..audio.devices import quiet_alsa, wants_plughw

    module = loader()
    if wants_plughw(*specs):
        # As the daemon does: PortAudio lists plughw: devices only when told, at init.
        os.environ.setdefault("PA_ALSA_PLUGHW", "1")
    with quiet_alsa():
        pa = module.PyAudio()
    try:
        yield module, pa
    finally:
        pa.terminate()


Direction = Literal["input", "output"]

# A sound card is opened by one program at a time: the running service has it.
HELD = (
    f"in use by the running {SERVICE} service; to test {{what}}: "
    f"sudo systemctl stop {SERVICE}, run the doctor, sudo systemctl start {SERVICE}"
)


NO_DEVICE_FIX = {
    "input": "plug in a USB microphone or enable the sound HAT (its dtoverlay= in "
    "/boot/firmware/config.txt) until `arecord -l` lists it; then set audio.input_device "
    "from `edge-daemon devices`",
    "output": "connect a speaker (USB, HAT or the headphone jack) until `aplay -l` lists it; "
    "then set audio.output_device from `edge-daemon devices`",
}


@dataclass
class Opened:
    stream: Any
    label: str
    rate: int
    channels: int


def open_stream(
    name: str, module: Any, pa: Any, spec: str, direction: Direction, rate: int
) -> Opened | Check:
    """Open the device the daemon would: same choice of device, same fallback to a
    rate or channel count the device supports (the daemon converts from those)."""
    from ..audio.base import AudioConfigError
    from ..audio.devices import choose_format, list_devices, resolve_device

    key = "audio.input_device" if direction == "input" else "audio.output_device"
    noun = "microphone" if direction == "input" else "speaker"
    try:
        device = resolve_device(list_devices(pa), spec, direction)
    except AudioConfigError as exc:
        first = str(exc).splitlines()[0].split("; set ")[0]
        return fail(name, f"no {noun}: {first}", NO_DEVICE_FIX[direction])
    label = f"{device['name']} (#{device['index']})"
    plug_fix = (
        f'use the card\'s plughw: name so ALSA converts ({key} = "plughw:CARD=<card>,DEV=0", '
        "see `edge-daemon devices`)"
    )
    try:
        dev_rate, channels = choose_format(pa, device, direction, rate)
    except AudioConfigError as exc:
        return fail(name, str(exc), plug_fix)
    try:
        stream = pa.open(
            format=module.paInt16,
            channels=channels,
            rate=dev_rate,
            frames_per_buffer=dev_rate // 25,
            **{direction: True, f"{direction}_device_index": device["index"]},
        )
    except (OSError, ValueError) as exc:
        return fail(
            name,
            f"{label} does not open at {dev_rate} Hz: {exc}",
            "another program may hold it (sudo fuser -v /dev/snd/*: stop PulseAudio/PipeWire "
            f"or the other program); the service user must be in the audio group; {plug_fix}",
        )
    return Opened(stream, label, dev_rate, channels)


def describe_format(opened: Opened, wanted: int) -> str:
    what = f"{opened.rate} Hz {'mono' if opened.channels == 1 else f'x{opened.channels}'}"
    if (opened.rate, opened.channels) != (wanted, 1):
        what += f" (the daemon converts to {wanted} Hz mono)"
    return what


def close_quietly(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()
