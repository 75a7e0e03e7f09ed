"""Local control over a Unix stream socket: one JSON object per line each way.

``{"cmd": "press"}`` -> ``{"ok": true}``; ``{"cmd": "status"}`` -> state, link,
counters. Only local users who can reach the socket file can send commands, so
the file's permissions are the access control (0660, the service's group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Dispatch = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
MAX_REQUEST_BYTES = 64 * 1024
# Clients connected at once: a script looping on `ctl` must not run the
# daemon out of file descriptors. More are told so and closed.
MAX_CLIENTS = 16
# A client that connects and says nothing gives its place back.
IDLE_TIMEOUT_S = 30.0
# Commands that only read: logged at debug (scripts poll them).
_READ_ONLY = frozenset({"status", "wait"})


def default_user_socket() -> str:
    """Where ``--simulate`` puts the socket when the config names none."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(runtime) if runtime else Path("/tmp") / f"edge-daemon-{os.getuid()}"
    return str(base / "edge-daemon" / "control.sock")


class ControlServer:
    def __init__(self, path: str, dispatch: Dispatch) -> None:
        self.path = path
        self._dispatch = dispatch
        self._server: asyncio.Server | None = None
        self.clients = 0
        self.refused = 0

    async def start(self) -> None:
        path = Path(self.path)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        if path.exists() or path.is_symlink():
            # A stale socket from a crash would make bind fail; a live one
            # means a second daemon, which must not steal it.
            if await _socket_alive(self.path):
                raise RuntimeError(f"another edge-daemon is listening on {self.path}")
            path.unlink()
        self._server = await asyncio.start_unix_server(
            self._client, path=self.path, limit=MAX_REQUEST_BYTES
        )
        with contextlib.suppress(OSError):
            os.chmod(self.path, 0o660)
        log.info("control socket at %s", self.path, extra={"EDGE_EVENT": "control_ready"})

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(OSError):
            os.unlink(self.path)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.clients >= MAX_CLIENTS:
            self.refused += 1
            if self.refused == 1 or self.refused % 100 == 0:
                log.warning(
                    "control socket: more than %d clients at once; refusing (%d so far)",
                    MAX_CLIENTS,
                    self.refused,
                    extra={"EDGE_EVENT": "control_refused"},
                )
            with contextlib.suppress(ConnectionError, OSError):
                await _reply(writer, {"ok": False, "error": "too many clients; try again"})
            writer.close()
            return
        self.clients += 1
        peer = _peer(writer)
        try:
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE_TIMEOUT_S)
                except (ValueError, asyncio.LimitOverrunError):
                    await _reply(writer, {"ok": False, "error": "request too long"})
                    break
                except TimeoutError:
                    break
                if not line:
                    break
                await _reply(writer, await self._handle(line, peer))
        except (ConnectionError, OSError):
            pass
        finally:
            self.clients -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, line: bytes, peer: str = "") -> Mapping[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        except RecursionError:
            return {"ok": False, "error": "not JSON this daemon reads: nested too deeply"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'expected an object like {"cmd": "status"}'}
        cmd = request["cmd"][:32]
        log.log(
            logging.DEBUG if cmd in _READ_ONLY else logging.INFO,
            "control: %s from %s",
            cmd,
            peer or "an unknown peer",
            extra={"EDGE_EVENT": "control_command", "EDGE_COMMAND": cmd, "EDGE_PEER": peer},
        )
        try:
            return await self._dispatch(request)
        except Exception as exc:
            log.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


def _peer(writer: asyncio.StreamWriter) -> str:
    """Who is on the other end, from the kernel (SO_PEERCRED): "uid 1000 pid 42"."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        pid, uid, _gid = struct.unpack("3i", raw)
    except (AttributeError, OSError, struct.error):
        return ""
    return f"uid {uid} pid {pid}"


async def _reply(writer: asyncio.StreamWriter, body: Mapping[str, Any]) -> None:
    writer.write(json.dumps(body, separators=(",", ":")).encode() + b"\n")
    await writer.drain()


async def _socket_alive(path: str) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_unix_connection(path), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True


def request(path: str, body: Mapping[str, Any], timeout_s: float = 10.0) -> dict[str, Any]:
    """Blocking client for ``edge-daemon ctl`` and scripts: one request, one reply."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(path)
        sock.sendall(json.dumps(body).encode() + b"\n")
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            buf += chunk
    if not buf:
        raise ConnectionError(f"no reply from {path}")
    reply = json.loads(buf)
    if not isinstance(reply, dict):
        raise ValueError(f"unexpected reply from {path}: {reply!r}")
    return reply
