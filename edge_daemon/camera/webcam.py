"""A desktop webcam through OpenCV (the optional ``[webcam]`` extra).

OpenCV only captures; Pillow scales and encodes, as for every other backend.
"""

from __future__ import annotations

from typing import Any

from .base import CameraError, CameraSetupError, ThreadedCamera


def _cv2() -> Any:
    try:
        import cv2
    except ModuleNotFoundError:
        raise CameraSetupError(
            "camera.backend = 'opencv' needs OpenCV: pip install 'edge-daemon[webcam]'"
        ) from None
    return cv2


class OpenCVCamera(ThreadedCamera):
    """``device`` is an index ("0", the default) or a path such as /dev/video0.
    ``cv2`` stands in for the OpenCV module (tests pass a fake)."""

    def __init__(
        self,
        device: str = "",
        *,
        width: int = 640,
        height: int = 480,
        max_side: int = 1024,
        jpeg_quality: int = 75,
        cv2: Any = None,
    ) -> None:
        super().__init__(max_side=max_side, jpeg_quality=jpeg_quality)
        self.source: int | str = int(device) if device.isdigit() else (device or 0)
        self.size = (width, height)
        self._cv2 = cv2
        self._cap: Any = None

    def _open(self) -> None:
        cv2 = self._cv2 = self._cv2 or _cv2()
        cap = cv2.VideoCapture(self.source)
        if not cap.isOpened():
            cap.release()
            raise CameraError(f"cannot open webcam {self.source!r} (`v4l2-ctl --list-devices`)")
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.size[0])
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.size[1])
        # A webcam queues frames while nobody reads: keep that queue short.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        self._cap = cap

    def _grab(self) -> Any:
        from PIL import Image

        self._cap.grab()  # drop the frame that waited in the driver since the last capture
        ok, frame = self._cap.read()
        if not ok or frame is None:
            raise CameraError(f"webcam {self.source!r} returned no frame")
        if frame.ndim == 3:
            frame = frame[:, :, 2::-1].copy()  # OpenCV's BGR(A) to RGB
        return Image.fromarray(frame)

    def _release(self) -> None:
        self._cap.release()
