"""The camera contract, and the base every backend shares.

Camera libraries block (a capture waits for the next frame), so each backend
implements three blocking hooks and the base runs them in a worker thread via
``asyncio.to_thread``, one at a time: the periodic ticker and a ``take_photo``
call never reach the device together.
"""

from __future__ import annotations

import abc
import asyncio
from typing import Any, Protocol, runtime_checkable

from ..device_health import CannotRetry

# A capture that takes longer has hung (camera cable out, driver wedged).
CAPTURE_TIMEOUT_S = 10.0


class CameraError(RuntimeError):
    """A camera cannot be opened or a frame cannot be had; the message says why."""


class CameraConfigError(CameraError, ValueError):
    """The camera cannot be used as configured (missing file, missing library)."""


class CameraSetupError(CameraConfigError, CannotRetry):
    """No camera plugged in could work as configured (a library is missing, a
    setting cannot be met): it is not retried."""


@runtime_checkable
class Camera(Protocol):
    async def start(self) -> None: ...

    async def capture(self) -> bytes:
        """A fresh frame as JPEG, longest side <= max_side."""
        ...

    async def close(self) -> None: ...


def _retrieve(fut: asyncio.Future[bytes]) -> None:
    # A capture abandoned after a timeout may still fail later: that is not news.
    if not fut.cancelled():
        fut.exception()


class ThreadedCamera(abc.ABC):
    """A Camera from three blocking hooks, each run in a worker thread, never concurrently."""

    def __init__(self, *, max_side: int = 1024, jpeg_quality: int = 75) -> None:
        if max_side < 16:
            raise CameraSetupError(f"camera.max_side must be >= 16, got {max_side!r}")
        if not 1 <= jpeg_quality <= 100:
            raise CameraSetupError(f"camera.jpeg_quality must be 1..100, got {jpeg_quality!r}")
        self.max_side = max_side
        self.jpeg_quality = jpeg_quality
        self.counters: dict[str, int] = {"captures": 0}
        self._lock = asyncio.Lock()
        self._grabbing: asyncio.Future[bytes] | None = None
        self._started = False
        self._closed = False

    @abc.abstractmethod
    def _open(self) -> None:
        """Acquire and start the device (blocking)."""

    @abc.abstractmethod
    def _grab(self) -> Any:
        """One fresh frame: encoded image bytes, or a PIL image (blocking)."""

    def _release(self) -> None:
        """Stop and release the device (blocking); called once, only after ``_open``."""
        return

    async def start(self) -> None:
        async with self._lock:
            if self._closed:
                raise CameraError("camera is closed")
            if not self._started:
                await asyncio.to_thread(self._open)
                self._started = True

    async def capture(self) -> bytes:
        await self.start()
        async with self._lock:
            if self._closed:
                raise CameraError("camera is closed")
            if self._grabbing is not None and not self._grabbing.done():
                # A worker thread cannot be killed: never start a second one on a hung device.
                raise CameraError(
                    "the camera is hung: an earlier capture has not returned for over "
                    f"{CAPTURE_TIMEOUT_S:g} s"
                )
            # Grab and encode in the same worker: a Pi's event loop must not decode images.
            self._grabbing = asyncio.ensure_future(asyncio.to_thread(self._grab_jpeg))
            self._grabbing.add_done_callback(_retrieve)
            try:
                jpeg = await asyncio.wait_for(asyncio.shield(self._grabbing), CAPTURE_TIMEOUT_S)
            except TimeoutError:
                raise CameraError(f"capture took over {CAPTURE_TIMEOUT_S:g} s") from None
            self.counters["captures"] += 1
            return jpeg

    def _grab_jpeg(self) -> bytes:
        from .image import to_jpeg

        return to_jpeg(self._grab(), self.max_side, self.jpeg_quality)

    async def close(self) -> None:
        async with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._started:
                await asyncio.to_thread(self._release)
