"""A microphone and a speaker that come back after they are unplugged.

The daemon holds one Microphone and one Speaker for its whole life. Behind
them the real devices are opened through factories and, when one stops (an
error from it, its ``fault()`` probe saying so, or, for a microphone without
one, no chunk for ``stall_s``), it is closed and reopened with backoff
(``device_health.Reopener``) until it works again. A device missing at start
is retried the same way. Every change is one record in ``device_health``.

While the microphone is down, ``read`` waits for it to be back: nothing is
made up, the model hears nothing rather than a fake silence. While the
speaker is down, what is played is dropped and counted
(``dropped_while_down``), ``playing`` is False and ``wait_idle`` returns at
once, so turns still end and typed turns still get their answers.

The two are reopened together. PortAudio reads its list of devices only
when it starts, and starts afresh only once every stream is closed: a USB
microphone plugged in after the daemon started (or back under another card
number) is found only that way. The side still working is closed for it only
while not in use: the speaker not playing, and no turn open (``mic_in_use``).
A device whose library is missing (``CannotRetry``) is ``off`` and replaced
by the ``fallback`` (silence), as before the daemon could reopen anything.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from ..device_health import (
    CannotRetry,
    DeviceBoard,
    DeviceHealth,
    Health,
    Reopener,
    Sleep,
    close_bounded,
    describe,
)
from .base import (
    MIC_RATE,
    SAMPLE_WIDTH,
    SPEAKER_RATE,
    Microphone,
    RestingSpeaker,
    Speaker,
    StandbyMicrophone,
)
from .null import NullMicrophone, NullSpeaker
from .reference import PlaybackTap

# A microphone without a fault() probe that delivers nothing for this long is
# taken for gone. 50 chunks of 40 ms: a loaded loop is late by far less.
STALL_S = 2.0
# How often the devices' fault() probes are asked.
CHECK_S = 1.0
# While the side still working is in use, a reopen waits, looking this often.
BUSY_POLL_S = 0.5

log = logging.getLogger(__name__)


class _Side:
    """What the two wrappers share: the device behind them, its health, its counters."""

    name = ""

    def __init__(
        self,
        pair: AudioRecovery,
        health: DeviceHealth,
        opener: Callable[[], Any],
        fallback: Callable[[], Any],
    ) -> None:
        self.pair = pair
        self.health = health
        self.opener = opener
        self.fallback = fallback
        self.inner: Any = None
        self.on_fallback = False
        self.closed = False
        self._past: dict[str, int] = {}  # counters of the devices closed so far
        self._own: dict[str, int] = {}
        self._up = asyncio.Event()

    @property
    def counters(self) -> dict[str, int]:
        """The device's counters, summed over every time it was opened."""
        out = dict(self._past)
        inner = self.inner
        if inner is not None:
            for key, value in inner.counters.items():
                out[key] = out.get(key, 0) + value
        for key, value in self._own.items():
            out[key] = out.get(key, 0) + value
        return out

    def attach(self, inner: Any, *, fallback: bool = False) -> None:
        self.inner = inner
        self.on_fallback = fallback
        self._up.set()

    def detach(self) -> Any:
        inner, self.inner = self.inner, None
        self._up.clear()
        if inner is not None:
            for key, value in inner.counters.items():
                self._past[key] = self._past.get(key, 0) + value
        return inner

    def __getattr__(self, name: str) -> Any:
        # Anything else a backend offers (``last_capture_time``, ``device``)
        # is the current device's; while there is none, there is none.
        inner = self.__dict__.get("inner")
        if inner is None or name.startswith("__"):
            raise AttributeError(name)
        return getattr(inner, name)

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._up.set()  # wake a waiting reader: it finds the side closed
        await self.pair.closed_side(self)


