"""One Gemini Live connection: connect, send ``setup``, wait for ``setupComplete``,
then send and receive concurrently until the socket closes.

Reconnection, resumption and backoff live in ``reconnect.py``; this module only
knows one socket's lifetime.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidHandshake,
    InvalidURI,
    WebSocketException,
)

from . import messages as m

log = logging.getLogger(__name__)

# websockets logs handshake headers at debug level, and our key travels in a
# header: its logger is pinned above debug whatever the root level is.
_ws_log = logging.getLogger("edge_daemon.live.websocket")
_ws_log.setLevel(logging.INFO)

# Server pongs have been measured at 8-30 s: the library's 20 s default would
# kill healthy links. Audio frames are ~1-2 KiB but one server message can hold
# seconds of audio, and the default 1 MiB cap is too tight.
PING_INTERVAL_S = 20.0
PING_TIMEOUT_S = 60.0
# Sized for a 512 MB Pi: the service sends audio in small pieces, so 2 MiB
# is far above any real message, and at most MAX_QUEUE of them wait unread
# (16 MiB in the worst case; 16 MiB messages, 16 deep, were 256 MiB).
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
MAX_QUEUE = 8
# A server that streams garbage must not flood the journal: this many malformed
# frames per connection are warnings, the rest debug (all are counted).
MALFORMED_WARNINGS = 5

# The short id of the connection the current task serves. Set by the link for
# each connection attempt; the logging setup adds it to records as EDGE_SESSION,
# so every record about one connection can be picked out of the journal.
current_session_id: ContextVar[str] = ContextVar("edge_session_id", default="")


def new_session_id() -> str:
    """Six hex digits: enough to tell a day's connections apart, short to read."""
    return secrets.token_hex(3)


