"""When to end a connection: a stop; a goAway, between turns once a fresh
resumption handle came (or at the latest a little before the cut); or a
stall, when the server owes an answer and says nothing for
link.response_timeout_s.

It wakes only when something it decides on can have changed: a state
change, a request to switch, a ``poke`` (an answer became owed, a handle
came), or the moment a deadline (the stall's, the goAway's) falls due. An
idle link costs it nothing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from .counters import Counters
from .live import messages as m
from .live.reconnect import Resumption, SessionEnd

log = logging.getLogger(__name__)

# A deadline is checked this long after it falls due (a check at the very
# instant could see it a hair early).
_SLACK_S = 0.02


class SessionWatch:
    def __init__(self, resumption: Resumption, counters: Counters, timeout_s: float) -> None:
        self._resumption = resumption
        self.counters = counters
        self._timeout_s = timeout_s
        self._switch = asyncio.Event()  # ask the session handler to end (goAway, stop)
        self._poked = asyncio.Event()  # something the checks read has changed
        self._clock_running = False  # the current wait ends at a stall deadline
        self._reason = SessionEnd.GO_AWAY
        self._deadline: float | None = None
        # The resumption handle number when the last model turn ended: a goAway
        # switch waits for a newer one, so the next connection remembers that turn.
        self._turn_end_seq = 0

    def new_session(self) -> None:
        self._switch.clear()
        self._poked.clear()
        self._deadline = None

    def poke(self) -> None:
        """Look again now: a resumption handle came."""
        self._poked.set()

    def reply_owed(self) -> None:
        """An answer became owed: start the stall clock, unless it runs already
        (an answer streaming in moves its deadline at every message; a wait
        that ends at the old one looks again then)."""
        if not self._clock_running:
            self._poked.set()

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
        while True:
            self._poked.clear()
            # A state change may be the end of the turn a goAway waits for.
            waits = [state_changed().wait(), self._poked.wait()]
            if not self._switch.is_set():  # once set, waiting on it would return at once
                waits.append(self._switch.wait())
            futures = [asyncio.ensure_future(w) for w in waits]
            since = awaiting_reply_since()
            self._clock_running = since is not None
            try:
                await asyncio.wait(
                    futures, timeout=self._next_due(since), return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for future in futures:
                    future.cancel()
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

    def _next_due(self, since: float | None) -> float | None:
        """Seconds until a deadline falls due (None: none is pending)."""
        now = time.monotonic()
        due = []
        if since is not None:
            due.append(since + self._timeout_s - now)
        if self._switch.is_set() and self._deadline is not None:
            due.append(self._deadline - now)
        return max(0.0, min(due)) + _SLACK_S if due else None
