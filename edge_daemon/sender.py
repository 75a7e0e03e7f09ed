"""The way up: the current Live session, the lock that keeps what goes up it
in order, and the one task that sends turn traffic.

The press, the mic, a reconnect and a finished tool call only wake the
sender (``pump()``), so nothing is sent twice or out of order. It runs apart
from the mic loop: a slow network then fills the bounded turn buffer, never
the microphone's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .counters import Counters
from .live.session import LiveSession, SessionClosed
from .turn import Turn

log = logging.getLogger(__name__)

# Speech kept through a link outage is sent this much faster than real time:
# it catches up without a burst the Live API would frown on.
REPLAY_SPEEDUP = 2.0
# The Live API takes at most one frame a second, from any source.
MIN_FRAME_GAP_S = 1.0


class Sender:
    def __init__(
        self,
        counters: Counters,
        current_turn: Callable[[], Turn],
        held: Callable[[], bool],
        *,
        chunk_s: float,
        burst: int,
    ) -> None:
        self.counters = counters
        self._current_turn = current_turn
        # While a blocking tool call is unanswered, mic audio waits (PROTOCOL.md:
        # streaming it then can get the socket closed).
        self.held = held
        self._chunk_s = chunk_s
        # A backlog longer than this (the pre-roll and a little) is a replay.
        self._burst = burst
        self.session: LiveSession | None = None
        self.lock = asyncio.Lock()  # keeps activityStart, audio, activityEnd in order
        # When something went up that the server owes an answer to; None when
        # nothing is owed. The session watch calls silence past
        # link.response_timeout_s a stall.
        self.awaiting_reply_since: float | None = None
        # Called when an answer becomes owed: the session watch starts its clock.
        self.on_reply_owed: Callable[[], None] = lambda: None
        # With automatic activity detection off (push-to-talk, the setup's
        # choice), the client frames every turn, typed ones too.
        self.activity_signals = True
        self._started: Turn | None = None  # the turn whose activityStart went out on this socket
        self._activity_open = False  # an activityStart on this socket awaits its activityEnd
        self._wake = asyncio.Event()
        self._last_frame: float | None = None  # loop time of the last video frame
        self._frame_gate = asyncio.Lock()

    def attach(self, session: LiveSession) -> None:
        """A new connection: everything goes up this one from now on."""
        self.session = session

    def detach(self) -> None:
        """The connection is gone: nothing of it carries over to the next."""
        self.session = None
        self._started = None
        self._activity_open = False

    @property
    def activity_open(self) -> bool:
        """An activityStart on this socket still awaits its activityEnd."""
        return self._activity_open

    def expect_reply(self) -> None:
        owed_already = self.awaiting_reply_since is not None
        self.awaiting_reply_since = time.monotonic()
        if not owed_already:
            self.on_reply_owed()

    def pump(self) -> None:
        """Ask the sender to send what the current turn owes the server."""
        self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # A close mid-send: the session handler sees it and reconnects.
            with contextlib.suppress(SessionClosed):
                await self._send_owed()

    async def send(self, coro: Awaitable[Any]) -> None:
        """One frame up, or a debug line if the socket closed under it."""
        try:
            await coro
        except SessionClosed as exc:
            log.debug("send after close: %s", exc)

    async def send_frame(self, jpeg: bytes) -> None:
        """One camera frame up the current session (the ticker, take_photo),
        never sooner than MIN_FRAME_GAP_S after the last one, whoever sent it:
        the Live API takes at most a frame a second."""
        loop = asyncio.get_running_loop()
        async with self._frame_gate:  # frames wait for each other, not for the audio
            if self._last_frame is not None:
                wait = self._last_frame + MIN_FRAME_GAP_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            session = self.session
            if session is None:
                raise SessionClosed("no live session for the frame")
            self._last_frame = loop.time()
            async with self.lock:
                await session.send_video(jpeg)

    async def _send_owed(self) -> None:
        """activityStart, the turn's audio not yet sent on this socket, then
        activityEnd once released. Offline, or while a blocking tool call is
        unanswered, it sends nothing and the audio waits in the turn buffer. A
        backlog longer than the pre-roll (speech from a link outage) goes at
        twice real time, not as one burst, as the Live API asks."""
        session = self.session
        turn = self._current_turn()
        if session is None:
            return
        async with self.lock:
            if session is not self.session:
                return
            # The turn is read afresh at each step, not taken from the top: a
            # press while this waited for the lock, or during a send, has the
            # activityStart go out for the turn that is current by then.
            if self._activity_open and self._started is not self._current_turn():
                # A new press came before the last turn's activityEnd went out.
                await session.activity_end()
                self._activity_open = False
            if self._started is not self._current_turn():
                if not (self._current_turn().open or self._current_turn().end_owed):
                    return
                await session.activity_start()
                self._started = self._current_turn()
                self._activity_open = True
        while True:
            if session is not self.session or turn is not self._current_turn():
                self.pump()  # a new session or turn: start over from the top
                return
            if self.held():
                self.counters.chunks_buffered += 1
                return
            unsent, evicted = turn.unsent()
            # The bounded buffer dropped the oldest while offline.
            self.counters.chunks_dropped += evicted
            if unsent == 0:
                break
            async with self.lock:
                if session is not self.session or turn is not self._current_turn():
                    continue
                await session.send_audio(turn.audio[-unsent])
                turn.sent += 1
                self.counters.chunks_sent += 1
            if unsent - 1 > self._burst:
                await asyncio.sleep(self._chunk_s / REPLAY_SPEEDUP)
        if turn.end_owed:
            async with self.lock:
                if session is not self.session or turn is not self._current_turn():
                    return
                await session.activity_end()
                self._activity_open = False
                turn.end_sent()
                self.expect_reply()
