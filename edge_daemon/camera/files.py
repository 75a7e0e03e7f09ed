"""A camera that shows image files: one image, or a folder of them in name order, looped.

For desktops, demos and tests. A folder is listed again each time it wraps
around, so images dropped into it while the daemon runs (by a script, another
camera) join the loop.
"""

from __future__ import annotations

from pathlib import Path

from .base import CameraConfigError, CameraError, CameraSetupError, ThreadedCamera

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})


def list_images(folder: Path) -> list[Path]:
    """The images in ``folder`` (not its subfolders), sorted by name."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=lambda p: p.name,
    )


class FileCamera(ThreadedCamera):
    def __init__(self, path: str, *, max_side: int = 1024, jpeg_quality: int = 75) -> None:
        super().__init__(max_side=max_side, jpeg_quality=jpeg_quality)
        if not path:
            raise CameraSetupError(
                "camera.backend = 'file' needs camera.file (an image or folder)"
            )
        self.path = Path(path)
        if not self.path.exists():
            raise CameraConfigError(f"camera.file {path} does not exist")
        self._queue: list[Path] = []
        self.current = self.path  # the file the last frame came from

    def _open(self) -> None:
        if self.path.is_dir() and not list_images(self.path):
            raise CameraConfigError(
                f"camera.file {self.path} is a folder with no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            )

    def _grab(self) -> bytes:
        self.current = self._next()
        return self._read(self.current)

    def _grab_jpeg(self) -> bytes:
        try:
            return super()._grab_jpeg()
        except CameraError as exc:
            raise CameraError(f"{self.current}: {exc}") from None

    def _next(self) -> Path:
        if not self.path.is_dir():
            return self.path
        if not self._queue:
            self._queue = list_images(self.path)
            if not self._queue:
                raise CameraError(f"no images left in {self.path}")
        return self._queue.pop(0)

    @staticmethod
    def _read(path: Path) -> bytes:
        try:
            return path.read_bytes()
        except OSError as exc:
            raise CameraError(f"cannot read {path}: {exc.strerror or exc}") from None
