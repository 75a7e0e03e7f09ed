# ruff: noqa: B008, E501, UP007 - picamera2's own lines, copied as they are
"""The real signatures of the ``Picamera2`` calls the camera adapter and its fake use.

Copied (``ast``, implementations only, ``@overload`` stubs left out) from
raspberrypi/picamera2 ``picamera2/picamera2.py`` at commit
3e6dff099d3982c8fbdb25f7cbe2e4c17bac34f7 (v0.3.36 and two CI commits), with
the line each starts on. Never imported: ``tests/test_camera.py`` parses it and
checks that ``FakePicamera2`` takes exactly these parameters, with these
defaults, and has no public method or attribute that is not here. To follow a
newer picamera2, copy the lines again and let that test say what changed.
"""

from typing import Any, Union

import libcamera
from picamera2.job import Job

class Picamera2:
    # Attributes the adapter or its tests read (picamera2.py: _reset_flags, __init__, _open_camera).
    options: dict[str, Any]  # line 394; request.py reads options["quality"] for JPEGs
    camera_config: dict[str, Any]  # line 385; {} until configure()
    started: bool  # line 389
    is_open: bool  # lines 342, 576
    camera_idx: int  # line 345: the libcamera number of camera_num
    sensor_resolution: tuple[int, int]  # line 552

    # line 314
    def __init__(self, camera_num=0, verbose_console=None, tuning=None, allocator=None): ...

    # line 828
    def create_still_configuration(self, main={}, lores=None, raw={}, transform=libcamera.Transform(), colour_space=libcamera.ColorSpace.Sycc(), buffer_count=1, controls={}, display=None, encode=None, queue=True, sensor={}, use_case='still') -> dict[str, Any]: ...

    # line 881
    def create_video_configuration(self, main={}, lores=None, raw={}, transform=libcamera.Transform(), colour_space=None, buffer_count=6, controls={}, display='main', encode='main', queue=True, sensor={}, use_case='video') -> dict[str, Any]: ...

    # line 1282
    def configure(self, camera_config=None) -> None: ...

    # line 1326
    def start(self, config=None, show_preview=False) -> None: ...

    # line 1637
    def capture_file(self, file_output, name='main', format=None, wait=None, signal_function=None, exif_data=None) -> Union[dict[str, Any], Job[dict[str, Any]]]: ...

    # line 1674
    def switch_mode(self, camera_config, wait=None, signal_function=None) -> Union[dict[str, Any], Job[dict[str, Any]]]: ...

    # line 1758
    def switch_mode_and_capture_file(self, camera_config, file_output, name='main', format=None, wait=None, signal_function=None, exif_data=None, delay=0) -> Union[dict[str, Any], Job[dict[str, Any]]]: ...

    # line 1354
    def cancel_all_and_flush(self) -> None: ...

    # line 1394
    def stop(self) -> None: ...

    # line 704
    def close(self) -> None: ...
