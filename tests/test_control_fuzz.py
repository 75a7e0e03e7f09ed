"""The control socket against hostile and broken clients: random bytes, random
JSON, deep nesting, oversized lines, too many clients. Every request gets one
JSON reply, nothing crashes the daemon, and it answers a clean status after."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from support.rig import daemon_rig

from edge_daemon.control import MAX_CLIENTS, MAX_REQUEST_BYTES, ControlServer, request

COMMANDS = ["press", "release", "tap", "say", "status", "wait", "mute", "volume", "nope", ""]


class LiveControl:
    """A daemon rig and its control socket, on an event loop thread of their own."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._stop = asyncio.Event()
        self.ready: Future[None] = Future()
        self.done = asyncio.run_coroutine_threadsafe(self._main(), self.loop)
        self.ready.result(60)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with daemon_rig() as rig:
            self.rig = rig
            server = ControlServer(self.path, rig.daemon.control)
            await server.start()
            self.server = server
            self.ready.set_result(None)
            await self._stop.wait()
            await server.close()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self._stop.set)
        self.done.result(60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    def raw(self, line: bytes, timeout_s: float = 20.0) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            sock.connect(self.path)
            sock.sendall(line + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                buf += chunk
        reply = json.loads(buf)
        assert isinstance(reply, dict) and isinstance(reply.get("ok"), bool), reply
        return reply


@pytest.fixture(scope="module")
def control(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveControl]:
    live = LiveControl(tmp_path_factory.mktemp("ctl") / "c.sock")
    try:
        yield live
    finally:
        live.close()


def _healthy(control: LiveControl) -> None:
    request(control.path, {"cmd": "release"})
    reply = request(control.path, {"cmd": "wait", "state": "idle", "timeout": 30}, timeout_s=40)
    assert reply["ok"], reply
    assert request(control.path, {"cmd": "status"})["ok"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"cmd": draw(st.sampled_from(COMMANDS) | st.text(max_size=40))}
    for key in draw(st.lists(st.sampled_from(["seconds", "text", "state", "timeout", "x"]))):
        body[key] = draw(json_values)
    return body


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=requests())
def test_random_requests_get_one_reply_each(control: LiveControl, body: dict[str, Any]) -> None:
    # A valid wait for a state that may never come would block its reply until
    # its timeout: that is the command working, not a finding.
    timeout = body.get("timeout", 30.0)
    assume(
        not (
            body.get("cmd") == "wait"
            and isinstance(timeout, int | float)
            and not isinstance(timeout, bool)
            and timeout > 2
        )
    )
    seconds = body.get("seconds")
    if body.get("cmd") == "tap" and isinstance(seconds, int | float) and seconds > 1:
        body["seconds"] = 1  # a long hold is valid; it only slows the run
    try:
        line = json.dumps(body).encode()
    except ValueError:  # NaN and friends: sent as Python writes them, still not JSON
        line = repr(body).encode()
    control.raw(line)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.binary(max_size=512).filter(lambda b: b"\n" not in b))
def test_random_bytes_get_an_error_reply(control: LiveControl, data: bytes) -> None:
    assume(data.strip() != b"")  # an empty line is no request at all
    reply = control.raw(data)
    with contextlib.suppress(ValueError):
        parsed = json.loads(data)
        if isinstance(parsed, dict) and isinstance(parsed.get("cmd"), str):
            return  # random bytes that happen to be a request
    assert reply["ok"] is False


def test_deep_nesting_and_oversized_lines_are_refused_and_the_daemon_lives(
    control: LiveControl,
) -> None:
    for depth in (1000, 100_000 // 2 - 10):
        reply = control.raw(b"[" * depth + b"]" * depth)
        assert reply["ok"] is False
    reply = control.raw(b'{"cmd": "say", "text": "' + b"a" * (MAX_REQUEST_BYTES * 2) + b'"}')
    assert reply == {"ok": False, "error": "request too long"}
    _healthy(control)


def test_more_clients_than_the_cap_are_refused_then_served_again(control: LiveControl) -> None:
    idle = []
    try:
        for _ in range(MAX_CLIENTS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(control.path)
            idle.append(sock)
        # Wait until the server has taken all of them in.
        for _ in range(200):
            if control.server.clients >= MAX_CLIENTS:
                break
            threading.Event().wait(0.05)
        assert control.server.clients == MAX_CLIENTS
        assert control.raw(b'{"cmd": "status"}') == {
            "ok": False,
            "error": "too many clients; try again",
        }
    finally:
        for sock in idle:
            sock.close()
    for _ in range(200):
        if control.server.clients == 0:
            break
        threading.Event().wait(0.05)
    assert control.raw(b'{"cmd": "status"}')["ok"]
    _healthy(control)
