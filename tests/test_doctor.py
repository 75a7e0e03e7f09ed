"""`edge-daemon doctor`: each check against a simulated failure, the report as a
whole on a desktop, and the real PortAudio path through ALSA's file plugin."""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SECRET, make_speech, write_config

from edge_daemon import doctor
from edge_daemon.config import Config, load_config, with_overrides
from edge_daemon.doctor import Check, Completed
from edge_daemon.fake_gemini import FakeGemini


class FakeRunner:
    """Answers commands from a table; anything else is 'command not found'."""

    def __init__(self, answers: Mapping[tuple[str, ...], Completed] | None = None) -> None:
        self.answers = dict(answers or {})
        self.calls: list[tuple[str, ...]] = []

    def __call__(self, argv: Sequence[str]) -> Completed:
        self.calls.append(tuple(argv))
        return self.answers.get(tuple(argv), Completed(127, "", f"{argv[0]}: not found"))


def cfg_from(tmp_path: Path, sections: dict[str, dict[str, Any]], extra: str = "") -> Config:
    path = write_config(tmp_path / "config.toml", sections)
    if extra:
        path.write_text(path.read_text() + extra)
    return load_config(path, env={})


def no_secret_in(check: Check) -> None:
    assert SECRET not in json.dumps(check.__dict__)


def fake_root(tmp_path: Path, *, systemd: bool = False) -> Path:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    if systemd:
        (root / "run/systemd/system").mkdir(parents=True)
    return root


# ---------------------------------------------------------------- config


def test_config_that_parses_passes(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"audio": {"backend": "wav"}})
    check, cfg = doctor.check_config(str(path), {})
    assert check.status == "PASS" and str(path) in check.detail
    assert cfg is not None and cfg.audio.backend == "wav"


def test_bad_toml_fails_naming_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[audio]\nbackend = "wav"\nchunk_ms = = 3\n')
    check, cfg = doctor.check_config(str(path), {})
    assert cfg is None
    assert check.status == "FAIL"
    assert str(path) in check.detail
    assert f"edit {path} line 3" in check.fix
    assert f"edge-daemon check-config --config {path}" in check.fix


def test_unknown_key_fails_naming_the_key(tmp_path: Path) -> None:
    path = write_config(tmp_path / "c.toml", {"audio": {"chunkms": 40}})
    check, _ = doctor.check_config(str(path), {})
    assert check.status == "FAIL"
    assert "audio.chunkms" in check.detail and "did you mean 'chunk_ms'" in check.detail
    assert "at audio.chunkms" in check.fix


def test_no_config_file_at_the_default_path_means_defaults() -> None:
    check, cfg = doctor.check_config(None, {"EDGE_DAEMON_CONFIG": ""})
    if Path("/etc/edge-daemon/config.toml").exists():
        pytest.skip("this machine has an installed config")
    assert check.status == "PASS" and "built-in defaults" in check.detail
    assert cfg == Config()


# ---------------------------------------------------------------- key


def test_key_from_the_environment_names_the_source_not_the_value(tmp_path: Path) -> None:
    check, secret = doctor.check_key(
        Config(), {"GEMINI_API_KEY": SECRET}, key_file=tmp_path / "none", installed=False
    )
    assert check.status == "PASS" and "$GEMINI_API_KEY" in check.detail
    assert secret is not None and secret.reveal() == SECRET
    no_secret_in(check)


def test_key_in_the_services_credential_file_passes(tmp_path: Path) -> None:
    key_file = tmp_path / "gemini-api-key"
    key_file.write_text(SECRET + "\n")
    check, secret = doctor.check_key(Config(), {}, key_file=key_file, installed=True)
    assert check.status == "PASS" and str(key_file) in check.detail
    assert secret is not None and secret.reveal() == SECRET
    no_secret_in(check)


def test_key_only_in_this_shell_warns_when_the_service_has_none(tmp_path: Path) -> None:
    key_file = tmp_path / "gemini-api-key"
    key_file.write_text("")
    check, _ = doctor.check_key(
        Config(), {"GEMINI_API_KEY": SECRET}, key_file=key_file, installed=True
    )
    assert check.status == "WARN"
    assert "empty" in check.detail and "--api-key-file" in check.fix
    no_secret_in(check)


@pytest.mark.parametrize("state", ["missing", "empty"])
def test_no_key_anywhere_fails_with_how_to_add_one(tmp_path: Path, state: str) -> None:
    key_file = tmp_path / "gemini-api-key"
    if state == "empty":
        key_file.write_text("\n")
    check, secret = doctor.check_key(Config(), {}, key_file=key_file, installed=True)
    assert secret is None
    assert check.status == "FAIL" and f"is {state}" in check.detail
    assert "install.sh --api-key-file" in check.fix


