"""The installed service in a booted container, as the boot tests drive it:
the fake Gemini on the host, the installer run for real, the test's config and
drop-ins, and the checks every architecture shares (the service comes up, one
push-to-talk turn end to end, a restart after `kill -9`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sys
import threading
import wave
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from boot_container import (
    BootedContainer,
    checkout_files,
    cleanup_stale,
    emulated,
    ensure_rootfs,
    host_of,
    reachable,
    recipe,
    slowdown,
    timed,
    wait_until,
    why_not_runnable,
)
from conftest import ROOT, SECRET

from edge_daemon.fake_gemini import FakeGemini

UNIT = "edge-daemon"
VENV_BIN = "/opt/edge-daemon/venv/bin"
CTL = [f"{VENV_BIN}/edge-daemon", "ctl", "--socket", "/run/edge-daemon/control.sock"]
OUTPUT_WAV = "/var/lib/edge-daemon/answers.wav"
INPUT_WAV = "/etc/edge-daemon/question.wav"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINER_CA = "/etc/edge-test/host-ca.pem"
KEY_ENV = "/etc/edge-daemon/test-key.env"
INSTALL_SH = "/root/app/systemd/install.sh"
RELAY = "pump"

T = TypeVar("T")


def progress(text: str) -> None:
    print(f"[boot] {text}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the container


def cannot_run(reason: str) -> NoReturn:
    """Skip with the reason; under CI=true fail instead: CI must not go green
    by skipping the boot tests (.ci/run installs what they need)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the boot test cannot run: {reason}", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def booted(arch: str) -> Iterator[BootedContainer]:
    """A freshly booted bare root of ``arch``, or a skip that says why not.

    The cached root is built first if need be, or waited for if another
    process is building it (see conftest.pi_roots_in_background)."""
    reason = why_not_runnable(arch)
    if reason:
        cannot_run(f"boot test ({arch}): {reason}")
    r = recipe(arch)
    # The installer's apt step needs the mirror even when the root is cached.
    for host, port in (host_of(r.mirror), ("pypi.org", 443)):
        if not reachable(host, port):
            cannot_run(f"boot test ({arch}): {host}:{port} is unreachable; the installer needs it")
    cleanup_stale(progress)
    with timed(arch, "root ready (cached or built)"):
        rootfs = ensure_rootfs(r, progress)
    c = BootedContainer(rootfs, arch=arch)
    try:
        with timed(arch, "boot"):
            c.start()
        trust_host_ca(c)
        yield c
    finally:
        with timed(arch, "shutdown"):
            c.teardown()


