"""The audio contract: the Microphone and Speaker protocols, and paced bases for simulations.

Every backend speaks s16le mono: 16 kHz up to the model, 24 kHz back from it. A
real backend (PortAudio) is clocked by its hardware; a simulated one is clocked
here, by the event loop, so the daemon sees the same timing either way: a mic
turn takes as long as its speech, and the speaking state lasts as long as the
model's audio.
"""

from __future__ import annotations

import abc
import asyncio
import logging
from typing import Protocol, runtime_checkable

from ..device_health import CannotRetry
from .reference import PlaybackTap

logger = logging.getLogger(__name__)

MIC_RATE = 16000
SPEAKER_RATE = 24000
SAMPLE_WIDTH = 2

# A simulated mic that has not been read for this long (loop seconds) drops the
# backlog, as a real capture buffer overruns. It is counted but never discards
# recorded content, so a slow test machine cannot lose the speech it replays.
MAX_MIC_BACKLOG_S = 0.5
# Speaker playback period: PortAudio-like granularity, and short enough that a
# barge-in flush leaves at most this much of the old utterance.
SPEAKER_BLOCK_MS = 20
# A simulated speaker wakes once per this many queued blocks, not per block:
# each block is still written (and counted) as a block once its time has
# begun, when the batch's time is up or a flush cuts it.
PACED_BATCH_BLOCKS = 10
DEFAULT_SPEAKER_BUFFER_S = 60.0
# New audio arriving this soon (at real-time pace) after the queue ran dry means
# the feeder was late mid-utterance rather than a new utterance starting. A
# heuristic: a paced sink never plays silence, so it cannot see the gap itself.
UNDERRUN_GAP_S = 0.2


class AudioConfigError(ValueError):
    """An audio device or file cannot be used as configured; the message says how to fix it."""


class AudioBackendMissing(AudioConfigError, CannotRetry):
    """The backend's library is not installed: no retry brings the device back."""


