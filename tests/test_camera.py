"""Cameras: the picamera2 adapter against a faithful fake, the file and OpenCV backends
with real images, the frame ticker on a virtual clock, and the take_photo tool."""

from __future__ import annotations

import ast
import asyncio
import functools
import inspect
import io
import itertools
import logging
import sys
import types
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from edge_daemon.camera import (
    MIN_INTERVAL_S,
    Camera,
    CameraConfigError,
    CameraError,
    FrameTicker,
    open_camera,
)
from edge_daemon.camera.files import FileCamera
from edge_daemon.camera.image import image_size, to_jpeg
from edge_daemon.camera.picam import Picamera2Camera
from edge_daemon.camera.webcam import OpenCVCamera
from edge_daemon.config import CameraConfig
from edge_daemon.tools.photo import take_photo_tool
from edge_daemon.tools.registry import ToolRegistry

TIMEOUT = 30.0


def solid(
    size: tuple[int, int], colour: tuple[int, int, int], fmt: str = "JPEG", **kw: Any
) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format=fmt, **kw)
    return out.getvalue()


def decoded(jpeg: bytes) -> Image.Image:
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG"
    return img


def centre_colour(jpeg: bytes) -> tuple[int, int, int]:
    img = decoded(jpeg).convert("RGB")
    return img.getpixel((img.width // 2, img.height // 2))  # type: ignore[return-value]


def close_to(a: tuple[int, ...], b: tuple[int, ...], tol: int = 12) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


# -- picamera2 --------------------------------------------------------------------------


class FakePicamera2:
    """The slice of picamera2's ``Picamera2`` the adapter may use, with the real
    signatures (``tests/support/picamera2_api.pyi``, copied from
    raspberrypi/picamera2 ``picamera2/picamera2.py``; a test below holds the
    two together). It "captures" a JPEG of the configured size, encoded at
    ``options["quality"]`` as the real one does, and fails the test on a mode
    switch.

    With ``no_frames`` the camera delivers nothing (cable out): a capture with
    a numeric ``wait`` raises ``TimeoutError`` after queueing its job, as
    picamera2 0.3.20 and later do, and the job stays queued until
    ``cancel_all_and_flush()``. While one is queued, ``stop()`` (and ``close()``,
    which calls it) would queue behind it and never return: the fake fails the
    test instead of hanging it."""

    instances: ClassVar[list[FakePicamera2]] = []
    fail_configure: ClassVar[bool] = False
    no_frames: ClassVar[bool] = False
    # Instance attributes of the fake's own, for the tests; not picamera2's.
    TEST_ONLY: ClassVar[frozenset[str]] = frozenset({"calls", "queued"})

    def __init__(
        self,
        camera_num: int = 0,
        verbose_console: Any = None,
        tuning: Any = None,
        allocator: Any = None,
    ) -> None:
        self.camera_idx = camera_num
        self.options: dict[str, Any] = {}
        self.calls: list[str] = []
        self.queued: list[io.BytesIO] = []  # capture jobs waiting for a frame
        self.camera_config: dict[str, Any] = {}
        self.started = False
        self.is_open = True
        self.sensor_resolution = (4056, 3040)
        FakePicamera2.instances.append(self)

    def create_still_configuration(
        self,
        main: dict[str, Any] = {},  # noqa: B006 - picamera2's own signature
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] = {},  # noqa: B006
        transform: Any = None,  # libcamera.Transform()
        colour_space: Any = None,  # libcamera.ColorSpace.Sycc()
        buffer_count: int = 1,
        controls: dict[str, Any] = {},  # noqa: B006
        display: str | None = None,
        encode: str | None = None,
        queue: bool = True,
        sensor: dict[str, Any] = {},  # noqa: B006
        use_case: str = "still",
    ) -> dict[str, Any]:
        self.calls.append("create_still_configuration")
        bad = set(main) - {"format", "size", "stride", "preserve_ar"}
        assert not bad, f"Bad key {bad}: valid stream configuration keys are format, size, ..."
        size = main.get("size", self.sensor_resolution)
        assert size[0] % 2 == 0 and size[1] % 2 == 0, "width and height should be even"
        return {
            "use_case": use_case,
            "buffer_count": buffer_count,
            "main": {"format": main.get("format", "BGR888"), "size": tuple(size)},
            "lores": lores,
            "raw": raw,
            "controls": controls,
            "display": display,
            "encode": encode,
            "queue": queue,
            "sensor": sensor,
        }

    def create_video_configuration(
        self,
        main: dict[str, Any] = {},  # noqa: B006
        lores: dict[str, Any] | None = None,
        raw: dict[str, Any] = {},  # noqa: B006
        transform: Any = None,  # libcamera.Transform()
        colour_space: Any = None,
        buffer_count: int = 6,
        controls: dict[str, Any] = {},  # noqa: B006
        display: str | None = "main",
        encode: str | None = "main",
        queue: bool = True,
        sensor: dict[str, Any] = {},  # noqa: B006
        use_case: str = "video",
    ) -> dict[str, Any]:
        self.calls.append("create_video_configuration")
        cfg = self.create_still_configuration(main, lores, raw, buffer_count=buffer_count)
        cfg["use_case"] = use_case
        return cfg

    def configure(self, camera_config: Any = None) -> None:
        self.calls.append("configure")
        if self.started:
            raise RuntimeError("Camera must be stopped before configuring")
        if FakePicamera2.fail_configure:
            raise RuntimeError("Failed to allocate buffers: Cannot allocate memory")
        # None is picamera2's "preview" configuration: not what the adapter wants.
        assert isinstance(camera_config, dict), "configure with the still configuration"
        self.camera_config = camera_config

    def start(self, config: Any = None, show_preview: bool | None = False) -> None:
        self.calls.append("start")
        if not self.camera_config and config is None:
            config = "preview"  # what picamera2 does; the assert in configure catches it
        if config is not None:
            self.configure(config)
        self.started = True

    def capture_file(
        self,
        file_output: Any,
        name: str = "main",
        format: str | None = None,
        wait: Any = None,
        signal_function: Any = None,
        exif_data: Any = None,
    ) -> dict[str, Any]:
        self.calls.append("capture_file")
        assert self.started, "capture_file on a camera that is not running would hang"
        assert name == "main" and format in ("jpeg", "jpg")
        assert isinstance(file_output, io.BytesIO), "captures go to memory, not the SD card"
        assert wait is not None and wait > 0, "a capture must not wait forever"
        assert not isinstance(wait, bool), "wait=True waits forever; a number of seconds times out"
        self.queued.append(file_output)
        if FakePicamera2.no_frames:
            raise TimeoutError  # concurrent.futures.TimeoutError: the job stays queued
        # Each frame goes to the oldest queued job: a job abandoned after a
        # timeout takes the first frame that comes, unless it was flushed.
        while self.queued:
            self._frame_to(self.queued.pop(0))
        return {"SensorTimestamp": 0, "ExposureTime": 10000}

    def switch_mode(self, camera_config: Any, wait: Any = None, signal_function: Any = None) -> Any:
        raise AssertionError("mode switches have run small Pis out of memory: never switch")

    def switch_mode_and_capture_file(
        self,
        camera_config: Any,
        file_output: Any,
        name: str = "main",
        format: str | None = None,
        wait: Any = None,
        signal_function: Any = None,
        exif_data: Any = None,
        delay: int = 0,
    ) -> Any:
        raise AssertionError("mode switches have run small Pis out of memory: never switch")

    def cancel_all_and_flush(self) -> None:
        self.calls.append("cancel_all_and_flush")
        self.queued.clear()

    def stop(self) -> None:
        self.calls.append("stop")
        self._stop()

    def close(self) -> None:
        self.calls.append("close")
        if self.is_open:
            self._stop()  # picamera2's close() stops the camera itself
        self.is_open = False

    def _stop(self) -> None:
        assert not (self.started and self.queued), (
            "stop() would queue behind a capture still waiting for a frame and never "
            "return: cancel_all_and_flush() first"
        )
        self.started = False

    def _frame_to(self, out: io.BytesIO) -> None:
        size = self.camera_config["main"]["size"]
        shade = (40 * len(self.calls)) % 256
        quality = self.options.get("quality", 90)
        out.write(solid(size, (shade, 128, 200), quality=quality))


@pytest.fixture
def picam() -> type[FakePicamera2]:
    FakePicamera2.instances = []
    FakePicamera2.fail_configure = False
    FakePicamera2.no_frames = False
    return FakePicamera2


async def test_picamera2_keeps_one_low_resolution_configuration_running(
    picam: type[FakePicamera2],
) -> None:
    cam = Picamera2Camera(width=640, height=480, jpeg_quality=70, factory=picam)
    assert isinstance(cam, Camera)
    frames = [await cam.capture() for _ in range(3)]
    (fake,) = picam.instances
    assert fake.camera_idx == 0
    assert fake.calls == [
        "create_still_configuration",
        "configure",
        "start",
        "capture_file",
        "capture_file",
        "capture_file",
    ]
    assert fake.camera_config["main"]["size"] == (640, 480)
    assert fake.options["quality"] == 70
    for jpeg in frames:
        assert image_size(jpeg) == (640, 480)
    assert len(set(frames)) == 3, "each capture is a fresh frame"
    await cam.close()
    assert fake.calls[-2:] == ["stop", "close"] and not fake.is_open
    await cam.close()  # idempotent
    with pytest.raises(CameraError, match="closed"):
        await cam.capture()


async def test_picamera2_frames_within_bounds_pass_through_untouched(
    picam: type[FakePicamera2], monkeypatch: pytest.MonkeyPatch
) -> None:
    written: list[bytes] = []
    real = FakePicamera2.capture_file

    def spy(self: FakePicamera2, file_output: io.BytesIO, *args: Any, **kwargs: Any) -> Any:
        result = real(self, file_output, *args, **kwargs)
        written.append(file_output.getvalue())
        return result

    monkeypatch.setattr(FakePicamera2, "capture_file", spy)
    cam = Picamera2Camera(width=641, height=481, factory=picam)  # odd sizes are evened
    jpeg = await cam.capture()
    assert jpeg == written[0] and image_size(jpeg) == (640, 480)
    await cam.close()


async def test_picamera2_large_frames_are_scaled_to_max_side(picam: type[FakePicamera2]) -> None:
    cam = Picamera2Camera(width=2028, height=1520, max_side=1024, factory=picam)
    assert image_size(await cam.capture()) == (1024, 767)
    await cam.close()


async def test_picamera2_without_a_camera_says_how_to_check(picam: type[FakePicamera2]) -> None:
    def no_camera(camera_num: int = 0) -> Any:
        raise IndexError("list index out of range")  # what global_camera_info()[n] does

    cam = Picamera2Camera(camera_num=1, factory=no_camera)
    with pytest.raises(CameraError, match=r"no camera 1 .*rpicam-hello --list-cameras"):
        await cam.start()

    picam.fail_configure = True
    cam = Picamera2Camera(factory=picam)
    with pytest.raises(RuntimeError, match="Cannot allocate memory"):
        await cam.start()
    assert picam.instances[-1].calls[-1] == "close", "a camera that failed to start is released"


async def test_a_capture_that_times_out_is_flushed_and_the_camera_still_closes(
    picam: type[FakePicamera2],
) -> None:
    cam = Picamera2Camera(factory=picam)
    await cam.capture()
    (fake,) = picam.instances
    picam.no_frames = True  # the cable came out
    with pytest.raises(CameraError, match=r"no frame from camera 0 within 8 s"):
        await cam.capture()
    assert fake.calls[-2:] == ["capture_file", "cancel_all_and_flush"] and not fake.queued
    picam.no_frames = False  # back: the next frame is ours, not the abandoned job's
    before = len(fake.calls)
    assert image_size(await cam.capture()) == (640, 480)
    assert fake.calls[before:] == ["capture_file"]
    picam.no_frames = True
    with pytest.raises(CameraError):
        await cam.capture()
    await cam.close()  # would hang in stop() on a real camera without the flush
    assert fake.calls[-3:] == ["cancel_all_and_flush", "stop", "close"] and not fake.is_open


def test_the_fake_refuses_to_stop_behind_a_queued_capture(picam: type[FakePicamera2]) -> None:
    """The fake's model of picamera2's job queue, which the test above relies on."""
    fake = picam()
    fake.start(fake.create_still_configuration())
    picam.no_frames = True
    with pytest.raises(TimeoutError):
        fake.capture_file(io.BytesIO(), format="jpeg", wait=1.0)
    with pytest.raises(AssertionError, match="never"):
        fake.stop()
    fake.cancel_all_and_flush()
    fake.stop()


def _real_picamera2_api() -> tuple[dict[str, list[tuple[str, object]]], set[str]]:
    """picamera2's parameters (name, default) per method, and its attribute names,
    from tests/support/picamera2_api.pyi. A default that is not a literal (a
    libcamera object) reads as ``...``."""
    text = (Path(__file__).parent / "support" / "picamera2_api.pyi").read_text()
    (cls,) = (n for n in ast.parse(text).body if isinstance(n, ast.ClassDef))
    methods: dict[str, list[tuple[str, object]]] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args.args
            defaults: list[object] = [inspect.Parameter.empty] * (
                len(args) - len(node.args.defaults)
            )
            for d in node.args.defaults:
                try:
                    defaults.append(ast.literal_eval(d))
                except ValueError:
                    defaults.append(...)
            methods[node.name] = [(a.arg, d) for a, d in zip(args, defaults, strict=True)]
    attrs = {
        n.target.id
        for n in cls.body
        if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)
    }
    return methods, attrs