def test_unreadable_credential_file_says_run_as_root(tmp_path: Path) -> None:
    key_file = tmp_path / "gemini-api-key"
    key_file.mkdir()  # reading a directory fails, as a root-only file does for a user
    check, _ = doctor.check_key(Config(), {}, key_file=key_file, installed=True)
    assert check.status == "WARN" and "sudo edge-daemon doctor" in check.fix


def test_no_key_needed_for_the_built_in_fake(tmp_path: Path) -> None:
    check, _ = doctor.check_key(
        Config(), {}, key_file=tmp_path / "none", installed=False, needs_key=False
    )
    assert check.status == "SKIP"


def test_unreadable_api_key_file_fails_without_its_content(tmp_path: Path) -> None:
    cfg = cfg_from(tmp_path, {"gemini": {"api_key_file": "missing-key"}})
    check, _ = doctor.check_key(cfg, {}, key_file=tmp_path / "none", installed=False)
    assert check.status == "FAIL" and "gemini.api_key_file" in check.detail


# ---------------------------------------------------------------- endpoint


@pytest.fixture
def tcp_server() -> Iterator[tuple[int, Callable[[bytes], None]]]:
    """A loopback server that accepts connections and answers each with ``reply``."""
    server = socket.create_server(("127.0.0.1", 0))
    reply = [b""]
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                if reply[0]:
                    conn.sendall(reply[0])

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], lambda data: reply.__setitem__(0, data)
    stop.set()
    thread.join(5)
    server.close()


def loopback(port: int) -> doctor.Resolver:
    return lambda host, _port: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]


def test_ws_endpoint_that_accepts_tcp_passes(tcp_server: tuple[int, Any]) -> None:
    port, _ = tcp_server
    check = doctor.check_endpoint(f"ws://127.0.0.1:{port}/ws")
    assert check.status == "PASS" and f"127.0.0.1:{port}" in check.detail


def test_unresolvable_host_fails_at_dns() -> None:
    def no_dns(host: str, port: int) -> list[tuple[Any, ...]]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    check = doctor.check_endpoint("wss://generativelanguage.googleapis.com/ws", resolver=no_dns)
    assert check.status == "FAIL" and check.detail.startswith("DNS:")
    assert "resolv" in check.fix


def test_unreachable_host_fails_at_tcp() -> None:
    with socket.create_server(("127.0.0.1", 0)) as s:
        port = s.getsockname()[1]  # then closed: nothing listens there
    check = doctor.check_endpoint(f"ws://127.0.0.1:{port}", timeout_s=2)
    assert check.status == "FAIL" and check.detail.startswith("TCP:")
    assert f"nc -vz 127.0.0.1 {port}" in check.fix


def test_something_that_is_not_tls_fails_at_tls(tcp_server: tuple[int, Any]) -> None:
    port, set_reply = tcp_server
    set_reply(b"HTTP/1.1 400 Bad Request\r\n\r\n")  # a captive portal, say
    check = doctor.check_endpoint("wss://gemini.example/ws", resolver=loopback(port), timeout_s=5)
    assert check.status == "FAIL" and check.detail.startswith("TLS:")


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if not shutil.which("openssl"):
        pytest.skip("openssl is needed to make a test certificate")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=gemini.example", "-addext", "subjectAltName=DNS:gemini.example"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(self_signed: tuple[Path, Path]) -> Iterator[int]:
    cert, key = self_signed
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    sni: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: sni.append(name)  # type: ignore[assignment,misc]

    def serve() -> None:
        try:
            conn, _ = server.accept()
            with context.wrap_socket(conn, server_side=True) as tls:
                tls.recv(1)
        except (OSError, ssl.SSLError):
            pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    thread.join(10)
    server.close()
    assert sni == ["gemini.example"]  # the handshake named the host (SNI)


def test_tls_with_an_untrusted_certificate_fails(tls_server: int) -> None:
    check = doctor.check_endpoint("wss://gemini.example/ws", resolver=loopback(tls_server))
    assert check.status == "FAIL" and "certificate" in check.detail
    assert "ca-certificates" in check.fix


def test_tls_with_a_trusted_certificate_passes(
    tls_server: int, self_signed: tuple[Path, Path]
) -> None:
    trusting = ssl.create_default_context(cafile=str(self_signed[0]))
    check = doctor.check_endpoint(
        "wss://gemini.example/ws", resolver=loopback(tls_server), tls=trusting
    )
    assert check.status == "PASS" and "TLS" in check.detail


def test_a_certificate_from_the_future_points_at_the_clock() -> None:
    assert "clock" in doctor.clock_hint("certificate is not yet valid")
    assert "ca-certificates" in doctor.clock_hint("self-signed certificate")


# ---------------------------------------------------------------- live handshake


async def test_live_handshake_passes_with_the_right_key(fake: FakeGemini) -> None:
    from edge_daemon.config import Secret

    check = await doctor.check_live(fake.url, Config(), Secret(SECRET, "test"))
    assert check.status == "PASS" and "setupComplete" in check.detail
    assert fake.connections[-1].auth_method == "header"


