"""What a test does to the fake during a run: script the next turn, send
anything, call a tool, cancel calls, goAway, close or drop the connection,
hang."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from websockets.exceptions import ConnectionClosed

from .answers import Answers
from .protocol import duration
from .records import FakeConnection
from .scenarios import ScriptedTurn


class Controls(Answers):
    """The controls a test holds (script_turn, stall, go_away, drop_connection, ...)."""

    def script_turn(
        self,
        *,
        input_text: str | None = None,
        reply_text: str | None = None,
        tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
        reply_pcm: bytes | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue how the next turn goes (FIFO): what was "heard", tool calls to make first,
        what to say (and its exact audio), and a thinking delay before speaking."""
        self._scripts.append(ScriptedTurn(input_text, reply_text, tool_calls, reply_pcm, delay_s))

    def mint_token(
        self, *, uses: int = 1, expire_s: float = 1800.0, new_session_s: float = 60.0
    ) -> str:
        """An ephemeral token as the service mints it (see tokens.py)."""
        return self.tokens.mint(uses=uses, expire_s=expire_s, new_session_s=new_session_s)

    async def send(self, msg: dict[str, Any]) -> None:
        await self._send(self._require_active(), msg)

    async def send_raw(self, data: bytes | str) -> None:
        conn = self._require_active()
        await self._unstalled.wait()
        await conn.ws.send(data)
        conn.sent.append({"raw": data if isinstance(data, str) else data.hex()})
        self._notify()

    async def tool_call(self, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return await self._issue_tool_calls(self._require_active(), calls)

    async def cancel_tool_calls(self, ids: list[str]) -> None:
        conn = self._require_active()
        conn.pending_tool_ids.difference_update(ids)
        self._cancelled_ids.update(ids)
        await self._send(conn, {"toolCallCancellation": {"ids": list(ids)}})

    async def go_away(self, time_left_s: float = 50) -> None:
        """Send goAway now and close 1000 once ``time_left_s`` has passed."""
        conn = self._require_active()
        await self._send(conn, {"goAway": {"timeLeft": duration(time_left_s)}})
        conn.spawn(self._close_later(conn, time_left_s))

    async def close_connection(self, code: int, reason: str = "") -> None:
        await self._close(self._require_active(), code, reason, "closed by the test")

    async def drop_connection(self) -> None:
        """Abort the TCP connection with no close frame: the client sees 1006."""
        conn = self._require_active()
        conn.close_code, conn.closed_by, conn.close_detail = 1006, "drop", "dropped by the test"
        conn.ws.transport.abort()
        self._notify()

    def stall(self, on: bool) -> None:
        """Hang: send nothing and ignore input (still recorded) until stall(False). The socket
        stays open and websockets still answers pings, as a hung backend behind a proxy does."""
        if on:
            self._unstalled.clear()
        else:
            self._unstalled.set()
        self._notify()

    async def _go_away_later(self, conn: FakeConnection, after_s: float) -> None:
        await asyncio.sleep(after_s)
        with contextlib.suppress(ConnectionClosed):
            await self._send(conn, {"goAway": {"timeLeft": duration(self.go_away_grace_s)}})
            await self._close_later(conn, self.go_away_grace_s)
