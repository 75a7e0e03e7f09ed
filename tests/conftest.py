"""Shared fixtures: real speech, the fake Gemini, and a daemon run as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import wave
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from support.notify import bind_notify, recv_stamped_async

from edge_daemon.control import request
from edge_daemon.fake_gemini import FakeGemini

# A distinctive fake key: if it shows up anywhere in a log, a test says so.
SECRET = "AIzaSyEDGE-TEST-SECRET-0123456789"
ROOT = Path(__file__).resolve().parent.parent


def have(*tools: str) -> bool:
    return all(shutil.which(t) for t in tools)


def make_speech(text: str, path: Path, rate: int = 16000) -> Path:
    """Real synthetic speech (espeak-ng), as s16le mono WAV at ``rate``."""
    if not have("espeak-ng", "sox"):
        pytest.skip("espeak-ng and sox are needed for real speech (apt-get install espeak-ng sox)")
    raw = path.with_suffix(".espeak.wav")
    subprocess.run(["espeak-ng", "-w", str(raw), text], check=True, capture_output=True)
    subprocess.run(
        ["sox", str(raw), "-r", str(rate), "-c", "1", "-b", "16", "-e", "signed", str(path)],
        check=True,
        capture_output=True,
    )
    return path


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_speech(
        "Please turn on the lamp in the kitchen.",
        tmp_path_factory.mktemp("speech") / "turn_on_lamp.wav",
    )


def wav_frames(path: Path) -> tuple[int, bytes]:
    with wave.open(str(path), "rb") as w:
        return w.getframerate(), w.readframes(w.getnframes())


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    server = FakeGemini(api_key=SECRET, pace=4.0)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def write_config(path: Path, sections: dict[str, dict[str, Any]]) -> Path:
    lines: list[str] = []
    for name, table in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


class DaemonProcess:
    """``edge-daemon run`` as a child process, driven through its control socket."""

    def __init__(
        self,
        config: Path | None,
        socket: Path,
        log_path: Path,
        env: dict[str, str],
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.socket = socket
        self.log_path = log_path
        # The daemon says READY=1 over sd_notify, as it would to systemd: the
        # test waits on that datagram instead of polling for the socket file.
        self.notify_path = log_path.with_suffix(".notify")
        self.notify = bind_notify(self.notify_path)
        self.notify.setblocking(False)
        self.notifications: list[str] = []
        # When each notification arrived (time.monotonic(), stamped by the
        # kernel): the test may read them late, the daemon sent them then.
        self.notified_at: list[float] = []
        env = {**env, "NOTIFY_SOCKET": str(self.notify_path)}
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_daemon.cli",
                "run",
                *(["--config", str(config)] if config is not None else []),
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=ROOT,
        )

    async def next_notification(self, timeout_s: float = 20.0) -> str:
        arrived, data = await asyncio.wait_for(recv_stamped_async(self.notify), timeout_s)
        self.notified_at.append(arrived)
        self.notifications.append(data)
        return data

    async def ready(self, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while "READY=1" not in await self.next_notification(timeout_s):
                pass

    async def ctl(self, cmd: str, timeout_s: float = 15.0, **fields: Any) -> dict[str, Any]:
        return await asyncio.to_thread(request, str(self.socket), {"cmd": cmd, **fields}, timeout_s)

    async def wait_state(self, state: str, timeout_s: float = 15.0) -> dict[str, Any]:
        reply = await self.ctl("wait", state=state, timeout=timeout_s, timeout_s=timeout_s + 5)
        assert reply["ok"], f"daemon never reached {state!r}: {reply}\n{self.log()}"
        return reply

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout_s: float = 15.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        self.notify.close()
        return self.proc.returncode


@pytest.fixture
def daemon_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    # The resumption handle a daemon saves stays with its test.
    env["XDG_STATE_HOME"] = str(tmp_path / "state")
    env.pop("STATE_DIRECTORY", None)
    env.pop("JOURNAL_STREAM", None)
    env.pop("EDGE_DAEMON_CONFIG", None)
    env["GEMINI_API_KEY"] = SECRET
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def spawn_daemon(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[Any]:
    started: list[DaemonProcess] = []

    def spawn(
        sections: dict[str, dict[str, Any]],
        env: dict[str, str] | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> DaemonProcess:
        sock = tmp_path / f"ctl{len(started)}.sock"
        sections.setdefault("control", {}).setdefault("socket", str(sock))
        sections["control"].setdefault("keyboard", False)
        cfg = write_config(tmp_path / f"config{len(started)}.toml", sections)
        proc = DaemonProcess(
            cfg,
            Path(sections["control"]["socket"]),
            tmp_path / f"daemon{len(started)}.log",
            env or daemon_env,
            extra_args,
        )
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.stop()


# ---------------------------------------------------------------- the wire


@pytest.fixture(autouse=True)
def sdk_checked_wire(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every message a LiveSession sends in this process is checked against
    the google-genai SDK's own types (tests/support/sdk_wire.py); a test whose
    daemon sent one the SDK refuses fails at its end."""
    from support.sdk_wire import WireError, check_client_message

    from edge_daemon.live.session import LiveSession

    refused: list[str] = []
    send = LiveSession._send

    async def checked_send(self: LiveSession, text: str) -> None:
        try:
            check_client_message(text)
        except WireError as exc:
            refused.append(f"{exc} in {text[:300]}")
        await send(self, text)

    monkeypatch.setattr(LiveSession, "_send", checked_send)
    yield refused
    assert not refused, "messages the SDK's types refuse:\n" + "\n".join(refused[:5])


