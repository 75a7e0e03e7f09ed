"""The server itself: listening, authenticating each connection as the real
service does (key in a header or the query; ephemeral tokens only on the
constrained endpoint), and reading client messages into the rules."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.exceptions import ConnectionClosed

from .controls import Controls
from .protocol import BAD_API_KEY, CONSTRAINED_PATH, DEFAULT_PATH, INVALID_ARGUMENT, Reject
from .records import FakeConnection
from .rules import ClientRules
from .tokens import TOKEN_CLOSE, TOKEN_UNKNOWN

log = logging.getLogger(__name__)
# websockets logs request headers at debug level, and clients send their key in
# one: the fake may be pointed at by a real device, so it never logs them.
_ws_log = logging.getLogger("edge_daemon.fake_gemini.ws")
_ws_log.setLevel(logging.INFO)


class FakeGemini(Controls, ClientRules):
    """A local Gemini Live server. See the package docstring and ``script_turn``."""

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await ws_serve(
            self._handler,
            host,
            port,
            max_size=16 * 2**20,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            logger=_ws_log,
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        await self.auth_endpoint.start()
        log.info("fake-gemini listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is None:
            return
        await self.auth_endpoint.stop()
        self._unstalled.set()  # let blocked sends run into the closing sockets and finish
        for conn in self.connections:
            if conn.open:
                conn.close_code, conn.close_reason = 1001, ""
                conn.close_detail, conn.closed_by = "server stopped", "server"
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        for conn in self.connections:
            await self._cancel_tasks(conn)
        self._server = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{DEFAULT_PATH}"

    @property
    def constrained_url(self) -> str:
        """The v1alpha endpoint ephemeral tokens work on."""
        return self.url.replace(DEFAULT_PATH, CONSTRAINED_PATH)

    @property
    def auth_url(self) -> str:
        """The base URL of its POST /v1alpha/auth_tokens (mint-token --base-url)."""
        return self.auth_endpoint.url

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handshake is done before the handler runs
        conn = FakeConnection(
            index=len(self.connections),
            ws=ws,
            request_path=request.path,
            request_headers=request.headers,
        )
        conn.auth_method = self._authenticate(conn)
        self.connections.append(conn)
        # Never log the query string: it may hold the key.
        log.info(
            "conn %d open from %s path=%s auth=%s",
            conn.index,
            ws.remote_address,
            urlsplit(request.path).path,
            conn.auth_method,
        )
        self._notify()
        try:
            if conn.auth_method is None and conn.token_offered:
                await self._close(conn, TOKEN_CLOSE, TOKEN_UNKNOWN, "unknown auth token")
                return
            if self.api_key is not None and conn.auth_method is None:
                await self._close(conn, 1008, BAD_API_KEY, "missing or wrong API key")
                return
            if self.go_away_after_s is not None:
                # The schedule is fixed as the connection opens: changing the
                # knob later affects only connections opened after that.
                conn.spawn(self._go_away_later(conn, self.go_away_after_s))
            await self._read_loop(conn)
        finally:
            await self._cancel_tasks(conn)
            if conn.close_code is None:
                conn.close_code, conn.close_reason = ws.close_code, ws.close_reason
                conn.closed_by = "client"
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            conn.ended = True
            log.info(
                "conn %d closed by %s: %s %r",
                conn.index,
                conn.closed_by,
                conn.close_code,
                conn.close_reason,
            )
            self._notify()

    def _authenticate(self, conn: FakeConnection) -> str | None:
        """How the client presented the expected key or a token this fake
        minted; with no key configured and no token minted, whatever it sent."""
        url = urlsplit(conn.request_path)
        query = parse_qs(url.query)
        headers = conn.request_headers
        offered = [
            ("header", headers.get("x-goog-api-key")),
            ("query", (query.get("key") or [None])[0]),
        ]
        if "Constrained" in url.path:  # ephemeral tokens only work on the v1alpha endpoint
            authz = headers.get("authorization") or ""
            offered += [
                ("token-header", authz[6:] if authz.startswith("Token ") else None),
                ("token-query", (query.get("access_token") or [None])[0]),
            ]
        for method, value in offered:
            if value is None:
                continue
            if method.startswith("token") and self.tokens.tokens:
                # Minted here: only a minted token is a token (checked at setup).
                conn.token_offered = True
                if value in self.tokens.tokens:
                    conn.token = value
                    return method
                continue
            if self.api_key is None or hmac.compare_digest(value, self.api_key):
                return method
        return None

    async def _cancel_tasks(self, conn: FakeConnection) -> None:
        tasks = [t for t in (*conn.tasks, conn.reply_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _read_loop(self, conn: FakeConnection) -> None:
        while True:
            try:
                raw = await conn.ws.recv()
            except ConnectionClosed:
                return
            try:
                msg = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                if not self.stalled:
                    await self._close(conn, 1007, INVALID_ARGUMENT, f"malformed JSON: {exc}")
                    return
                continue
            if isinstance(msg, dict):
                self._record_received(conn, msg)
            if self.stalled:
                continue
            try:
                await self._dispatch(conn, msg)
            except Reject as rej:
                await self._close(conn, rej.code, rej.reason, rej.detail)
                return
            except ConnectionClosed:
                return
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # A field of the wrong shape deep inside a message: the real server's proto
                # parser answers 1007. Logged with the traceback in case the bug is ours.
                log.warning("conn %d: cannot handle %.200r", conn.index, msg, exc_info=True)
                await self._close(conn, 1007, INVALID_ARGUMENT, f"malformed message: {exc!r}")
                return

    def _record_received(self, conn: FakeConnection, msg: dict[str, Any]) -> None:
        record = msg
        realtime = msg.get("realtimeInput")
        audio = realtime.get("audio") if isinstance(realtime, dict) else None
        if not self.keep_audio and isinstance(audio, dict) and isinstance(audio.get("data"), str):
            record = {"realtimeInput": {"audio": {**audio, "data": len(audio["data"]) * 3 // 4}}}
        conn.received.append(record)
        self.received.append(record)
        self._notify()
