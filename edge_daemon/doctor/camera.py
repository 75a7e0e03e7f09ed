"""The configured camera is there: the file, the video device, or a camera libcamera finds."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..config import Config
from .machine import INSTALL, under
from .report import Check, fail, ok, skip


def check_camera(
    cfg: Config,
    *,
    root: Path,
    find_spec: Callable[[str], object] = importlib.util.find_spec,
    list_cameras: Callable[[], list[Any]] | None = None,
) -> Check:
    name = "camera"
    cam = cfg.camera
    if cam.backend == "none":
        return skip(name, 'camera.backend = "none": no camera is used')
    if cam.backend == "file":
        base = Path(cfg.source).parent if cfg.source else Path()
        path = base / cam.file if cam.file else None
        if path is None or not path.exists():
            return fail(
                name,
                f"camera.file {str(path) if path else '(empty)'} does not exist",
                "set camera.file to an image, or a folder of images, that exists",
            )
        return ok(name, f"file backend: {path}")
    if cam.backend == "opencv":
        if find_spec("cv2") is None:
            return fail(
                name, "OpenCV (cv2) is not installed", "sudo apt-get install python3-opencv"
            )
        spec = cam.device or "0"
        device = f"/dev/video{spec}" if spec.isdigit() else spec
        if not under(root, device).exists():
            return fail(
                name,
                f"no {device}",
                "plug in the camera, check `ls /dev/video*`, and set camera.device to its index "
                "or path",
            )
        return ok(name, f"opencv backend: {device} present")
    # picamera2
    if find_spec("picamera2") is None:
        return fail(
            name,
            "picamera2 is not installed",
            "sudo apt-get install python3-picamera2 (Raspberry Pi OS), then " + INSTALL,
        )
    try:
        cameras = list_cameras() if list_cameras is not None else _libcamera_cameras()
    except Exception as exc:  # libcamera raises all sorts when there is no camera stack
        return fail(name, f"libcamera cannot list cameras: {exc}", "rpicam-hello --list-cameras")
    if not cameras:
        return fail(
            name,
            "libcamera finds no camera",
            "check the ribbon cable (contacts facing the right way, latch closed), "
            "camera_auto_detect=1 in /boot/firmware/config.txt, and `rpicam-hello --list-cameras`",
        )
    model = cameras[0].get("Model", "?") if isinstance(cameras[0], Mapping) else cameras[0]
    return ok(name, f"picamera2: {len(cameras)} camera(s), first: {model}")


def _libcamera_cameras() -> list[Any]:
    module: Any = importlib.import_module("picamera2")
    return list(module.Picamera2.global_camera_info())
