"""When to end a connection: a stop; a goAway, between turns once a fresh
resumption handle came (or at the latest a little before the cut); or a
stall, when the server owes an answer and says nothing for
link.response_timeout_s."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .counters import Counters
from .live import messages as m
from .live.reconnect import Resumption, SessionEnd

log = logging.getLogger(__name__)


class SessionWatch:
    def __init__(self, resumption: Resumption, counters: Counters, timeout_s: float) -> None:
        self._resumption = resumption
        self.counters = counters
        self._timeout_s = timeout_s
        self._switch = asyncio.Event()  # ask the session handler to end (goAway, stop)
        self._reason = SessionEnd.GO_AWAY
        self._deadline: float | None = None
        # The resumption handle number when the last model turn ended: a goAway
        # switch waits for a newer one, so the next connection remembers that turn.
        self._turn_end_seq = 0

    def new_session(self) -> None:
        self._switch.clear()
        self._deadline = None

    def stop(self) -> None:
        self._request(SessionEnd.STOP)

    def turn_ended(self) -> None:
        self._turn_end_seq = self._resumption.seq

    def go_away(self, ev: m.GoAway) -> None:
        self.counters.go_aways += 1
        left = ev.time_left_s if ev.time_left_s is not None else 10.0
        # Switch between turns if one comes; at the latest a little before the cut.
        self._deadline = time.monotonic() + max(0.0, left - 2.0)
        log.info(
            "server goAway: %.0f s left; switching between turns",
            left,
            extra={"EDGE_EVENT": "go_away"},
        )
        self._request(SessionEnd.GO_AWAY)

    def _request(self, reason: SessionEnd) -> None:
        self._reason = reason
        self._switch.set()

    async def run(
        self,
        state_changed: Callable[[], asyncio.Event],
        between_turns: Callable[[], bool],
        awaiting_reply_since: Callable[[], float | None],
    ) -> SessionEnd:
        """Return why the current session should end, once it should."""
        timeout = self._timeout_s
        tick = min(0.5, timeout / 10)  # a stall is seen within a tenth of the timeout
        while True:
            changed = asyncio.ensure_future(state_changed().wait())
            switch = asyncio.ensure_future(self._switch.wait())
            try:
                # A state change may be the end of the turn a goAway waits for.
                await asyncio.wait(
                    {changed, switch}, timeout=tick, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
                switch.cancel()
            if self._switch.is_set():
                if self._reason is SessionEnd.STOP:
                    return SessionEnd.STOP
                deadline = self._deadline
                # The handle must postdate the last turn, or the next connection
                # resumes without it: updates come just after turnComplete.
                res = self._resumption
                fresh = res.handle is not None and res.seq > self._turn_end_seq
                if (between_turns() and fresh) or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    return SessionEnd.GO_AWAY
            since = awaiting_reply_since()
            if since is not None and time.monotonic() - since > timeout:
                self.counters.stalls += 1
                log.warning(
                    "no answer from the server for %.0f s; reconnecting",
                    timeout,
                    extra={"EDGE_EVENT": "stall"},
                )
                return SessionEnd.STALLED