def test_the_fake_picamera2_has_the_real_signatures(picam: type[FakePicamera2]) -> None:
    real_methods, real_attrs = _real_picamera2_api()
    for name, want in real_methods.items():
        params = inspect.signature(getattr(FakePicamera2, name)).parameters.values()
        assert all(p.kind is p.POSITIONAL_OR_KEYWORD for p in params), name
        have = [(p.name, p.default) for p in params]
        assert [n for n, _ in have] == [n for n, _ in want], f"{name}: parameter names differ"
        for (param, fake_default), (_, real_default) in zip(have, want, strict=True):
            if real_default is ...:  # a libcamera object: the fake can only have a default
                assert fake_default is not inspect.Parameter.empty, f"{name}({param})"
            else:
                assert fake_default == real_default, f"{name}({param}): {fake_default!r}"
    methods = {n for n, v in vars(FakePicamera2).items() if callable(v) and not n.startswith("_")}
    assert methods <= set(real_methods), f"not picamera2's: {methods - set(real_methods)}"
    attrs = {n for n in vars(picam()) if not n.startswith("_")} - FakePicamera2.TEST_ONLY
    assert attrs <= real_attrs, f"not picamera2's: {attrs - real_attrs}"


async def test_picamera2_missing_library_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # "import picamera2" now fails
    cam = open_camera(CameraConfig(backend="picamera2"))
    assert isinstance(cam, Picamera2Camera)
    with pytest.raises(CameraConfigError, match="python3-picamera2"):
        await cam.start()


