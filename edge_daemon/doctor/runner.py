"""``edge-daemon doctor``: check this device, one line per check, and say how to fix
whatever is wrong.

Every check is a small function that takes what it looks at (paths under a
filesystem root, a command runner, the environment, loaders for optional
modules) and returns a ``Check``, so each can be tried on its own against a
simulated failure. ``run_checks`` wires them to the real machine.

``--simulate`` reports on what ``edge-daemon run --simulate`` would use: GPIO is
mocked and an unset endpoint is the built-in fake Gemini, so those checks are
skipped or run against the fake instead of failing on a desktop.

Nothing here prints or returns a key: checks name where it came from, never
what it is.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import grp
import importlib
import importlib.util
import json
import math
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from ..config import (
    CREDENTIAL_NAME,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    Secret,
    default_endpoint,
    load_config,
    resolve_secret,
)

Status = Literal["PASS", "FAIL", "WARN", "SKIP"]

SERVICE = "edge-daemon"
SERVICE_USER = "edge-daemon"
SERVICE_GROUPS = ("audio", "video", "gpio")
# Where systemd/install.sh keeps the key the unit loads as a credential.
KEY_FILE = "/etc/edge-daemon/gemini-api-key"
UNIT_PATHS = ("/etc/systemd/system/edge-daemon.service", "/lib/systemd/system/edge-daemon.service")
INSTALL = "sudo systemd/install.sh"  # run from the checkout

MIC_RATE = 16000
SPEAKER_RATE = 24000
# Below this RMS (of 32767) a second of input is silence: a dead or muted mic
# reads 0-10, a quiet room through a working USB mic 30-300.
SILENCE_RMS = 20.0


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def _pass(name: str, detail: str) -> Check:
    return Check(name, "PASS", detail)


def _fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def _warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, "WARN", detail, fix)


def _skip(name: str, detail: str) -> Check:
    return Check(name, "SKIP", detail)


# ---------------------------------------------------------------- the machine


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str], timeout_s: float = 10.0) -> Completed:
    """Run a command for its output; a missing program is exit 127, a hang 124."""
    env = {**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{argv[0]}: no answer within {timeout_s:g} s")
    return Completed(done.returncode, done.stdout, done.stderr)


def under(root: Path, path: str) -> Path:
    """``path`` inside the filesystem rooted at ``root`` (tests use a fake tree)."""
    return root / path.lstrip("/")


def systemd_running(root: Path) -> bool:
    # sd_booted(3): systemd is PID 1 exactly when this directory exists.
    return under(root, "/run/systemd/system").is_dir()


def unit_installed(root: Path) -> bool:
    return any(under(root, p).exists() for p in UNIT_PATHS)


# ---------------------------------------------------------------- config and key


def check_config(path: str | None, env: Mapping[str, str]) -> tuple[Check, Config | None]:
    try:
        cfg = load_config(path, env=env)
    except ConfigError as exc:
        where = exc.file + (f" line {exc.line}" if exc.line else "")
        key = f" at {exc.key}" if exc.key else ""
        return (
            _fail(
                "config",
                str(exc),
                f"edit {where}{key} ({exc.expected}), then check it with: "
                f"edge-daemon check-config --config {exc.file}",
            ),
            None,
        )
    if not cfg.source:
        file = env.get("EDGE_DAEMON_CONFIG") or path or DEFAULT_CONFIG_PATH
        return _pass("config", f"no {file}: built-in defaults"), cfg
    return _pass("config", f"{cfg.source} parses"), cfg


def read_key_file(path: Path) -> tuple[str, Secret | None]:
    """("present" | "empty" | "missing" | "unreadable", the key or None)."""
    try:
        with path.open("rb") as f:
            text = f.read(64 * 1024).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return "missing", None
    except OSError:
        return "unreadable", None
    if not text:
        return "empty", None
    return "present", Secret(text, f"file {path}")


def check_key(
    cfg: Config,
    env: Mapping[str, str],
    *,
    key_file: Path,
    installed: bool,
    needs_key: bool = True,
) -> tuple[Check, Secret | None]:
    """Whether the daemon will find a key, and where: its value is never shown.

    Looks where the daemon looks (environment, gemini.api_key_file, a credentials
    directory) and at the file the installed unit loads as its credential, which
    only the service (or root) sees.
    """
    name = "api_key"
    what = "token" if cfg.gemini.auth == "ephemeral_token" else "key"
    add_key = (
        f"{INSTALL} --api-key-file PATH (or --api-key-file - to paste it); "
        f"it stores the {what} in {KEY_FILE} and restarts the service"
    )
    try:
        secret = resolve_secret(cfg, env)
    except ConfigError as exc:
        return (
            _fail(
                name,
                str(exc),
                f"make {exc.key or 'the key file'} a readable file holding only the {what}",
            ),
            None,
        )
    state, from_file = read_key_file(key_file)
    from_env = secret is not None and secret.source.startswith("$")
    # What the service itself would use: the environment of this shell is not its.
    service_key = from_file if secret is None or from_env else secret
    if service_key is not None:
        also = f"; also set in {secret.source} here" if secret is not None and from_env else ""
        where = (
            f"{key_file}, the service's credential {CREDENTIAL_NAME}"
            if service_key is from_file
            else service_key.source
        )
        return _pass(name, f"{what} found in {where} (value not shown){also}"), service_key
    if secret is not None:
        if installed:
            return (
                _warn(
                    name,
                    f"{what} only in {secret.source} of this shell; the service reads "
                    f"{key_file}, which is {state}",
                    add_key,
                ),
                secret,
            )
        return _pass(name, f"{what} found in {secret.source} (value not shown)"), secret
    if state == "unreadable":
        return (
            _warn(
                name,
                f"cannot read {key_file} as this user, so cannot tell whether the service has a "
                f"{what}",
                "run the doctor as root: sudo edge-daemon doctor",
            ),
            None,
        )
    if not needs_key:
        return _skip(name, f"no {what}, and none needed: the built-in fake Gemini takes any"), None
    return (
        _fail(
            name,
            f"no API {what}: $GEMINI_API_KEY is unset, gemini.api_key_file is unset and "
            f"{key_file} is {state}",
            f"get a key at https://aistudio.google.com/apikey, then: {add_key}",
        ),
        None,
    )


# ---------------------------------------------------------------- network

Resolver = Callable[[str, int], list[tuple[Any, ...]]]
Connector = Callable[[tuple[Any, ...], float], socket.socket]


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def connect(addrinfo: tuple[Any, ...], timeout_s: float) -> socket.socket:
    family, kind, proto, _name, sockaddr = addrinfo
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout_s)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def _clock_hint(message: str) -> str:
    if re.search(r"not yet valid|expired", message, re.I):
        return "the clock is probably wrong (see the clock check): sudo timedatectl set-ntp true"
    return (
        "update the CA certificates: sudo apt-get install --reinstall ca-certificates "
        "(a proxy that intercepts TLS needs its CA installed too)"
    )


def check_endpoint(
    url: str,
    *,
    resolver: Resolver = resolve,
    connector: Connector = connect,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
    label: str = "",
) -> Check:
    """DNS, then TCP, then (for wss://) a TLS handshake with SNI and a verified certificate."""
    name = "endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        return _fail(name, f"bad port in {url}", "set gemini.endpoint to a ws:// or wss:// URL")
    where = f"{label}{host}:{port}"
    try:
        addrs = resolver(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return _fail(
            name,
            f"DNS: cannot resolve {host}: {reason}",
            "check the network (ip route; ping 1.1.1.1) and DNS (/etc/resolv.conf, "
            "resolvectl status); is gemini.endpoint spelled right?",
        )
    if not addrs:
        return _fail(name, f"DNS: {host} has no addresses", "check DNS (resolvectl status)")
    errors: list[str] = []
    sock: socket.socket | None = None
    address = ""
    for info in addrs:
        address = str(info[4][0])
        try:
            sock = connector(info, timeout_s)
            break
        except OSError as exc:
            errors.append(f"{address}: {exc.strerror or exc}")
    if sock is None:
        return _fail(
            name,
            f"TCP: cannot connect to {where} ({'; '.join(errors)})",
            f"check the network, and any firewall or proxy between this device and {host}:{port} "
            f"(try: nc -vz {host} {port})",
        )
    with sock:
        if not secure:
            return _pass(name, f"{where} reachable: DNS {address}, TCP (ws://, so no TLS)")
        context = tls or ssl.create_default_context()
        try:
            with context.wrap_socket(sock, server_hostname=host) as conn:
                version = conn.version()
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or str(exc)
            return _fail(
                name,
                f"TLS: the certificate of {host} is not accepted: {message}",
                _clock_hint(message),
            )
        except (ssl.SSLError, OSError) as exc:
            return _fail(
                name,
                f"TLS: handshake with {where} failed: {exc}",
                f"something between this device and {host} breaks TLS (a captive portal or "
                "proxy?); " + _clock_hint(str(exc)),
            )
    return _pass(name, f"{where} reachable: DNS {address}, TCP, {version} with a valid certificate")


async def check_live(
    url: str, cfg: Config, secret: Secret | None, *, timeout_s: float | None = None
) -> Check:
    """One real ``setup`` -> ``setupComplete`` handshake, then a clean close."""
    from ..live.messages import SetupOptions, build_setup
    from ..live.session import Credentials, LiveSession, SessionError

    name = "live"
    setup = build_setup(
        SetupOptions(
            model=cfg.gemini.model,
            voice=cfg.gemini.voice,
            language=cfg.gemini.language,
            transcribe_input=False,
            transcribe_output=False,
            resumption=False,
            context_window_compression=False,
        )
    )
    creds = Credentials(secret.reveal(), cfg.gemini.auth) if secret is not None else None
    started = time.monotonic()
    try:
        session = await LiveSession.open(
            url,
            setup,
            creds,
            connect_timeout_s=timeout_s or cfg.gemini.connect_timeout_s,
            setup_timeout_s=timeout_s or cfg.gemini.setup_timeout_s,
        )
    except SessionError as exc:
        if exc.code == 1008:
            fix = (
                "the server refused the key: check it at https://aistudio.google.com/apikey, "
                f"then store the right one: {INSTALL} --api-key-file PATH"
            )
        elif exc.code == 1007:
            fix = (
                f"the server refused the session setup: is gemini.model ({cfg.gemini.model}) "
                "a Live model your key may use?"
            )
        else:
            fix = "see the endpoint check; if that passes, the service may be down: try later"
        return _fail(name, f"setup handshake failed: {exc}", fix)
    elapsed_ms = (time.monotonic() - started) * 1000
    await session.close()
    return _pass(name, f"setup -> setupComplete in {elapsed_ms:.0f} ms ({cfg.gemini.model})")


# ---------------------------------------------------------------- clock


def check_clock(run: Runner, root: Path, *, tls_needed: bool = True) -> Check:
    """TLS certificates and tokens are checked against the clock, and a Pi has no
    battery-backed one: it must be set by NTP after every boot."""
    name = "clock"
    fix = (
        "sudo timedatectl set-ntp true, then watch `timedatectl timesync-status`; the device "
        "needs the network (UDP 123) to set its clock after boot"
    )
    if systemd_running(root):
        done = run(["timedatectl", "show", "-p", "NTPSynchronized"])
        answer = done.stdout.strip()
        if done.returncode == 0 and answer == "NTPSynchronized=yes":
            return _pass(name, "synchronised (timedatectl: NTPSynchronized=yes)")
        if done.returncode == 0 and answer == "NTPSynchronized=no":
            detail = "not synchronised (timedatectl: NTPSynchronized=no)"
            if not tls_needed:
                return _warn(name, detail + "; harmless for a ws:// endpoint, fatal for wss://")
            return _fail(name, detail + "; TLS to Gemini fails once the date is off", fix)
    if under(root, "/run/systemd/timesync/synchronized").exists():
        return _pass(name, "synchronised (/run/systemd/timesync/synchronized)")
    return _warn(
        name,
        "cannot tell whether the clock is synchronised (no timedatectl answer, no "
        "/run/systemd/timesync/synchronized)",
        "make sure an NTP client runs (systemd-timesyncd or chrony)",
    )


# ---------------------------------------------------------------- audio


def audio_backend(cfg: Config, simulate: bool) -> str:
    """The backend `run` would use: --simulate replaces only an unset one."""
    if simulate and "audio.backend" not in cfg.explicit:
        return "wav" if cfg.audio.input_wav or cfg.audio.output_wav else "null"
    return cfg.audio.backend


def load_pyaudio() -> Any:
    return importlib.import_module("pyaudio")


_PYAUDIO_FIX = (
    "sudo apt-get install python3-pyaudio (the service's venv sees system packages); "
    "in a venv of your own: sudo apt-get install portaudio19-dev && pip install pyaudio"
)


@contextlib.contextmanager
def _portaudio(loader: Callable[[], Any], *specs: str) -> Iterator[tuple[Any, Any]]:
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
_HELD = (
    f"in use by the running {SERVICE} service; to test {{what}}: "
    f"sudo systemctl stop {SERVICE}, run the doctor, sudo systemctl start {SERVICE}"
)

_NO_DEVICE_FIX = {
    "input": "plug in a USB microphone or enable the sound HAT (its dtoverlay= in "
    "/boot/firmware/config.txt) until `arecord -l` lists it; then set audio.input_device "
    "from `edge-daemon devices`",
    "output": "connect a speaker (USB, HAT or the headphone jack) until `aplay -l` lists it; "
    "then set audio.output_device from `edge-daemon devices`",
}


@dataclass
class _Opened:
    stream: Any
    label: str
    rate: int
    channels: int


def _open_stream(
    name: str, module: Any, pa: Any, spec: str, direction: Direction, rate: int
) -> _Opened | Check:
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
        return _fail(name, f"no {noun}: {first}", _NO_DEVICE_FIX[direction])
    label = f"{device['name']} (#{device['index']})"
    plug_fix = (
        f'use the card\'s plughw: name so ALSA converts ({key} = "plughw:CARD=<card>,DEV=0", '
        "see `edge-daemon devices`)"
    )
    try:
        dev_rate, channels = choose_format(pa, device, direction, rate)
    except AudioConfigError as exc:
        return _fail(name, str(exc), plug_fix)
    try:
        stream = pa.open(
            format=module.paInt16,
            channels=channels,
            rate=dev_rate,
            frames_per_buffer=dev_rate // 25,
            **{direction: True, f"{direction}_device_index": device["index"]},
        )
    except (OSError, ValueError) as exc:
        return _fail(
            name,
            f"{label} does not open at {dev_rate} Hz: {exc}",
            "another program may hold it (sudo fuser -v /dev/snd/*: stop PulseAudio/PipeWire "
            f"or the other program); the service user must be in the audio group; {plug_fix}",
        )
    return _Opened(stream, label, dev_rate, channels)


def _format(opened: _Opened, wanted: int) -> str:
    what = f"{opened.rate} Hz {'mono' if opened.channels == 1 else f'x{opened.channels}'}"
    if (opened.rate, opened.channels) != (wanted, 1):
        what += f" (the daemon converts to {wanted} Hz mono)"
    return what


def _read_with_deadline(stream: Any, frames: int, timeout_s: float) -> bytes | None:
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


def _close(stream: Any) -> None:
    with contextlib.suppress(Exception):
        stream.close()


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
        return _skip(name, f"audio.backend is {backend!r}{why}: no microphone is used")
    if service_active:
        return _skip(name, _HELD.format(what="the microphone"))
    try:
        with _portaudio(loader, cfg.audio.input_device) as (module, pa):
            opened = _open_stream(name, module, pa, cfg.audio.input_device, "input", MIC_RATE)
            if isinstance(opened, Check):
                return opened
            opens = f"{opened.label} opens at {_format(opened, MIC_RATE)}"
            try:
                if not listen:
                    return _pass(name, f"{opens}; --listen to hear it")
                if prompt is not None:
                    prompt("listening for 1 s: say something...")
                pcm = _read_with_deadline(opened.stream, opened.rate, 5.0)
            finally:
                _close(opened.stream)
    except ImportError as exc:
        return _fail(name, f"PyAudio is not installed ({exc})", _PYAUDIO_FIX)
    except OSError as exc:
        return _fail(name, f"PortAudio cannot start or record: {exc}", _PYAUDIO_FIX)
    if pcm is None:
        return _fail(
            name,
            f"{opened.label} opened but delivered no audio within 5 s",
            "the device is stuck or used by another program: sudo fuser -v /dev/snd/*",
        )
    rms, peak = rms_s16(pcm)
    if rms < SILENCE_RMS:
        return _fail(
            name,
            f"{opened.label} heard only silence for 1 s (RMS {rms:.0f}, peak {peak} of 32767)",
            "check the mic is plugged in and not muted: alsamixer (F4 shows capture; raise the "
            "gain, unmute with space), and speak while `edge-daemon doctor --listen` runs",
        )
    return _pass(name, f"{opens} and hears sound (RMS {rms:.0f}, peak {peak})")


def tone_s16(
    freq: float = 880.0, seconds: float = 0.4, rate: int = SPEAKER_RATE, channels: int = 1
) -> bytes:
    """A quiet sine with 10 ms ramps, so the beep does not click."""
    n = int(seconds * rate)
    ramp = max(1, rate // 100)
    samples = array.array("h")
    for i in range(n):
        gain = min(1.0, i / ramp, (n - 1 - i) / ramp)
        value = int(0.25 * 32767 * gain * math.sin(2 * math.pi * freq * i / rate))
        samples.extend([value] * channels)
    return samples.tobytes()


def check_speaker(
    cfg: Config,
    *,
    simulate: bool = False,
    beep: bool = False,
    service_active: bool = False,
    loader: Callable[[], Any] = load_pyaudio,
) -> Check:
    name = "speaker"
    backend = audio_backend(cfg, simulate)
    if backend != "pyaudio":
        why = " (--simulate)" if simulate and "audio.backend" not in cfg.explicit else ""
        return _skip(name, f"audio.backend is {backend!r}{why}: no speaker is used")
    if service_active:
        return _skip(name, _HELD.format(what="the speaker"))
    try:
        with _portaudio(loader, cfg.audio.output_device) as (module, pa):
            opened = _open_stream(name, module, pa, cfg.audio.output_device, "output", SPEAKER_RATE)
            if isinstance(opened, Check):
                return opened
            try:
                if beep:
                    opened.stream.write(tone_s16(rate=opened.rate, channels=opened.channels))
            finally:
                _close(opened.stream)
    except ImportError as exc:
        return _fail(name, f"PyAudio is not installed ({exc})", _PYAUDIO_FIX)
    except OSError as exc:
        return _fail(name, f"PortAudio cannot start or play: {exc}", _PYAUDIO_FIX)
    opens = f"{opened.label} opens at {_format(opened, SPEAKER_RATE)}"
    if beep:
        return _pass(name, f"{opens} and played a beep (did you hear it?)")
    return _pass(name, f"{opens}; --beep plays a tone")


# ---------------------------------------------------------------- GPIO


def configured_pins(cfg: Config) -> list[tuple[str, int]]:
    """(config key, BCM number) of every GPIO the daemon drives or reads."""
    pins = [("button.pin", cfg.button.pin)]
    led = cfg.status_led
    if led.kind == "rgb":
        pins += [(f"status_led.rgb_pins[{i}]", p) for i, p in enumerate(led.rgb_pins)]
    elif led.kind != "none":
        pins.append(("status_led.pin", led.pin))
    pins += [(f"tools.led[{i}].pin", t.pin) for i, t in enumerate(cfg.tools.led)]
    pins += [(f"tools.relay[{i}].pin", t.pin) for i, t in enumerate(cfg.tools.relay)]
    return pins


def board_model(root: Path) -> str:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        with contextlib.suppress(OSError):
            return under(root, path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    return ""


PinProbe = Callable[[Sequence[int]], dict[int, str | None] | None]

_LGPIO_LINE_IN_USE = 1  # LINE_FLAG_KERNEL: the line is requested (by a program or a driver)


def probe_pins_lgpio(pins: Sequence[int]) -> dict[int, str | None] | None:
    """{pin: None if free, else who holds it}, read with lgpio from the Pi header's chip;
    None when lgpio is not installed or finds no header chip.

    It reads each line's flags rather than claiming the line: a claim turns the pin
    into an input for a moment, which can click a relay wired to it.
    """
    try:
        lgpio: Any = importlib.import_module("lgpio")
    except ImportError:
        return None
    for number in range(16):
        try:
            handle = lgpio.gpiochip_open(number)
        except Exception:  # no such chip, or not ours to open
            continue
        try:
            label = str(lgpio.gpio_get_chip_info(handle)[3])
            if not label.startswith("pinctrl-"):
                continue  # the header's chip is pinctrl-bcm2835/-bcm2711/-rp1
            result: dict[int, str | None] = {}
            for pin in pins:
                _status, _offset, flags, _name, user = lgpio.gpio_get_line_info(handle, pin)
                used = flags & _LGPIO_LINE_IN_USE
                result[pin] = f"in use by {user or 'the kernel'!r}" if used else None
            return result
        except Exception:  # an lgpio too old or too new for these calls: try another way
            return None
        finally:
            lgpio.gpiochip_close(handle)
    return None


_GPIOINFO_LINE = re.compile(r'^\s*line\s+(\d+):\s+("[^"]*"|unnamed)\s+("[^"]*"|unused)(.*)$')


def parse_gpioinfo(text: str) -> dict[int, str | None]:
    """{offset: consumer or None} from libgpiod v1 `gpioinfo` output for one chip."""
    lines: dict[int, str | None] = {}
    for raw in text.splitlines():
        m = _GPIOINFO_LINE.match(raw)
        if m is None:
            continue
        consumer = m[3].strip('"')
        used = m[3] != "unused" or "[used]" in m[4]
        lines[int(m[1])] = (consumer or "kernel") if used else None
    return lines


def probe_pins_gpioinfo(
    run: Runner, chip: str, pins: Sequence[int]
) -> dict[int, str | None] | None:
    done = run(["gpioinfo", chip])
    if done.returncode != 0:
        return None
    lines = parse_gpioinfo(done.stdout)
    if not lines:
        return None
    return {p: (f"in use by {lines[p]!r}" if lines.get(p) else None) for p in pins}


def probe_pins_debugfs(root: Path, pins: Sequence[int]) -> dict[int, str | None] | None:
    """/sys/kernel/debug/gpio lists only requested lines: `gpio-535 (GPIO23 |sysfs) in hi`."""
    try:
        text = under(root, "/sys/kernel/debug/gpio").read_text(errors="replace")
    except OSError:
        return None
    used = {int(m[1]): m[2].strip() for m in re.finditer(r"\(\s*GPIO(\d+)\s*\|([^)]*)\)", text)}
    return {p: (f"in use by {used[p]!r}" if p in used else None) for p in pins}


def check_gpio(
    cfg: Config,
    *,
    root: Path,
    simulate: bool = False,
    service_active: bool = False,
    gpio_gid: int | None = None,
    probe: PinProbe | None = None,
) -> Check:
    name = "gpio"
    if simulate:
        return _skip(name, "simulated: gpiozero mock pins under --simulate, no GPIO is touched")
    pins = configured_pins(cfg)
    model = board_model(root)
    chips = sorted(under(root, "/dev").glob("gpiochip*"))
    is_pi = "raspberry pi" in model.lower()
    if not chips:
        if is_pi:
            return _fail(
                name,
                f"no /dev/gpiochip* on this {model}",
                "the GPIO driver is missing: sudo apt full-upgrade && sudo reboot",
            )
        return _fail(
            name,
            f"no GPIO: no /dev/gpiochip*, and this is not a Raspberry Pi "
            f"({model or 'no device-tree model'})",
            "on a desktop use mock GPIO: edge-daemon run --simulate (and doctor --simulate)",
        )
    names = " ".join(c.name for c in chips)
    if gpio_gid is not None:
        closed = []
        for chip in chips:
            st = chip.stat()
            group_rw = st.st_gid == gpio_gid and st.st_mode & 0o060 == 0o060
            if not group_rw and st.st_mode & 0o006 != 0o006:
                closed.append(f"{chip.name} ({oct(st.st_mode & 0o777)}, gid {st.st_gid})")
        if closed:
            return _fail(
                name,
                f"the gpio group cannot open {', '.join(closed)}",
                'add a udev rule: echo \'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", '
                'GROUP="gpio", MODE="0660"\' | sudo tee /etc/udev/rules.d/60-gpio.rules '
                "&& sudo udevadm trigger (Raspberry Pi OS ships this rule)",
            )
    listed = ", ".join(f"GPIO{p} ({key})" for key, p in pins)
    board = model or "not a Raspberry Pi"
    if not is_pi:
        return _warn(
            name,
            f"{names} present, but this is {board}: the config's pins are BCM numbers of a "
            "Pi header",
            "on a desktop use mock GPIO: edge-daemon run --simulate",
        )
    if service_active:
        return _pass(
            name,
            f"{names} on {model}; {listed} are held by the running {SERVICE} (stop it to test "
            "them free)",
        )
    found = probe([p for _k, p in pins]) if probe is not None else None
    if found is None:
        return _warn(
            name,
            f"{names} on {model}; cannot tell whether {listed} are free (no lgpio, gpioinfo or "
            "/sys/kernel/debug/gpio)",
            "sudo apt-get install python3-lgpio (or gpiod for gpioinfo)",
        )
    busy = [(key, p, found[p]) for key, p in pins if found.get(p)]
    if busy:
        what = "; ".join(f"GPIO{p} ({key}) {why}" for key, p, why in busy)
        keys = ", ".join(key for key, _p, _why in busy)
        return _fail(
            name,
            what,
            f"stop the program that holds it (`gpioinfo | grep -w used` names it), or move "
            f"{keys} to a free GPIO in the config",
        )
    return _pass(name, f"{names} on {model}; {listed} free")


# ---------------------------------------------------------------- camera


def check_camera(
    cfg: Config,
    *,
    root: Path,
    find_spec: Callable[[str], object] = importlib.util.find_spec,
    list_cameras: Callable[[], list[Any]] | None = None,
) -> Check:
    name = "camera"
    cam = cfg.camera
    if cam.backend == "none":
        return _skip(name, 'camera.backend = "none": no camera is used')
    if cam.backend == "file":
        base = Path(cfg.source).parent if cfg.source else Path()
        path = base / cam.file if cam.file else None
        if path is None or not path.exists():
            return _fail(
                name,
                f"camera.file {str(path) if path else '(empty)'} does not exist",
                "set camera.file to an image, or a folder of images, that exists",
            )
        return _pass(name, f"file backend: {path}")
    if cam.backend == "opencv":
        if find_spec("cv2") is None:
            return _fail(
                name, "OpenCV (cv2) is not installed", "sudo apt-get install python3-opencv"
            )
        spec = cam.device or "0"
        device = f"/dev/video{spec}" if spec.isdigit() else spec
        if not under(root, device).exists():
            return _fail(
                name,
                f"no {device}",
                "plug in the camera, check `ls /dev/video*`, and set camera.device to its index "
                "or path",
            )
        return _pass(name, f"opencv backend: {device} present")
    # picamera2
    if find_spec("picamera2") is None:
        return _fail(
            name,
            "picamera2 is not installed",
            "sudo apt-get install python3-picamera2 (Raspberry Pi OS), then " + INSTALL,
        )
    try:
        cameras = list_cameras() if list_cameras is not None else _libcamera_cameras()
    except Exception as exc:  # libcamera raises all sorts when there is no camera stack
        return _fail(name, f"libcamera cannot list cameras: {exc}", "rpicam-hello --list-cameras")
    if not cameras:
        return _fail(
            name,
            "libcamera finds no camera",
            "check the ribbon cable (contacts facing the right way, latch closed), "
            "camera_auto_detect=1 in /boot/firmware/config.txt, and `rpicam-hello --list-cameras`",
        )
    model = cameras[0].get("Model", "?") if isinstance(cameras[0], Mapping) else cameras[0]
    return _pass(name, f"picamera2: {len(cameras)} camera(s), first: {model}")


def _libcamera_cameras() -> list[Any]:
    module: Any = importlib.import_module("picamera2")
    return list(module.Picamera2.global_camera_info())


# ---------------------------------------------------------------- the service


def _member(user: pwd.struct_passwd, group: grp.struct_group) -> bool:
    return user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem


def check_service_user(
    *,
    user: str = SERVICE_USER,
    groups: Sequence[str] = SERVICE_GROUPS,
    getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
    getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam,
    installed: bool = True,
) -> Check:
    name = "service_user"
    found: dict[str, grp.struct_group] = {}
    missing: list[str] = []
    for group in groups:
        try:
            found[group] = getgrnam(group)
        except KeyError:
            missing.append(group)
    try:
        account = getpwnam(user)
    except KeyError:
        if not installed:
            return _skip(name, f"the service is not installed here (no user {user})")
        return _fail(name, f"no user {user}", f"{INSTALL} (it creates the user and its groups)")
    if missing:
        adds = " && ".join(f"sudo groupadd --system {g}" for g in missing)
        return _fail(
            name,
            f"group(s) {', '.join(missing)} do not exist: the unit's SupplementaryGroups= "
            "makes the start fail",
            f"{adds} && sudo usermod -aG {','.join(groups)} {user}",
        )
    outside = [g for g in groups if not _member(account, found[g])]
    if outside:
        return _warn(
            name,
            f"{user} is not in {', '.join(outside)} (the unit adds them at start, but "
            f"`sudo -u {user}` tests would lack them)",
            f"sudo usermod -aG {','.join(outside)} {user}",
        )
    return _pass(name, f"{user} exists, in {', '.join(groups)}")


def _exit_fix(props: Mapping[str, str]) -> str:
    status = props.get("ExecMainStatus", "")
    result = props.get("Result", "")
    restart = f"sudo systemctl restart {SERVICE}"
    if status == "78":
        return (
            "a config or key problem (the last error says which): fix it, run "
            f"`sudo edge-daemon doctor` again, then {restart}"
        )
    if status in ("216", "217"):
        return f"the unit's User=/SupplementaryGroups= do not exist: {INSTALL}"
    if status == "243":
        return (
            f"the key credential cannot be loaded (LoadCredential=): {INSTALL} --api-key-file PATH"
        )
    if result == "watchdog":
        return f"the daemon hung, the watchdog killed it: journalctl -u {SERVICE} -b; {restart}"
    if result == "start-limit-hit":
        return (
            f"it failed too often: journalctl -u {SERVICE} -b; then "
            f"sudo systemctl reset-failed {SERVICE} && {restart}"
        )
    return f"journalctl -u {SERVICE} -b -n 50 shows why; then {restart}"


def check_service(run: Runner, *, root: Path, installed: bool = True) -> Check:
    name = "service"
    if not systemd_running(root):
        return _skip(name, "systemd is not running here (not PID 1): there is no service to ask")
    done = run(
        [
            "systemctl",
            "show",
            SERVICE,
            "-p",
            "LoadState,ActiveState,SubState,NRestarts,Result,ExecMainStatus",
        ]
    )
    if done.returncode != 0:
        return _warn(name, f"systemctl show failed: {done.stderr.strip()}")
    props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        if not installed:
            return _skip(name, f"{SERVICE}.service is not installed here")
        return _fail(name, f"{SERVICE}.service is not installed", INSTALL)
    journal = run(["journalctl", "-u", SERVICE, "-p", "err", "-n", "1", "-o", "cat", "--no-pager"])
    last = journal.stdout.strip().splitlines()[-1] if journal.stdout.strip() else ""
    last_error = f"; last error: {last}" if last else ""
    active, sub = props.get("ActiveState", "?"), props.get("SubState", "?")
    try:
        restarts = int(props.get("NRestarts", "0"))
    except ValueError:
        restarts = 0
    state = f"{active} ({sub})"
    if active == "active":
        if restarts:
            return _warn(
                name,
                f"{state}, but restarted {restarts} time(s) since it was started{last_error}",
                f"journalctl -u {SERVICE} -b -p warning shows what went wrong",
            )
        return _pass(name, f"{state}, no restarts")
    exited = f", result {props.get('Result', '?')}, exit status {props.get('ExecMainStatus', '?')}"
    if active == "failed" or props.get("Result", "success") != "success":
        return _fail(name, f"{state}{exited}{last_error}", _exit_fix(props))
    if active == "inactive":
        return _warn(name, f"{state}: not running", f"sudo systemctl enable --now {SERVICE}")
    return _warn(
        name,
        f"{state}{last_error}",
        f"wait a few seconds and run the doctor again; journalctl -u {SERVICE} -f",
    )


# ---------------------------------------------------------------- all together


@dataclass(frozen=True)
class Options:
    config: str | None = None
    live: bool = False
    listen: bool = False
    beep: bool = False
    simulate: bool = False


@dataclass
class Machine:
    """The real machine; tests replace parts."""

    root: Path = Path("/")
    run: Runner = run_command
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    pyaudio: Callable[[], Any] = load_pyaudio
    prompt: Callable[[str], None] | None = None


def _gpio_gid() -> int | None:
    try:
        return grp.getgrnam("gpio").gr_gid
    except KeyError:
        return None


async def _network(cfg: Config, secret: Secret | None, opts: Options) -> tuple[Check, Check]:
    fake = None
    url = default_endpoint(cfg)
    label = ""
    if opts.simulate and not cfg.gemini.endpoint:
        from ..fake_gemini import FakeGemini

        # What `run --simulate` talks to: the same fake, on a loopback port.
        fake = FakeGemini(use_speech=False)
        await fake.start()
        url, label = fake.url, "built-in fake Gemini (--simulate) at "
    try:
        # Blocking DNS/TCP/TLS in a thread, so the fake on this loop keeps serving.
        endpoint = await asyncio.to_thread(check_endpoint, url, label=label)
        if not opts.live:
            live = _skip("live", "not tried (--live does one real setup handshake)")
        elif endpoint.status == "FAIL":
            live = _skip("live", "the endpoint is not reachable")
        elif secret is None and fake is None:
            live = _skip("live", "no API key to try it with")
        else:
            live = await check_live(url, cfg, secret)
    finally:
        if fake is not None:
            await fake.stop()
    return endpoint, live


def _service_active(run: Runner, root: Path) -> bool:
    return (
        systemd_running(root)
        and run(["systemctl", "is-active", "--quiet", SERVICE]).returncode == 0
    )


def run_checks(opts: Options, machine: Machine | None = None) -> list[Check]:
    """Every check, in a fixed order and always the same names (scripts rely on them)."""
    m = machine or Machine()
    config, cfg = check_config(opts.config, m.env)
    installed = unit_installed(m.root)
    checks = [config]
    if cfg is None:
        unchecked = ("api_key", "endpoint", "live", "clock", "microphone", "speaker")
        checks += [_skip(n, "needs a config that parses") for n in unchecked]
        checks += [_skip(n, "needs a config that parses") for n in ("gpio", "camera")]
    else:
        # The built-in fake under --simulate needs no key, no TLS and so no clock.
        fake_endpoint = opts.simulate and not cfg.gemini.endpoint
        key, secret = check_key(
            cfg,
            m.env,
            key_file=under(m.root, KEY_FILE),
            installed=installed,
            needs_key=not fake_endpoint,
        )
        checks.append(key)
        checks.extend(asyncio.run(_network(cfg, secret, opts)))
        tls_needed = default_endpoint(cfg).startswith("wss://") and not fake_endpoint
        checks.append(check_clock(m.run, m.root, tls_needed=tls_needed))
        # What the running service holds (sound card, pins) cannot be opened twice.
        active = _service_active(m.run, m.root)
        checks.append(
            check_microphone(
                cfg,
                simulate=opts.simulate,
                listen=opts.listen,
                service_active=active,
                loader=m.pyaudio,
                prompt=m.prompt,
            )
        )
        checks.append(
            check_speaker(
                cfg, simulate=opts.simulate, beep=opts.beep, service_active=active, loader=m.pyaudio
            )
        )
        checks.append(
            check_gpio(
                cfg,
                root=m.root,
                simulate=opts.simulate,
                service_active=active,
                gpio_gid=_gpio_gid(),
                probe=lambda pins: _probe_pins(pins, m.run, m.root),
            )
        )
        checks.append(check_camera(cfg, root=m.root))
    # Not installed is a failure on a device, and expected on a desktop under --simulate.
    expected = installed or not opts.simulate
    checks.append(check_service_user(installed=expected))
    checks.append(check_service(m.run, root=m.root, installed=expected))
    return checks


def _probe_pins(pins: Sequence[int], run: Runner, root: Path) -> dict[int, str | None] | None:
    found = probe_pins_lgpio(pins)
    if found is None and shutil.which("gpioinfo"):
        for chip in sorted(under(root, "/dev").glob("gpiochip*")):
            done = run(["gpioinfo", chip.name])
            if "GPIO" in done.stdout:  # the header's chip names its lines GPIO0..GPIO27
                found = probe_pins_gpioinfo(run, chip.name, pins)
                break
    if found is None:
        found = probe_pins_debugfs(root, pins)
    return found


def format_text(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in ("FAIL", "WARN"):
            lines.append(f"{'':6}{'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "WARN", "SKIP")}
    lines.append(
        f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings, "
        f"{counts['SKIP']} skipped"
    )
    return "\n".join(lines)


def format_json(checks: Sequence[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=2)


def exit_status(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0


# ---------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options (``--config`` is added by the CLI, as for every subcommand)."""
    parser.add_argument(
        "--live", action="store_true", help="also do one real setup handshake with the endpoint"
    )
    parser.add_argument(
        "--listen", action="store_true", help="record 1 s and check the mic hears more than silence"
    )
    parser.add_argument("--beep", action="store_true", help="play a short tone on the speaker")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="check what `run --simulate` uses: mock GPIO, the built-in fake Gemini if no "
        "endpoint is set",
    )
    parser.add_argument(
        "--json", action="store_true", help="a JSON list of {name, status, detail, fix}"
    )


def run_from_args(args: argparse.Namespace) -> int:
    opts = Options(
        config=getattr(args, "config", None),
        live=args.live,
        listen=args.listen,
        beep=args.beep,
        simulate=args.simulate,
    )

    def prompt(text: str) -> None:
        print(f"edge-daemon doctor: {text}", file=sys.stderr, flush=True)

    checks = run_checks(opts, Machine(prompt=prompt))
    print(format_json(checks) if args.json else format_text(checks))
    return exit_status(checks)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-daemon doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--config", metavar="PATH", help="config file")
    add_arguments(parser)
    return run_from_args(parser.parse_args(argv))