async def test_live_handshake_with_a_wrong_key_fails_saying_so(fake: FakeGemini) -> None:
    from edge_daemon.config import Secret

    wrong = "AIzaSyWRONG-KEY-0000000000000"
    check = await doctor.check_live(fake.url, Config(), Secret(wrong, "test"), timeout_s=5)
    assert check.status == "FAIL" and "refused the key" in check.fix
    assert wrong not in json.dumps(check.__dict__)


# ---------------------------------------------------------------- clock


@pytest.mark.parametrize(
    ("answer", "status"),
    [("NTPSynchronized=yes\n", "PASS"), ("NTPSynchronized=no\n", "FAIL")],
)
def test_clock_from_timedatectl(tmp_path: Path, answer: str, status: str) -> None:
    run = FakeRunner({("timedatectl", "show", "-p", "NTPSynchronized"): Completed(0, answer)})
    check = doctor.check_clock(run, fake_root(tmp_path, systemd=True))
    assert check.status == status
    if status == "FAIL":
        assert "timedatectl set-ntp true" in check.fix


def test_unsynchronised_clock_only_warns_without_tls(tmp_path: Path) -> None:
    run = FakeRunner(
        {("timedatectl", "show", "-p", "NTPSynchronized"): Completed(0, "NTPSynchronized=no")}
    )
    check = doctor.check_clock(run, fake_root(tmp_path, systemd=True), tls_needed=False)
    assert check.status == "WARN"


def test_clock_without_systemd_reads_timesyncd_flag_or_warns(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    assert doctor.check_clock(FakeRunner(), root).status == "WARN"
    (root / "run/systemd/timesync").mkdir(parents=True)
    (root / "run/systemd/timesync/synchronized").touch()
    assert doctor.check_clock(FakeRunner(), root).status == "PASS"


# ---------------------------------------------------------------- audio (simulated PortAudio)


class FakeStream:
    def __init__(self, pcm: bytes) -> None:
        self.pcm = pcm
        self.written = b""
        self.closed = False

    def read(self, frames: int, exception_on_overflow: bool = True) -> bytes:
        assert exception_on_overflow is False  # a Pi mic overflows: never raise on it
        return (self.pcm * (2 * frames // max(1, len(self.pcm)) + 1))[: 2 * frames]

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class FakePyAudio:
    paInt16 = 8

    def __init__(
        self,
        devices: list[dict[str, Any]],
        pcm: bytes = b"\0\0",
        open_error: str = "",
        rates: tuple[int, ...] = (16000, 24000, 48000),
    ) -> None:
        self.devices, self.pcm, self.open_error, self.rates = devices, pcm, open_error, rates
        self.opened: list[dict[str, Any]] = []
        self.streams: list[FakeStream] = []
        self.terminated = False
        self.environ_at_init: dict[str, str] | None = None

    # the module's face
    def PyAudio(self) -> FakePyAudio:
        # PortAudio reads its environment once, as it initialises: what it saw.
        self.environ_at_init = dict(os.environ)
        return self

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        return {"index": i, "hostApi": 0, "defaultSampleRate": 48000.0, **self.devices[i]}

    def get_host_api_info_by_index(self, i: int) -> dict[str, Any]:
        return {"name": "ALSA"}

    def _default(self, key: str) -> dict[str, Any]:
        for i, d in enumerate(self.devices):
            if d[key] > 0:
                return self.get_device_info_by_index(i)
        raise OSError("No Default Device Available")

    def get_default_input_device_info(self) -> dict[str, Any]:
        return self._default("maxInputChannels")

    def get_default_output_device_info(self) -> dict[str, Any]:
        return self._default("maxOutputChannels")

    def is_format_supported(self, rate: int, **kwargs: Any) -> bool:
        if rate not in self.rates:
            raise ValueError("Invalid sample rate", -9997)
        return True

    def open(self, **kwargs: Any) -> FakeStream:
        if self.open_error:
            raise OSError(-9997, self.open_error)
        self.opened.append(kwargs)
        self.streams.append(FakeStream(self.pcm))
        return self.streams[-1]

    def terminate(self) -> None:
        self.terminated = True


USB_MIC = {
    "name": "USB PnP Sound Device: Audio (hw:1,0)",
    "maxInputChannels": 1,
    "maxOutputChannels": 0,
}
SPEAKER = {"name": "bcm2835 Headphones (hw:0,0)", "maxInputChannels": 0, "maxOutputChannels": 2}
PYAUDIO = {"audio": {"backend": "pyaudio"}}


def test_mic_without_pyaudio_fails_with_the_install_command(tmp_path: Path) -> None:
    def missing() -> Any:
        raise ModuleNotFoundError("No module named 'pyaudio'")

    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=missing)
    assert check.status == "FAIL" and "apt-get install python3-pyaudio" in check.fix


def test_mic_with_no_input_device_fails(tmp_path: Path) -> None:
    pa = FakePyAudio([SPEAKER])
    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=lambda: pa)
    assert check.status == "FAIL" and check.detail.startswith("no microphone")
    assert "arecord -l" in check.fix
    assert pa.terminated


def test_mic_opens_at_16_khz_on_the_configured_device(tmp_path: Path) -> None:
    pa = FakePyAudio([SPEAKER, USB_MIC])
    cfg = cfg_from(tmp_path, {"audio": {"backend": "pyaudio", "input_device": "USB PnP"}})
    check = doctor.check_microphone(cfg, loader=lambda: pa)
    assert check.status == "PASS" and "#1" in check.detail
    assert pa.opened[0]["rate"] == 16000 and pa.opened[0]["input_device_index"] == 1
    assert pa.streams[0].closed


def test_a_plughw_mic_gets_pa_alsa_plughw_before_portaudio_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PA_ALSA_PLUGHW", raising=False)
    pa = FakePyAudio([SPEAKER, USB_MIC])
    cfg = cfg_from(tmp_path, {"audio": {"backend": "pyaudio", "input_device": "plughw:1,0"}})
    check = doctor.check_microphone(cfg, loader=lambda: pa)
    assert check.status == "PASS", check
    assert pa.environ_at_init is not None
    assert pa.environ_at_init.get("PA_ALSA_PLUGHW") == "1"
    monkeypatch.delenv("PA_ALSA_PLUGHW")
    plain = FakePyAudio([SPEAKER, USB_MIC])
    doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=lambda: plain)
    assert plain.environ_at_init is not None and "PA_ALSA_PLUGHW" not in plain.environ_at_init


