"""PortAudio devices: listing them, choosing one by index, name or ALSA name, and its format.

Device names come from PortAudio's ALSA host API: hardware devices read like
``seeed-2mic-voicecard: bcm2835-i2s-wm8960-hifi wm8960-hifi-0 (hw:1,0)``, and
every PCM defined in the ALSA configuration (``default``, ``pulse``, or one of
your own in ``/etc/asound.conf``) is listed under its own name. A system
service on Raspberry Pi OS talks to ALSA directly, so the names people know
from ``arecord -L`` (``plughw:CARD=seeed2micvoicec,DEV=0``, ``hw:1,0``) are
accepted too and mapped onto the hardware device they denote.

Importing this module does not load PortAudio: only the functions that need it do.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from .base import AudioConfigError

if TYPE_CHECKING:
    import pyaudio

Direction = Literal["input", "output"]
Device = dict[str, Any]

# Tried in this order when a device cannot run at the rate we want: the rates
# nearly every codec and USB device runs natively.
FALLBACK_RATES = (48000, 44100)

_ALSA_NAME = re.compile(
    r"^(?P<plug>plug)?hw:(?:CARD=)?(?P<card>[^,\s]+)(?:,(?:DEV=)?(?P<dev>\d+))?$", re.IGNORECASE
)


# -- ALSA names ---------------------------------------------------------------


def parse_alsa_name(spec: str) -> tuple[str, int, bool] | None:
    """``(card, device, plug)`` for ``hw:``/``plughw:`` names, else None.

    Accepts ``hw:1``, ``hw:1,0``, ``plughw:CARD=seeed2micvoicec,DEV=0`` and
    ``plughw:seeed2micvoicec``; the card is an index or an ALSA card id.
    """
    m = _ALSA_NAME.match(spec.strip())
    if m is None:
        return None
    return m["card"], int(m["dev"] or 0), bool(m["plug"])


def alsa_cards(proc: str | os.PathLike[str] = "/proc/asound") -> dict[str, int]:
    """ALSA card ids by index, e.g. ``{"seeed2micvoicec": 1}``; empty where there is no ALSA."""
    cards: dict[str, int] = {}
    try:
        entries = list(Path(proc).iterdir())
    except OSError:
        return cards
    for entry in entries:
        # /proc/asound/<id> is a symlink to card<N>: exactly the id -> index map.
        if entry.is_symlink():
            target = os.readlink(entry)
            if re.fullmatch(r"card\d+", target):
                cards[entry.name] = int(target[4:])
    return cards


def wants_plughw(*specs: str) -> bool:
    """Whether any configured device is a ``plughw:`` name (PortAudio must list plughw devices)."""
    return any((p := parse_alsa_name(s)) is not None and p[2] for s in specs)


# -- PortAudio ----------------------------------------------------------------

# ALSA prints every PCM it fails to probe (dozens of "Unknown PCM cards.pcm.rear"
# lines on a Pi), and PortAudio's JACK host API reports the JACK server that is
# not running, while PortAudio enumerates devices. That noise would fill the
# journal at every start and bury real errors, so both are muted during
# enumeration only; errors while streaming still reach stderr.
_ALSA_ERROR_HANDLER = ctypes.CFUNCTYPE(
    None, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p
)
_JACK_ERROR_HANDLER = ctypes.CFUNCTYPE(None, ctypes.c_char_p)
# Made on first use and kept for the life of the process: the libraries hold
# pointers to them. None where a C callback cannot be made (libffi without
# static trampolines under MemoryDenyWriteExecute): then the noise stays.
_handlers: tuple[Any, Any] | None = None


def _ignore(*_args: object) -> None:
    return None


def _quiet_handlers() -> tuple[Any, Any] | None:
    global _handlers
    if _handlers is None:
        try:
            _handlers = (_ALSA_ERROR_HANDLER(_ignore), _JACK_ERROR_HANDLER(_ignore))
        except (MemoryError, OSError):
            return None
    return _handlers


def _loaded(soname: str) -> Any:
    """The library if PortAudio already loaded it, else None (RTLD_NOLOAD never loads one)."""
    try:
        return ctypes.CDLL(soname, mode=os.RTLD_NOLOAD)
    except OSError:
        return None


@contextlib.contextmanager
def quiet_alsa() -> Iterator[None]:
    """Mute ALSA's and JACK's own error printing for the duration (no-op where absent)."""
    handlers = _quiet_handlers()
    alsa = _loaded("libasound.so.2") if handlers else None
    jack = _loaded("libjack.so.0") if handlers else None
    if handlers and alsa is not None:
        alsa.snd_lib_error_set_handler(handlers[0])
    if handlers and jack is not None:
        jack.jack_set_error_function(handlers[1])
        jack.jack_set_info_function(handlers[1])
    try:
        yield
    finally:
        if alsa is not None:
            alsa.snd_lib_error_set_handler(None)
        # JACK has no "restore the default": its messages only ever come from
        # probing a server that is not there, so they stay muted.


def new_pyaudio() -> pyaudio.PyAudio:
    """Initialise PortAudio (it enumerates devices now), quietly; AudioConfigError if it cannot."""
    try:
        import pyaudio
    except ModuleNotFoundError:
        raise AudioConfigError(
            "the pyaudio audio backend needs PyAudio: pip install 'edge-daemon[audio]' "
            "(and apt-get install portaudio19-dev to build it)"
        ) from None
    with quiet_alsa():
        try:
            return pyaudio.PyAudio()
        except (OSError, ValueError) as exc:
            raise AudioConfigError(f"PortAudio cannot start: {exc}") from None


def list_devices(pa: pyaudio.PyAudio | None = None) -> list[Device]:
    """Every device PortAudio sees: index, name, channels, default rate, which are default."""
    own = pa is None
    if pa is None:
        pa = new_pyaudio()
    try:
        default_in, default_out = _default_index(pa, "input"), _default_index(pa, "output")
        devices = []
        for i in range(pa.get_device_count()):
            info = pa.get_device_info_by_index(i)
            host = pa.get_host_api_info_by_index(int(info["hostApi"]))["name"]
            devices.append(
                {
                    "index": i,
                    "name": str(info["name"]),
                    "host_api": str(host),
                    "max_input_channels": int(info["maxInputChannels"]),
                    "max_output_channels": int(info["maxOutputChannels"]),
                    "default_sample_rate": float(info["defaultSampleRate"]),
                    "default_input": i == default_in,
                    "default_output": i == default_out,
                }
            )
        return devices
    finally:
        if own:
            pa.terminate()


def _default_index(pa: pyaudio.PyAudio, direction: Direction) -> int | None:
    try:
        info = (
            pa.get_default_input_device_info()
            if direction == "input"
            else pa.get_default_output_device_info()
        )
    except OSError:  # PortAudio has no default device of that kind
        return None
    return int(info["index"])


def print_devices() -> int:
    """``edge-daemon devices``: a table of what PortAudio sees, and how to name a device."""
    try:
        devices = list_devices()
    except AudioConfigError as exc:
        print(f"edge-daemon: {exc}")
        return 1
    print(format_devices(devices))
    cards = alsa_cards()
    if cards:
        print("\nALSA cards (for a system service, name one directly):")
        for card_id, index in sorted(cards.items(), key=lambda kv: kv[1]):
            print(f"  card {index}: plughw:CARD={card_id},DEV=0")
    print(
        "\nSet audio.input_device / audio.output_device to an index, part of a name, or an "
        "ALSA name such as plughw:CARD=<card>,DEV=0; empty uses the default (marked *)."
    )
    return 0


def format_devices(devices: Sequence[Device]) -> str:
    if not devices:
        return "PortAudio sees no audio devices: no sound card, or not in the audio group?"
    lines = ["  #  in out     rate  name"]
    for d in devices:
        mark = "*" if d["default_input"] or d["default_output"] else " "
        which = [w for w, k in (("in", "default_input"), ("out", "default_output")) if d[k]]
        tail = f"  (default {'+'.join(which)})" if which else ""
        lines.append(
            f"{mark}{d['index']:>2} {d['max_input_channels']:>3} {d['max_output_channels']:>3} "
            f"{d['default_sample_rate']:>8.0f}  {d['name']}{tail}"
        )
    return "\n".join(lines)


# -- choosing a device ----------------------------------------------------------


def _channels(d: Device, direction: Direction) -> int:
    return int(d["max_input_channels" if direction == "input" else "max_output_channels"])


def _not_found(message: str, devices: Sequence[Device], direction: Direction) -> AudioConfigError:
    usable = [d for d in devices if _channels(d, direction) > 0]
    listing = (
        "\n".join(f"  {d['index']}: {d['name']}" for d in usable) or "  (none: no sound card?)"
    )
    key = "audio.input_device" if direction == "input" else "audio.output_device"
    return AudioConfigError(
        f"{message}; set {key} to one of these {direction} devices (an index or part of "
        f"its name; `edge-daemon devices` lists them):\n{listing}"
    )


def resolve_device(
    devices: Sequence[Device],
    spec: str,
    direction: Direction,
    *,
    cards: Mapping[str, int] | None = None,
) -> Device:
    """The device ``spec`` names for ``direction``: "" the default, an index, an ALSA
    ``hw:``/``plughw:`` name, an exact name or a unique part of one (case-insensitive).

    AudioConfigError, listing the usable devices, when nothing (or more than one) fits.
    """
    spec = spec.strip()
    usable = [d for d in devices if _channels(d, direction) > 0]
    if not spec:
        flag = "default_input" if direction == "input" else "default_output"
        for d in usable:
            if d[flag]:
                return d
        raise _not_found(f"there is no default {direction} device", devices, direction)
    if spec.isdigit():
        for d in devices:
            if d["index"] == int(spec):
                if _channels(d, direction) == 0:
                    raise _not_found(
                        f"device {spec} ({d['name']}) has no {direction} channels",
                        devices,
                        direction,
                    )
                return d
        raise _not_found(f"there is no audio device {spec}", devices, direction)
    alsa = parse_alsa_name(spec)
    if alsa is not None:
        return _resolve_alsa(devices, spec, alsa, direction, cards)
    folded = spec.casefold()
    exact = [d for d in usable if d["name"].casefold() == folded]
    if exact:
        return exact[0]
    partial = [d for d in usable if folded in d["name"].casefold()]
    if len(partial) == 1:
        return partial[0]
    if partial:
        names = "; ".join(f"{d['index']}: {d['name']}" for d in partial)
        raise AudioConfigError(
            f"{spec!r} matches several {direction} devices ({names}); use the index or more "
            "of the name"
        )
    raise _not_found(f"no {direction} device matches {spec!r}", devices, direction)


def _resolve_alsa(
    devices: Sequence[Device],
    spec: str,
    alsa: tuple[str, int, bool],
    direction: Direction,
    cards: Mapping[str, int] | None,
) -> Device:
    card, dev, _plug = alsa
    if card.isdigit():
        index = int(card)
    else:
        known = alsa_cards() if cards is None else cards
        if card not in known:
            ids = ", ".join(sorted(known)) or "none"
            raise _not_found(
                f"ALSA has no card {card!r} (cards: {ids}; see `aplay -l`)", devices, direction
            )
        index = known[card]
    # PortAudio names hardware devices "...(hw:N,M)", or "(plughw:N,M)" when
    # PA_ALSA_PLUGHW is set; either is the same device.
    suffixes = (f"(hw:{index},{dev})", f"(plughw:{index},{dev})")
    for d in devices:
        if d["name"].endswith(suffixes) and _channels(d, direction) > 0:
            return d
    raise _not_found(
        f"{spec!r} (card {index}, device {dev}) is not a PortAudio {direction} device; "
        "is the card present and this user in the audio group?",
        devices,
        direction,
    )


# -- choosing a format ------------------------------------------------------------


def choose_format(
    pa: pyaudio.PyAudio, device: Device, direction: Direction, rate: int
) -> tuple[int, int]:
    """``(rate, channels)`` to open ``device`` with, closest to ``rate`` mono 16-bit.

    Rate matters more than channels (resampling costs more than picking one
    channel), so every rate is tried mono then stereo before the next rate.
    """
    import pyaudio

    rates = list(dict.fromkeys((rate, *FALLBACK_RATES, int(device["default_sample_rate"]))))
    channels = [c for c in (1, 2) if c <= _channels(device, direction)]
    tried: list[str] = []
    with quiet_alsa():
        for r in rates:
            for ch in channels:
                key = "input" if direction == "input" else "output"
                try:
                    pa.is_format_supported(
                        r,
                        **{
                            f"{key}_device": device["index"],
                            f"{key}_channels": ch,
                            f"{key}_format": pyaudio.paInt16,
                        },
                    )
                except ValueError:
                    tried.append(f"{r} Hz x{ch}")
                    continue
                return r, ch
    raise AudioConfigError(
        f"{direction} device {device['index']} ({device['name']}) supports none of "
        f"{', '.join(tried)} as 16-bit PCM; try its plughw: name so ALSA converts"
    )
