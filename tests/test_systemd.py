"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) over a
real datagram socket, the watchdog stopping when the loop hangs, graceful
shutdown, record fields for journald, and the unit file itself."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, SECRET, DaemonProcess
from support.notify import bind_notify, recv_stamped

from edge_daemon import systemd
from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.live.reconnect import LinkSettings
from edge_daemon.live.session import Credentials, current_session_id

UNIT = ROOT / "systemd" / "edge-daemon.service"

# --------------------------------------------------------------------------- sd_notify


class Datagrams:
    """A NOTIFY_SOCKET read by a thread; each datagram keeps the time the kernel
    stamped on its arrival, so a reader that runs late changes nothing."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = bind_notify(path)
        self.sock.settimeout(0.05)  # how often the reader looks at _stop
        self.got: list[tuple[float, str]] = []
        self._arrived = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                stamped = recv_stamped(self.sock)
            except TimeoutError:
                continue
            with self._arrived:
                self.got.append(stamped)
                self._arrived.notify_all()

    def wait_for(self, cond: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
        """Block until ``cond()`` holds, re-checked on every datagram."""
        with self._arrived:
            arrived = self._arrived.wait_for(cond, timeout_s)
        assert arrived, f"waited for {what}; got {self.got}"

    def wait(self, count: int, message: str | None = None, timeout_s: float = 5.0) -> None:
        """Block until ``count`` datagrams (equal to ``message``, if given) arrived."""
        self.wait_for(
            lambda: len(self.messages(message)) >= count,
            f"{count} x {message or 'any'}",
            timeout_s,
        )

    def messages(self, message: str | None = None) -> list[str]:
        return [data for _, data in self.got if message is None or data == message]

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def times(self, message: str) -> list[float]:
        return [t for t, data in self.got if data == message]


@pytest.fixture
def datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Datagrams]:
    d = Datagrams(tmp_path / "notify")
    monkeypatch.setenv("NOTIFY_SOCKET", str(d.path))
    try:
        yield d
    finally:
        d.close()


def test_notify_sends_one_datagram_and_is_a_no_op_without_a_socket(
    datagrams: Datagrams, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert systemd.notify("READY=1")
    assert systemd.notify("STATUS=idle")
    datagrams.wait(2)
    assert datagrams.messages() == ["READY=1", "STATUS=idle"]
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert not systemd.notify("READY=1")
    assert not systemd.notify("READY=1", {"NOTIFY_SOCKET": "/nonexistent/socket"})


def test_status_is_one_line_whatever_the_server_said(datagrams: Datagrams) -> None:
    # A close reason is the server's text: a newline in it must not become a
    # second assignment (READY=1, MAINPID=...) in the datagram.
    assert systemd.notify_status("error: closed 1008 'bad\nREADY=1\r\n  key'")
    datagrams.wait(1)
    assert datagrams.messages() == ["STATUS=error: closed 1008 'bad READY=1 key'"]


def test_notify_reaches_an_abstract_socket() -> None:
    name = f"edge-daemon-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert systemd.notify("WATCHDOG=1", {"NOTIFY_SOCKET": "@" + name})
        sock.settimeout(5)
        assert sock.recv(64) == b"WATCHDOG=1"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "200000"}, 0.1),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}, None),  # another process's
        ({"WATCHDOG_USEC": "200000", "WATCHDOG_PID": str(os.getpid())}, 0.1),
    ],
)
def test_watchdog_interval_is_half_of_watchdog_usec(
    env: dict[str, str], expected: float | None
) -> None:
    assert systemd.watchdog_interval_s(env) == expected


async def test_watchdog_pings_from_the_loop_and_stop_when_it_hangs(
    datagrams: Datagrams,
) -> None:
    interval, block_s = 0.02, 0.5
    task = asyncio.create_task(systemd.watchdog_loop(interval))
    try:
        # Five pings take 0.1 s; the deadline leaves 2 s to a loaded machine.
        await asyncio.to_thread(datagrams.wait, 5, "WATCHDOG=1", 5 * interval + 2.0)
        blocked: dict[str, float] = {}

        def hang() -> None:
            # A callback that never yields, as a wedged handler would.
            blocked["start"] = time.monotonic()
            time.sleep(block_s)
            blocked["end"] = time.monotonic()

        asyncio.get_running_loop().call_soon(hang)
        await asyncio.sleep(0)  # hang() runs now; this task resumes after it

        def resumed() -> bool:
            return len([t for t in datagrams.times("WATCHDOG=1") if t > blocked["end"]]) >= 3

        await asyncio.to_thread(
            datagrams.wait_for, resumed, "3 pings after the block", 3 * interval + 2.0
        )
    finally:
        task.cancel()
    pings = datagrams.times("WATCHDOG=1")
    # Arrival times stamped by the kernel: exact however late the reader ran;
    # only converting them to the monotonic clock costs microseconds.
    eps = 0.005
    during = [t for t in pings if blocked["start"] + eps < t < blocked["end"] - eps]
    assert during == [], "the watchdog kept pinging while the loop was blocked"
    gaps = [b - a for a, b in itertools.pairwise(pings)]
    assert max(gaps) >= block_s - eps  # the one gap that spans the block
    assert min(gaps) >= interval - eps  # paced by the interval, never a burst


# --------------------------------------------------------------------------- the process


def run_sections(fake: FakeGemini, **extra: dict[str, Any]) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {
        "gemini": {"endpoint": fake.url},
        "audio": {"backend": "null"},
        "logging": {"level": "info", "target": "stderr"},
        "link": {"config_error_backoff_s": 60.0},
    }
    sections.update(extra)
    return sections


async def read_until(d: DaemonProcess, wanted: str, timeout_s: float = 20.0) -> None:
    """Read datagrams until ``wanted`` arrives."""
    async with asyncio.timeout(timeout_s):
        while await d.next_notification(timeout_s) != wanted:
            pass


async def test_daemon_process_notifies_ready_status_watchdog_and_stopping(
    fake: FakeGemini, spawn_daemon: Any, daemon_env: dict[str, str]
) -> None:
    d = spawn_daemon(run_sections(fake), env={**daemon_env, "WATCHDOG_USEC": "200000"})
    await read_until(d, "READY=1")
    # READY comes once the first session is up: the state it reports is idle.
    statuses = [n for n in d.notifications if n.startswith("STATUS=")]
    assert statuses == ["STATUS=idle"]
    assert fake.active is not None and fake.active.setup_complete_sent

    interval = 0.1  # half of WATCHDOG_USEC
    first = len(d.notifications)

    def pings() -> list[float]:
        seen = zip(d.notified_at[first:], d.notifications[first:], strict=True)
        return [t for t, data in seen if data == "WATCHDOG=1"]

    # 15 pings take 1.5 s: a daemon pinging less often than it was told to
    # misses the deadline, which leaves 2 s to a loaded machine.
    async with asyncio.timeout(15 * interval + 2.0):
        while len(pings()) < 15:
            await d.next_notification()
    # Arrival times stamped by the kernel, not when this test got round to
    # reading them: never closer than the interval (paced, not a burst).
    gaps = [b - a for a, b in itertools.pairwise(pings())]
    assert min(gaps) >= interval - 0.005

    assert (await d.ctl("tap", seconds=0.3))["ok"]
    await read_until(d, "STATUS=speaking")
    await read_until(d, "STATUS=idle")
    statuses = [n for n in d.notifications if n.startswith("STATUS=")]
    assert statuses[-4:] == [
        "STATUS=listening",
        "STATUS=thinking",
        "STATUS=speaking",
        "STATUS=idle",
    ]

    d.proc.send_signal(signal.SIGTERM)
    await read_until(d, "STOPPING=1")
    assert await asyncio.to_thread(d.proc.wait, 15) == 0
    assert d.notifications.count("READY=1") == 1
    conn = fake.connections[-1]
    await fake.wait_for(lambda f: conn.ended)
    # Graceful: the socket was closed by the daemon with a normal close.
    assert (conn.close_code, conn.closed_by) == (1000, "client")
    assert "stopped" in d.log() and SECRET not in d.log()


async def test_daemon_process_is_ready_and_says_what_to_fix_when_refused(
    spawn_daemon: Any,
) -> None:
    async with FakeGemini(api_key="not the key the daemon has") as fake:
        d = spawn_daemon(run_sections(fake))
        await read_until(d, "READY=1")  # it will keep trying: systemctl start must not hang
        status = next(n for n in d.notifications if n.startswith("STATUS="))
        assert status.startswith("STATUS=error: ")
        assert "API key was rejected" in status and "GEMINI_API_KEY" in status
        assert len(fake.connections) == 1  # and it does not hammer
        started = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        await read_until(d, "STOPPING=1")
        assert await asyncio.to_thread(d.proc.wait, 15) == 0
        # A stop does not wait out the minute-long config backoff.
        assert time.monotonic() - started < 10


# --------------------------------------------------------------------------- graceful stop


async def test_stop_cuts_the_turn_closes_1000_and_runs_the_shutdown_hooks() -> None:
    calls: list[str] = []

    async def relays_off() -> None:
        calls.append("relays off")

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("hook failed")

    async with FakeGemini(api_key=SECRET, pace=8) as fake:
        daemon = Daemon(
            with_overrides(Config(), {"audio.backend": "null"}),
            mic=NullMicrophone(),
            speaker=NullSpeaker(),
            link_settings=LinkSettings(url=fake.url, credentials=Credentials(SECRET)),
        )
        daemon.add_shutdown_hook(broken)
        daemon.add_shutdown_hook(relays_off)
        daemon.add_shutdown_hook(lambda: calls.append("led off"))
        task = asyncio.create_task(daemon.run())
        assert await daemon.wait_state(State.IDLE, 10)
        daemon.press("test")
        await fake.wait_for(lambda f: f.audio_received_s() >= 0.1)
        assert daemon.state is State.LISTENING
        daemon.stop()
        await asyncio.wait_for(task, 10)
        conn = fake.connections[0]
        await fake.wait_for(lambda f: conn.ended)
    assert (conn.close_code, conn.closed_by) == (1000, "client")
    assert calls == ["broken", "relays off", "led off"]  # one failing does not stop the rest
    assert len(fake.connections) == 1  # no redial on the way out


# --------------------------------------------------------------------------- logging


def test_field_text_makes_journal_fields_text() -> None:
    assert systemd.field_text(None) is None
    assert systemd.field_text("") is None
    assert systemd.field_text(1011) == "1011"
    assert systemd.field_text(True) == "1" and systemd.field_text(False) == "0"
    assert systemd.field_text(State.IDLE) == "idle"
    assert systemd.field_text(0.25) == "0.25"


def record(msg: str = "hello %s", args: tuple[Any, ...] = ("world",), **fields: Any) -> Any:
    rec = logging.LogRecord("edge_daemon.test", logging.INFO, __file__, 1, msg, args, None)
    for key, value in fields.items():
        setattr(rec, key, value)
    return rec


def test_record_fields_adds_the_session_and_stringifies() -> None:
    token = current_session_id.set("a1b2c3")
    try:
        rec = record(EDGE_CLOSE_CODE=1006, EDGE_STATE=State.ERROR, EDGE_EMPTY="", EDGE_NONE=None)
        assert systemd.RecordFields().filter(rec)
    finally:
        current_session_id.reset(token)
    assert rec.EDGE_SESSION == "a1b2c3"
    assert rec.EDGE_CLOSE_CODE == "1006" and rec.EDGE_STATE == "error"
    assert not hasattr(rec, "EDGE_EMPTY") and not hasattr(rec, "EDGE_NONE")
    explicit = record(EDGE_SESSION="ffffff")
    systemd.RecordFields().filter(explicit)
    assert explicit.EDGE_SESSION == "ffffff"
    outside = record()
    systemd.RecordFields().filter(outside)
    assert not hasattr(outside, "EDGE_SESSION")


@pytest.fixture
def redacted() -> Iterator[str]:
    systemd.redact(SECRET)
    systemd.redact("short")  # ignored: it would mangle ordinary words
    try:
        yield SECRET
    finally:
        systemd._secrets.clear()


def test_registered_secrets_are_scrubbed_from_every_part_of_a_record(redacted: str) -> None:
    try:
        raise ValueError(f"bad header x-goog-api-key: {redacted}")
    except ValueError:
        exc_info = sys.exc_info()
    rec = record("connect with %s", (redacted,), EDGE_URL=f"wss://h/?key={redacted}")
    rec.exc_info = exc_info
    systemd.RecordFields().filter(rec)
    text = logging.Formatter().format(rec)
    assert redacted not in text and systemd.REDACTED in text
    assert redacted not in repr(vars(rec))
    assert rec.exc_info is None  # JournalHandler would send it as EXCEPTION_INFO
    short = record("a short word", ())
    systemd.RecordFields().filter(short)
    assert short.getMessage() == "a short word"


def test_journal_stream_must_name_our_stderr(tmp_path: Path) -> None:
    with open(tmp_path / "stderr", "w") as f:
        st = os.fstat(f.fileno())
        ours = f"{st.st_dev}:{st.st_ino}"
        assert systemd.use_journal("auto", {"JOURNAL_STREAM": ours}, f.fileno())
        # Inherited from elsewhere (a terminal started by a user unit): not ours.
        assert not systemd.use_journal("auto", {"JOURNAL_STREAM": "1:2"}, f.fileno())
        assert not systemd.use_journal("auto", {"JOURNAL_STREAM": "junk"}, f.fileno())
        assert not systemd.use_journal("auto", {}, f.fileno())
        assert systemd.use_journal("journal", {}, f.fileno())
        assert not systemd.use_journal("stderr", {"JOURNAL_STREAM": ours}, f.fileno())


def test_stderr_lines_carry_the_fields(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        assert systemd.configure_logging("info", "stderr") == "stderr"
        token = current_session_id.set("0a0b0c")
        try:
            logging.getLogger("edge_daemon.test").info(
                "closed", extra={"EDGE_EVENT": "session_closed", "EDGE_CLOSE_CODE": 1011}
            )
        finally:
            current_session_id.reset(token)
        logging.getLogger("websockets.client").debug("frame noise")
    finally:
        systemd.stop_logging()  # the writer thread has written everything
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    err = capsys.readouterr().err
    assert "closed  EDGE_EVENT=session_closed EDGE_CLOSE_CODE=1011 EDGE_SESSION=0a0b0c" in err
    assert "frame noise" not in err


def test_a_stuck_log_writer_never_blocks_the_logging_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A wedged journald: the writer blocks, yet logging returns at once, the
    oldest records are dropped and counted, and the newest survive."""
    import threading

    gate = threading.Event()
    written: list[str] = []

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            gate.wait()
            written.append(record.getMessage())

    monkeypatch.setattr(systemd, "_journal_handler", lambda: Stuck())
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        systemd.configure_logging("info", "journal")
        front = next(h for h in root.handlers if isinstance(h, systemd.DroppingQueueHandler))
        log = logging.getLogger("edge_daemon.test")
        for i in range(systemd.LOG_QUEUE_SIZE * 3):
            log.info("record %d", i)  # would hang here if logging waited for the writer
        assert front.dropped >= systemd.LOG_QUEUE_SIZE
        gate.set()
        systemd.stop_logging()
    finally:
        gate.set()
        systemd.stop_logging()
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    assert written[-1] == f"record {systemd.LOG_QUEUE_SIZE * 3 - 1}"
    assert len(written) <= systemd.LOG_QUEUE_SIZE + 2


