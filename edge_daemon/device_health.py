"""Devices that come and go: each device's health, one log record per change,
the backoff between attempts to reopen it, and the grace time after which the
process gives up so that systemd restarts it.

A device is ``starting`` until its first open, then ``up``, ``down`` (gone,
and being reopened with backoff) or ``off`` (it cannot work whatever is
plugged in, e.g. its library is not installed: never retried). The wrappers
that reopen devices (``audio/recovery.py``, ``camera/recovery.py``) report
here; ``ctl status``, the status LED, sd_notify's ``STATUS=`` and the grace
timer read from here. Nothing here knows what a microphone or a camera is.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger(__name__)

# The first wait before reopening a lost device; each failure doubles it, up
# to the configured ceiling (audio.device_retry_max_s, camera.device_retry_max_s).
RETRY_INITIAL_S = 0.5
# A device must stay up this long before its backoff starts again from
# RETRY_INITIAL_S: a loose plug that drops every second is retried ever more
# slowly instead of flooding the journal with lost/back pairs.
HEALTHY_AFTER_S = 30.0
# Closing a dead device can hang in its driver; past this it is abandoned.
CLOSE_TIMEOUT_S = 5.0


class CannotRetry(Exception):
    """Mixed into a device error that no retry can heal (a library that is not
    installed, a setting no device could satisfy): the device is ``off``."""


class Health(enum.StrEnum):
    STARTING = "starting"
    UP = "up"
    DOWN = "down"
    OFF = "off"


# A reason is kept and shown (ctl status, STATUS=) at most this long: a
# "no device matches" error lists every device, and a Pi can have dozens.
MAX_REASON = 400


def describe(exc: BaseException) -> str:
    """An exception as one line (at most MAX_REASON characters) for a record or ``ctl status``."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


async def close_bounded(close: Callable[[], Awaitable[None]], what: str) -> None:
    """Close a device that may already be gone: errors are expected and
    logged at debug level; a close that hangs is abandoned after CLOSE_TIMEOUT_S."""
    try:
        await asyncio.wait_for(close(), CLOSE_TIMEOUT_S)
    except TimeoutError:
        log.warning("closing the %s took over %g s: abandoned", what, CLOSE_TIMEOUT_S)
    except Exception as exc:
        log.debug("closing the %s: %s", what, describe(exc))


class DeviceHealth:
    """One device's record: its state, since when, why, and how many attempts."""

    def __init__(
        self, name: str, grace_s: float, board: DeviceBoard, retry_max_s: float = 0.0
    ) -> None:
        self.name = name
        self.grace_s = grace_s
        self.retry_max_s = retry_max_s
        self.state = Health.STARTING
        self.reason = ""
        self.retries = 0  # failed attempts to reopen it in this outage
        self.losses = 0  # outages so far (missing at start counts as one)
        self.next_retry_at: float | None = None
        self._board = board
        self.since = board.clock()
        self._since_wall = time.time()
        self._ever_up = False

    @property
    def clock(self) -> Callable[[], float]:
        return self._board.clock

    def up(self) -> None:
        if self.state is Health.UP:
            return
        was = self.state
        down_for = self._board.clock() - self.since
        retries = self.retries
        self._move(Health.UP, "")
        if was is Health.DOWN:
            log.info(
                "%s back after %.1f s (%d failed attempt%s)",
                self.name,
                down_for,
                retries,
                "" if retries == 1 else "s",
                extra={"EDGE_EVENT": "device_back", "EDGE_DEVICE": self.name},
            )
        self._ever_up = True

    def down(self, reason: str) -> None:
        """The device is gone (or missing at start): one record per outage."""
        if self.state is Health.DOWN:
            self.reason = reason
            return
        if self.state is Health.OFF:
            return
        self.losses += 1
        self.retries = 0
        self._move(Health.DOWN, reason)
        grace = (
            f"the service restarts if it is not back within {self.grace_s:g} s"
            if self.grace_s
            else "it is retried for as long as it takes"
        )
        log.error(
            "%s %s: %s; reopening it with backoff (at most %g s apart); %s",
            self.name,
            "lost" if self._ever_up else "missing at start",
            reason,
            self.retry_max_s,
            grace,
            extra={"EDGE_EVENT": "device_lost", "EDGE_DEVICE": self.name, "EDGE_REASON": reason},
        )

    def retry_failed(self, reason: str) -> None:
        """Another attempt to reopen it failed."""
        self.retries += 1
        self.reason = reason
        log.debug("%s: attempt %d failed: %s", self.name, self.retries, reason)
        self._board.changed(self)

    def off(self, reason: str) -> None:
        """It cannot work as configured: no retries, no grace."""
        if self.state is Health.OFF:
            return
        self._move(Health.OFF, reason)
        log.error(
            "%s unavailable: %s (fix it and restart the service)",
            self.name,
            reason,
            extra={"EDGE_EVENT": "device_off", "EDGE_DEVICE": self.name, "EDGE_REASON": reason},
        )

    def _move(self, state: Health, reason: str) -> None:
        self.state = state
        self.reason = reason
        self.since = self._board.clock()
        self._since_wall = time.time()
        self.next_retry_at = None
        self._board.changed(self)

    def status(self) -> dict[str, Any]:
        now = self._board.clock()
        out: dict[str, Any] = {
            "state": self.state.value,
            "since": datetime.fromtimestamp(self._since_wall, UTC).isoformat(timespec="seconds"),
            "for_s": round(now - self.since, 1),
            "reason": self.reason,
            "retries": self.retries,
            "losses": self.losses,
        }
        if self.state is Health.DOWN:
            out["next_retry_in_s"] = (
                round(max(0.0, self.next_retry_at - now), 1)
                if self.next_retry_at is not None
                else None
            )
            out["grace_left_s"] = (
                round(max(0.0, self.grace_s - (now - self.since)), 1) if self.grace_s else None
            )
        return out


