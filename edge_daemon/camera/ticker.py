"""Camera frames up to the model on a schedule: the daemon decides when, this decides how often.

Ticks are anchored (tick k is due at start + k * interval on the loop clock),
so the time a capture takes does not stretch the period. Ticks missed while a
slow capture or send was still running are skipped, never bunched, and no two
frames are ever sent less than MIN_INTERVAL_S apart: the Live API takes at
most one frame a second, whatever the config says. ``kick`` takes a frame now
(say, as the user starts talking) and re-anchors the schedule there.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable

from .base import Camera

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 1.0


class FrameTicker:
    def __init__(
        self,
        camera: Camera,
        interval_s: float,
        should_send: Callable[[], bool],
        send: Callable[[bytes], Awaitable[None]],
    ) -> None:
        if not interval_s >= MIN_INTERVAL_S:  # also catches NaN
            logger.warning(
                "camera interval %.3g s is faster than the Live API takes frames: using %.1f s",
                interval_s,
                MIN_INTERVAL_S,
            )
            interval_s = MIN_INTERVAL_S
        self.camera = camera
        self.interval_s = float(interval_s)
        self.should_send = should_send
        self.send = send
        self.counters: dict[str, int] = {
            "frames_sent": 0,
            "capture_errors": 0,
            "send_errors": 0,
            "skipped": 0,  # ticks should_send() declined
            "missed": 0,  # ticks that passed while a capture or send was still running
        }
        self._logged: set[str] = set()
        self._last_sent: float | None = None
        self._kick = asyncio.Event()

    def kick(self) -> None:
        """Tick now rather than at the next due time (still never two frames within 1 s)."""
        self._kick.set()

    async def run(self) -> None:
        """Tick until cancelled. Never raises for a camera or send failure."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        tick = 0
        while True:
            if await self._sleep_until(loop, start + tick * self.interval_s):
                start, tick = loop.time(), 0
            await self._tick(loop)
            # Next due tick strictly after now: ticks overrun by a slow capture are dropped.
            behind = math.floor((loop.time() - start) / self.interval_s) + 1
            self.counters["missed"] += max(0, behind - tick - 1)
            tick = max(tick + 1, behind)

    async def _sleep_until(self, loop: asyncio.AbstractEventLoop, due: float) -> bool:
        """Sleep until loop time ``due``; True if ``kick`` woke it first."""
        if not self._kick.is_set():
            delay = due - loop.time()
            if delay <= 0:
                return False
            try:
                async with asyncio.timeout(delay):
                    await self._kick.wait()
            except TimeoutError:
                return False
        self._kick.clear()
        return True

    async def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            wanted = self.should_send()
        except Exception as exc:
            self._log_once("should_send", "camera gate failed, no frame sent: %r", exc)
            wanted = False
        if not wanted:
            self.counters["skipped"] += 1
            return
        try:
            jpeg = await self.camera.capture()
        except Exception as exc:
            self.counters["capture_errors"] += 1
            self._log_once(
                f"capture:{type(exc).__name__}",
                "camera capture failed (counted in capture_errors, logged once per kind): %s",
                exc,
            )
            return
        if self._last_sent is not None:
            # A slow capture must not squeeze two frames into one second.
            wait = self._last_sent + MIN_INTERVAL_S - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        self._last_sent = loop.time()
        try:
            await self.send(jpeg)
        except Exception as exc:
            self.counters["send_errors"] += 1
            self._log_once(
                f"send:{type(exc).__name__}",
                "sending a camera frame failed (counted in send_errors, logged once per kind): %s",
                exc,
            )
            return
        self.counters["frames_sent"] += 1

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)