# --------------------------------------------------------------------------- the unit


def analyze(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not shutil.which("systemd-analyze"):
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return subprocess.run(
        ["systemd-analyze", *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )


def unit_copy(tmp_path: Path, drop: tuple[str, ...] = ()) -> Path:
    """The unit with ExecStart on /bin/true (verify checks the binary exists)."""
    lines = []
    for line in UNIT.read_text().splitlines():
        if line.startswith("ExecStart="):
            line = "ExecStart=/bin/true"
        if not line.startswith(drop):
            lines.append(line)
    path = tmp_path / "unit" / "edge-daemon.service"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def test_unit_file_says_what_the_service_needs() -> None:
    text = UNIT.read_text()
    for directive in (
        "Type=notify",
        "NotifyAccess=main",
        "Restart=on-failure",
        "StartLimitIntervalSec=0",
        "RestartPreventExitStatus=78",
        "LoadCredential=gemini-api-key:",
        "User=edge-daemon",
        "DevicePolicy=closed",
        "KillMode=mixed",
    ):
        assert re.search(rf"^{re.escape(directive)}", text, re.M), directive
    assert re.search(r"^SupplementaryGroups=.*\bgpio\b.*\baudio\b.*\bvideo\b", text, re.M)
    watchdog = re.search(r"^WatchdogSec=(\d+)s$", text, re.M)
    assert watchdog and 10 <= int(watchdog.group(1)) <= 120
    # gpiozero needs /proc/device-tree or /proc/cpuinfo to know the board.
    assert not re.search(r"^ProcSubset=pid", text, re.M)


def test_unit_file_verifies(tmp_path: Path) -> None:
    path = unit_copy(tmp_path)
    result = analyze("verify", path.name, cwd=path.parent)
    out = result.stdout + result.stderr
    if result.returncode != 0 and re.search(r"user|group", out, re.I):
        # Some systemd versions resolve User=/groups at verify time, and this
        # machine has no edge-daemon user (systemd/install.sh creates it).
        path = unit_copy(tmp_path, drop=("User=", "Group=", "SupplementaryGroups="))
        result = analyze("verify", path.name, cwd=path.parent)
        out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "edge-daemon.service" not in out, out  # no warnings about our unit


def test_unit_file_exposure_is_at_most_3(tmp_path: Path) -> None:
    path = unit_copy(tmp_path)
    result = analyze("security", "--offline=yes", path.name, cwd=path.parent)
    found = re.search(r"Overall exposure level for edge-daemon\.service: (\d+\.\d+)", result.stdout)
    assert found, result.stdout + result.stderr
    assert float(found.group(1)) <= 3.0
