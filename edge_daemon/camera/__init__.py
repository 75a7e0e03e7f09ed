"""Cameras behind one small Protocol, and the ticker that sends their frames.

``open_camera`` is the entry point. Backends are imported only when chosen:
picamera2 exists only on a Pi, OpenCV is an optional extra, and even Pillow
is not loaded until a camera is.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import (
    CAPTURE_TIMEOUT_S,
    Camera,
    CameraConfigError,
    CameraError,
    CameraSetupError,
    ThreadedCamera,
)
from .ticker import MIN_INTERVAL_S, FrameTicker

if TYPE_CHECKING:
    from ..config import CameraConfig

__all__ = [
    "BACKENDS",
    "CAPTURE_TIMEOUT_S",
    "MIN_INTERVAL_S",
    "Camera",
    "CameraConfigError",
    "CameraError",
    "CameraSetupError",
    "FrameTicker",
    "ThreadedCamera",
    "open_camera",
]

BACKENDS = ("picamera2", "opencv", "file", "none")


def open_camera(cfg: CameraConfig) -> Camera | None:
    """The configured camera, not yet started; None for ``backend = "none"``.

    CameraConfigError (a ValueError) names what is wrong: an unknown backend,
    a missing file, a missing library. CameraSetupError, one of them, is what
    no retry can heal (a library, a setting); a missing file may come back.
    """
    common = {"max_side": cfg.max_side, "jpeg_quality": cfg.jpeg_quality}
    if cfg.backend == "none":
        return None
    try:
        import PIL  # noqa: F401 - every backend scales and encodes with it
    except ModuleNotFoundError:
        raise CameraSetupError("the camera needs Pillow: pip install Pillow") from None
    if cfg.backend == "file":
        from .files import FileCamera

        return FileCamera(cfg.file, **common)
    if cfg.backend == "picamera2":
        from .picam import Picamera2Camera

        if cfg.device and not cfg.device.isdigit():
            raise CameraSetupError(
                f"camera.device for picamera2 is a camera number (0, 1), got {cfg.device!r}"
            )
        return Picamera2Camera(
            camera_num=int(cfg.device or 0), width=cfg.width, height=cfg.height, **common
        )
    if cfg.backend == "opencv":
        from .webcam import OpenCVCamera

        return OpenCVCamera(cfg.device, width=cfg.width, height=cfg.height, **common)
    raise CameraSetupError(
        f"unknown camera backend {cfg.backend!r}; expected one of {', '.join(BACKENDS)}"
    )
