"""journald for real: a daemon process logging with logging.target = "journal",
read back with journalctl. If no journald is listening, one is started for
the session (root only) and stopped afterwards."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SECRET

from edge_daemon.fake_gemini import FakeGemini

JOURNALD = Path("/lib/systemd/systemd-journald")
JOURNAL_SOCKET = Path("/run/systemd/journal/socket")


def journal_listening() -> bool:
    """The socket file alone proves nothing: a stopped journald leaves it behind."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(str(JOURNAL_SOCKET))
        except OSError:
            return False
    return True


@pytest.fixture(scope="session")
def journald() -> Iterator[None]:
    if journal_listening():
        yield
        return
    if os.geteuid() != 0:
        pytest.skip("no journald is running and starting one needs root")
    if not JOURNALD.exists() or not shutil.which("journalctl"):
        pytest.skip(f"no journald is running and {JOURNALD} or journalctl is missing")
    run_dir = JOURNAL_SOCKET.parent
    made_dir = not run_dir.exists()
    proc = subprocess.Popen(
        [str(JOURNALD)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 10
        while not journal_listening():  # a process we do not own: nothing to wait on
            if proc.poll() is not None:
                pytest.skip(f"systemd-journald exited at once: {proc.stderr.read()!r}")
            if time.monotonic() > deadline:
                pytest.skip("systemd-journald did not open its socket within 10 s")
            time.sleep(0.05)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if made_dir:
            # Left behind, the dead socket would fool the next run into thinking
            # a journald listens.
            shutil.rmtree(run_dir, ignore_errors=True)


def journal(*matches: str) -> tuple[list[dict[str, Any]], str]:
    """Entries matching ``matches`` (FIELD=value, or options), and the raw output."""
    # Ask journald to write out what it has received; older versions lack it.
    subprocess.run(["journalctl", "--sync"], capture_output=True, timeout=30)
    out = subprocess.run(
        ["journalctl", "-o", "json", "--no-pager", "--all", *matches],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()], out


async def entries_until(
    matches: tuple[str, ...], done: Any, timeout_s: float = 20.0
) -> tuple[list[dict[str, Any]], str]:
    """journald files records asynchronously: read until ``done(entries)``."""
    async with asyncio.timeout(timeout_s):
        while True:
            entries, raw = await asyncio.to_thread(journal, *matches)
            if done(entries):
                return entries, raw
            await asyncio.sleep(0.1)


def of(entries: list[dict[str, Any]], event: str) -> list[dict[str, Any]]:
    return [e for e in entries if e.get("EDGE_EVENT") == event]


async def test_daemon_logs_structured_records_to_the_journal_and_never_the_key(
    journald: None, fake: FakeGemini, spawn_daemon: Any
) -> None:
    # The journal outlives test runs and PIDs get reused: only this run's records.
    since = f"--since=@{int(time.time()) - 1}"
    d = spawn_daemon(
        {
            "gemini": {"endpoint": fake.url},
            "audio": {"backend": "null"},
            "logging": {"level": "info", "target": "journal"},
            "link": {"backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        }
    )
    await d.ready()
    await d.wait_state("idle")
    assert (await d.ctl("tap", seconds=1.0))["ok"]
    await d.wait_state("speaking", 20)
    await d.wait_state("idle", 30)
    (call_id,) = await fake.tool_call([("launch_rockets", {"count": 3})])
    await fake.wait_for(lambda f: f.tool_responses, 10)
    await fake.drop_connection()
    await fake.wait_for(lambda f: len(f.connections) == 2 and f.connections[1].setup_complete_sent)
    await d.wait_state("idle")
    await fake.close_connection(1011, "Internal error encountered.")
    await fake.wait_for(lambda f: len(f.connections) == 3 and f.connections[2].setup_complete_sent)
    await d.wait_state("idle")
    d.proc.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(d.proc.wait, 15) == 0
    mine = (since, "SYSLOG_IDENTIFIER=edge-daemon", f"_PID={d.proc.pid}")
    entries, raw = await entries_until(mine, lambda es: of(es, "stopped"))
    assert SECRET not in raw
    assert "edge-daemon: " not in d.log()  # nothing fell back to stderr

    # `journalctl EDGE_EVENT=reconnect` finds one record per reconnect.
    reconnects, _ = journal(*mine, "EDGE_EVENT=reconnect")
    assert [e["EDGE_CLOSE_CODE"] for e in reconnects] == ["1006", "1011"]
    (closed,) = [e for e in of(entries, "session_closed") if e["EDGE_CLOSE_CODE"] == "1011"]
    assert "Internal error" in closed["MESSAGE"]

    opened = of(entries, "session_open")
    sessions = [e["EDGE_SESSION"] for e in opened]
    assert len(sessions) == 3 == len(set(sessions))
    assert [e["EDGE_RESUMED"] for e in opened] == ["0", "1", "1"]
    assert closed["EDGE_SESSION"] == sessions[1]

    states = of(entries, "state")
    assert {"idle", "listening", "thinking", "speaking", "reconnecting"} <= {
        e["EDGE_STATE"] for e in states
    }
    (tool,) = of(entries, "tool_call")
    assert tool["EDGE_TOOL"] == "launch_rockets" and tool["EDGE_CALL_ID"] == call_id
    assert tool["EDGE_SESSION"] == sessions[0]

    transcripts = of(entries, "transcript")
    assert {e["EDGE_ROLE"] for e in transcripts} == {"user", "model"}
    assert all(e["PRIORITY"] == "6" for e in transcripts)  # info

    for e in entries:
        # Every structured field arrives as text, never as a repr or bytes.
        for key, value in e.items():
            if key.startswith("EDGE_"):
                assert isinstance(value, str) and value not in ("", "None"), (key, value)
    # A second of speech up and seconds of answer down are ~100 audio frames:
    # none of them may leave a record at info level.
    assert len(entries) < 60, [e["MESSAGE"] for e in entries]
