"""Scripted sound devices for the recovery layer's tests: each open succeeds
or fails as the script says, and every open, start and close lands in one
history, so a test asserts the sequence, not a moment.

``Retries`` stands in for the retries' sleep: it records every wait and lets
only as many pass as the test allows, so the series of waits is exact and
nothing depends on the wall clock.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from edge_daemon.audio.base import MIC_RATE, SPEAKER_RATE
from edge_daemon.device_health import DeviceBoard, DeviceHealth

_CLOSED = object()


async def _until(event: asyncio.Event, condition: Callable[[], bool], timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            event.clear()
            await event.wait()


class Script:
    def __init__(self) -> None:
        self.history: list[tuple[str, str]] = []
        self._logged = asyncio.Event()
        # Per device, the outcome of each next open: an exception to raise, or
        # None to open. When a plan runs out, opens succeed.
        self.plan: dict[str, list[BaseException | None]] = {"microphone": [], "speaker": []}
        self.mics: list[FakeMic] = []
        self.speakers: list[FakeSpeaker] = []

    def log(self, what: str, device: str) -> None:
        self.history.append((what, device))
        self._logged.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for the history to satisfy ``condition``."""
        await _until(self._logged, condition, timeout_s)

    def _outcome(self, device: str) -> BaseException | None:
        plan = self.plan[device]
        return plan.pop(0) if plan else None

    def open_mic(self) -> FakeMic:
        failure = self._outcome("microphone")
        if failure is not None:
            self.log("open failed", "microphone")
            raise failure
        self.log("open", "microphone")
        mic = FakeMic(self)
        self.mics.append(mic)
        return mic

    def open_speaker(self) -> FakeSpeaker:
        failure = self._outcome("speaker")
        if failure is not None:
            self.log("open failed", "speaker")
            raise failure
        self.log("open", "speaker")
        speaker = FakeSpeaker(self)
        self.speakers.append(speaker)
        return speaker


class FakeMic:
    """Chunks the test puts in; an exception put in is raised by read()."""

    rate = MIC_RATE
    live = True

    def __init__(self, script: Script) -> None:
        self.script = script
        self.counters = {"chunks": 0}
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.reason = ""  # what fault() says
        self.closed = False

    async def start(self) -> None:
        self.script.log("start", "microphone")

    async def read(self) -> bytes:
        if self.closed:
            raise RuntimeError("microphone is closed")
        item = await self.queue.get()
        if item is _CLOSED:
            raise RuntimeError("microphone is closed")
        if isinstance(item, BaseException):
            raise item
        self.counters["chunks"] += 1
        return bytes(item)

    def cue(self) -> None:
        return

    def fault(self) -> str:
        return self.reason

    async def close(self) -> None:
        self.closed = True
        self.queue.put_nowait(_CLOSED)
        self.script.log("close", "microphone")


class ProbelessMic(FakeMic):
    """A microphone with no fault() probe: only its silence tells."""

    fault = None  # type: ignore[assignment]


class FakeSpeaker:
    rate = SPEAKER_RATE

    def __init__(self, script: Script) -> None:
        self.script = script
        self.counters = {"bytes_played": 0}
        self.volume = 1.0
        self.played: list[bytes] = []
        self.playing = False
        self.reason = ""
        self.idle = asyncio.Event()
        self.idle.set()
        self.closed = False
        self.kept_awake: list[bool] = []  # every keep_awake, in order

    async def start(self) -> None:
        self.script.log("start", "speaker")

    def keep_awake(self, on: bool) -> None:
        self.kept_awake.append(on)

    def play(self, pcm: bytes) -> None:
        if self.closed:
            raise RuntimeError("speaker is closed")
        self.played.append(pcm)
        self.counters["bytes_played"] += len(pcm)

    def flush(self) -> int:
        return 0

    async def wait_idle(self) -> None:
        await self.idle.wait()

    def fault(self) -> str:
        return self.reason

    async def close(self) -> None:
        self.closed = True
        self.playing = False
        self.idle.set()
        self.script.log("close", "speaker")


class Retries:
    """The retries' sleep: records each wait; lets ``allow``ed ones pass at once."""

    def __init__(self) -> None:
        self.waits: list[float] = []
        self._budget = 0
        self._more = asyncio.Event()
        self._parked = asyncio.Event()
        self.parked = False

    def allow(self, n: int) -> None:
        self._budget += n
        self._more.set()

    async def __call__(self, delay: float) -> None:
        self.waits.append(delay)
        while self._budget <= 0:
            self.parked = True
            self._parked.set()
            self._more.clear()
            await self._more.wait()
        self.parked = False
        self._budget -= 1
        await asyncio.sleep(0)

    async def until_parked(self, waits: int, timeout_s: float = 10.0) -> None:
        """Wait until ``waits`` waits were asked for and the last is held."""
        await _until(self._parked, lambda: self.parked and len(self.waits) == waits, timeout_s)


class Changes:
    """Every health change on a board, in order, and a way to wait for one."""

    def __init__(self, board: DeviceBoard) -> None:
        self.seen: list[tuple[str, str]] = []  # (device, new state), one per change of state
        self._last: dict[str, str] = {}
        self._changed = asyncio.Event()
        board.subscribe(self._on_change)

    def _on_change(self, health: DeviceHealth) -> None:
        if self._last.get(health.name) != health.state.value:
            self._last[health.name] = health.state.value
            self.seen.append((health.name, health.state.value))
        self._changed.set()

    async def until(self, condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()
