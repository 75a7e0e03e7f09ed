"""The installed service under a real systemd: Debian bookworm booted in
systemd-nspawn, the checkout installed with systemd/install.sh, the daemon
talking to a fake Gemini on the host.

Runs as root where systemd-nspawn and debootstrap exist and the Debian mirror
and PyPI are reachable; skips with the reason otherwise, or with
EDGE_SKIP_BOOT_TEST=1. The first run builds the root file system (about a
minute) into /var/cache/edge-daemon-test; later runs reuse it.

The tests share one container and run in file order: install, start, talk,
crash, hang, stop, upgrade, break the unit, uninstall.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import sys
import threading
import wave
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest
from boot_container import (
    BootedContainer,
    apt_mirror,
    checkout_files,
    cleanup_stale,
    ensure_rootfs,
    host_of,
    reachable,
    rootfs_path,
    wait_until,
    why_not_runnable,
)
from conftest import ROOT, SECRET

from edge_daemon.fake_gemini import FakeGemini

pytestmark = pytest.mark.timeout(900)

UNIT = "edge-daemon"
VENV_BIN = "/opt/edge-daemon/venv/bin"
CTL = [f"{VENV_BIN}/edge-daemon", "ctl", "--socket", "/run/edge-daemon/control.sock"]
OUTPUT_WAV = "/var/lib/edge-daemon/answers.wav"
INPUT_WAV = "/etc/edge-daemon/question.wav"
HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
RELAY = "pump"

T = TypeVar("T")


def _progress(text: str) -> None:
    print(f"[boot] {text}", file=sys.stderr, flush=True)


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


@dataclass
class Installed:
    c: BootedContainer
    fake: FakeInThread
    install_log: str
    uid: int
    speech: Path

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

    def wait_restarted(self, old_pid: int, restarts: int, timeout_s: float = 60.0) -> None:
        def back() -> bool:
            p = self.props("ActiveState", "NRestarts", "MainPID")
            return (
                p["ActiveState"] == "active"
                and int(p["NRestarts"]) >= restarts
                and p["MainPID"] not in ("0", str(old_pid))
            )

        wait_until(back, timeout_s, f"{UNIT} restarted (NRestarts >= {restarts}) and active", 0.2)


def _config(fake_url: str) -> str:
    return f"""\
# Written by tests/test_boot.py
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


# Only what the test needs changed: --simulate (mock GPIO, there is none), a
# short watchdog (so a hang is caught in seconds) and no core dumps.
DROPIN = f"""\
[Service]
ExecStart=
ExecStart={VENV_BIN}/edge-daemon run --simulate --config /etc/edge-daemon/config.toml
ExecStartPre=
ExecStartPre=-{VENV_BIN}/edge-daemon safe-state --simulate --config /etc/edge-daemon/config.toml
ExecStopPost=
ExecStopPost=-{VENV_BIN}/edge-daemon safe-state --simulate --config /etc/edge-daemon/config.toml
WatchdogSec=3s
LimitCORE=0
"""


@pytest.fixture(scope="module")
def container() -> Iterator[BootedContainer]:
    reason = why_not_runnable()
    if reason:
        pytest.skip(f"boot test: {reason}")
    mirror = apt_mirror()
    if not rootfs_path(mirror).is_dir() and not reachable(*host_of(mirror)):
        pytest.skip(f"boot test: no cached root and the mirror {mirror} is not reachable")
    if not reachable("pypi.org", 443):
        pytest.skip("boot test: PyPI (pypi.org:443) is not reachable; the installer needs it")
    cleanup_stale(_progress)
    rootfs = ensure_rootfs(mirror, _progress)
    c = BootedContainer(rootfs)
    try:
        c.start()
        yield c
    finally:
        c.teardown()