HealthListener = Callable[[DeviceHealth], None]


class DeviceBoard:
    """Every device's health, the listeners to their changes, and the grace
    timers: a device down for longer than its ``grace_s`` (0 = never) calls
    the ``on_expired`` callbacks once."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.devices: dict[str, DeviceHealth] = {}
        self._listeners: list[HealthListener] = []
        self._expired: list[HealthListener] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def add(self, name: str, grace_s: float, retry_max_s: float = 0.0) -> DeviceHealth:
        health = DeviceHealth(name, grace_s, self, retry_max_s)
        self.devices[name] = health
        return health

    def subscribe(self, listener: HealthListener) -> None:
        """``listener(health)`` after every change of any device."""
        self._listeners.append(listener)

    def on_expired(self, callback: HealthListener) -> None:
        """``callback(health)`` when a device stayed down past its grace time."""
        self._expired.append(callback)

    def not_up(self) -> list[DeviceHealth]:
        """Devices that are down or off (not those still starting)."""
        return [h for h in self.devices.values() if h.state in (Health.DOWN, Health.OFF)]

    def summary(self) -> str:
        """One line for sd_notify's STATUS=: what is missing, or ""."""
        return "; ".join(
            f"{h.name} {'missing' if h.state is Health.DOWN else 'off'}: {h.reason}"
            for h in self.not_up()
        )

    def status(self) -> dict[str, dict[str, Any]]:
        return {name: h.status() for name, h in self.devices.items()}

    def changed(self, health: DeviceHealth) -> None:
        self._arm(health)
        for listener in list(self._listeners):
            try:
                listener(health)
            except Exception:
                log.exception("device health listener failed")

    def _arm(self, health: DeviceHealth) -> None:
        timer = self._timers.get(health.name)
        if health.state is Health.DOWN and health.grace_s > 0:
            if timer is None:
                loop = asyncio.get_running_loop()
                self._timers[health.name] = loop.call_later(health.grace_s, self._expire, health)
        elif timer is not None:
            timer.cancel()
            del self._timers[health.name]

    def _expire(self, health: DeviceHealth) -> None:
        self._timers.pop(health.name, None)
        if health.state is not Health.DOWN:
            return
        for callback in list(self._expired):
            try:
                callback(health)
            except Exception:
                log.exception("device grace callback failed")

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()


Sleep = Callable[[float], Awaitable[None]]


class Reopener:
    """Runs ``attempt`` until it returns True, waiting RETRY_INITIAL_S,
    then twice as long after every failure, up to ``max_s``.

    ``kick`` starts it when a device goes down. The backoff starts again from
    the beginning only once the devices stayed up HEALTHY_AFTER_S; a device
    that keeps dropping is retried ever more slowly. ``on_wait(at)`` hears
    when the next attempt is due (for ``ctl status``). ``sleep`` and ``clock``
    are the event loop's; tests pass their own to see the series of waits.
    """

    def __init__(
        self,
        attempt: Callable[[], Awaitable[bool]],
        *,
        max_s: float,
        name: str,
        on_wait: Callable[[float], None] | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._attempt = attempt
        self._on_wait = on_wait
        self.max_s = max(max_s, RETRY_INITIAL_S)
        self.name = name
        self._sleep = sleep
        self._clock = clock
        self._delay = RETRY_INITIAL_S
        self._up_since: float | None = None
        self._task: asyncio.Task[None] | None = None
        self.next_at: float | None = None

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def kick(self) -> None:
        if self.running:
            return
        if self._up_since is not None and self._clock() - self._up_since >= HEALTHY_AFTER_S:
            self._delay = RETRY_INITIAL_S
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"reopen-{self.name}")

    def _next_delay(self) -> float:
        delay = self._delay
        self._delay = min(self._delay * 2, self.max_s)
        return delay

    async def _run(self) -> None:
        while True:
            delay = self._next_delay()
            self.next_at = self._clock() + delay
            if self._on_wait is not None:
                self._on_wait(self.next_at)
            await self._sleep(delay)
            self.next_at = None
            try:
                done = await self._attempt()
            except Exception:
                # A bug in an attempt must not end the retries for good.
                log.exception("reopening the %s failed", self.name)
                done = False
            if done:
                self._up_since = self._clock()
                return

    async def settled(self) -> None:
        """Return once the current round of attempts is over (at once if none runs)."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
