"""The Raspberry Pi camera through picamera2 (libcamera): a thin adapter.

One low-resolution still configuration is set up once and kept running; every
capture takes the next frame from it as a JPEG into memory. Switching modes
per capture (the picamera2 examples' ``switch_mode_and_capture_file``) has
run small Pis out of contiguous memory (ENOMEM), so this never does.

A capture that times out stays queued inside picamera2, and ``stop()`` (which
``close()`` calls too) queues behind it and never returns while the camera
sends no frames; ``cancel_all_and_flush()`` (picamera2 0.3.20 and later) drops
it. README.md, "What the fakes stand in for", lists every call made here and
where in picamera2's source it was checked.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

from .base import (
    CAPTURE_TIMEOUT_S,
    CameraError,
    CameraSetupError,
    ThreadedCamera,
)

# picamera2 gives up on a frame a little before our own timeout, so its worker
# thread returns instead of being abandoned.
FRAME_WAIT_S = CAPTURE_TIMEOUT_S - 2.0


def _picamera2_class() -> Callable[..., Any]:
    try:
        from picamera2 import Picamera2
    except ModuleNotFoundError:
        raise CameraSetupError(
            "camera.backend = 'picamera2' needs picamera2: on Raspberry Pi OS "
            "`apt install python3-picamera2` and a venv made with --system-site-packages"
        ) from None
    return Picamera2  # type: ignore[no-any-return]


class Picamera2Camera(ThreadedCamera):
    """``factory`` stands in for the ``Picamera2`` class (tests pass a fake)."""

    def __init__(
        self,
        *,
        camera_num: int = 0,
        width: int = 640,
        height: int = 480,
        max_side: int = 1024,
        jpeg_quality: int = 75,
        factory: Callable[..., Any] | None = None,
    ) -> None:
        super().__init__(max_side=max_side, jpeg_quality=jpeg_quality)
        self.camera_num = camera_num
        # libcamera wants even dimensions.
        self.size = (width - width % 2, height - height % 2)
        self._factory = factory
        self._cam: Any = None

    def _open(self) -> None:
        factory = self._factory or _picamera2_class()
        try:
            cam = factory(camera_num=self.camera_num)
        except (RuntimeError, IndexError) as exc:
            raise CameraError(
                f"no camera {self.camera_num} ({exc}); is it connected and enabled? "
                "`rpicam-hello --list-cameras` lists them"
            ) from None
        try:
            cam.configure(cam.create_still_configuration(main={"size": self.size}))
            # Encoded by picamera2 at our quality: a frame within max_side then
            # passes through without a second encode.
            cam.options["quality"] = self.jpeg_quality
            cam.start()
        except BaseException:
            cam.close()
            raise
        self._cam = cam

    def _grab(self) -> bytes:
        out = io.BytesIO()
        try:
            self._cam.capture_file(out, format="jpeg", wait=FRAME_WAIT_S)
        except TimeoutError:  # concurrent.futures.TimeoutError, the same class since 3.11
            # The job is still queued: it would take the next frame, and
            # stop() would wait behind it for good if no frame ever comes.
            self._flush()
            raise CameraError(
                f"no frame from camera {self.camera_num} within {FRAME_WAIT_S:g} s "
                "(cable, or another program using it?)"
            ) from None
        return out.getvalue()

    def _release(self) -> None:
        try:
            self._flush()  # nothing queued may hold up stop()
            self._cam.stop()
        finally:
            self._cam.close()

    def _flush(self) -> None:
        flush = getattr(self._cam, "cancel_all_and_flush", None)
        if flush is not None:  # picamera2 older than 0.3.20 has none
            flush()
