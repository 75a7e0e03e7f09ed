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
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Dispatch = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
MAX_REQUEST_BYTES = 64 * 1024


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
        try:
            while True:
                try:
                    line = await reader.readline()
                except (ValueError, asyncio.LimitOverrunError):
                    await _reply(writer, {"ok": False, "error": "request too long"})
                    break
                if not line:
                    break
                await _reply(writer, await self._handle(line))
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle(self, line: bytes) -> Mapping[str, Any]:
        try:
            request = json.loads(line)
        except ValueError as exc:
            return {"ok": False, "error": f"not JSON: {exc}"}
        if not isinstance(request, dict) or not isinstance(request.get("cmd"), str):
            return {"ok": False, "error": 'expected an object like {"cmd": "status"}'}
        try:
            return await self._dispatch(request)
        except Exception as exc:
            log.exception("control command %r failed", request.get("cmd"))
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


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