@runtime_checkable
class Microphone(Protocol):
    """A push-to-talk source of s16le mono PCM at ``rate`` (MIC_RATE)."""

    rate: int
    chunk_bytes: int
    counters: dict[str, int]
    # True for a microphone that hears the room continuously: only then is the
    # audio just before a press worth sending as pre-roll. A recording that
    # rewinds at each press has nothing useful before it.
    live: bool

    async def start(self) -> None: ...

    async def read(self) -> bytes:
        """The next chunk of exactly ``chunk_bytes``, at real-time pace."""
        ...

    def cue(self) -> None:
        """A push-to-talk turn begins: a recording rewinds to say it again; a real mic doesn't."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class StandbyMicrophone(Protocol):
    """A Microphone that can stop waking its reader while nothing needs each
    chunk as it comes (the daemon is idle and listens for nothing): an idle
    device then costs no wake-up per chunk. A live mic keeps the newest
    chunks itself, so the pre-roll survives; a recording keeps nothing."""

    def standby(self, keep_chunks: int) -> bool:
        """From now until ``resume``, keep at most the newest ``keep_chunks``
        and wake nobody (``read`` waits). False if this mic cannot: read on."""
        ...

    def resume(self) -> list[bytes]:
        """Leave standby: the chunks kept, oldest first; ``read`` goes on with
        what comes after them."""
        ...


@runtime_checkable
class RestingSpeaker(Protocol):
    """A Speaker whose device can rest while nothing plays and nothing is
    expected (a running PortAudio output stream costs wake-ups even for
    silence). ``play`` always wakes it; the daemon wakes it ahead of a reply,
    because a device can take a while to run again."""

    def keep_awake(self, on: bool) -> None:
        """On: run now and do not rest. Off: rest once nothing has played for a while."""
        ...


@runtime_checkable
class Speaker(Protocol):
    """A sink of s16le mono PCM at ``rate`` (SPEAKER_RATE) with a barge-in flush."""

    rate: int
    counters: dict[str, int]

    async def start(self) -> None: ...

    def play(self, pcm: bytes) -> None:
        """Queue audio without blocking; never awaits."""
        ...

    def flush(self) -> int:
        """Drop everything queued and not yet played, at once; return the bytes dropped."""
        ...

    @property
    def playing(self) -> bool:
        """Audio is queued or being played."""
        ...

    async def wait_idle(self) -> None:
        """Return once everything queued has played (immediately if nothing is)."""
        ...

    async def close(self) -> None: ...


def _check_speed(speed: float) -> float:
    if not speed >= 0:  # also rejects NaN
        raise ValueError(f"speed must be >= 0 (0 = unpaced), got {speed!r}")
    return float(speed)


def _resolve(fut: asyncio.Future[bool], finished: bool) -> None:
    if not fut.done():
        fut.set_result(finished)


class Pacer:
    """Real-time pacing of a PCM stream on the event loop clock.

    Each deadline is the anchor plus the audio played so far (counted in frames,
    so no float error builds up), never "now plus one period": time the caller
    spends between waits is absorbed instead of accumulating into drift.
    ``speed`` > 1 runs faster than real time; 0 disables pacing.
    """

    def __init__(self, rate: int, speed: float = 1.0) -> None:
        self.rate = rate
        self.speed = _check_speed(speed)
        self._anchor: float | None = None
        self._frames = 0
        self._pause: asyncio.Future[bool] | None = None

    def restart(self, at: float | None = None) -> None:
        """Re-anchor at loop time ``at``, or lazily at the next ``advance``."""
        self._anchor = at
        self._frames = 0

    def advance(self, frames: int) -> float | None:
        """Account for ``frames`` more audio; return the loop time it ends (None if unpaced)."""
        if self._anchor is None:
            self._anchor = asyncio.get_running_loop().time()
        self._frames += frames
        if not self.speed:
            return None
        return self._anchor + self._frames / self.rate / self.speed

    async def sleep_until(self, when: float | None) -> bool:
        """Sleep until loop time ``when``; False if ``interrupt`` cut it short.

        Unpaced (``when`` None) still yields once, so a tight read or play loop
        cannot starve the rest of the daemon.
        """
        if when is None:
            await asyncio.sleep(0)
            return True
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[bool] = loop.create_future()
        handle = loop.call_at(when, _resolve, fut, True)
        self._pause = fut
        try:
            return await fut
        finally:
            handle.cancel()
            self._pause = None

    def interrupt(self) -> None:
        """Wake a pending ``sleep_until`` now (a barge-in must not wait out a block)."""
        if self._pause is not None:
            _resolve(self._pause, False)


class PacedMicrophone(abc.ABC):
    """A simulated Microphone: chunks from ``_next_chunk`` at real-time pace."""

    live = False

    def __init__(self, *, chunk_ms: int = 40, speed: float = 1.0, rate: int = MIC_RATE) -> None:
        if not 1 <= chunk_ms <= 1000:
            raise AudioConfigError(f"audio chunk_ms must be 1..1000, got {chunk_ms!r}")
        self.rate = rate
        self.chunk_frames = rate * chunk_ms // 1000
        self.chunk_bytes = self.chunk_frames * SAMPLE_WIDTH
        self.counters: dict[str, int] = {"chunks": 0, "overflows": 0}
        self._silence = bytes(self.chunk_bytes)
        self._pacer = Pacer(rate, speed)
        self._closed = False
        self._overflow_logged = False
        self._awake = asyncio.Event()  # cleared in standby
        self._awake.set()

    @abc.abstractmethod
    def _next_chunk(self) -> bytes:
        """The next ``chunk_bytes`` of "recorded" sound."""

    def cue(self) -> None:
        """Nothing to rewind by default."""
        return

    async def start(self) -> None:
        # The mic records from now on: a late first read gets the backlog at once.
        self._pacer.restart(asyncio.get_running_loop().time())

    def standby(self, keep_chunks: int) -> bool:
        """A recording has nothing worth keeping while nobody listens: reads
        wait for ``resume``. A simulated live mic (tests) is read on."""
        if self.live:
            return False
        self._awake.clear()
        return True

    def resume(self) -> list[bytes]:
        if not self._awake.is_set():
            self._awake.set()
            self._pacer.restart()  # the time in standby was not recorded
        return []

    async def read(self) -> bytes:
        if self._closed:
            raise RuntimeError("microphone is closed")
        if not self._awake.is_set():
            await self._awake.wait()
            if self._closed:
                raise RuntimeError("microphone is closed")
        due = self._pacer.advance(self.chunk_frames)
        if due is not None and asyncio.get_running_loop().time() - due > MAX_MIC_BACKLOG_S:
            self._overflow()
            self._pacer.restart()
            due = self._pacer.advance(self.chunk_frames)
        await self._pacer.sleep_until(due)
        self.counters["chunks"] += 1
        return self._next_chunk()

    def _overflow(self) -> None:
        self.counters["overflows"] += 1
        if not self._overflow_logged:
            self._overflow_logged = True
            logger.warning(
                "microphone not read for over %.1f s: backlog dropped (counted in overflows, "
                "logged once)",
                MAX_MIC_BACKLOG_S,
            )

    async def close(self) -> None:
        self._closed = True
        self._awake.set()


class PacedSpeaker(abc.ABC):
    """A Speaker that plays a bounded queue in 20 ms blocks at real-time pace into ``_write``.

    Subclasses are sinks: ``_write`` gets each block as it "plays". Between
    utterances nothing is written (no padding silence), so a file sink holds
    exactly the audio it was given, minus what a flush or an overflow dropped.
    """

    def __init__(
        self,
        *,
        rate: int = SPEAKER_RATE,
        speed: float = 1.0,
        max_buffer_s: float = DEFAULT_SPEAKER_BUFFER_S,
    ) -> None:
        self.rate = rate
        self.counters: dict[str, int] = {
            "chunks": 0,
            "bytes_played": 0,
            "flushes": 0,
            "bytes_flushed": 0,
            "underruns": 0,
            "overflow_dropped": 0,
            "write_errors": 0,
        }
        self._pacer = Pacer(rate, speed)
        # The playback gain, 0..2, applied as audio is queued (``ctl volume``).
        self.volume = 1.0
        # What was played, for an echo canceller (open_tap); None: nobody asked.
        self.tap: PlaybackTap | None = None
        self._block_bytes = rate * SPEAKER_BLOCK_MS // 1000 * SAMPLE_WIDTH
        self._max_bytes = max(int(max_buffer_s * rate), 1) * SAMPLE_WIDTH
        self._underrun_gap = UNDERRUN_GAP_S / self._pacer.speed if self._pacer.speed else 0.0
        self._buf = bytearray()
        self._in_flight = False  # a batch is playing and its time is not up
        # The batch playing: its bytes, the loop time it began (None unpaced),
        # and, once a flush cut it, how much of it had begun.
        self._batch = b""
        self._batch_begun: float | None = None
        self._cut: int | None = None
        self._utterance_bytes = 0
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._logged: set[str] = set()

    # -- sink hooks ---------------------------------------------------------

    @abc.abstractmethod
    def _write(self, block: bytes) -> None:
        """Hand one block (at most 20 ms, whole samples) to the sink. Must not block for long."""

    def _utterance_ended(self) -> None:
        """The queue ran dry (or was flushed) after some audio: a good moment to sync a sink."""
        return

    def _close_sink(self) -> None:
        """Release the sink; called once, after playback has stopped."""
        return

    # -- Speaker ------------------------------------------------------------

    @property
    def playing(self) -> bool:
        return bool(self._buf) or self._in_flight

    def open_tap(self) -> PlaybackTap:
        """The far-end reference: every block as it plays, from now on."""
        if self.tap is None:
            self.tap = PlaybackTap(self.rate)
        return self.tap

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("speaker is closed")
        if self._task is None:
            self._task = asyncio.create_task(self._play_loop(), name="speaker-playback")

    def play(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return  # late audio during shutdown is not an error
        if len(pcm) % SAMPLE_WIDTH:
            # A torn sample would shift every later sample into noise: drop the odd byte.
            self._log_once("odd", "speaker got %d bytes, not whole 16-bit samples", len(pcm))
            pcm = pcm[:-1]
            if not pcm:
                return
        if self.volume != 1.0:
            from .convert import apply_gain

            pcm = apply_gain(pcm, self.volume)
        self._buf += pcm
        self.counters["chunks"] += 1
        excess = len(self._buf) - self._max_bytes
        if excess > 0:
            del self._buf[:excess]  # oldest first: the newest audio is what the user waits for
            self.counters["overflow_dropped"] += excess
            self._log_once(
                "overflow",
                "speaker buffer full (%.0f s): dropping oldest audio (counted in "
                "overflow_dropped, logged once)",
                self._max_bytes / SAMPLE_WIDTH / self.rate,
            )
        self._idle.clear()
        self._wakeup.set()

    def flush(self) -> int:
        dropped = len(self._buf)
        self._buf.clear()
        if self._in_flight and self._cut is None:
            # The blocks of the batch whose time has not begun are dropped too.
            self._cut = self._begun_bytes()
            dropped += len(self._batch) - self._cut
        self.counters["flushes"] += 1
        self.counters["bytes_flushed"] += dropped
        # The block already handed to the sink has been heard (or written);
        # waiting out the rest of its 20 ms would only delay the barge-in.
        self._in_flight = False
        self._pacer.interrupt()
        self._idle.set()
        return dropped

    async def wait_idle(self) -> None:
        if not self.playing:
            return
        if self._task is None:
            raise RuntimeError("speaker has queued audio but was never started")
        await self._idle.wait()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buf.clear()
        self._in_flight = False
        if self._task is not None:
            self._task.cancel()
            # asyncio.wait, not "await task": our own cancellation must still propagate.
            await asyncio.wait({self._task})
        self._idle.set()
        self._close_sink()

    # -- playback -----------------------------------------------------------

    async def _play_loop(self) -> None:
        loop = asyncio.get_running_loop()
        dry_at: float | None = None  # when the queue last ran dry by playing out
        while True:
            if not self._buf:
                self._go_idle()
                self._wakeup.clear()
                await self._wakeup.wait()
                if dry_at is not None and loop.time() - dry_at < self._underrun_gap:
                    self.counters["underruns"] += 1
                dry_at = None
                # The silence between utterances is not owed: pace from now.
                self._pacer.restart()
                continue
            batch = self._batch = bytes(self._buf[: self._block_bytes * PACED_BATCH_BLOCKS])
            del self._buf[: len(batch)]
            self._in_flight, self._cut = True, None
            frames = len(batch) // SAMPLE_WIDTH
            due = self._pacer.advance(frames)
            speed = self._pacer.speed
            self._batch_begun = None if due is None else due - frames / self.rate / speed
            try:
                finished = await self._pacer.sleep_until(due)
            except asyncio.CancelledError:  # closed mid-batch: what began was heard
                self._write_blocks(batch, self._begun_bytes())
                raise
            if not finished:  # flushed mid-batch: whatever comes next starts afresh
                self._write_blocks(batch, self._cut if self._cut is not None else len(batch))
                self._pacer.restart()
            else:
                self._write_blocks(batch, len(batch))
                if not self._buf:
                    dry_at = loop.time()

    def _begun_bytes(self) -> int:
        """How much of the batch playing has begun: whole blocks, the one in
        flight included (it was heard, as on a device)."""
        if self._batch_begun is None:
            return len(self._batch)
        elapsed = asyncio.get_running_loop().time() - self._batch_begun
        played = elapsed * self._pacer.speed * self.rate * SAMPLE_WIDTH
        blocks = max(0, int(played // self._block_bytes)) + 1
        return min(len(self._batch), blocks * self._block_bytes)

    def _write_blocks(self, batch: bytes, upto: int) -> None:
        for i in range(0, upto, self._block_bytes):
            self._write_block(batch[i : min(i + self._block_bytes, upto)])

    def _write_block(self, block: bytes) -> None:
        try:
            self._write(block)
        except Exception as exc:
            # A full disk must not kill playback (wait_idle would hang): count, log once.
            self.counters["write_errors"] += 1
            self._log_once("write", "speaker sink failed, audio dropped: %s", exc)
            return
        self.counters["bytes_played"] += len(block)
        self._utterance_bytes += len(block)
        if self.tap is not None:
            self.tap.feed(block)

    def _go_idle(self) -> None:
        self._in_flight = False
        self._idle.set()
        if self._utterance_bytes:
            self._utterance_bytes = 0
            try:
                self._utterance_ended()
            except Exception as exc:
                self.counters["write_errors"] += 1
                self._log_once("sync", "speaker sink failed to sync: %s", exc)

    def _log_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._logged:
            self._logged.add(key)
            logger.warning(msg, *args)