class RecoveringMicrophone(_Side):
    name = "microphone"
    rate = MIC_RATE

    def __init__(self, *args: Any, chunk_ms: int, live: bool, stall_s: float) -> None:
        super().__init__(*args)
        self.chunk_bytes = MIC_RATE * chunk_ms // 1000 * SAMPLE_WIDTH
        self._live = live
        self._stall_s = stall_s
        self._standby: int | None = None  # chunks to keep while standing by; None: awake

    @property
    def live(self) -> bool:
        inner = self.inner
        return bool(inner.live) if inner is not None else self._live

    async def start(self) -> None:
        await self.pair.start()

    async def read(self) -> bytes:
        while True:
            if self.closed:
                raise RuntimeError("microphone is closed")
            inner = self.inner
            if inner is None:
                await self._up.wait()
                continue
            probed = getattr(inner, "fault", None) is not None or self.on_fallback
            try:
                if probed or not self._stall_s:
                    chunk: bytes = await inner.read()
                    return chunk
                async with asyncio.timeout(self._stall_s):
                    chunk = await inner.read()
                    return chunk
            except TimeoutError:
                self.pair.lose(self, inner, f"no audio for {self._stall_s:g} s")
            except Exception as exc:
                # Also how a reader learns that its device was closed under it.
                if self.closed:
                    raise RuntimeError("microphone is closed") from None
                self.pair.lose(self, inner, describe(exc))

    def cue(self) -> None:
        if self.inner is not None:
            self.inner.cue()

    def attach(self, inner: Any, *, fallback: bool = False) -> None:
        super().attach(inner, fallback=fallback)
        if self._standby is not None and isinstance(inner, StandbyMicrophone):
            inner.standby(self._standby)  # a device reopened while the daemon is idle

    def standby(self, keep_chunks: int) -> bool:
        inner = self.inner
        if inner is not None and not (
            isinstance(inner, StandbyMicrophone) and inner.standby(keep_chunks)
        ):
            return False
        self._standby = keep_chunks
        return True

    def resume(self) -> list[bytes]:
        self._standby = None
        inner = self.inner
        return inner.resume() if isinstance(inner, StandbyMicrophone) else []


class RecoveringSpeaker(_Side):
    name = "speaker"
    rate = SPEAKER_RATE

    def __init__(self, *args: Any, volume: float) -> None:
        super().__init__(*args)
        self._own["dropped_while_down"] = 0
        self._volume = volume
        self._tap: PlaybackTap | None = None
        self._kept_awake = False

    def open_tap(self) -> PlaybackTap:
        """What the speaker plays, for the echo canceller. It outlives the
        device: a reopened speaker feeds the same tap, so the canceller keeps
        its reference across an unplug."""
        if self._tap is None:
            inner = self.inner
            opener = getattr(inner, "open_tap", None) if inner is not None else None
            self._tap = opener() if opener is not None else PlaybackTap(self.rate)
        return self._tap

    @property
    def volume(self) -> float:
        return self._volume

    @volume.setter
    def volume(self, value: float) -> None:
        self._volume = value
        if self.inner is not None and hasattr(self.inner, "volume"):
            self.inner.volume = value

    def attach(self, inner: Any, *, fallback: bool = False) -> None:
        if hasattr(inner, "volume"):
            inner.volume = self._volume  # a level set while it was away holds
        if isinstance(inner, RestingSpeaker):
            inner.keep_awake(self._kept_awake)  # a device reopened mid-turn stays awake
        tap = self._tap
        if tap is not None and hasattr(inner, "open_tap"):
            fresh = inner.open_tap()
            if (fresh.rate, fresh.channels) == (tap.rate, tap.channels):
                inner.tap = tap  # the device feeds the tap the canceller reads
            else:
                log.warning(
                    "speaker: the device came back at %d Hz x%d, the echo canceller's "
                    "reference is at %d Hz x%d: echo cancellation is off until a restart",
                    fresh.rate,
                    fresh.channels,
                    tap.rate,
                    tap.channels,
                    extra={"EDGE_EVENT": "echo_reference_lost"},
                )
        super().attach(inner, fallback=fallback)

    async def start(self) -> None:
        await self.pair.start()

    def play(self, pcm: bytes) -> None:
        inner = self.inner
        if inner is None:
            if not self.closed:
                self._own["dropped_while_down"] += len(pcm)
            return
        try:
            inner.play(pcm)
        except Exception as exc:
            self._own["dropped_while_down"] += len(pcm)
            self.pair.lose(self, inner, describe(exc))

    def flush(self) -> int:
        inner = self.inner
        return int(inner.flush()) if inner is not None else 0

    def keep_awake(self, on: bool) -> None:
        self._kept_awake = on
        inner = self.inner
        if isinstance(inner, RestingSpeaker):
            inner.keep_awake(on)

    @property
    def playing(self) -> bool:
        inner = self.inner
        return bool(inner.playing) if inner is not None else False

    async def wait_idle(self) -> None:
        inner = self.inner
        if inner is not None:
            # A device closed meanwhile (lost, or reopened) wakes this: its close sets idle.
            await inner.wait_idle()