# -- image handling ------------------------------------------------------------------------


def test_a_large_photo_is_scaled_and_encoded_at_the_quality_asked() -> None:
    rng = np.random.default_rng(1)
    noisy = Image.fromarray(rng.integers(0, 255, (2000, 3000, 3), dtype=np.uint8))
    big = io.BytesIO()
    noisy.save(big, format="JPEG", quality=95)
    small = to_jpeg(big.getvalue(), 1024, 75)
    assert image_size(small) == (1024, 683)
    assert len(to_jpeg(big.getvalue(), 1024, 30)) < 0.7 * len(small)


def test_only_upright_jpegs_within_bounds_pass_through() -> None:
    ok = solid((640, 480), (1, 2, 3))
    assert to_jpeg(ok, 1024, 75) is ok
    png = solid((640, 480), (200, 10, 10), fmt="PNG")
    out = to_jpeg(png, 1024, 75)
    assert decoded(out).size == (640, 480) and close_to(centre_colour(out), (200, 10, 10))
    rgba = io.BytesIO()
    Image.new("RGBA", (32, 16), (0, 0, 255, 128)).save(rgba, format="PNG")
    assert decoded(to_jpeg(rgba.getvalue(), 1024, 75)).mode == "RGB"
    # A phone photo stored sideways with an EXIF orientation: turned upright.
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to view
    sideways = io.BytesIO()
    Image.new("RGB", (400, 300), (0, 200, 0)).save(sideways, format="JPEG", exif=exif)
    assert image_size(to_jpeg(sideways.getvalue(), 1024, 75)) == (300, 400)
    with pytest.raises(CameraError, match="not a readable image"):
        to_jpeg(b"not an image at all", 1024, 75)