def test_mic_that_only_does_48_khz_is_opened_there_like_the_daemon_does(tmp_path: Path) -> None:
    pa = FakePyAudio([USB_MIC], rates=(48000,))
    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=lambda: pa)
    assert check.status == "PASS" and "converts to 16000 Hz" in check.detail
    assert pa.opened[0]["rate"] == 48000


def test_mic_with_no_usable_rate_fails_with_plughw_advice(tmp_path: Path) -> None:
    pa = FakePyAudio([USB_MIC], rates=())
    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=lambda: pa)
    assert check.status == "FAIL" and "plughw" in check.fix


def test_mic_held_by_another_program_fails(tmp_path: Path) -> None:
    pa = FakePyAudio([USB_MIC], open_error="Device unavailable")
    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), loader=lambda: pa)
    assert check.status == "FAIL" and "Device unavailable" in check.detail
    assert "fuser" in check.fix


def test_listening_to_silence_fails(tmp_path: Path) -> None:
    pa = FakePyAudio([USB_MIC], pcm=b"\x01\x00\xff\xff")  # +-1: a dead mic's hiss
    check = doctor.check_microphone(cfg_from(tmp_path, PYAUDIO), listen=True, loader=lambda: pa)
    assert check.status == "FAIL" and "silence" in check.detail and "alsamixer" in check.fix


def test_listening_to_sound_passes(tmp_path: Path) -> None:
    pa = FakePyAudio([USB_MIC], pcm=(3000).to_bytes(2, "little", signed=True) * 8)
    prompts: list[str] = []
    check = doctor.check_microphone(
        cfg_from(tmp_path, PYAUDIO), listen=True, loader=lambda: pa, prompt=prompts.append
    )
    assert check.status == "PASS" and "hears sound" in check.detail
    assert prompts  # the person was told to speak


def test_audio_checks_skip_what_simulate_replaces(tmp_path: Path) -> None:
    def never() -> Any:
        raise AssertionError("PortAudio must not be touched")

    cfg = cfg_from(tmp_path, {"gemini": {"voice": "Puck"}})  # audio.backend left unset
    assert doctor.check_microphone(cfg, simulate=True, loader=never).status == "SKIP"
    assert doctor.check_speaker(cfg, simulate=True, loader=never).status == "SKIP"
    wav = cfg_from(tmp_path, {"audio": {"backend": "wav"}})
    assert doctor.check_microphone(wav, loader=never).status == "SKIP"


def test_sound_card_held_by_the_running_service_is_not_opened(tmp_path: Path) -> None:
    def never() -> Any:
        raise AssertionError("the service holds the card")

    cfg = cfg_from(tmp_path, PYAUDIO)
    mic = doctor.check_microphone(cfg, service_active=True, loader=never)
    speaker = doctor.check_speaker(cfg, service_active=True, loader=never)
    assert mic.status == speaker.status == "SKIP"
    assert "sudo systemctl stop edge-daemon" in mic.detail


def test_speaker_beep_plays_a_tone_at_24_khz(tmp_path: Path) -> None:
    pa = FakePyAudio([SPEAKER])
    check = doctor.check_speaker(cfg_from(tmp_path, PYAUDIO), beep=True, loader=lambda: pa)
    assert check.status == "PASS"
    assert pa.opened[0]["rate"] == 24000 and pa.opened[0]["output"] is True
    assert len(pa.streams[0].written) == 2 * int(0.4 * 24000)