class AudioRecovery:
    """The pair: ``mic`` and ``speaker`` for the daemon, the devices behind them.

    ``open_microphone`` and ``open_speaker`` open a device (blocking: they run
    in a worker thread, one at a time) or raise; ``CannotRetry`` errors turn
    the side ``off`` on its fallback. ``sleep`` paces the retries (tests pass
    their own to see the series of waits).
    """

    def __init__(
        self,
        open_microphone: Callable[[], Microphone],
        open_speaker: Callable[[], Speaker],
        *,
        board: DeviceBoard,
        grace_s: float,
        retry_max_s: float,
        chunk_ms: int = 40,
        volume: float = 1.0,
        live: bool = True,
        fallback_microphone: Callable[[], Microphone] | None = None,
        fallback_speaker: Callable[[], Speaker] | None = None,
        stall_s: float = STALL_S,
        check_s: float = CHECK_S,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.mic = RecoveringMicrophone(
            self,
            board.add("microphone", grace_s, retry_max_s),
            open_microphone,
            fallback_microphone or (lambda: NullMicrophone(chunk_ms)),
            chunk_ms=chunk_ms,
            live=live,
            stall_s=stall_s,
        )
        self.speaker = RecoveringSpeaker(
            self,
            board.add("speaker", grace_s, retry_max_s),
            open_speaker,
            fallback_speaker or NullSpeaker,
            volume=volume,
        )
        self._sides: tuple[_Side, ...] = (self.mic, self.speaker)
        # A turn is open (the daemon says): the microphone is not reopened under it.
        self.mic_in_use: Callable[[], bool] = lambda: False
        self._lock = asyncio.Lock()  # one open or close at a time
        self._sleep = sleep
        self._check_s = check_s
        self.reopener = Reopener(
            self._reopen,
            max_s=retry_max_s,
            name="sound devices",
            on_wait=self._waiting,
            sleep=sleep,
            clock=board.clock,
        )
        self._first: asyncio.Task[None] | None = None
        self._monitor: asyncio.Task[None] | None = None

    # -- opening ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open both (once; both sides' ``start`` come here). A device that
        will not open is down and retried: this never raises for it."""
        if self._first is None:
            self._first = asyncio.get_running_loop().create_task(
                self._open_first(), name="audio-open"
            )
        await asyncio.shield(self._first)

    async def _open_first(self) -> None:
        async with self._lock:
            for side in self._sides:
                await self._open(side)
        if self._down():
            self.reopener.kick()
        self._monitor = asyncio.get_running_loop().create_task(self._watch(), name="audio-watch")

    async def _open(self, side: _Side) -> None:
        if side.closed:
            return
        try:
            inner = await asyncio.to_thread(side.opener)
        except CannotRetry as exc:
            side.health.off(describe(exc))
            inner = side.fallback()
            await inner.start()
            side.attach(inner, fallback=True)
            return
        except Exception as exc:
            self._failed(side, describe(exc))
            return
        try:
            await inner.start()
        except Exception as exc:
            await close_bounded(inner.close, side.name)
            self._failed(side, describe(exc))
            return
        if side.closed:  # closed while it was opening
            await close_bounded(inner.close, side.name)
            return
        side.attach(inner)
        side.health.up()

    def _failed(self, side: _Side, reason: str) -> None:
        if side.health.state is Health.DOWN:
            side.health.retry_failed(reason)
        else:
            side.health.down(reason)

    def _down(self) -> list[_Side]:
        return [s for s in self._sides if s.inner is None and not s.closed]

    def _waiting(self, at: float) -> None:
        for side in self._down():
            side.health.next_retry_at = at

    async def _reopen(self) -> bool:
        """One attempt: every side closed, then every side opened."""
        while self._busy():
            await self._sleep(BUSY_POLL_S)
        async with self._lock:
            if not self._down():
                return True  # nothing was lost after all (or everything is closed)
            for side in self._sides:
                if side.inner is not None and not side.on_fallback:
                    # Working, but its PortAudio instance would keep the old list of devices.
                    await close_bounded(side.detach().close, side.name)
            for side in self._sides:
                if side.inner is None:
                    await self._open(side)
            return not self._down()

    def _busy(self) -> bool:
        mic, speaker = self.mic, self.speaker
        if mic.inner is not None and not mic.on_fallback and self.mic_in_use():
            return True
        return speaker.inner is not None and not speaker.on_fallback and speaker.playing

    # -- losing ----------------------------------------------------------------------

    def lose(self, side: _Side, inner: Any, reason: str) -> None:
        """``inner`` stopped working: close it, say so, and reopen with backoff.
        A device already replaced (or closed on purpose) is not news."""
        if side.inner is not inner or side.closed:
            return
        side.detach()
        side.health.down(reason)
        asyncio.get_running_loop().create_task(
            self._close_lost(side, inner), name=f"close-{side.name}"
        )
        self.reopener.kick()

    async def _close_lost(self, side: _Side, inner: Any) -> None:
        async with self._lock:
            await close_bounded(inner.close, side.name)

    async def _watch(self) -> None:
        """Ask each device's fault() probe, every CHECK_S."""
        while True:
            await asyncio.sleep(self._check_s)
            for side in self._sides:
                inner = side.inner
                if inner is None or side.on_fallback:
                    continue
                probe = getattr(inner, "fault", None)
                reason = probe() if probe is not None else ""
                if reason:
                    self.lose(side, inner, reason)

    # -- closing ---------------------------------------------------------------------

    async def closed_side(self, side: _Side) -> None:
        if all(s.closed for s in self._sides):
            await self.reopener.close()
            if self._monitor is not None:
                self._monitor.cancel()
        async with self._lock:
            inner = side.detach()
            if inner is not None:
                await close_bounded(inner.close, side.name)
        side._up.set()


def open_recovering_pyaudio(
    board: DeviceBoard,
    *,
    chunk_ms: int,
    input_device: str,
    output_device: str,
    volume: float,
    grace_s: float,
    retry_max_s: float,
    speaker_rest_s: float | None = None,
) -> AudioRecovery:
    """The PortAudio microphone and speaker, each reopened when it goes away."""
    from . import load_pyaudio_backend
    from .devices import wants_plughw

    plughw = wants_plughw(input_device, output_device)

    def open_microphone() -> Microphone:
        mic: Microphone = load_pyaudio_backend().open_pyaudio_microphone(
            chunk_ms=chunk_ms, device=input_device, plughw=plughw
        )
        return mic

    def open_speaker() -> Speaker:
        backend = load_pyaudio_backend()
        rest_s = backend.SPEAKER_REST_S if speaker_rest_s is None else speaker_rest_s
        speaker: Speaker = backend.open_pyaudio_speaker(
            device=output_device, volume=volume, plughw=plughw, rest_s=rest_s
        )
        return speaker

    return AudioRecovery(
        open_microphone,
        open_speaker,
        board=board,
        grace_s=grace_s,
        retry_max_s=retry_max_s,
        chunk_ms=chunk_ms,
        volume=volume,
    )
