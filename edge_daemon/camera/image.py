"""Frames as the Live API wants them: JPEG, longest side <= max_side.

A JPEG already within bounds and upright passes through byte for byte:
re-encoding would only cost a Pi CPU time and the picture quality. Anything
else is decoded (a large JPEG at reduced scale straight from the DCT, several
times faster than a full decode), turned upright by its EXIF tag, shrunk and
encoded once at the configured quality.
"""

from __future__ import annotations

import io

from PIL import Image, ImageOps

from .base import CameraError

_EXIF_ORIENTATION = 0x0112


def to_jpeg(frame: bytes | Image.Image, max_side: int, quality: int) -> bytes:
    """``frame`` (an encoded image in any format Pillow reads, or a PIL image) as a JPEG
    whose longest side is at most ``max_side``; CameraError if it is not a readable image."""
    if isinstance(frame, bytes):
        try:
            img = Image.open(io.BytesIO(frame))
        except Exception as exc:  # Pillow raises several kinds for "not an image"
            raise CameraError(f"not a readable image ({len(frame)} bytes): {exc}") from None
        if _fits(img, max_side):
            return frame
    else:
        img = frame
    try:
        if img.format == "JPEG":
            img.draft("RGB", (max_side, max_side))
        img = ImageOps.exif_transpose(img)
        if img.mode != "RGB":
            img = img.convert("RGB")
        img.thumbnail((max_side, max_side))
        out = io.BytesIO()
        img.save(out, format="JPEG", quality=quality)
    except Exception as exc:  # a truncated or corrupt file fails only once decoded
        raise CameraError(f"cannot decode the image: {exc}") from None
    return out.getvalue()


def _fits(img: Image.Image, max_side: int) -> bool:
    return (
        img.format == "JPEG"
        and img.mode in ("RGB", "L")
        and max(img.size) <= max_side
        and img.getexif().get(_EXIF_ORIENTATION, 1) == 1
    )


def image_size(data: bytes) -> tuple[int, int]:
    """``(width, height)`` of an encoded image, reading only its header."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return int(img.size[0]), int(img.size[1])
    except Exception as exc:
        raise CameraError(f"not a readable image: {exc}") from None