def test_speaker_with_no_output_device_fails(tmp_path: Path) -> None:
    check = doctor.check_speaker(cfg_from(tmp_path, PYAUDIO), loader=lambda: FakePyAudio([USB_MIC]))
    assert check.status == "FAIL" and "aplay -l" in check.fix


# ---------------------------------------------------------------- GPIO


def pi_root(tmp_path: Path, chip_mode: int = 0o660) -> Path:
    root = fake_root(tmp_path)
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.5\0")
    chip = root / "dev/gpiochip0"
    chip.touch()
    chip.chmod(chip_mode)
    return root


def test_gpio_is_skipped_when_simulated(tmp_path: Path) -> None:
    assert doctor.check_gpio(Config(), root=fake_root(tmp_path), simulate=True).status == "SKIP"


def test_no_gpio_on_a_desktop_says_it_is_not_a_pi(tmp_path: Path) -> None:
    check = doctor.check_gpio(Config(), root=fake_root(tmp_path))
    assert check.status == "FAIL" and "not a Raspberry Pi" in check.detail
    assert "--simulate" in check.fix


def test_busy_pin_fails_naming_pin_and_key(tmp_path: Path) -> None:
    cfg = cfg_from(tmp_path, {"status_led": {"kind": "led", "pin": 25}})
    check = doctor.check_gpio(
        cfg,
        root=pi_root(tmp_path),
        gpio_gid=os.getgid(),
        probe=lambda pins: {p: ("GPIO busy" if p == 25 else None) for p in pins},
    )
    assert check.status == "FAIL"
    assert "GPIO25 (status_led.pin) GPIO busy" in check.detail
    assert "status_led.pin" in check.fix


def test_free_pins_pass(tmp_path: Path) -> None:
    cfg = cfg_from(
        tmp_path, {}, extra='[[tools.relay]]\nname = "pump"\npin = 17\nactive_high = true\n'
    )
    asked: list[Sequence[int]] = []

    def probe(pins: Sequence[int]) -> dict[int, str | None]:
        asked.append(pins)
        return dict.fromkeys(pins)

    check = doctor.check_gpio(cfg, root=pi_root(tmp_path), gpio_gid=os.getgid(), probe=probe)
    assert check.status == "PASS" and "Raspberry Pi 4" in check.detail
    assert asked == [[23, 17]]  # the button and the relay


def test_pins_held_by_the_running_service_are_not_probed(tmp_path: Path) -> None:
    def probe(pins: Sequence[int]) -> dict[int, str | None]:
        raise AssertionError("must not claim the service's pins")

    check = doctor.check_gpio(
        Config(), root=pi_root(tmp_path), service_active=True, gpio_gid=os.getgid(), probe=probe
    )
    assert check.status == "PASS" and "held by the running" in check.detail


def test_chip_the_gpio_group_cannot_open_fails_with_a_udev_rule(tmp_path: Path) -> None:
    check = doctor.check_gpio(
        Config(), root=pi_root(tmp_path, chip_mode=0o600), gpio_gid=os.getgid() + 1
    )
    assert check.status == "FAIL" and "udev" in check.fix


def test_no_way_to_probe_pins_warns(tmp_path: Path) -> None:
    check = doctor.check_gpio(
        Config(), root=pi_root(tmp_path), gpio_gid=os.getgid(), probe=lambda pins: None
    )
    assert check.status == "WARN" and "python3-lgpio" in check.fix


def test_gpioinfo_and_debugfs_are_read_for_busy_lines(tmp_path: Path) -> None:
    gpioinfo = (
        "gpiochip0 - 58 lines:\n"
        '\tline  17:     "GPIO17"       unused   input  active-high \n'
        '\tline  23:     "GPIO23"     "sysfs"   input  active-high [used]\n'
    )
    assert doctor.parse_gpioinfo(gpioinfo) == {17: None, 23: "sysfs"}
    run = FakeRunner({("gpioinfo", "gpiochip0"): Completed(0, gpioinfo)})
    assert doctor.probe_pins_gpioinfo(run, "gpiochip0", [17, 23]) == {
        17: None,
        23: "in use by 'sysfs'",
    }
    root = fake_root(tmp_path)
    (root / "sys/kernel/debug").mkdir(parents=True)
    (root / "sys/kernel/debug/gpio").write_text(
        "gpiochip0: GPIOs 512-569, parent: platform/fe200000.gpio, pinctrl-bcm2711:\n"
        " gpio-535 (GPIO23              |edge-daemon         ) in  hi IRQ ACTIVE LOW\n"
    )
    assert doctor.probe_pins_debugfs(root, [17, 23]) == {17: None, 23: "in use by 'edge-daemon'"}


