"""The fake's state, and what every part of it uses: sending and closing
like the real server, recording each protocol violation once, and
``wait_for``, which re-checks a condition on every message, connection and
close, so tests never poll or sleep."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server

from .protocol import message_kinds
from .records import FakeConnection, SessionState, Turn
from .scenarios import ScriptedTurn
from .tokens import AuthTokenEndpoint, TokenBook

if TYPE_CHECKING:
    from .server import FakeGemini

log = logging.getLogger(__name__)


class FakeCore:
    """The state the other parts share (the knobs are FakeGemini's keyword arguments)."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        pace: float = 1.0,
        chunk_ms: int = 40,
        reply_text: str | None = None,
        use_speech: bool = True,
        setup_complete_delay_s: float = 0.0,
        send_setup_complete: bool = True,
        go_away_after_s: float | None = None,
        go_away_grace_s: float = 5.0,
        resumption: bool = True,
        strict_tool_audio: bool = False,
        tool_timeout_s: float = 30.0,
        keep_audio: bool = True,
    ) -> None:
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.reply_text = reply_text
        self.use_speech = use_speech
        self.setup_complete_delay_s = setup_complete_delay_s
        self.send_setup_complete = send_setup_complete
        self.go_away_after_s = go_away_after_s
        self.go_away_grace_s = go_away_grace_s
        self.resumption = resumption
        self.strict_tool_audio = strict_tool_audio
        self.tool_timeout_s = tool_timeout_s
        # False drops received audio payloads (keeping their length): a long-running
        # demo server must not grow by 43 kB of base64 per second of speech.
        self.keep_audio = keep_audio
        self.host = "127.0.0.1"
        self.port = 0
        self.connections: list[FakeConnection] = []
        self.received: list[dict[str, Any]] = []
        self.tool_responses: list[dict[str, Any]] = []
        self.protocol_violations: list[str] = []
        self.sessions: dict[str, SessionState] = {}
        self.turns: list[Turn] = []
        self._scripts: deque[ScriptedTurn] = deque()
        self._server: Server | None = None
        self._changed = asyncio.Event()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._call_seq = 0
        self._session_seq = 0
        self._issued_calls: dict[str, tuple[FakeConnection, str]] = {}  # id -> (conn, name)
        self._answered_ids: set[str] = set()
        self._cancelled_ids: set[str] = set()
        # Ephemeral tokens it minted (mint_token, or POST /v1alpha/auth_tokens).
        self.tokens = TokenBook()
        self.auth_endpoint = AuthTokenEndpoint(self.tokens, api_key)

    @property
    def active(self) -> FakeConnection | None:
        return next((c for c in reversed(self.connections) if c.open), None)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[FakeGemini], Any],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline, like wait_for's
    ) -> Any:
        """Wait until ``predicate(self)`` is truthy and return its value; re-checked on every
        message, connection and close, so tests never poll or sleep."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate(self)):
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(predicate, timeout))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
        return result

    def _timeout_message(self, predicate: Callable[..., Any], timeout: float) -> str:
        try:
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = repr(predicate)
        lines = [f"FakeGemini.wait_for timed out after {timeout}s waiting for: {what}"]
        for c in self.connections[-3:]:
            got = [message_kinds(m)[-1] for m in c.received[-8:]]
            out = [message_kinds(m)[-1] for m in c.sent[-8:]]
            lines.append(
                f"  conn {c.index} open={c.open} close={c.close_code} "
                f"{c.close_reason!r} ({c.close_detail}) last received={got} "
                f"last sent={out}"
            )
        lines.append(f"  turns={len(self.turns)} violations={self.protocol_violations[-5:]}")
        return "\n".join(lines)

    def messages_of(
        self, kind: str, *, sent: bool = False, conn: FakeConnection | None = None
    ) -> list[dict[str, Any]]:
        """Received (or, with sent=True, sent) messages whose kinds include ``kind``,
        e.g. "activityStart", "audio", "toolResponse", "turnComplete", "goAway"."""
        conns = [conn] if conn else self.connections
        return [
            m for c in conns for m in (c.sent if sent else c.received) if kind in message_kinds(m)
        ]

    def count(self, kind: str, *, sent: bool = False, conn: FakeConnection | None = None) -> int:
        return len(self.messages_of(kind, sent=sent, conn=conn))

    def audio_received_s(self, conn: FakeConnection | None = None) -> float:
        return sum(c.audio_s for c in ([conn] if conn else self.connections))

    @property
    def reply_audio_bytes(self) -> bytes:
        return next((t.reply_pcm for t in reversed(self.turns) if t.reply_pcm), b"")

    def _violation(self, conn: FakeConnection, text: str, once: str | None = None) -> None:
        if once is not None:
            if once in conn._flags:
                return
            conn._flags.add(once)
        self.protocol_violations.append(f"conn {conn.index}: {text}")
        log.warning("protocol violation on conn %d: %s", conn.index, text)
        self._notify()

    def _require_active(self) -> FakeConnection:
        conn = self.active
        if conn is None:
            raise RuntimeError("FakeGemini has no open connection")
        return conn

    @property
    def stalled(self) -> bool:
        return not self._unstalled.is_set()

    async def _send(
        self, conn: FakeConnection, msg: dict[str, Any], record: dict[str, Any] | None = None
    ) -> None:
        """Every server frame is binary UTF-8 JSON; non-audio messages are pretty-printed
        like the real server's, so a client that splits on lines breaks here too."""
        await self._unstalled.wait()
        text = json.dumps(msg) if record is not None else json.dumps(msg, indent=2)
        await conn.ws.send(text.encode())
        conn.sent.append(record if record is not None else msg)
        self._notify()

    async def _close(self, conn: FakeConnection, code: int, reason: str, detail: str) -> None:
        if conn.close_code is None:
            conn.close_code, conn.close_reason = code, reason
            conn.close_detail, conn.closed_by = detail, "server"
        log.info("conn %d: closing %d %r (%s)", conn.index, code, reason, detail)
        self._notify()
        await conn.ws.close(code, reason)

    async def _close_later(self, conn: FakeConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._unstalled.wait()
        await self._close(conn, 1000, "", "goAway time elapsed")