@pytest.fixture(scope="module")
def installed(container: BootedContainer, speech_wav: Path) -> Iterator[Installed]:
    c = container
    c.copy_tree(checkout_files(ROOT), ROOT, "/root/app")
    env = {"GEMINI_API_KEY": SECRET}
    if any(Path("/usr/local/share/ca-certificates").glob("*.crt")):
        # This host reaches PyPI through a TLS proxy; bookworm's pip trusts only
        # its own bundle unless told otherwise.
        c.write("/root/host-ca.crt", HOST_CA.read_bytes())
        env["PIP_CERT"] = "/root/host-ca.crt"
    done = c.run(["/root/app/systemd/install.sh", "--no-start"], env=env, timeout_s=600)
    install_log = done.stdout + done.stderr
    fake = FakeInThread(api_key=SECRET, pace=4.0, reply_text="The lamp is on now.")
    try:
        c.write("/etc/edge-daemon/config.toml", _config(fake.fake.url))
        c.write(INPUT_WAV, speech_wav.read_bytes())
        c.write(f"/etc/systemd/system/{UNIT}.service.d/test.conf", DROPIN)
        c.run(["systemctl", "daemon-reload"])
        # Enabled, so systemd keeps the unit loaded (and its Result) while stopped.
        c.run(["systemctl", "enable", UNIT])
        uid = int(c.run(["id", "-u", "edge-daemon"]).stdout)
        yield Installed(c, fake, install_log, uid, speech_wav)
    finally:
        fake.stop()


def _status_ids(status: str, field: str) -> list[str]:
    m = re.search(rf"^{field}:\s*(.*)$", status, re.M)
    assert m, f"no {field} in /proc status"
    return m[1].split()


# ---------------------------------------------------------------- install


def test_installer_sets_up_user_files_and_unit(installed: Installed) -> None:
    c = installed.c
    assert SECRET not in installed.install_log
    assert "key taken from $GEMINI_API_KEY" in installed.install_log
    groups = c.run(["id", "-nG", "edge-daemon"]).stdout.split()
    assert {"edge-daemon", "audio", "video", "gpio"} <= set(groups)
    key = c.run(["stat", "-c", "%U:%G %a", "/etc/edge-daemon/gemini-api-key"]).stdout.strip()
    assert key == "root:root 600"
    assert c.path("/etc/edge-daemon/gemini-api-key").read_text().strip() == SECRET
    unit = c.path(f"/etc/systemd/system/{UNIT}.service").read_text()
    assert f"ExecStart={VENV_BIN}/edge-daemon run --config /etc/edge-daemon/config.toml" in unit
    assert c.path(f"{VENV_BIN}/edge-daemon").exists()
    assert c.run(["readlink", "/usr/local/bin/edge-daemon"]).stdout.strip() == (
        f"{VENV_BIN}/edge-daemon"
    )
    # The venv sees apt's python3-systemd: logging goes to journald with fields.
    c.run([f"{VENV_BIN}/python", "-c", "import systemd.journal"])


# ---------------------------------------------------------------- running


def test_start_returns_active_running_as_the_service_user(installed: Installed) -> None:
    c = installed.c
    c.run(["systemctl", "stop", UNIT])
    # Type=notify: `start` returns only once the daemon said READY=1.
    installed.start()
    assert installed.props("ActiveState", "SubState") == {
        "ActiveState": "active",
        "SubState": "running",
    }
    status = c.path(f"/proc/{installed.main_pid()}/status").read_text()
    assert _status_ids(status, "Uid") == [str(installed.uid)] * 4
    gids = {c.run(["getent", "group", g]).stdout.split(":")[2] for g in ("audio", "video", "gpio")}
    assert gids <= set(_status_ids(status, "Groups"))
    assert _status_ids(status, "NoNewPrivs") == ["1"]
    assert _status_ids(status, "CapEff") == ["0000000000000000"]


def test_key_arrives_from_the_credential_in_a_header(installed: Installed) -> None:
    installed.ensure_active()
    fake = installed.fake
    conn = fake.wait_for(lambda f: f.active is not None and f.active.setup_complete_sent, 30)
    assert fake.read(lambda f: f.active and f.active.auth_method) == "header"
    assert fake.read(lambda f: SECRET not in f.active.request_path if f.active else False)
    assert conn
    pid = installed.main_pid()
    # It came through LoadCredential=, not the environment or the command line.
    environ = installed.c.path(f"/proc/{pid}/environ").read_bytes()
    assert SECRET.encode() not in environ
    assert b"CREDENTIALS_DIRECTORY=" in environ
    assert SECRET.encode() not in installed.c.path(f"/proc/{pid}/cmdline").read_bytes()