# ---------------------------------------------------------------- camera


def test_camera_checks(tmp_path: Path) -> None:
    root = fake_root(tmp_path)
    assert doctor.check_camera(Config(), root=root).status == "SKIP"
    missing = cfg_from(tmp_path, {"camera": {"backend": "file", "file": "snaps"}})
    assert doctor.check_camera(missing, root=root).status == "FAIL"
    (tmp_path / "snaps").mkdir()
    assert doctor.check_camera(missing, root=root).status == "PASS"

    picam = cfg_from(tmp_path, {"camera": {"backend": "picamera2"}})
    check = doctor.check_camera(picam, root=root, find_spec=lambda name: None)
    assert check.status == "FAIL" and "python3-picamera2" in check.fix
    check = doctor.check_camera(
        picam, root=root, find_spec=lambda name: object(), list_cameras=lambda: []
    )
    assert check.status == "FAIL" and "ribbon" in check.fix
    check = doctor.check_camera(
        picam,
        root=root,
        find_spec=lambda name: object(),
        list_cameras=lambda: [{"Model": "imx708"}],
    )
    assert check.status == "PASS" and "imx708" in check.detail

    usb = cfg_from(tmp_path, {"camera": {"backend": "opencv", "device": "0"}})
    assert doctor.check_camera(usb, root=root, find_spec=lambda n: object()).status == "FAIL"
    (root / "dev/video0").touch()
    assert doctor.check_camera(usb, root=root, find_spec=lambda n: object()).status == "PASS"


# ---------------------------------------------------------------- service user and service


def passwd(name: str = "edge-daemon", gid: int = 990) -> pwd.struct_passwd:
    return pwd.struct_passwd((name, "x", 990, gid, "", "/var/lib/edge-daemon", "/usr/sbin/nologin"))


def groups(table: dict[str, list[str]]) -> Callable[[str], grp.struct_group]:
    def getgrnam(name: str) -> grp.struct_group:
        if name not in table:
            raise KeyError(name)
        return grp.struct_group((name, "x", 100 + len(name), table[name]))

    return getgrnam


ALL_IN = {"audio": ["edge-daemon"], "video": ["edge-daemon"], "gpio": ["edge-daemon"]}


def test_service_user_in_all_groups_passes() -> None:
    check = doctor.check_service_user(getpwnam=lambda n: passwd(), getgrnam=groups(ALL_IN))
    assert check.status == "PASS"


def test_missing_group_fails_with_groupadd() -> None:
    table = {k: v for k, v in ALL_IN.items() if k != "gpio"}
    check = doctor.check_service_user(getpwnam=lambda n: passwd(), getgrnam=groups(table))
    assert check.status == "FAIL" and "gpio" in check.detail
    assert "sudo groupadd --system gpio" in check.fix


def test_user_outside_a_group_warns_with_usermod() -> None:
    table = {**ALL_IN, "video": []}
    check = doctor.check_service_user(getpwnam=lambda n: passwd(), getgrnam=groups(table))
    assert check.status == "WARN" and check.fix == "sudo usermod -aG video edge-daemon"


def test_missing_user_fails_or_skips_when_not_installed() -> None:
    def nobody(name: str) -> pwd.struct_passwd:
        raise KeyError(name)

    check = doctor.check_service_user(getpwnam=nobody, getgrnam=groups(ALL_IN))
    assert check.status == "FAIL" and "install.sh" in check.fix
    assert doctor.check_service_user(getpwnam=nobody, installed=False).status == "SKIP"


SHOW = ("systemctl", "show", "edge-daemon", "-p")
SHOW_PROPS = "LoadState,ActiveState,SubState,NRestarts,Result,ExecMainStatus"
LAST_ERROR = ("journalctl", "-u", "edge-daemon", "-p", "err", "-n", "1", "-o", "cat", "--no-pager")


def service_runner(props: str, last_error: str = "") -> FakeRunner:
    return FakeRunner(
        {(*SHOW, SHOW_PROPS): Completed(0, props), LAST_ERROR: Completed(0, last_error)}
    )


def test_service_not_running_systemd_is_skipped(tmp_path: Path) -> None:
    check = doctor.check_service(FakeRunner(), root=fake_root(tmp_path))
    assert check.status == "SKIP" and "not PID 1" in check.detail


def test_service_that_exited_78_fails_with_the_last_error(tmp_path: Path) -> None:
    run = service_runner(
        "LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=0\n"
        "Result=exit-code\nExecMainStatus=78\n",
        "no Gemini API key: set $GEMINI_API_KEY, gemini.api_key_file, or the systemd credential\n",
    )
    check = doctor.check_service(run, root=fake_root(tmp_path, systemd=True))
    assert check.status == "FAIL"
    assert "exit status 78" in check.detail and "no Gemini API key" in check.detail
    assert "config or key" in check.fix