# -- file backend --------------------------------------------------------------------------


async def test_file_camera_shows_one_image_again_and_again(tmp_path: Path) -> None:
    path = tmp_path / "shot.jpg"
    path.write_bytes(solid((800, 600), (10, 200, 30)))
    cam = open_camera(CameraConfig(backend="file", file=str(path)))
    assert isinstance(cam, FileCamera)
    frames = [await cam.capture() for _ in range(3)]
    assert frames == [path.read_bytes()] * 3  # within bounds: byte for byte
    await cam.close()


async def test_file_camera_loops_a_folder_in_name_order_and_sees_new_images(
    tmp_path: Path,
) -> None:
    colours = {"b.png": (0, 0, 255), "a.jpg": (255, 0, 0), "c.JPEG": (0, 255, 0)}
    for name, colour in colours.items():
        fmt = "PNG" if name.endswith("png") else "JPEG"
        (tmp_path / name).write_bytes(solid((64, 48), colour, fmt=fmt))
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "z.jpg").write_bytes(solid((8, 8), (9, 9, 9)))
    cam = FileCamera(str(tmp_path))
    seen = [centre_colour(await cam.capture()) for _ in range(4)]
    expected = [(255, 0, 0), (0, 0, 255), (0, 255, 0), (255, 0, 0)]
    assert all(close_to(s, e) for s, e in zip(seen, expected, strict=True)), seen
    (tmp_path / "d.jpg").write_bytes(solid((64, 48), (255, 255, 0)))  # dropped in meanwhile
    # The round under way (b, c) finishes, then the folder is listed again: a, b, c, d.
    seen = [centre_colour(await cam.capture()) for _ in range(6)]
    assert close_to(seen[-1], (255, 255, 0)), seen
    await cam.close()