def test_push_to_talk_streams_speech_and_the_reply_lands_in_the_wav(
    installed: Installed,
) -> None:
    installed.ensure_active()
    fake = installed.fake
    fake.wait_for(lambda f: f.active is not None and f.active.setup_complete_sent, 30)
    assert installed.ctl("wait", "idle", "--timeout", "20")["ok"]
    turns_before = fake.read(lambda f: len(f.turns))
    heard_before = fake.read(lambda f: f.audio_received_s())

    assert installed.ctl("press")["ok"]
    fake.wait_for(
        lambda f: (
            f.active is not None
            and f.active.capture is not None
            and f.audio_received_s() - heard_before >= 1.0
        ),
        30,
    )
    assert installed.ctl("release")["ok"]
    fake.wait_for(lambda f: len(f.turns) > turns_before and f.turns[-1].completed, 60)
    assert installed.ctl("wait", "idle", "--timeout", "60", timeout_s=70)["ok"]

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


def test_journal_has_structured_fields_and_never_the_key(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    records = [json.loads(line) for line in c.journal("-u", UNIT, "-o", "json").splitlines()]
    ours = [r for r in records if r.get("SYSLOG_IDENTIFIER") == "edge-daemon"]
    assert ours, "no journal records from the daemon"
    assert any("EDGE_STATE" in r for r in ours)
    assert {"idle", "listening"} <= {r.get("EDGE_STATE") for r in ours}
    assert all(r.get("_SYSTEMD_UNIT") == f"{UNIT}.service" for r in ours)
    # The README's filter: the unit's records with one field value, and only those.
    idle = [
        json.loads(line)
        for line in c.journal("-u", UNIT, "EDGE_STATE=idle", "-o", "json").splitlines()
    ]
    assert idle and all(r.get("EDGE_STATE") == "idle" for r in idle)
    everything = c.journal("-o", "json")
    assert SECRET not in everything
    assert SECRET not in c.console_text()


def test_a_killed_daemon_is_restarted(installed: Installed) -> None:
    installed.ensure_active()
    before = installed.props("NRestarts", "MainPID")
    connections = installed.fake.read(lambda f: len(f.connections))
    installed.kill("9", int(before["MainPID"]))
    installed.wait_restarted(int(before["MainPID"]), int(before["NRestarts"]) + 1)
    # And it is back in business: a new session with the fake.
    installed.fake.wait_for(
        lambda f: len(f.connections) > connections and f.active and f.active.setup_complete_sent,
        30,
    )


def test_a_hung_daemon_is_restarted_by_the_watchdog(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    assert installed.props("WatchdogUSec")["WatchdogUSec"] == "3s"
    # The pings arrive: the watchdog timestamp moves on its own.
    first = installed.props("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    wait_until(
        lambda: (
            installed.props("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != first
        ),
        10,
        "a WATCHDOG=1 ping",
    )
    before = installed.props("NRestarts", "MainPID")
    installed.kill("STOP", int(before["MainPID"]))
    installed.wait_restarted(int(before["MainPID"]), int(before["NRestarts"]) + 1, 60)
    wait_until(
        lambda: "Watchdog timeout" in c.journal("-u", UNIT, "-o", "cat", "-n", "50"),
        10,
        "systemd's watchdog message in the journal",
        0.2,
    )


def test_stop_is_clean(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    props = installed.props("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert props["ActiveState"] == "inactive"
    assert props["Result"] == "success"
    assert props["ExecMainStatus"] == "0"
    assert props["ExecMainCode"] == "1"  # CLD_EXITED: it exited, it was not killed


def test_relays_are_safe_after_a_stop(installed: Installed) -> None:
    """The daemon switches the relay off as it stops, then the unit's
    ExecStopPost drives it to its off level (low: it is active-high) again."""
    c = installed.c
    installed.ensure_active()
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    records = [
        json.loads(line)
        for line in c.journal("-o", "json", "-b", "EDGE_TOOL=" + RELAY).splitlines()
    ]
    shutdown = [
        r
        for r in records
        if r.get("EDGE_EVENT") == "relay_off" and r.get("EDGE_CAUSE") == "shutdown"
    ]
    assert shutdown, f"no relay_off for {RELAY} at shutdown: {records[-3:]}"
    last = records[-1]
    assert last.get("EDGE_EVENT") == "safe_state", records[-3:]
    assert last.get("EDGE_LEVEL") == "0" and last.get("EDGE_PIN") == "17", last


def test_security_exposure_is_at_most_3(installed: Installed) -> None:
    out = installed.c.run(["systemd-analyze", "security", "--no-pager", UNIT]).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out[-2000:]
    print(f"systemd-analyze security {UNIT}: {m[1]}")  # shown with -rP / -s
    assert float(m[1]) <= 3.0, out[-3000:]


def test_doctor_reports_the_installed_service(installed: Installed) -> None:
    installed.ensure_active()
    done = installed.c.run(
        [f"{VENV_BIN}/edge-daemon", "doctor", "--simulate", "--json", "--live"], check=False
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert SECRET not in done.stdout + done.stderr
    assert checks["service"]["status"] == "PASS", checks["service"]
    assert checks["service_user"]["status"] == "PASS", checks["service_user"]
    assert checks["api_key"]["status"] == "PASS", checks["api_key"]
    assert "gemini-api-key" in checks["api_key"]["detail"]
    assert checks["endpoint"]["status"] == "PASS", checks["endpoint"]
    assert checks["live"]["status"] == "PASS", checks["live"]
    assert checks["gpio"]["status"] == "SKIP"
    failed = [c for c in checks.values() if c["status"] == "FAIL"]
    assert not failed and done.returncode == 0, failed


# ---------------------------------------------------------------- upgrade


def _pip_env(c: BootedContainer) -> dict[str, str]:
    return {"PIP_CERT": "/root/host-ca.crt"} if c.path("/root/host-ca.crt").exists() else {}


def _sha(c: BootedContainer, inside: str) -> str:
    return hashlib.sha256(c.path(inside).read_bytes()).hexdigest()


def test_second_install_upgrades_keeps_config_and_key_restarts_the_service(
    installed: Installed,
) -> None:
    installed.ensure_active()
    c = installed.c
    config, key, pid = (
        _sha(c, "/etc/edge-daemon/config.toml"),
        _sha(c, "/etc/edge-daemon/gemini-api-key"),
        installed.main_pid(),
    )
    out = c.run(["/root/app/systemd/install.sh"], env=_pip_env(c), timeout_s=600).stdout
    assert "kept your /etc/edge-daemon/config.toml" in out
    assert "kept the existing key" in out
    assert _sha(c, "/etc/edge-daemon/config.toml") == config
    assert _sha(c, "/etc/edge-daemon/gemini-api-key") == key
    assert installed.active()
    assert installed.main_pid() != pid


# ---------------------------------------------------------------- a broken unit fails


@contextlib.contextmanager
def _broken_unit(c: BootedContainer, old: str, new: str) -> Iterator[None]:
    """The installed unit with one line replaced, restored afterwards."""
    path = c.path(f"/etc/systemd/system/{UNIT}.service")
    original = path.read_text()
    assert old in original, f"{old!r} is not in the unit"
    path.write_text(original.replace(old, new))
    c.run(["systemctl", "daemon-reload"])
    try:
        yield
    finally:
        c.run(["systemctl", "stop", UNIT], check=False)  # ends a pending auto-restart
        path.write_text(original)
        c.run(["systemctl", "daemon-reload"])
        c.run(["systemctl", "reset-failed", UNIT], check=False)


@pytest.mark.parametrize(
    ("old", "new", "symptom", "logged"),
    [
        pytest.param(
            "SupplementaryGroups=gpio audio video",
            "SupplementaryGroups=gpio audio video nosuchgroup",
            "status=216/GROUP",
            "Failed to determine supplementary groups",
            id="missing-group",
        ),
        pytest.param(
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "RestrictAddressFamilies=AF_INET AF_INET6",
            # No AF_UNIX, no control socket: a configuration error, not retried.
            "status=78",
            "Address family not supported by protocol",
            id="no-AF_UNIX",
        ),
    ],
)
def test_a_broken_unit_fails_to_start(
    installed: Installed, old: str, new: str, symptom: str, logged: str
) -> None:
    """The same start that passes above fails once the unit is wrong: proof the
    checks above see what systemd really does with the unit."""
    c = installed.c
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    c.run(["systemctl", "reset-failed", UNIT], check=False)
    with _broken_unit(c, old, new):
        failed = c.run(["systemctl", "start", UNIT], timeout_s=90, check=False)
        status = c.run(["systemctl", "status", "--no-pager", UNIT], check=False).stdout
        assert failed.returncode != 0, status
        # Restart=on-failure may already be waiting to try again: anything but up.
        assert installed.props("ActiveState")["ActiveState"] != "active", status
        assert symptom in status, status
        # The failing child's own message can reach the journal after systemd's.
        wait_until(
            lambda: logged in c.journal("-u", UNIT, "-o", "cat", "-n", "60"),
            10,
            f"{logged!r} in the journal",
            0.2,
        )


# ---------------------------------------------------------------- removal


def test_uninstall_keeps_config_and_key_purge_removes_everything(installed: Installed) -> None:
    c = installed.c
    c.run(["/root/app/systemd/install.sh", "--uninstall"])
    assert not c.path(f"/etc/systemd/system/{UNIT}.service").exists()
    assert not c.path("/opt/edge-daemon").exists()
    assert not c.path("/usr/local/bin/edge-daemon").is_symlink()
    assert c.path("/etc/edge-daemon/config.toml").exists()
    assert c.path("/etc/edge-daemon/gemini-api-key").exists()
    assert c.show(UNIT, "LoadState")["LoadState"] == "not-found"

    c.run(["/root/app/systemd/install.sh", "--purge"])
    assert not c.path("/etc/edge-daemon").exists()
    assert not c.path("/var/lib/edge-daemon").exists()
    assert c.run(["getent", "passwd", "edge-daemon"], check=False).returncode == 2
    assert c.run(["getent", "group", "edge-daemon"], check=False).returncode == 2
    assert c.run(["getent", "group", "gpio"], check=False).returncode == 0


def test_without_a_key_the_service_waits_for_one(installed: Installed) -> None:
    """No key at install: an empty credential file lets the unit load, the daemon
    exits 78 and is not restarted in a loop; giving the key later starts it."""
    c = installed.c
    speech = installed.speech.read_bytes()
    if c.path("/etc/edge-daemon").exists():
        c.run(["/root/app/systemd/install.sh", "--purge"])
    env = _pip_env(c)
    # Traced with -x: the trace must not show the key either (below).
    out = c.run(["bash", "-x", "/root/app/systemd/install.sh"], env=env, timeout_s=600)
    assert "no key given" in out.stdout and "enabled, not started" in out.stdout
    stat = c.run(["stat", "-c", "%U:%G %a %s", "/etc/edge-daemon/gemini-api-key"]).stdout
    assert stat.split() == ["root:root", "600", "0"]
    assert not installed.active()

    c.write("/etc/edge-daemon/config.toml", _config(installed.fake.fake.url))
    c.write(INPUT_WAV, speech)
    c.write(f"/etc/systemd/system/{UNIT}.service.d/test.conf", DROPIN)
    c.run(["systemctl", "daemon-reload"])
    assert c.run(["systemctl", "start", UNIT], check=False, timeout_s=90).returncode != 0
    props = installed.props("ActiveState", "ExecMainStatus", "NRestarts")
    assert props == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    wait_until(
        lambda: "no Gemini API key" in c.journal("-u", UNIT, "-o", "cat", "-n", "20"),
        10,
        "the daemon's reason in the journal",
        0.2,
    )

    connections = installed.fake.read(lambda f: len(f.connections))
    done = c.run(
        ["bash", "-x", "/root/app/systemd/install.sh", "--api-key-file", "-"],
        env=env,
        stdin=SECRET + "\n",
        timeout_s=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + c.journal("-u", UNIT, "-o", "cat", "-n", "40")
    assert SECRET not in done.stdout + done.stderr + out.stdout + out.stderr
    assert installed.active()
    installed.fake.wait_for(
        lambda f: len(f.connections) > connections and f.connections[-1].auth_method == "header",
        30,
    )