def trust_host_ca(c: BootedContainer) -> None:
    """Where this host reaches PyPI through a TLS proxy with its own CA, the
    container's pip trusts what the host trusts (bookworm's pip uses its own
    bundle otherwise): the network's setting, in /etc/pip.conf, so it holds
    under sudo too."""
    if not any(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        return
    c.write(CONTAINER_CA, HOST_CA.read_bytes())
    c.write("/etc/pip.conf", f"[global]\ncert = {CONTAINER_CA}\n")


def apt_required() -> list[str]:
    """The installer's list of required apt packages, read from install.sh."""
    text = (ROOT / "systemd/install.sh").read_text()
    m = re.search(r"^readonly APT_REQUIRED=\(([^)]*)\)", text, re.M)
    assert m, "no APT_REQUIRED=(...) in systemd/install.sh"
    return m[1].split()


def installed_packages(c: BootedContainer, names: list[str]) -> set[str]:
    out = c.run(
        ["dpkg-query", "-W", "-f", "${Package} ${db:Status-Status}\n", *names], check=False
    ).stdout
    return {line.split()[0] for line in out.splitlines() if line.endswith(" installed")}


def copy_checkout(c: BootedContainer) -> None:
    c.copy_tree(checkout_files(ROOT), ROOT, "/root/app")


# ---------------------------------------------------------------- the fake Gemini


class FakeInThread:
    """The fake Gemini on its own event loop thread: the tests block in
    subprocesses (nsenter) while the daemon in the container talks to it."""

    def __init__(self, **knobs: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="fake-gemini", daemon=True
        )
        self.thread.start()

        async def make() -> FakeGemini:
            fake = FakeGemini(**knobs)
            await fake.start("127.0.0.1", 0)
            return fake

        self.fake = self.call(make())

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float = 60.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def read(self, fn: Callable[[FakeGemini], T]) -> T:
        """``fn(fake)`` on the fake's own thread, so it never sees a half-made change."""

        async def on_loop() -> T:
            return fn(self.fake)

        return self.call(on_loop())

    def wait_for(self, predicate: Callable[[FakeGemini], T], timeout_s: float = 30.0) -> T:
        return self.call(self.fake.wait_for(predicate, timeout_s), timeout_s + 10)

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.call(self.fake.stop(), 15)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def new_fake() -> FakeInThread:
    return FakeInThread(api_key=SECRET, pace=4.0, reply_text="The lamp is on now.")


# ---------------------------------------------------------------- config and drop-ins


def service_config(fake_url: str) -> str:
    return f"""\
# Written by the boot tests
[gemini]
endpoint = "{fake_url}"

[audio]
backend = "wav"
input_wav = "{INPUT_WAV}"
output_wav = "{OUTPUT_WAV}"

[control]
# Explicit, or --simulate would pick a per-user socket.
socket = "/run/edge-daemon/control.sock"
keyboard = false

[[tools.relay]]
name = "{RELAY}"
pin = 17
active_high = true
"""


def dropin_for_tests(slow: float) -> str:
    """Only what the tests need changed: --simulate (mock GPIO, there is none),
    a short watchdog (so a hang is caught in seconds), no core dumps; and the
    unit's time limits stretched by ``slow`` under emulation."""
    return f"""\
[Service]
ExecStart=
ExecStart={VENV_BIN}/edge-daemon run --simulate --config /etc/edge-daemon/config.toml
ExecStartPre=
ExecStartPre=-{VENV_BIN}/edge-daemon safe-state --simulate --config /etc/edge-daemon/config.toml
ExecStopPost=
ExecStopPost=-{VENV_BIN}/edge-daemon safe-state --simulate --config /etc/edge-daemon/config.toml
WatchdogSec={3 * slow:g}s
TimeoutStartSec={60 * slow:g}s
TimeoutStopSec={15 * slow:g}s
LimitCORE=0
"""


# The one emulation limit, worked around here and only under emulation:
# systemd under qemu-user cannot set up LoadCredential= (the mount calls it
# makes are missing from the emulator: "Failed to set up credentials: Invalid
# argument", status=243/CREDENTIALS). This drop-in hands the daemon the same
# key through $GEMINI_API_KEY, a source it also reads; nothing else changes.
EMULATION_KEY_DROPIN = f"""\
[Service]
LoadCredential=
EnvironmentFile={KEY_ENV}
"""


def configure(c: BootedContainer, fake: FakeInThread, speech: Path) -> None:
    """The test's config, speech and drop-ins; the unit enabled, so systemd
    keeps it loaded (and its Result) while stopped."""
    c.write("/etc/edge-daemon/config.toml", service_config(fake.fake.url))
    c.write(INPUT_WAV, speech.read_bytes())
    c.write(f"/etc/systemd/system/{UNIT}.service.d/test.conf", dropin_for_tests(slowdown(c.arch)))
    if emulated(c.arch):
        c.write(KEY_ENV, f"GEMINI_API_KEY={SECRET}\n", mode=0o600)
        c.write(f"/etc/systemd/system/{UNIT}.service.d/emulation.conf", EMULATION_KEY_DROPIN)
    c.run(["systemctl", "daemon-reload"])
    c.run(["systemctl", "enable", UNIT])


# ---------------------------------------------------------------- the service


@dataclass
class Installed:
    c: BootedContainer
    fake: FakeInThread
    install_log: str
    uid: int
    speech: Path
    # Which of the installer's required apt packages the bare root had before.
    preinstalled: frozenset[str] = frozenset()

    @property
    def slow(self) -> float:
        return slowdown(self.c.arch)

    def active(self) -> bool:
        return self.c.run(["systemctl", "is-active", "--quiet", UNIT], check=False).returncode == 0

    def start(self) -> None:
        """`systemctl start`, which returns once the daemon said READY=1; on
        failure, the unit's status and its last log lines say why."""
        done = self.c.run(["systemctl", "start", UNIT], timeout_s=90, check=False)
        if done.returncode != 0:
            status = self.c.run(["systemctl", "status", "--no-pager", UNIT], check=False).stdout
            log = self.c.journal("-u", UNIT, "-o", "cat", "-n", "25")
            raise AssertionError(
                f"systemctl start {UNIT} failed: {done.stderr.strip()}\n{status}\n{log}"
            )

    def ensure_active(self) -> None:
        if not self.active():
            self.c.run(["systemctl", "reset-failed", UNIT], check=False)
            self.start()

    def main_pid(self) -> int:
        return int(self.c.show(UNIT, "MainPID")["MainPID"])

    def props(self, *names: str) -> dict[str, str]:
        return self.c.show(UNIT, *names)

    def ctl(self, *args: str, timeout_s: float = 30.0) -> dict[str, Any]:
        done = self.c.run([*CTL, *args], timeout_s=timeout_s)
        return json.loads(done.stdout)

    def kill(self, signal: str, pid: int) -> None:
        # minbase has no procps: bash's builtin kill, inside, with the container's PID.
        self.c.run(["bash", "-c", f"kill -{signal} {pid}"])

    def wait_session(self, timeout_s: float = 30.0) -> None:
        self.fake.wait_for(
            lambda f: f.active is not None and f.active.setup_complete_sent, timeout_s * self.slow
        )

    def wait_restarted(self, old_pid: int, restarts: int, timeout_s: float = 60.0) -> None:
        def back() -> bool:
            p = self.props("ActiveState", "NRestarts", "MainPID")
            return (
                p["ActiveState"] == "active"
                and int(p["NRestarts"]) >= restarts
                and p["MainPID"] not in ("0", str(old_pid))
            )

        wait_until(
            back,
            timeout_s * self.slow,
            f"{UNIT} restarted (NRestarts >= {restarts}) and active",
            0.2,
        )


def install_for_test(c: BootedContainer, speech: Path) -> Iterator[Installed]:
    """The checkout installed with install.sh (apt step and all) on the bare
    root, then set up for the tests; the fake stops when the caller is done."""
    copy_checkout(c)
    before = frozenset(installed_packages(c, apt_required()))
    with timed(c.arch, "install.sh (apt, pip, unit)"):
        done = c.run(
            [INSTALL_SH, "--no-start"],
            env={"GEMINI_API_KEY": SECRET},
            timeout_s=900,
        )
    fake = new_fake()
    try:
        configure(c, fake, speech)
        uid = int(c.run(["id", "-u", "edge-daemon"]).stdout)
        yield Installed(c, fake, done.stdout + done.stderr, uid, speech, before)
    finally:
        fake.stop()


def status_ids(status: str, field: str) -> list[str]:
    m = re.search(rf"^{field}:\s*(.*)$", status, re.M)
    assert m, f"no {field} in /proc status"
    return m[1].split()


# ---------------------------------------------------------------- shared checks


def check_started_as_the_service_user(installed: Installed) -> None:
    c = installed.c
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    # Type=notify: `start` returns only once the daemon said READY=1.
    with timed(c.arch, "service up (systemctl start)"):
        installed.start()
    assert installed.props("ActiveState", "SubState") == {
        "ActiveState": "active",
        "SubState": "running",
    }
    status = c.path(f"/proc/{installed.main_pid()}/status").read_text()
    assert status_ids(status, "Uid") == [str(installed.uid)] * 4
    gids = {c.run(["getent", "group", g]).stdout.split(":")[2] for g in ("audio", "video", "gpio")}
    assert gids <= set(status_ids(status, "Groups"))
    assert status_ids(status, "NoNewPrivs") == ["1"]
    assert status_ids(status, "CapEff") == ["0000000000000000"]


def check_push_to_talk_turn(installed: Installed) -> None:
    """One turn, end to end: the button press streams the speech to the fake,
    the release ends the turn, and the fake's spoken reply lands in the WAV."""
    installed.ensure_active()
    fake, slow = installed.fake, installed.slow
    installed.wait_session()
    assert installed.ctl("wait", "idle", "--timeout", f"{20 * slow:g}")["ok"]
    turns_before = fake.read(lambda f: len(f.turns))
    heard_before = fake.read(lambda f: f.audio_received_s())

    with timed(installed.c.arch, "push-to-talk turn"):
        assert installed.ctl("press")["ok"]
        fake.wait_for(
            lambda f: (
                f.active is not None
                and f.active.capture is not None
                and f.audio_received_s() - heard_before >= 1.0
            ),
            30 * slow,
        )
        assert installed.ctl("release")["ok"]
        fake.wait_for(lambda f: len(f.turns) > turns_before and f.turns[-1].completed, 60 * slow)
        idle = installed.ctl("wait", "idle", "--timeout", f"{60 * slow:g}", timeout_s=70)
        assert idle["ok"]

    def kinds(f: FakeGemini) -> list[str]:
        assert f.active is not None
        return [k for msg in f.active.received for k in msg.get("realtimeInput", {})]

    seen = fake.read(kinds)
    start = len(seen) - 1 - seen[::-1].index("activityStart")
    turn = seen[start:]
    assert turn[0] == "activityStart" and turn[-1] == "activityEnd"
    assert turn.count("audio") >= 25  # >= 1 s of 40 ms chunks
    reply = fake.read(lambda f: bytes(f.turns[-1].reply_pcm))
    assert reply

    with wave.open(str(installed.c.path(OUTPUT_WAV)), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (24000, 1, 2)
        played = w.readframes(w.getnframes())
    assert played.endswith(reply)


def check_killed_daemon_restarts(installed: Installed) -> None:
    installed.ensure_active()
    installed.wait_session()
    before = installed.props("NRestarts", "MainPID")
    connections = installed.fake.read(lambda f: len(f.connections))
    with timed(installed.c.arch, "restart after kill -9"):
        installed.kill("9", int(before["MainPID"]))
        installed.wait_restarted(int(before["MainPID"]), int(before["NRestarts"]) + 1)
        # And it is back in business: a new session with the fake.
        installed.fake.wait_for(
            lambda f: (
                len(f.connections) > connections
                and f.active is not None
                and f.active.setup_complete_sent
            ),
            30 * installed.slow,
        )
    # Once: a restart, not a restart loop.
    assert int(installed.props("NRestarts")["NRestarts"]) == int(before["NRestarts"]) + 1

    # The killed process switched nothing off; the unit's ExecStopPost did,
    # and said after what.
    def after_kill() -> list[dict[str, str]]:
        out = installed.c.journal("-o", "json", "EDGE_EVENT=safe_state", f"EDGE_TOOL={RELAY}")
        records = [json.loads(line) for line in out.splitlines()]
        return [r for r in records if r.get("EDGE_CAUSE") == "stop:signal:killed:KILL"]

    wait_until(lambda: bool(after_kill()), 10 * installed.slow, "safe-state's record after kill -9")
    assert all(r.get("EDGE_LEVEL") == "0" for r in after_kill())