async def test_file_camera_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(CameraConfigError, match="does not exist"):
        open_camera(CameraConfig(backend="file", file=str(tmp_path / "missing.jpg")))
    with pytest.raises(CameraConfigError, match=r"needs camera\.file"):
        open_camera(CameraConfig(backend="file"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CameraConfigError, match="no images"):
        await FileCamera(str(empty)).start()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(solid((64, 48), (1, 1, 1))[:200])  # truncated
    cam = FileCamera(str(broken))
    with pytest.raises(CameraError, match=r"broken\.jpg"):
        await cam.capture()
    await cam.close()


# -- OpenCV backend ------------------------------------------------------------------------


def fake_cv2(frames: list[np.ndarray | None], opened: bool = True) -> types.SimpleNamespace:
    """The part of OpenCV the webcam backend uses; frames come out in BGR, as from OpenCV."""
    log: list[Any] = []

    class VideoCapture:
        def __init__(self, source: int | str) -> None:
            log.append(("open", source))

        def isOpened(self) -> bool:
            return opened

        def set(self, prop: int, value: float) -> bool:
            log.append(("set", prop, value))
            return True

        def grab(self) -> bool:
            log.append("grab")
            return True

        def read(self) -> tuple[bool, np.ndarray | None]:
            log.append("read")
            frame = frames.pop(0) if frames else None
            return frame is not None, frame

        def release(self) -> None:
            log.append("release")

    return types.SimpleNamespace(
        VideoCapture=VideoCapture,
        CAP_PROP_FRAME_WIDTH=3,
        CAP_PROP_FRAME_HEIGHT=4,
        CAP_PROP_BUFFERSIZE=38,
        log=log,
    )


async def test_opencv_camera_captures_fresh_frames_in_the_right_colours() -> None:
    blue_bgr = np.zeros((720, 1280, 3), np.uint8)
    blue_bgr[:, :, 0] = 255
    cv2 = fake_cv2([blue_bgr])
    cam = OpenCVCamera("2", width=1280, height=720, max_side=640, cv2=cv2)
    jpeg = await cam.capture()
    assert image_size(jpeg) == (640, 360)
    assert close_to(centre_colour(jpeg), (0, 0, 255)), "OpenCV's BGR became RGB"
    assert cv2.log[:4] == [("open", 2), ("set", 3, 1280), ("set", 4, 720), ("set", 38, 1)]
    assert cv2.log[-2:] == ["grab", "read"], "a stale buffered frame is dropped first"
    with pytest.raises(CameraError, match="returned no frame"):
        await cam.capture()
    await cam.close()
    assert cv2.log[-1] == "release"


async def test_opencv_problems_are_named() -> None:
    cam = OpenCVCamera("/dev/video9", cv2=fake_cv2([], opened=False))
    with pytest.raises(CameraError, match="cannot open webcam '/dev/video9'"):
        await cam.start()
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(sys.modules, "cv2", None)
        cam = open_camera(CameraConfig(backend="opencv"))
        assert isinstance(cam, OpenCVCamera) and cam.source == 0
        with pytest.raises(CameraConfigError, match=r"edge-daemon\[webcam\]"):
            await cam.start()


async def test_a_hung_camera_times_out_and_is_never_entered_twice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import threading

    from edge_daemon.camera import base

    monkeypatch.setattr(base, "CAPTURE_TIMEOUT_S", 0.05)
    unstick = threading.Event()
    grabs: list[int] = []

    class Stuck(base.ThreadedCamera):
        def _open(self) -> None:
            return None

        def _grab(self) -> bytes:
            grabs.append(1)
            unstick.wait(TIMEOUT)  # a driver that stopped delivering frames
            return solid((32, 32), (5, 5, 5))

    cam = Stuck()
    with pytest.raises(CameraError, match="took over"):
        await cam.capture()
    with pytest.raises(CameraError, match="hung"):
        await cam.capture()
    assert len(grabs) == 1, "no second thread on a hung device"
    unstick.set()
    assert cam._grabbing is not None
    await asyncio.wait_for(asyncio.wait({cam._grabbing}), TIMEOUT)  # the abandoned worker returns
    assert image_size(await cam.capture()) == (32, 32)
    await cam.close()


def test_open_camera_backends() -> None:
    assert open_camera(CameraConfig()) is None  # backend "none"
    cam = open_camera(CameraConfig(backend="picamera2", device="1", width=1280, height=960))
    assert isinstance(cam, Picamera2Camera) and cam.camera_num == 1 and cam.size == (1280, 960)
    with pytest.raises(CameraConfigError, match="camera number"):
        open_camera(CameraConfig(backend="picamera2", device="/dev/video0"))
    with pytest.raises(CameraConfigError, match="unknown camera backend 'gopro'"):
        open_camera(CameraConfig(backend="gopro"))  # type: ignore[arg-type]


# -- the frame ticker, on a virtual clock ---------------------------------------------------


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """The loop's clock jumps to the next timer instead of waiting: exact and instant."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        select = self._selector.select  # type: ignore[attr-defined]

        def jump(timeout: float | None = None) -> Any:
            if timeout is None:
                return select(None)
            self._now += timeout
            return select(0)

        self._selector.select = jump  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._now


def virtual_time(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
            runner.run(fn(*args, **kwargs))

    return run


def now() -> float:
    return asyncio.get_running_loop().time()


class ScriptedCamera:
    """Captures take the scripted (virtual) time and may fail; each frame says when it was taken."""

    def __init__(self, durations: list[float] | None = None, errors: list[Exception | None] = []):  # noqa: B006
        self.durations = list(durations or [])
        self.errors = list(errors)
        self.captured_at: list[float] = []

    async def start(self) -> None:
        return None

    async def capture(self) -> bytes:
        self.captured_at.append(now())
        await asyncio.sleep(self.durations.pop(0) if self.durations else 0.0)
        error = self.errors.pop(0) if self.errors else None
        if error is not None:
            raise error
        return f"frame@{now():.3f}".encode()

    async def close(self) -> None:
        return None


class Sink:
    def __init__(self, fail: list[Exception | None] = []) -> None:  # noqa: B006
        self.sent: list[tuple[float, bytes]] = []
        self.fail = list(fail)
        self.arrived = asyncio.Event()

    async def __call__(self, jpeg: bytes) -> None:
        error = self.fail.pop(0) if self.fail else None
        if error is not None:
            raise error
        self.sent.append((now(), jpeg))
        self.arrived.set()

    async def until(self, n: int) -> None:
        while len(self.sent) < n:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), TIMEOUT)


async def run_ticker(ticker: FrameTicker, sink: Sink, frames: int) -> None:
    task = asyncio.create_task(ticker.run())
    try:
        await sink.until(frames)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@virtual_time
async def test_ticks_are_anchored_so_capture_time_does_not_stretch_the_period() -> None:
    camera, sink = ScriptedCamera(durations=[0.3] * 5), Sink()
    ticker = FrameTicker(camera, 2.0, lambda: True, sink)
    t0 = now()
    await run_ticker(ticker, sink, 5)
    assert [round(t - t0, 9) for t in camera.captured_at] == [0, 2, 4, 6, 8]
    assert [round(t - t0, 9) for t, _ in sink.sent] == [0.3, 2.3, 4.3, 6.3, 8.3]
    assert ticker.counters == {
        "frames_sent": 5,
        "capture_errors": 0,
        "send_errors": 0,
        "skipped": 0,
        "missed": 0,
    }


@virtual_time
async def test_never_faster_than_one_frame_a_second(caplog: pytest.LogCaptureFixture) -> None:
    camera, sink = ScriptedCamera(), Sink()
    with caplog.at_level(logging.WARNING, logger="edge_daemon.camera.ticker"):
        ticker = FrameTicker(camera, 0.2, lambda: True, sink)  # misconfigured
    assert ticker.interval_s == MIN_INTERVAL_S == 1.0
    assert "faster than the Live API takes frames" in caplog.text
    await run_ticker(ticker, sink, 4)
    times = [t for t, _ in sink.sent]
    assert [round(b - a, 9) for a, b in itertools.pairwise(times)] == [1.0, 1.0, 1.0]
    assert FrameTicker(camera, float("nan"), lambda: True, sink).interval_s == 1.0


@virtual_time
async def test_slow_captures_skip_ticks_and_never_squeeze_two_frames_into_a_second() -> None:
    # Tick 1 captures slowly (done at 1.95), tick 2 quickly (done at 2.1): its
    # frame waits until 2.95. Tick 3's capture takes 2.5 s, so ticks 4 and 5 are missed.
    camera = ScriptedCamera(durations=[0.1, 0.95, 0.1, 2.5, 0.0])
    sink = Sink()
    ticker = FrameTicker(camera, 1.0, lambda: True, sink)
    await run_ticker(ticker, sink, 5)
    assert [round(t, 9) for t in camera.captured_at] == [0, 1, 2, 3, 6]
    assert [round(t, 9) for t, _ in sink.sent] == [0.1, 1.95, 2.95, 5.5, 6.5]
    assert ticker.counters["missed"] == 2


@virtual_time
async def test_should_send_gates_each_tick_without_capturing() -> None:
    talking = [False, False, True, False, True, True]
    camera, sink = ScriptedCamera(), Sink()
    ticker = FrameTicker(camera, 1.5, lambda: talking.pop(0) if talking else False, sink)
    await run_ticker(ticker, sink, 3)
    assert [round(t, 9) for t in camera.captured_at] == [3.0, 6.0, 7.5]
    assert ticker.counters["skipped"] == 3 and ticker.counters["frames_sent"] == 3


@virtual_time
async def test_capture_and_send_failures_are_counted_logged_once_per_kind_never_fatal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    camera = ScriptedCamera(
        errors=[CameraError("cable out"), CameraError("cable out"), OSError(5, "EIO"), None, None]
    )
    sink = Sink(fail=[ConnectionError("link down")])
    ticker = FrameTicker(camera, 1.0, lambda: True, sink)
    with caplog.at_level(logging.WARNING, logger="edge_daemon.camera.ticker"):
        await run_ticker(ticker, sink, 1)
    assert ticker.counters["capture_errors"] == 3 and ticker.counters["send_errors"] == 1
    assert ticker.counters["frames_sent"] == 1
    capture_logs = [r for r in caplog.records if "capture failed" in r.getMessage()]
    assert len(capture_logs) == 2, "once per kind: CameraError and OSError"
    assert len([r for r in caplog.records if "sending a camera frame" in r.getMessage()]) == 1


@virtual_time
async def test_kick_takes_a_frame_now_and_reanchors_the_schedule() -> None:
    camera, sink = ScriptedCamera(), Sink()
    ticker = FrameTicker(camera, 5.0, lambda: True, sink)
    task = asyncio.create_task(ticker.run())
    await sink.until(1)  # at 0
    await asyncio.sleep(0.4)
    ticker.kick()  # the user pressed the button: but a frame went out only 0.4 s ago
    await sink.until(2)
    await asyncio.sleep(2.0)
    ticker.kick()
    await sink.until(4)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [round(t, 9) for t, _ in sink.sent] == [0, 1.0, 3.0, 8.0]


# -- take_photo ----------------------------------------------------------------------------


async def test_take_photo_sends_a_fresh_frame_and_reports_its_size(tmp_path: Path) -> None:
    path = tmp_path / "desk.png"
    path.write_bytes(solid((1600, 1200), (90, 90, 90), fmt="PNG"))
    cam = open_camera(CameraConfig(backend="file", file=str(path), max_side=1024))
    assert cam is not None
    sent: list[bytes] = []

    async def send_frame(jpeg: bytes) -> None:
        sent.append(jpeg)

    tool = take_photo_tool(cam, send_frame)
    assert tool.name == "take_photo" and tool.blocking
    decl = tool.declaration
    assert decl["name"] == "take_photo" and "parameters" not in decl
    assert "camera" in decl["description"] and "video" in decl["description"]
    registry = ToolRegistry()
    registry.add(tool)
    outcome = await registry.call("take_photo", {})
    assert outcome.ok and outcome.output == {"sent": True, "width": 1024, "height": 768}
    assert len(sent) == 1 and image_size(sent[0]) == (1024, 768)
    outcome = await registry.call("take_photo", {"zoom": 2})
    assert not outcome.ok and "zoom" in str(outcome.error) and len(sent) == 1
    await cam.close()


async def test_take_photo_reports_a_camera_failure_to_the_model() -> None:
    sent: list[bytes] = []

    async def send_frame(jpeg: bytes) -> None:
        sent.append(jpeg)

    registry = ToolRegistry()
    registry.add(take_photo_tool(ScriptedCamera(errors=[CameraError("cable out")]), send_frame))
    outcome = await registry.call("take_photo", {})
    assert not outcome.ok and "cable out" in str(outcome.error) and not sent


def test_camera_code_never_imports_the_live_side_or_the_daemon() -> None:
    import subprocess

    code = (
        "import sys, edge_daemon.camera, edge_daemon.camera.files, edge_daemon.tools.photo; "
        "bad = [m for m in sys.modules if m.startswith(('edge_daemon.live', 'edge_daemon.daemon'))"
        " or m.split('.')[0] in ('picamera2', 'cv2')]; print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
