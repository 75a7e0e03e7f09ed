"""A camera that comes back after it is unplugged (or its driver wedges).

The daemon, the frame ticker and ``take_photo`` hold one Camera for the
daemon's whole life. Behind it the real one is made by a factory and
started; FAILURES_TO_REOPEN captures failing in a row (a cable out, a
driver that stopped delivering) close it, and it is reopened with backoff
(``device_health.Reopener``) until it works again. A camera missing at start
is retried the same way. While it is down, ``capture`` fails at once with
the reason, which the ticker counts and ``take_photo`` tells the model.
A camera that cannot work as configured (``CameraSetupError``: a library not
installed) is ``off``: its ``start`` fails, as it always did, and it is not retried.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from ..device_health import (
    CannotRetry,
    DeviceHealth,
    Health,
    Reopener,
    Sleep,
    close_bounded,
    describe,
)
from .base import Camera, CameraError

# One failed capture can be a fluke (a frame dropped, a file being rewritten);
# this many in a row is a camera that is gone.
FAILURES_TO_REOPEN = 3


class RecoveringCamera:
    def __init__(
        self,
        open_camera: Callable[[], Camera],
        health: DeviceHealth,
        *,
        retry_max_s: float,
        failures_to_reopen: int = FAILURES_TO_REOPEN,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._open_camera = open_camera
        self.health = health
        self.failures_to_reopen = failures_to_reopen
        self.reopener = Reopener(
            self._reopen,
            max_s=retry_max_s,
            name="camera",
            on_wait=self._waiting,
            sleep=sleep,
            clock=health.clock,
        )
        self._inner: Camera | None = None
        self._failures = 0  # captures failed in a row
        self._past: dict[str, int] = {}
        self._started = False
        self._closed = False
        self._lock = asyncio.Lock()  # one open or close at a time

    @property
    def counters(self) -> dict[str, int]:
        """The camera's counters, summed over every time it was opened."""
        out = dict(self._past)
        for key, value in getattr(self._inner, "counters", {}).items():
            out[key] = out.get(key, 0) + value
        return out

    async def start(self) -> None:
        """Open it; if it will not open it is down and retried. CameraError
        only for a camera that is ``off`` (it cannot work as configured)."""
        if self._started:
            if self.health.state is Health.OFF:
                raise CameraError(self.health.reason)
            return
        self._started = True
        async with self._lock:
            await self._open()
        if self.health.state is Health.OFF:
            raise CameraError(self.health.reason)
        if self._inner is None:
            self.reopener.kick()

    async def _open(self) -> None:
        if self._closed:
            return
        camera: Camera | None = None
        try:
            camera = self._open_camera()
            await camera.start()
        except CannotRetry as exc:
            self.health.off(describe(exc))
        except Exception as exc:
            if camera is not None:
                await close_bounded(camera.close, "camera")
            if self.health.state is Health.DOWN:
                self.health.retry_failed(describe(exc))
            else:
                self.health.down(describe(exc))
        else:
            if self._closed:
                await close_bounded(camera.close, "camera")
                return
            self._inner = camera
            self._failures = 0
            self.health.up()

    async def _reopen(self) -> bool:
        async with self._lock:
            if self._inner is None:
                await self._open()
            return self._inner is not None or self._closed or self.health.state is Health.OFF

    def _waiting(self, at: float) -> None:
        self.health.next_retry_at = at

    async def capture(self) -> bytes:
        inner = self._inner
        if inner is None:
            if self._closed:
                raise CameraError("camera is closed")
            raise CameraError(f"the camera is not available: {self.health.reason}")
        try:
            jpeg = await inner.capture()
        except Exception as exc:
            self._failures += 1
            if self._failures >= self.failures_to_reopen:
                self._lose(inner, describe(exc))
            raise
        self._failures = 0
        return jpeg

    def _lose(self, inner: Camera, reason: str) -> None:
        if self._inner is not inner or self._closed:
            return
        self._inner = None
        for key, value in getattr(inner, "counters", {}).items():
            self._past[key] = self._past.get(key, 0) + value
        self.health.down(f"{self._failures} captures failed in a row, the last: {reason}")
        asyncio.get_running_loop().create_task(self._close(inner), name="close-camera")
        self.reopener.kick()

    async def _close(self, inner: Camera) -> None:
        async with self._lock:
            await close_bounded(inner.close, "camera")

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.reopener.close()
        inner, self._inner = self._inner, None
        if inner is not None:
            await self._close(inner)

    def __getattr__(self, name: str) -> Any:
        # Anything else a backend offers (``current`` for the file camera).
        inner = self.__dict__.get("_inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)
