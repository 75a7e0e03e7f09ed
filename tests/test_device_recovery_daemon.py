"""Devices that come and go, seen from the daemon: a real process whose
camera (image files) is missing, comes back, and, missing past its grace
time, ends the process with status 74; and, in-process, a microphone that is
down while typed turns, the status LED and `ctl status` go on."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from conftest import SECRET
from PIL import Image
from support.scripted_devices import Changes, Retries, Script
from test_daemon import settings

from edge_daemon import exits
from edge_daemon.audio.recovery import AudioRecovery
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.device_health import DeviceBoard, Health
from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.hardware_setup import led_state

CHUNK = b"\x01\x02" * 640


def image(path: Path) -> Path:
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path, "JPEG")
    return path


async def status_until(
    daemon: Any, done: Callable[[dict[str, Any]], bool], timeout_s: float = 20.0
) -> dict[str, Any]:
    """`ctl status` until ``done(status)``: the daemon's devices change on their own time."""
    async with asyncio.timeout(timeout_s):
        while True:
            status = await daemon.ctl("status")
            if done(status):
                return status
            await asyncio.sleep(0.1)


def events(log: str, event: str) -> list[str]:
    return [line for line in log.splitlines() if f"EDGE_EVENT={event}" in line]


def camera_daemon(spawn_daemon: Any, fake: FakeGemini, path: Path, grace_s: float) -> Any:
    return spawn_daemon(
        {
            "gemini": {"endpoint": fake.url},
            "audio": {"backend": "null"},
            "camera": {
                "backend": "file",
                "file": str(path),
                "only_while_talking": False,
                "interval_s": 1.0,
                "device_retry_max_s": 1.0,
                "device_grace_s": grace_s,
            },
            "status_led": {"kind": "pwm", "pin": 25},
            "logging": {"level": "debug", "target": "stderr"},
        },
        extra_args=("--simulate",),  # mock pins for the status LED
    )


async def test_a_camera_missing_at_start_shows_in_status_and_led_then_comes_back(
    spawn_daemon: Any, fake: FakeGemini, tmp_path: Path
) -> None:
    path = tmp_path / "camera.jpg"
    daemon = camera_daemon(spawn_daemon, fake, path, grace_s=0)
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    status = await status_until(daemon, lambda s: s["device_health"]["camera"]["retries"] >= 1)
    camera = status["device_health"]["camera"]
    assert camera["state"] == "down" and "does not exist" in camera["reason"]
    assert camera["grace_left_s"] is None  # device_grace_s = 0: never gives up
    # The daemon's state is a contract and stays what it is; the LED shows the error.
    assert status["state"] == "idle"
    assert status["status_led"]["pattern"] == "blink_fast"

    image(path)
    status = await status_until(daemon, lambda s: s["device_health"]["camera"]["state"] == "up")
    assert status["status_led"]["pattern"] == "beacon"  # idle again
    await fake.wait_for(lambda f: f.count("video") >= 1, 20)  # frames flow
    assert daemon.stop() == 0
    log = daemon.log()
    assert (
        len(events(log, "device_lost")) == 1
        and "EDGE_DEVICE=camera" in events(log, "device_lost")[0]
    )
    assert len(events(log, "device_back")) == 1
    assert "Traceback" not in log


async def test_a_camera_missing_past_its_grace_time_ends_the_process_with_status_74(
    spawn_daemon: Any, fake: FakeGemini, tmp_path: Path
) -> None:
    daemon = camera_daemon(spawn_daemon, fake, tmp_path / "never.jpg", grace_s=2.0)
    await daemon.ready()
    status = await asyncio.to_thread(daemon.proc.wait, 60)
    assert status == exits.DEVICE_LOST == 74
    log = daemon.log()
    (gone,) = events(log, "device_gone")
    assert "camera missing for 2 s (camera.device_grace_s)" in gone
    assert "EDGE_DEVICE=camera" in gone
    # systemd was told, as it went: the missing camera, then the stop. The
    # process is gone: every datagram it sent is already in the socket.
    while True:
        try:
            daemon.notifications.append(daemon.notify.recv(4096).decode())
        except BlockingIOError:
            break
    notes = "\n".join(daemon.notifications)
    assert "camera missing: camera.file" in notes and "STOPPING=1" in notes
    assert "Traceback" not in log


# -- in-process: a microphone that is away --------------------------------------------


@contextlib.asynccontextmanager
async def daemon_with_scripted_audio() -> AsyncIterator[
    tuple[Daemon, FakeGemini, Script, Retries, DeviceBoard]
]:
    fake = FakeGemini(api_key=SECRET, pace=8.0)
    await fake.start()
    script, retries, board = Script(), Retries(), DeviceBoard()
    pair = AudioRecovery(
        script.open_mic, script.open_speaker, board=board, grace_s=0, retry_max_s=4.0, sleep=retries
    )
    cfg = with_overrides(Config(), {"audio.backend": "pyaudio", "audio.preroll_ms": 0})
    daemon = Daemon(
        cfg,
        mic=pair.mic,
        speaker=pair.speaker,
        link_settings=settings(fake.url),
        device_health=board,
    )
    pair.mic_in_use = lambda: daemon.talking
    task = asyncio.create_task(daemon.run())
    try:
        assert await daemon.wait_state(State.IDLE, 10)
        yield daemon, fake, script, retries, board
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        await fake.stop()


async def test_without_a_microphone_typed_turns_go_on_and_the_led_shows_the_error() -> None:
    missing = OSError(-9996, "no input device matches 'USB PnP'")
    async with daemon_with_scripted_audio() as (daemon, fake, script, retries, board):
        changes = Changes(board)
        shown: list[str] = []
        daemon.subscribe(lambda _old, _new: shown.append(led_state(daemon)))
        board.subscribe(lambda _h: shown.append(led_state(daemon)))

        # Unplugged: the mic's read fails, as PortAudio's does.
        script.plan["microphone"] = [missing]
        script.mics[0].queue.put_nowait(OSError(-9999, "Unanticipated host error"))
        await changes.until(lambda: board.devices["microphone"].state is Health.DOWN)
        assert daemon.state is State.IDLE and led_state(daemon) == "error"
        status = daemon.status()["device_health"]["microphone"]
        assert status["state"] == "down" and status["losses"] == 1

        # A typed turn needs no microphone: it is answered, on the speaker.
        assert await daemon.say("what time is it") == ""
        await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
        assert await daemon.wait_state(State.IDLE, 20)
        assert script.speakers[0].played, "the answer reached the speaker"
        assert shown[:1] == ["error"] and "thinking" in shown and shown[-1] == "error"

        # Back (the second attempt): a spoken turn goes up from the new device.
        retries.allow(2)
        await changes.until(lambda: board.devices["microphone"].state is Health.UP)
        assert led_state(daemon) == "idle"
        mic = script.mics[-1]
        before = fake.audio_received_s()
        daemon.press("test")
        for _ in range(10):
            mic.queue.put_nowait(CHUNK)
        await fake.wait_for(lambda f: f.audio_received_s() >= before + 0.35, 20)  # 10 x 40 ms
        daemon.release("test")
        await fake.wait_for(lambda f: len(f.turns) == 2, 20)
        assert bytes(fake.turns[-1].heard_pcm) == CHUNK * 10
        assert retries.waits == [0.5, 1.0]