def test_service_restarting_warns_and_running_passes(tmp_path: Path) -> None:
    root = fake_root(tmp_path, systemd=True)
    flaky = service_runner(
        "LoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=3\n"
        "Result=success\nExecMainStatus=0\n",
        "link down\n",
    )
    check = doctor.check_service(flaky, root=root)
    assert check.status == "WARN" and "restarted 3 time(s)" in check.detail
    fine = service_runner(
        "LoadState=loaded\nActiveState=active\nSubState=running\nNRestarts=0\n"
        "Result=success\nExecMainStatus=0\n"
    )
    assert doctor.check_service(fine, root=root).status == "PASS"


def test_service_killed_by_the_watchdog_says_so(tmp_path: Path) -> None:
    run = service_runner(
        "LoadState=loaded\nActiveState=failed\nSubState=failed\nNRestarts=5\n"
        "Result=watchdog\nExecMainStatus=0\n"
    )
    check = doctor.check_service(run, root=fake_root(tmp_path, systemd=True))
    assert check.status == "FAIL" and "watchdog" in check.fix


def test_service_not_installed(tmp_path: Path) -> None:
    run = service_runner("LoadState=not-found\nActiveState=inactive\nSubState=dead\n")
    root = fake_root(tmp_path, systemd=True)
    assert doctor.check_service(run, root=root).status == "FAIL"
    assert doctor.check_service(run, root=root, installed=False).status == "SKIP"


# ---------------------------------------------------------------- the whole report


def test_simulate_gives_a_clean_report_on_a_desktop(tmp_path: Path) -> None:
    machine = doctor.Machine(root=fake_root(tmp_path), run=FakeRunner(), env={})
    cfg = write_config(tmp_path / "c.toml", {"logging": {"level": "info"}})
    checks = doctor.run_checks(doctor.Options(config=str(cfg), simulate=True, live=True), machine)
    by_name = {c.name: c for c in checks}
    assert [c for c in checks if c.status == "FAIL"] == []
    assert doctor.exit_status(checks) == 0
    # The network checks ran for real, against the built-in fake.
    assert by_name["endpoint"].status == "PASS" and "fake" in by_name["endpoint"].detail
    assert by_name["live"].status == "PASS"
    for name in ("microphone", "speaker", "gpio", "service_user", "service"):
        assert by_name[name].status == "SKIP", by_name[name]
        assert by_name[name].detail  # with the reason


def test_report_without_simulate_fails_on_a_desktop(tmp_path: Path) -> None:
    machine = doctor.Machine(root=fake_root(tmp_path), run=FakeRunner(), env={})
    cfg = write_config(
        tmp_path / "c.toml",
        {"gemini": {"endpoint": "ws://127.0.0.1:9/"}, "audio": {"backend": "wav"}},
    )
    checks = doctor.run_checks(doctor.Options(config=str(cfg)), machine)
    failed = {c.name for c in checks if c.status == "FAIL"}
    assert {"api_key", "endpoint", "gpio"} <= failed
    assert doctor.exit_status(checks) == 1
    assert all(c.fix for c in checks if c.status == "FAIL")


def test_text_and_json_output() -> None:
    checks = [
        Check("config", "PASS", "/etc/edge-daemon/config.toml parses"),
        Check("gpio", "FAIL", "GPIO23 busy", "free it"),
    ]
    text = doctor.format_text(checks)
    assert "PASS  config  /etc/edge-daemon/config.toml parses" in text
    assert "FAIL  gpio    GPIO23 busy" in text and "fix: free it" in text
    assert "1 passed, 1 failed" in text
    assert json.loads(doctor.format_json(checks)) == [
        {
            "name": "config",
            "status": "PASS",
            "detail": "/etc/edge-daemon/config.toml parses",
            "fix": "",
        },
        {"name": "gpio", "status": "FAIL", "detail": "GPIO23 busy", "fix": "free it"},
    ]


def _doctor_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", "doctor", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "EDGE_DAEMON_CONFIG")}
    return {**env, **extra}


def test_cli_doctor_json_under_simulate(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "c.toml", {"logging": {"level": "info"}})
    done = _doctor_cli(["--config", str(cfg), "--simulate", "--json"], _clean_env())
    assert done.returncode == 0, done.stdout + done.stderr
    checks = json.loads(done.stdout)
    assert all(set(c) == {"name", "status", "detail", "fix"} for c in checks)
    assert "FAIL" not in {c["status"] for c in checks}