# ---------------------------------------------------------------- skips
# A suite that silently skips proves nothing. Every skip is listed at the end
# of the run with its reason (which names the package that would run it).
# Under CI=true a skip fails the run unless ALLOWED_SKIPS names it and says why.

# node id prefix -> why skipping it in CI is right
ALLOWED_SKIPS: dict[str, str] = {}


def _allowed(nodeid: str) -> str | None:
    return next((why for prefix, why in ALLOWED_SKIPS.items() if nodeid.startswith(prefix)), None)


def _skips(terminalreporter: Any) -> list[tuple[str, str]]:
    found = []
    for report in terminalreporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        found.append((report.nodeid, reason.removeprefix("Skipped: ")))
    return found


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: Any) -> None:
    skips = _skips(terminalreporter)
    if not skips:
        return
    tr = terminalreporter
    tr.section("skipped suites, and what would run them")
    by_reason: dict[str, list[str]] = {}
    for nodeid, reason in skips:
        by_reason.setdefault(reason, []).append(nodeid)
    for reason, nodeids in sorted(by_reason.items()):
        files = sorted({n.split("::")[0] for n in nodeids})
        tr.write_line(f"{len(nodeids):4d} skipped in {', '.join(files)}: {reason}")
    if _in_ci():
        refused = [(n, r) for n, r in skips if _allowed(n) is None]
        if refused:
            tr.write_line("")
            tr.write_line(
                f"CI=true: {len(refused)} skip(s) not in ALLOWED_SKIPS (tests/conftest.py): "
                "a suite that should run did not. Install what the reason names, or allow "
                "the skip by name with the reason it is right."
            )
            for nodeid, reason in refused:
                tr.write_line(f"  {nodeid}: {reason}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _in_ci():
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        return
    if any(_allowed(n) is None for n, _ in _skips(reporter)) and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
@pytest.fixture(scope="session")
def pi_roots_in_background(request: pytest.FixtureRequest) -> None:
    """When this session boots the Raspberry Pi's architectures too
    (tests/test_boot_arm.py), their roots start building in the background as
    the native boot tests begin: minutes of emulated dpkg that then overlap
    those tests, and not the timing-sensitive suites before them."""
    if any(item.path.name == "test_boot_arm.py" for item in request.session.items):
        from boot_container import PI_ARCHES, build_in_background

        build_in_background(PI_ARCHES)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The boot tests (tests/test_boot*.py) last, the emulated ones at the very
    end, each in its own order: the emulated ones' roots build in the
    background while the native ones run (pi_roots_in_background)."""
    items.sort(
        key=lambda item: (
            item.path.name.startswith("test_boot"),
            item.path.name == "test_boot_arm.py",
        )
    )
