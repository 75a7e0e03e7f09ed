"""Devices that come and go: the microphone and speaker recovery layer over
scripted devices, the backoff as a series of waits, the health records, the
grace timer, and the camera over real image files."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image
from support.scripted_devices import (
    Changes,
    FakeMic,
    ProbelessMic,
    Retries,
    Script,
)

from edge_daemon.audio.base import AudioBackendMissing
from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.audio.recovery import BUSY_POLL_S, AudioRecovery
from edge_daemon.camera.base import CameraError, CameraSetupError
from edge_daemon.camera.files import FileCamera
from edge_daemon.camera.recovery import RecoveringCamera
from edge_daemon.device_health import (
    HEALTHY_AFTER_S,
    MAX_REASON,
    DeviceBoard,
    Health,
    Reopener,
    describe,
)

CHUNK = bytes(1280)
MISSING = OSError(-9996, "no input device matches 'USB PnP'")


class Rig:
    def __init__(self, **kwargs: object) -> None:
        self.script = Script()
        self.retries = Retries()
        self.board = DeviceBoard()
        self.changes = Changes(self.board)
        self.pair = AudioRecovery(
            self.script.open_mic,
            self.script.open_speaker,
            board=self.board,
            grace_s=0,
            retry_max_s=4.0,
            sleep=self.retries,
            **kwargs,  # type: ignore[arg-type]
        )
        self.mic, self.speaker = self.pair.mic, self.pair.speaker

    def health(self, name: str) -> Health:
        return self.board.devices[name].state

    async def start(self) -> None:
        await self.mic.start()
        await self.speaker.start()

    async def close(self) -> None:
        await self.mic.close()
        await self.speaker.close()


@contextlib.asynccontextmanager
async def rig(**kwargs: object) -> AsyncIterator[Rig]:
    r = Rig(**kwargs)
    try:
        yield r
    finally:
        await r.close()


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [
        getattr(r, "EDGE_DEVICE", "")
        for r in caplog.records
        if getattr(r, "EDGE_EVENT", None) == event
    ]


# -- the microphone and the speaker ---------------------------------------------------


async def test_a_mic_missing_at_start_is_retried_with_doubling_waits_and_comes_back(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig() as r:
        r.script.plan["microphone"] = [MISSING] * 5  # at start, then four attempts
        await r.start()
        assert r.health("microphone") is Health.DOWN and r.health("speaker") is Health.UP
        status = r.board.status()["microphone"]
        assert status["reason"] == str(MISSING) and status["losses"] == 1

        r.retries.allow(10)
        await r.changes.until(lambda: r.health("microphone") is Health.UP)
        await r.pair.reopener.settled()
        # The waits double up to the ceiling (4 s), and stop once it is back.
        assert r.retries.waits == [0.5, 1.0, 2.0, 4.0, 4.0]
        # Each attempt closes the working speaker first: PortAudio sees devices
        # plugged in since it started only once every stream is closed.
        attempt_failed = [
            ("close", "speaker"),
            ("open failed", "microphone"),
            ("open", "speaker"),
            ("start", "speaker"),
        ]
        assert r.script.history == [
            ("open failed", "microphone"),
            ("open", "speaker"),
            ("start", "speaker"),
            *attempt_failed * 4,
            ("close", "speaker"),
            ("open", "microphone"),
            ("start", "microphone"),
            ("open", "speaker"),
            ("start", "speaker"),
        ]
        # One record per change, none for the speaker that never went away.
        assert r.changes.seen == [("microphone", "down"), ("speaker", "up"), ("microphone", "up")]
        assert records(caplog, "device_lost") == ["microphone"]
        assert records(caplog, "device_back") == ["microphone"]
        assert r.board.status()["microphone"]["retries"] == 4

        r.script.mics[-1].queue.put_nowait(CHUNK)
        assert await r.mic.read() == CHUNK


async def test_a_mic_unplugged_mid_stream_is_reopened_and_the_reader_goes_on() -> None:
    async with rig() as r:
        await r.start()
        first = r.script.mics[0]
        first.queue.put_nowait(CHUNK)
        assert await r.mic.read() == CHUNK
        reader = asyncio.create_task(r.mic.read())
        # PortAudio's blocking read raises this when a USB device goes away.
        r.script.plan["microphone"] = [MISSING]
        first.queue.put_nowait(OSError(-9999, "Unanticipated host error"))
        await r.changes.until(lambda: r.health("microphone") is Health.DOWN)
        assert r.board.status()["microphone"]["reason"] == "[Errno -9999] Unanticipated host error"
        assert not reader.done(), "while it is down, the reader waits: nothing is made up"

        r.retries.allow(2)
        await r.changes.until(lambda: r.health("microphone") is Health.UP)
        assert r.retries.waits == [0.5, 1.0]
        second = r.script.mics[-1]
        assert second is not first and first.closed
        second.queue.put_nowait(b"\x01" * 1280)
        assert await asyncio.wait_for(reader, 10) == b"\x01" * 1280
        # The counters add up over both devices.
        assert r.mic.counters["chunks"] == 2


async def test_a_stream_that_stopped_is_found_by_its_fault_probe() -> None:
    async with rig(check_s=0.01) as r:
        await r.start()
        speaker = r.script.speakers[0]
        speaker.reason = "edge_spk: the stream stopped (unplugged?)"
        await r.changes.until(lambda: r.health("speaker") is Health.DOWN)
        await r.script.until(lambda: speaker.closed)
        # While it is down, what is played is dropped and counted, and nothing waits on it.
        r.speaker.play(b"\x00" * 4800)
        assert not r.speaker.playing
        await asyncio.wait_for(r.speaker.wait_idle(), 10)
        assert r.speaker.counters["dropped_while_down"] == 4800
        r.speaker.volume = 0.5  # set while it is away

        r.retries.allow(1)
        await r.changes.until(lambda: r.health("speaker") is Health.UP)
        back = r.script.speakers[-1]
        assert back.volume == 0.5
        r.speaker.play(b"\x01" * 480)
        assert back.played == [b"\x01" * 480]
        assert r.changes.seen[2:] == [("speaker", "down"), ("speaker", "up")]


async def test_a_speaker_kept_awake_is_kept_awake_across_a_reopen() -> None:
    async with rig(check_s=0.01) as r:
        await r.start()
        first = r.script.speakers[0]
        r.speaker.keep_awake(True)  # a turn opens
        first.reason = "edge_spk: the stream stopped (unplugged?)"
        await r.changes.until(lambda: r.health("speaker") is Health.DOWN)
        r.speaker.keep_awake(False)  # the turn ends while it is away
        r.speaker.keep_awake(True)  # and the next one opens
        r.retries.allow(1)
        await r.changes.until(lambda: r.health("speaker") is Health.UP)
        back = r.script.speakers[-1]
        assert first.kept_awake == [False, True], "told at once, after being told at attach"
        assert back.kept_awake == [True], "the device that came back runs for the open turn"
        r.speaker.keep_awake(False)
        assert back.kept_awake == [True, False]


async def test_a_mic_without_a_probe_that_goes_silent_counts_as_stalled() -> None:
    script = Script()
    board = DeviceBoard()
    changes = Changes(board)
    pair = AudioRecovery(
        lambda: ProbelessMic(script),
        script.open_speaker,
        board=board,
        grace_s=0,
        retry_max_s=4.0,
        stall_s=0.2,
        sleep=Retries(),
    )
    try:
        await pair.mic.start()
        reader = asyncio.create_task(pair.mic.read())
        await changes.until(lambda: board.devices["microphone"].state is Health.DOWN)
        assert board.devices["microphone"].reason == "no audio for 0.2 s"
        assert not reader.done()
        reader.cancel()
    finally:
        await pair.mic.close()
        await pair.speaker.close()


async def test_the_speaker_is_not_closed_under_a_reply() -> None:
    async with rig() as r:
        await r.start()
        speaker = r.script.speakers[0]
        speaker.playing = True
        r.script.plan["microphone"] = [MISSING]
        reader = asyncio.create_task(r.mic.read())
        r.script.mics[0].queue.put_nowait(OSError(-9999, "Unanticipated host error"))
        await r.changes.until(lambda: r.health("microphone") is Health.DOWN)

        # The speaker is playing: the attempt waits, looking again and again,
        # without touching it.
        r.retries.allow(3)
        await r.retries.until_parked(4)
        assert r.retries.waits == [0.5, BUSY_POLL_S, BUSY_POLL_S, BUSY_POLL_S]
        assert ("close", "speaker") not in r.script.history
        speaker.playing = False
        r.retries.allow(1)
        await r.retries.until_parked(5)
        assert r.retries.waits[-1] == 1.0  # the attempt ran (and failed): the next wait
        assert r.script.history[-4:] == [
            ("close", "speaker"),
            ("open failed", "microphone"),
            ("open", "speaker"),
            ("start", "speaker"),
        ]
        reader.cancel()


async def test_the_mic_is_not_reopened_under_a_turn() -> None:
    async with rig(check_s=0.01) as r:
        turn_open = True
        r.pair.mic_in_use = lambda: turn_open
        await r.start()
        r.script.speakers[0].reason = "edge_spk: the stream stopped (unplugged?)"
        await r.changes.until(lambda: r.health("speaker") is Health.DOWN)
        r.retries.allow(2)
        await r.retries.until_parked(3)
        assert r.retries.waits == [0.5, BUSY_POLL_S, BUSY_POLL_S]
        assert ("close", "microphone") not in r.script.history
        turn_open = False
        r.retries.allow(1)
        await r.changes.until(lambda: r.health("speaker") is Health.UP)
        await r.pair.reopener.settled()
        assert r.script.history[-5:] == [
            ("close", "microphone"),
            ("open", "microphone"),
            ("start", "microphone"),
            ("open", "speaker"),
            ("start", "speaker"),
        ]


async def test_a_loose_plug_is_retried_ever_more_slowly_until_it_stays_up() -> None:
    now = [1000.0]
    waits: list[float] = []
    attempts: list[float] = []
    outcomes = [False, True, False, True, False, True]

    async def sleep(delay: float) -> None:
        waits.append(delay)
        now[0] += delay

    async def attempt() -> bool:
        attempts.append(now[0])
        return outcomes.pop(0)

    reopener = Reopener(attempt, max_s=30.0, name="test", sleep=sleep, clock=lambda: now[0])

    async def outage() -> None:
        reopener.kick()
        await asyncio.wait_for(reopener.settled(), 10)

    await outage()  # down: 0.5 fails, 1 works
    now[0] += 1.0  # back up for a second only
    await outage()  # the backoff goes on where it was: 2 fails, 4 works
    now[0] += HEALTHY_AFTER_S  # up long enough: the next outage starts afresh
    await outage()
    assert waits == [0.5, 1.0, 2.0, 4.0, 0.5, 1.0]
    assert [round(b - a, 1) for a, b in itertools.pairwise(attempts)] == [
        1.0,
        3.0,  # a second up, then the 2 s wait
        4.0,
        30.5,  # HEALTHY_AFTER_S up, then 0.5
        1.0,
    ]


async def test_a_missing_library_is_off_on_silence_and_never_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    missing = AudioBackendMissing("the pyaudio audio backend needs PyAudio")

    def no_pyaudio() -> FakeMic:
        raise missing

    board = DeviceBoard()
    retries = Retries()
    pair = AudioRecovery(
        no_pyaudio,
        no_pyaudio,  # type: ignore[arg-type]
        board=board,
        grace_s=30,
        retry_max_s=4.0,
        sleep=retries,
    )
    try:
        await pair.mic.start()
        assert {n: h.state for n, h in board.devices.items()} == {
            "microphone": Health.OFF,
            "speaker": Health.OFF,
        }
        assert isinstance(pair.mic.inner, NullMicrophone)
        assert isinstance(pair.speaker.inner, NullSpeaker)
        assert len(await pair.mic.read()) == pair.mic.chunk_bytes  # silence, paced
        assert not pair.reopener.running and retries.waits == []
        assert not board._timers, "no grace timer: a restart cannot install a library"
        assert records(caplog, "device_off") == ["microphone", "speaker"]
        assert "needs PyAudio" in board.summary()
    finally:
        await pair.mic.close()
        await pair.speaker.close()


def test_a_reason_is_one_bounded_line() -> None:
    many = OSError(
        f"no input device matches 'USB';\n{'; '.join(f'{i}: hw:{i},0' for i in range(200))}"
    )
    reason = describe(many)
    assert "\n" not in reason and len(reason) == MAX_REASON and reason.endswith("...")
    assert describe(RuntimeError()) == "RuntimeError"


# -- what the status LED shows ---------------------------------------------------------


def test_the_led_shows_the_error_at_rest_and_listening_only_without_a_microphone() -> None:
    from types import SimpleNamespace

    from edge_daemon.hardware_setup import led_state
    from edge_daemon.state_machine import State

    def shown(state: State, *down: str) -> str:
        board = DeviceBoard()
        for name in ("microphone", "speaker", "camera"):
            health = board.add(name, grace_s=0)
            health.state = Health.DOWN if name in down else Health.UP
        return led_state(SimpleNamespace(state=state, device_health=board))  # type: ignore[arg-type]

    table = {
        state: (shown(state), shown(state, "camera"), shown(state, "microphone")) for state in State
    }
    assert table == {
        State.STARTING: ("starting", "error", "error"),
        State.IDLE: ("idle", "error", "error"),
        State.LISTENING: ("listening", "listening", "error"),
        State.THINKING: ("thinking", "thinking", "thinking"),
        State.SPEAKING: ("speaking", "speaking", "speaking"),
        State.RECONNECTING: ("reconnecting", "error", "error"),
        State.ERROR: ("error", "error", "error"),
    }


# -- the grace time -------------------------------------------------------------------


async def test_a_device_down_past_its_grace_time_expires_once_and_one_back_in_time_never() -> None:
    board = DeviceBoard()
    expired: list[str] = []
    gone = asyncio.Event()

    def on_expired(health: object) -> None:
        expired.append(health.name)  # type: ignore[attr-defined]
        gone.set()

    board.on_expired(on_expired)
    mic = board.add("microphone", grace_s=0.3)
    camera = board.add("camera", grace_s=60.0)
    speaker = board.add("speaker", grace_s=0)  # never
    camera.down("unplugged")
    speaker.down("unplugged")
    mic.down("unplugged")
    mic.retry_failed("still unplugged")  # retries do not restart the clock
    camera.up()
    assert set(board._timers) == {"microphone"}
    await asyncio.wait_for(gone.wait(), 10)
    assert expired == ["microphone"]
    assert board.status()["microphone"]["grace_left_s"] == 0.0
    assert board.status()["speaker"]["grace_left_s"] is None
    board.close()


# -- the camera, over real image files ----------------------------------------------------


def image(path: Path) -> Path:
    Image.new("RGB", (64, 48), (10, 200, 30)).save(path, "JPEG")
    return path


async def test_a_camera_missing_at_start_and_one_that_goes_away_come_back(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "frame.jpg"
    board = DeviceBoard()
    changes = Changes(board)
    retries = Retries()
    camera = RecoveringCamera(
        lambda: FileCamera(str(path)),
        board.add("camera", grace_s=0, retry_max_s=4.0),
        retry_max_s=4.0,
        sleep=retries,
    )
    health = board.devices["camera"]
    try:
        await camera.start()  # the file is not there yet: down, not an error
        assert health.state is Health.DOWN and "does not exist" in health.reason
        with pytest.raises(CameraError, match=r"not available: camera\.file .* does not exist"):
            await camera.capture()
        retries.allow(2)
        await retries.until_parked(3)
        assert health.retries == 2 and health.state is Health.DOWN
        image(path)
        retries.allow(1)
        await changes.until(lambda: health.state is Health.UP)
        assert retries.waits == [0.5, 1.0, 2.0]
        assert (await camera.capture())[:2] == b"\xff\xd8"

        # Gone again: one failed capture is a fluke, three in a row a lost camera.
        path.unlink()
        for _ in range(3):
            with pytest.raises(CameraError, match="cannot read"):
                await camera.capture()
        assert health.state is Health.DOWN
        assert health.reason.startswith("3 captures failed in a row, the last: ")
        assert "cannot read" in health.reason
        image(path)
        retries.allow(1)
        await changes.until(lambda: health.state is Health.UP)
        # A relapse soon after it came back goes on with the longer waits.
        assert retries.waits == [0.5, 1.0, 2.0, 4.0]
        await camera.capture()
        assert camera.counters["captures"] == 2
        assert changes.seen == [("camera", "down"), ("camera", "up")] * 2
        assert records(caplog, "device_lost") == ["camera", "camera"]
    finally:
        await camera.close()


async def test_a_camera_that_cannot_work_as_configured_is_off_and_says_why() -> None:
    def no_picamera2() -> FileCamera:
        raise CameraSetupError("camera.backend = 'picamera2' needs picamera2")

    board = DeviceBoard()
    retries = Retries()
    camera = RecoveringCamera(
        no_picamera2, board.add("camera", grace_s=30), retry_max_s=4.0, sleep=retries
    )
    with pytest.raises(CameraError, match="needs picamera2"):
        await camera.start()
    assert board.devices["camera"].state is Health.OFF
    assert not camera.reopener.running and not board._timers
    await camera.close()