def test_cli_doctor_bad_config_exits_non_zero(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("[audio]\nbackend = 'cassette'\n")
    done = _doctor_cli(["--config", str(cfg)], _clean_env(GEMINI_API_KEY=SECRET))
    assert done.returncode == 1
    assert "FAIL  config" in done.stdout and "audio.backend" in done.stdout
    assert SECRET not in done.stdout + done.stderr


# ---------------------------------------------------------------- real PortAudio, through ALSA


def _alsa_home(tmp_path: Path, mic_pcm: bytes) -> Path:
    """A HOME whose .asoundrc makes the default device a file-backed mic and speaker."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "in.raw").write_bytes(mic_pcm)
    (home / ".asoundrc").write_text(
        'pcm.!default { type asym; playback.pcm "spk"; capture.pcm "mic" }\n'
        f'pcm.spk {{ type file; slave.pcm "null"; file "{home}/out.raw"; format "raw" }}\n'
        f'pcm.mic {{ type file; slave.pcm "null"; file "/dev/null"; infile "{home}/in.raw"; '
        'format "raw" }\n'
    )
    return home


def _real_audio_doctor(tmp_path: Path, home: Path) -> dict[str, dict[str, str]]:
    pytest.importorskip("pyaudio")
    cfg = write_config(tmp_path / "c.toml", {"audio": {"backend": "pyaudio"}})
    # Its own process: ALSA reads its configuration once per process.
    done = subprocess.run(
        [
            *(sys.executable, "-m", "edge_daemon.doctor", "--config", str(cfg)),
            *("--simulate", "--listen", "--beep", "--json"),
        ],
        capture_output=True,
        text=True,
        env=_clean_env(HOME=str(home)),
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    return {c["name"]: c for c in json.loads(done.stdout)}


def test_real_mic_hears_speech_and_speaker_plays_the_beep(tmp_path: Path) -> None:
    speech = make_speech("Turn on the lamp.", tmp_path / "speech.wav")
    import wave

    with wave.open(str(speech), "rb") as w:
        pcm = w.readframes(w.getnframes())
    home = _alsa_home(tmp_path, pcm)
    checks = _real_audio_doctor(tmp_path, home)
    assert checks["microphone"]["status"] == "PASS", checks["microphone"]
    assert "hears sound" in checks["microphone"]["detail"]
    assert checks["speaker"]["status"] == "PASS", checks["speaker"]
    assert (home / "out.raw").stat().st_size == 2 * int(0.4 * 24000)


def test_real_mic_hearing_silence_fails(tmp_path: Path) -> None:
    if not shutil.which("espeak-ng"):
        pytest.skip("ALSA test setup follows the speech tests")
    checks = _real_audio_doctor(tmp_path, _alsa_home(tmp_path, bytes(2 * 16000 * 2)))
    assert checks["microphone"]["status"] == "FAIL"
    assert "silence" in checks["microphone"]["detail"]


def test_a_broken_config_still_lists_every_check(tmp_path: Path) -> None:
    bad = tmp_path / "c.toml"
    bad.write_text("[audio\n")
    machine = doctor.Machine(root=fake_root(tmp_path), run=FakeRunner(), env={})
    broken = doctor.run_checks(doctor.Options(config=str(bad)), machine)
    good = write_config(tmp_path / "good.toml", {"logging": {"level": "info"}})
    fine = doctor.run_checks(doctor.Options(config=str(good), simulate=True), machine)
    assert [c.name for c in broken] == [c.name for c in fine]
    assert broken[0].status == "FAIL"
    assert {c.status for c in broken[1:-3]} == {"SKIP"}
    assert broken[-1].name == "link" and broken[-1].status == "SKIP"  # no daemon to ask


# -- voice -------------------------------------------------------------------------


def test_voice_is_skipped_for_the_button_only() -> None:
    assert doctor.check_voice(Config()).status == "SKIP"


def test_voice_with_a_builtin_wake_word_and_echo_cancel_passes() -> None:
    cfg = with_overrides(Config(), {"wake.model": "okay_nabu", "audio.echo_cancel": True})
    check = doctor.check_voice(cfg, load_wake=lambda model, _base: "Okay Nabu")
    assert check.status == "PASS", check
    assert "Okay Nabu" in check.detail and "echo cancellation" in check.detail


def test_voice_without_the_webrtc_wheel_says_half_duplex() -> None:
    cfg = with_overrides(Config(), {"wake.model": "alexa", "audio.echo_cancel": True})
    check = doctor.check_voice(
        cfg,
        find_spec=lambda name: None if name == "pywebrtc_audio" else object(),
        machine="armv7l",
        load_wake=lambda model, _base: "Alexa",
    )
    assert check.status == "WARN" and "half duplex" in check.detail and "armv7l" in check.detail


def test_voice_without_the_packages_fails_with_the_install_command() -> None:
    cfg = with_overrides(Config(), {"wake.model": "alexa"})
    check = doctor.check_voice(cfg, find_spec=lambda name: None)
    assert check.status == "FAIL" and "edge-daemon[voice]" in check.fix


def test_voice_with_a_missing_custom_model_fails_naming_it(tmp_path: Path) -> None:
    cfg = with_overrides(Config(), {"wake.model": str(tmp_path / "mine.json")})
    check = doctor.check_voice(cfg)
    assert check.status == "FAIL" and "mine.json" in check.detail
    assert "does not exist" in check.detail
