"""The daemon's states, as ``ctl status``, the status LED and journald name
them, and what every state change does: one log record, one history entry,
one call to each listener, and a wake-up for whoever waits on a state.

The transitions themselves (which event moves the daemon where) are the
daemon's (daemon.py); this is only their bookkeeping.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# How many past state changes `status` reports: enough to see one whole turn.
_HISTORY = 32


class State(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    RECONNECTING = "reconnecting"
    ERROR = "error"


StateListener = Callable[[State, State], None]
# Things worth showing that are not states: "safety_stop", "turn_stopped".
NoticeListener = Callable[[str], None]


class StateMachine:
    def __init__(self) -> None:
        self.state = State.STARTING
        self.history: deque[tuple[float, str]] = deque(maxlen=_HISTORY)
        self.started_at = time.monotonic()
        self._listeners: list[StateListener] = []
        self._notice_listeners: list[NoticeListener] = []
        self._state_changed = asyncio.Event()  # replaced on every change

    def subscribe(self, listener: StateListener) -> None:
        """``listener(old, new)`` on every change (the status LED, sd_notify)."""
        self._listeners.append(listener)

    def subscribe_notice(self, listener: NoticeListener) -> None:
        """``listener(name)`` for moments that are not states: the status LED
        flashes for them, the speaker may sound an earcon."""
        self._notice_listeners.append(listener)

    def notify(self, notice: str) -> None:
        for listener in list(self._notice_listeners):
            try:
                listener(notice)
            except Exception:
                log.exception("notice listener failed")

    def _set_state(self, new: State, why: str = "") -> None:
        old = self.state
        if new is old:
            return
        self.state = new
        self.history.append((round(time.monotonic() - self.started_at, 3), new.value))
        log.info(
            "state %s -> %s%s",
            old.value,
            new.value,
            f" ({why})" if why else "",
            extra={"EDGE_EVENT": "state", "EDGE_STATE": new.value, "EDGE_PREV_STATE": old.value},
        )
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("state listener failed")

    async def wait_changed(self) -> None:
        """Return at the next state change."""
        await self._state_changed.wait()

    async def wait_state(self, wanted: State, timeout_s: float) -> bool:
        """True once the daemon is in ``wanted`` (at once if it already is)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.state is not wanted:
                    await self._state_changed.wait()
        except TimeoutError:
            return False
        return True