class SessionError(Exception):
    """The session could not be opened or has ended."""

    def __init__(self, message: str, code: int | None = None, reason: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason


class SetupTimeout(SessionError):
    pass


class SessionClosed(SessionError):
    pass


@dataclass(frozen=True)
class Credentials:
    """How to authenticate. The value is kept out of repr, URLs and logs."""

    value: str = field(repr=False)
    kind: str = "api_key"  # or "ephemeral_token"

    def headers(self) -> dict[str, str]:
        if not self.value:
            return {}
        if self.kind == "ephemeral_token":
            return {"Authorization": f"Token {self.value}"}
        return {"x-goog-api-key": self.value}


@dataclass
class SessionCounters:
    frames_in: int = 0
    bytes_in: int = 0
    frames_out: int = 0
    bytes_out: int = 0
    malformed: int = 0


def _closed_error(exc: ConnectionClosed, what: str) -> SessionClosed:
    frame = exc.rcvd or exc.sent
    code = frame.code if frame is not None else 1006
    reason = frame.reason if frame is not None else ""
    return SessionClosed(f"{what}: closed {code} {reason!r}".rstrip(), code, reason)


class LiveSession:
    """A set-up session. Use ``LiveSession.open`` to get one."""

    def __init__(
        self,
        ws: ClientConnection,
        url: str,
        session_id: str = "",
        send_timeout_s: float | None = None,
    ) -> None:
        self._ws = ws
        self.url = url
        self.id = session_id or new_session_id()
        self.counters = SessionCounters()
        self.opened_at = time.monotonic()
        self.close_code: int | None = None
        self.close_reason = ""
        # Set by the link: the sequence number of the resumption handle this
        # connection resumed from (see Resumption.seq), None for a new session.
        # Tells the daemon what the server still remembers.
        self.resumed_seq: int | None = None
        self._send_timeout_s = send_timeout_s
        # Events that shared a frame with setupComplete: handed out first by events().
        self._early: list[m.ServerEvent] = []

    @classmethod
    async def open(
        cls,
        url: str,
        setup_json: str,
        credentials: Credentials | None = None,
        *,
        connect_timeout_s: float = 10.0,
        setup_timeout_s: float = 10.0,
        send_timeout_s: float | None = None,
        extra_headers: Mapping[str, str] | None = None,
        session_id: str = "",
    ) -> LiveSession:
        headers = dict(extra_headers or {})
        if credentials is not None:
            headers.update(credentials.headers())
        try:
            ws = await asyncio.wait_for(
                connect(
                    url,
                    additional_headers=headers,
                    open_timeout=None,  # bounded by wait_for, which also covers DNS
                    ping_interval=PING_INTERVAL_S,
                    ping_timeout=PING_TIMEOUT_S,
                    close_timeout=2.0,
                    max_size=MAX_MESSAGE_BYTES,
                    max_queue=MAX_QUEUE,
                    # Base64 audio barely compresses; deflate would only cost a Pi CPU.
                    compression=None,
                    logger=_ws_log,
                    user_agent_header="edge-daemon",
                ),
                connect_timeout_s,
            )
        except TimeoutError:
            raise SessionError(
                f"connect to {url} timed out after {connect_timeout_s:g} s"
            ) from None
        except InvalidURI as exc:
            raise SessionError(f"bad endpoint URL: {exc}") from None
        except InvalidHandshake as exc:
            raise SessionError(f"WebSocket handshake with {url} failed: {exc}") from None
        except OSError as exc:
            raise SessionError(f"cannot reach {url}: {exc.strerror or exc}") from None
        except WebSocketException as exc:
            # E.g. the server hung up mid-handshake: as transient as a refused connect.
            raise SessionError(f"WebSocket handshake with {url} failed: {exc!r}") from None
        session = cls(ws, url, session_id, send_timeout_s)
        try:
            await session._setup(setup_json, setup_timeout_s)
        except BaseException:
            await session.abort()
            raise
        return session

    async def _setup(self, setup_json: str, timeout_s: float) -> None:
        await self._send(setup_json)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise SetupTimeout(f"no setupComplete within {timeout_s:g} s")
            try:
                frame = await asyncio.wait_for(self._ws.recv(), remaining)
            except TimeoutError:
                raise SetupTimeout(f"no setupComplete within {timeout_s:g} s") from None
            except ConnectionClosed as exc:
                raise self._closed(exc, "closed during setup") from None
            try:
                events = m.parse_server_message(frame)
            except m.MalformedMessage as exc:
                self._malformed(frame, exc, " during setup")
                continue
            for i, event in enumerate(events):
                if isinstance(event, m.SetupComplete):
                    self._early = events[i + 1 :]
                    return
            log.debug("frame before setupComplete ignored: %s", [type(e).__name__ for e in events])

    def _malformed(self, frame: bytes | str, exc: Exception, where: str = "") -> None:
        self.counters.malformed += 1
        n = self.counters.malformed
        level = logging.WARNING if n <= MALFORMED_WARNINGS else logging.DEBUG
        log.log(
            level,
            "skipping malformed server frame (%d bytes)%s: %s",
            len(frame),
            where,
            exc,
            extra={"EDGE_EVENT": "malformed_frame"},
        )
        if n == MALFORMED_WARNINGS:
            log.warning(
                "%d malformed frames on this connection: further ones are logged at debug "
                "level only (counted in the session counters)",
                n,
                extra={"EDGE_EVENT": "malformed_frame"},
            )

    def _closed(self, exc: ConnectionClosed, what: str) -> SessionClosed:
        err = _closed_error(exc, what)
        self.close_code, self.close_reason = err.code, err.reason
        return err

    async def _send(self, text: str) -> None:
        try:
            # A peer that stops reading fills the TCP buffers and would park
            # this send (and the daemon's send lock) until keepalive gives up.
            async with asyncio.timeout(self._send_timeout_s):
                await self._ws.send(text)
        except ConnectionClosed as exc:
            raise self._closed(exc, "send failed") from None
        except TimeoutError:
            await self.abort()
            self.close_reason = "send timed out"
            raise SessionClosed(
                f"send timed out after {self._send_timeout_s:g} s", 1006, "send timed out"
            ) from None
        self.counters.frames_out += 1
        self.counters.bytes_out += len(text)

    async def events(self) -> AsyncIterator[m.ServerEvent]:
        """Server events until the socket closes, then raises SessionClosed.

        A malformed frame is logged and skipped: one bad message must not end a
        conversation.
        """
        early, self._early = self._early, []
        for event in early:
            yield event
        while True:
            try:
                frame = await self._ws.recv()
            except ConnectionClosed as exc:
                raise self._closed(exc, "connection closed") from None
            self.counters.frames_in += 1
            self.counters.bytes_in += len(frame)
            try:
                events = m.parse_server_message(frame)
            except m.MalformedMessage as exc:
                self._malformed(frame, exc)
                continue
            for event in events:
                yield event

    async def send_audio(self, pcm: bytes) -> None:
        await self._send(m.build_audio(pcm))

    async def send_video(self, jpeg: bytes) -> None:
        await self._send(m.build_video(jpeg))

    async def send_text(self, text: str) -> None:
        await self._send(m.build_text(text))

    async def send_typed_turn(self, text: str, *, activity_signals: bool = True) -> None:
        """A whole typed user turn: framed by activity signals when the setup
        disabled automatic activity detection (see messages.build_typed_turn)."""
        for message in m.build_typed_turn(text, activity_signals=activity_signals):
            await self._send(message)

    async def activity_start(self) -> None:
        await self._send(m.ACTIVITY_START)

    async def activity_end(self) -> None:
        await self._send(m.ACTIVITY_END)

    async def send_tool_response(self, results: list[m.FunctionResult]) -> None:
        await self._send(m.build_tool_response(results))

    @property
    def open_for_s(self) -> float:
        return time.monotonic() - self.opened_at

    @property
    def is_open(self) -> bool:
        return self.close_code is None and self._ws.close_code is None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        try:
            await self._ws.close(code, reason)
        except Exception as exc:  # closing is best effort; the socket may be gone
            log.debug("close raised %r", exc)
        if self.close_code is None:
            self.close_code = code

    async def abort(self) -> None:
        """Drop the connection without a closing handshake (setup failed, peer hung)."""
        transport = self._ws.transport
        if transport is not None:
            transport.abort()
        if self.close_code is None:
            self.close_code = 1006
