"""Real audio through PortAudio (PyAudio), in callback mode.

PortAudio calls our callbacks on its own real-time thread. They must never
block and never raise (an exception there aborts the stream), so each one only
moves bytes under a short lock or into a bounded deque and, at most once per
wake-up, pokes the event loop with ``call_soon_threadsafe``. Everything that
can be slow (logging, resampling, volume) happens on the event loop.

Devices are clocked by their hardware: nothing here paces anything.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any

import pyaudio

from .. import trace
from .base import (
    DEFAULT_SPEAKER_BUFFER_S,
    MIC_RATE,
    SAMPLE_WIDTH,
    SPEAKER_BLOCK_MS,
    SPEAKER_RATE,
    UNDERRUN_GAP_S,
    AudioConfigError,
)
from .devices import (
    Device,
    Direction,
    alsa_cards,
    choose_format,
    list_devices,
    new_pyaudio,
    quiet_alsa,
    resolve_device,
    wants_plughw,
)
from .reference import PlaybackTap

if TYPE_CHECKING:
    from .convert import PcmConverter

logger = logging.getLogger(__name__)

# The mic deque holds this much audio while the event loop is busy elsewhere
# (a TLS handshake, a slow log write); older audio is dropped after that.
MIC_QUEUE_S = 2.0
# No callback for this long while a stream should be running: the device is
# gone (USB unplugged) or wedged. Logged and counted, never fatal.
STALL_S = 2.0
# A speaker with nothing to play for this long, and not kept awake for a reply,
# stops its stream: a running output stream wakes PortAudio's thread and the
# sound server's for every block of silence, which was most of what an idle
# daemon cost on PulseAudio. Not at once: a device can take a while to run
# again (ALSA's pulse plugin: about 1.5 s), so the daemon wakes it as a turn
# opens, well before the reply.
SPEAKER_REST_S = 5.0


class _PortAudio:
    """One PyAudio instance shared by the mic and the speaker; terminated after both close."""

    def __init__(self, pa: Any) -> None:
        self.pa = pa
        self._users = 0
        self._lock = threading.Lock()  # released from worker threads

    def acquire(self) -> None:
        with self._lock:
            self._users += 1

    def release(self) -> None:
        with self._lock:
            self._users -= 1
            last = self._users == 0
        if last:
            self.pa.terminate()


def _describe(device: Device, rate: int, channels: int, ours: int) -> str:
    conv = f", converting from/to {ours} Hz mono" if (rate, channels) != (ours, 1) else ""
    return f"{device['name']} (#{device['index']}) at {rate} Hz x{channels}{conv}"


def _converter(
    in_rate: int, out_rate: int, in_channels: int, out_channels: int
) -> PcmConverter | None:
    if in_rate == out_rate and in_channels == out_channels:
        return None
    from .convert import PcmConverter  # numpy + soxr: only when a device needs them

    return PcmConverter(in_rate, out_rate, in_channels, out_channels)


class _LogOnce:
    def __init__(self) -> None:
        self._seen: set[str] = set()

    def __call__(self, key: str, level: int, msg: str, *args: object) -> None:
        if key not in self._seen:
            self._seen.add(key)
            logger.log(level, msg, *args)


# -- microphone -------------------------------------------------------------------


def _open_stream(
    portaudio: Any,
    device: dict[str, Any],
    rate: int,
    channels: int,
    block_frames: int,
    callback: Any,
    direction: str,
) -> Any:
    """A stopped callback-mode s16 stream on ``device``; one PortAudio user more."""
    with quiet_alsa():
        stream = portaudio.pa.open(
            rate=rate,
            channels=channels,
            format=pyaudio.paInt16,
            frames_per_buffer=block_frames,
            stream_callback=callback,
            start=False,
            **{direction: True, f"{direction}_device_index": device["index"]},
        )
    portaudio.acquire()
    return stream


class PyAudioMicrophone:
    """16 kHz mono s16le in ``chunk_ms`` chunks from a PortAudio input device.

    ``last_capture_time`` is the ``time.monotonic()`` at which the chunk last
    returned by ``read`` was complete (when PortAudio handed it over): latency
    benchmarks subtract it from the time the chunk left for the network.
    """

    rate = MIC_RATE
    live = True  # it hears the room all the time: the audio before a press is real pre-roll

    def __init__(
        self,
        portaudio: _PortAudio,
        device: Device,
        *,
        device_rate: int,
        device_channels: int,
        chunk_ms: int = 40,
        queue_s: float = MIC_QUEUE_S,
    ) -> None:
        if not 1 <= chunk_ms <= 1000:
            raise AudioConfigError(f"audio chunk_ms must be 1..1000, got {chunk_ms!r}")
        self.device = device
        self.device_rate, self.device_channels = device_rate, device_channels
        self.chunk_bytes = MIC_RATE * chunk_ms // 1000 * SAMPLE_WIDTH
        self.counters: dict[str, int] = {
            "chunks": 0,
            "overflows": 0,  # chunks dropped (oldest first) because nobody read them in time
            "device_overflows": 0,  # PortAudio/ALSA lost input before we saw it
            "stalls": 0,
        }
        self.last_capture_time: float | None = None
        self._conv = _converter(device_rate, MIC_RATE, device_channels, 1)
        block_frames = device_rate * chunk_ms // 1000
        # Filled by the PortAudio thread, emptied by read(): deque appends and
        # pops are atomic, and maxlen drops the oldest block by itself.
        backlog = max(2, math.ceil(queue_s * 1000 / chunk_ms))
        self._raw: collections.deque[tuple[bytes, float]] = collections.deque(maxlen=backlog)
        self._dropped = 0  # written by the PortAudio thread only
        # Chunks ready for read(), bounded alike: the backlog as a whole drops its oldest.
        self._ready: collections.deque[tuple[bytes, float]] = collections.deque(maxlen=backlog)
        self._dropped_ready = 0
        self._pending = bytearray()  # converted audio short of a whole chunk
        self._wake_pending = False
        # In standby (the daemon idle) the PortAudio thread only appends: no
        # wake-up per block, and the deque dropping its oldest is not a loss.
        self._standby = False
        self._keep = 0
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._last_callback = 0.0  # written by the PortAudio thread, read by fault()
        self._log = _LogOnce()
        self._portaudio = portaudio
        self._stream = _open_stream(
            portaudio, device, device_rate, device_channels, block_frames, self._callback, "input"
        )

    # PortAudio thread ------------------------------------------------------------

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[None, int]:
        try:
            now = time.monotonic()
            self._last_callback = now
            if status & pyaudio.paInputOverflow:
                self.counters["device_overflows"] += 1
            if in_data:
                standby = self._standby
                if len(self._raw) == self._raw.maxlen and not standby:
                    self._dropped += 1
                self._raw.append((in_data, now))
                # One wake-up in flight at a time: a stalled loop cannot pile
                # up handles, and the deque bounds the audio itself.
                if not standby and not self._wake_pending and self._loop is not None:
                    self._wake_pending = True
                    self._loop.call_soon_threadsafe(self._wake)
        except Exception:
            pass  # the loop is closing; raising here would abort the stream
        return None, pyaudio.paContinue

    # event loop ----------------------------------------------------------------

    def _wake(self) -> None:
        self._wake_pending = False
        self._event.set()

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("microphone is closed")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._last_callback = time.monotonic()
        await asyncio.to_thread(self._stream.start_stream)
        logger.info(
            "microphone: %s",
            _describe(self.device, self.device_rate, self.device_channels, MIC_RATE),
        )

    async def read(self) -> bytes:
        while True:
            if self._closed:
                raise RuntimeError("microphone is closed")
            # In standby the audio waits for resume(), which hands the newest over.
            if not self._standby:
                # New audio goes in first: it must push out the oldest, never queue behind it.
                self._take_raw()
                if self._ready:
                    break
            if self._loop is None:
                raise RuntimeError("microphone was never started")
            self._event.clear()
            try:
                # In standby nothing wakes this read until resume(): not a stall.
                async with asyncio.timeout(None if self._standby else STALL_S):
                    await self._event.wait()
            except TimeoutError:
                if not self._standby:
                    self._stalled()
        chunk, captured = self._ready.popleft()
        self.last_capture_time = captured
        self.counters["chunks"] += 1
        return chunk

    def _take_raw(self) -> None:
        while self._raw:
            data, captured = self._raw.popleft()
            if self._conv is not None:
                data = self._conv.process(data)
            elif not self._pending and len(data) == self.chunk_bytes:
                self._add_ready(data, captured)  # the common case: no copying
                continue
            self._pending += data
            while len(self._pending) >= self.chunk_bytes:
                self._add_ready(bytes(self._pending[: self.chunk_bytes]), captured)
                del self._pending[: self.chunk_bytes]
        dropped = self._dropped + self._dropped_ready
        if dropped != self.counters["overflows"]:
            self.counters["overflows"] = dropped
            self._log(
                "overflow",
                logging.WARNING,
                "microphone not read for over %.1f s: oldest audio dropped (counted in "
                "overflows, logged once)",
                MIC_QUEUE_S,
            )

    def _add_ready(self, chunk: bytes, captured: float) -> None:
        if len(self._ready) == self._ready.maxlen:
            self._dropped_ready += 1  # the deque drops the oldest itself
        self._ready.append((chunk, captured))

    def _stalled(self) -> None:
        self.counters["stalls"] += 1
        self._log(
            "stall",
            logging.ERROR,
            "microphone %s delivered nothing for %.0f s: unplugged or wedged? (counted in "
            "stalls, logged once)",
            self.device["name"],
            STALL_S,
        )

    def cue(self) -> None:
        """A live mic has nothing to rewind."""
        return

    def standby(self, keep_chunks: int) -> bool:
        """Capture goes on (the pre-roll is the room just before a press), but
        the PortAudio thread only keeps the newest blocks until ``resume``."""
        self._keep = max(0, keep_chunks)
        self._standby = True
        return True

    def resume(self) -> list[bytes]:
        if not self._standby:
            return []
        self._standby = False  # from the next block on, the callback wakes the loop
        # Only the newest blocks matter (one block is one chunk at the device's
        # rate, one more for a partial chunk); older ones were never owed to anyone.
        stale = len(self._raw) - (self._keep + 1)
        if stale > 0:
            for _ in range(stale):
                self._raw.popleft()
            self._pending.clear()  # no longer continuous with what follows
            if self._conv is not None:
                self._conv.reset()
        self._take_raw()
        kept = list(self._ready)[-self._keep :] if self._keep else []
        self._ready.clear()
        self._wake()  # a read waiting through the standby looks again
        return [chunk for chunk, _ in kept]

    def fault(self) -> str:
        """Why the device has stopped working ("" while it works): its stream
        ended (PortAudio's thread quits on an error such as an unplugged USB
        device) or no callback came for STALL_S."""
        return _fault(self._stream, self._loop, self._closed, self._last_callback, self.device)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._event.set()
        await asyncio.to_thread(_close_stream, self._stream, self._portaudio)


def _fault(
    stream: Any,
    loop: asyncio.AbstractEventLoop | None,
    closed: bool,
    last_callback: float,
    device: Device,
) -> str:
    if loop is None or closed:
        return ""
    if not stream.is_active():
        return f"{device['name']}: the stream stopped (unplugged?)"
    silent = time.monotonic() - last_callback
    if silent >= STALL_S:
        return f"{device['name']}: no callback for {silent:.1f} s (unplugged or wedged?)"
    return ""


def _close_stream(stream: Any, portaudio: _PortAudio) -> None:
    """Stop and close ``stream``, then let go of PortAudio (all blocking: run in a thread)."""
    try:
        if not stream.is_stopped():
            stream.stop_stream()
    finally:
        try:
            stream.close()
        finally:
            portaudio.release()


# -- speaker ----------------------------------------------------------------------


class PyAudioSpeaker:
    """Plays 24 kHz mono s16le on a PortAudio output device from a bounded buffer.

    ``play`` (event loop) appends to the buffer and the output callback
    (PortAudio thread) takes from it, both under one lock held only for a
    bytearray copy. When the buffer is empty the callback plays silence, so a
    reply in a turn starts without the cost and the click of restarting a
    device; after ``rest_s`` of silence with nobody keeping it awake, the
    stream stops until ``play`` or ``keep_awake``.
    """

    rate = SPEAKER_RATE

    def __init__(
        self,
        portaudio: _PortAudio,
        device: Device,
        *,
        device_rate: int,
        device_channels: int,
        volume: float = 1.0,
        max_buffer_s: float = DEFAULT_SPEAKER_BUFFER_S,
        rest_s: float = SPEAKER_REST_S,
    ) -> None:
        if not 0 <= volume <= 2:  # also rejects NaN
            raise AudioConfigError(f"audio.volume must be 0..2, got {volume!r}")
        self.device = device
        self.device_rate, self.device_channels = device_rate, device_channels
        self.volume = float(volume)
        self.counters: dict[str, int] = {
            "chunks": 0,
            "bytes_played": 0,
            "flushes": 0,
            "bytes_flushed": 0,
            "underruns": 0,
            "overflow_dropped": 0,
            "device_underflows": 0,  # PortAudio/ALSA ran dry: our callback came too late
            "stalls": 0,
        }
        self._conv = _converter(SPEAKER_RATE, device_rate, 1, device_channels)
        self._frame = SAMPLE_WIDTH * device_channels
        # Counters speak in the caller's bytes (24 kHz mono), whatever the device runs at.
        self._in_bps = SPEAKER_RATE * SAMPLE_WIDTH
        self._dev_bps = device_rate * self._frame
        self._max_bytes = max(int(max_buffer_s * device_rate), 1) * self._frame
        block_frames = device_rate * SPEAKER_BLOCK_MS // 1000
        self._silence = bytes(block_frames * self._frame)

        # Shared with the PortAudio thread: only touched under _lock.
        self._lock = threading.Lock()
        self._buf = bytearray()
        self._active = False  # audio queued, or handed to PortAudio and not yet followed by silence
        self._dry_at: float | None = None  # monotonic time the buffer last ran dry mid-stream
        self._played = 0  # device bytes handed to PortAudio
        self._last_callback = 0.0
        self._trace_flush = False  # EDGE_DAEMON_TRACE: stamp the first callback after a flush
        # What the device was handed, silence included, for an echo canceller.
        self.tap: PlaybackTap | None = None

        self._idle = asyncio.Event()
        self._idle.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closed = False
        self._log = _LogOnce()
        # Resting (event loop only): what the stream should do, what it last
        # did, and the one task that starts or stops it (never two at once).
        self._rest_s = rest_s
        self._kept_awake = False
        self._want_running = True
        self._running = False
        self._switch: asyncio.Task[None] | None = None
        self._rest_timer: asyncio.TimerHandle | None = None
        self._portaudio = portaudio
        self._stream = _open_stream(
            portaudio, device, device_rate, device_channels, block_frames, self._callback, "output"
        )

    # PortAudio thread ------------------------------------------------------------

    def _callback(
        self, in_data: bytes | None, frame_count: int, time_info: Any, status: int
    ) -> tuple[bytes, int]:
        want = frame_count * self._frame
        try:
            now = time.monotonic()
            if status & pyaudio.paOutputUnderflow:
                self.counters["device_underflows"] += 1
            with self._lock:
                self._last_callback = now
                out = bytes(self._buf[:want])
                del self._buf[:want]
                self._played += len(out)
                drained = self._active and not out
                if drained:
                    self._active = False
                    self._dry_at = now
                played = self._played
            self.counters["bytes_played"] = played * self._in_bps // self._dev_bps
            if self._trace_flush:
                self._trace_flush = False
                trace.event("silence", now)
            if drained and self._loop is not None:
                self._loop.call_soon_threadsafe(self._on_drained)
        except Exception:
            out = b""  # the loop is closing; raising here would abort the stream
        short = want - len(out)
        if short > 0:
            out += self._silence[:short] if short <= len(self._silence) else bytes(short)
        tap = self.tap
        if tap is not None:
            tap.feed(out)
        return out, pyaudio.paContinue

    # event loop ----------------------------------------------------------------

    def _on_drained(self) -> None:
        # Only play() (on this thread) sets _active, so this check cannot race it.
        if self._active:
            return  # new audio came in meanwhile
        tail = self._conv.drain() if self._conv is not None else b""
        with self._lock:
            if tail:
                # The resampler held back its last ~20 ms until it knew the stream ended.
                self._buf += tail
                self._active = True
                return
        self._idle.set()
        self._arm_rest()

    @property
    def playing(self) -> bool:
        return self._active

    def open_tap(self) -> PlaybackTap:
        """The far-end reference: every block the device is handed, from now on."""
        if self.tap is None:
            self.tap = PlaybackTap(self.device_rate, self.device_channels)
        return self.tap

    async def start(self) -> None:
        if self._closed:
            raise RuntimeError("speaker is closed")
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        with self._lock:
            self._last_callback = time.monotonic()
        await asyncio.to_thread(self._stream.start_stream)
        self._running = True
        logger.info(
            "speaker: %s",
            _describe(self.device, self.device_rate, self.device_channels, SPEAKER_RATE),
        )
        self._arm_rest()

    # resting ---------------------------------------------------------------------

    def keep_awake(self, on: bool) -> None:
        """On (a turn is open, a reply may come): the stream runs. Off: it
        rests once nothing has played for ``rest_s``."""
        self._kept_awake = on
        if on:
            self._run(True)
        else:
            self._arm_rest()

    @property
    def resting(self) -> bool:
        """The stream is stopped (or stopping) for want of anything to play."""
        return not self._want_running

    def _arm_rest(self) -> None:
        if self._rest_timer is not None:
            self._rest_timer.cancel()
            self._rest_timer = None
        if self._loop is None or self._closed or self._kept_awake or self._active:
            return
        if self._rest_s <= 0:
            return  # configured to run for ever
        if self._want_running:
            self._rest_timer = self._loop.call_later(self._rest_s, self._rest)

    def _rest(self) -> None:
        self._rest_timer = None
        if not (self._closed or self._kept_awake or self._active):
            self._run(False)

    def _run(self, running: bool) -> None:
        if running and self._rest_timer is not None:
            self._rest_timer.cancel()
            self._rest_timer = None
        if running is self._want_running:
            return
        self._want_running = running
        if self._loop is not None and (self._switch is None or self._switch.done()):
            self._switch = self._loop.create_task(self._follow())

    async def _follow(self) -> None:
        """Start or stop the stream until it does what is wanted (PortAudio
        blocks while it does: in a worker thread, one call at a time)."""
        while not self._closed and self._running is not self._want_running:
            running = self._want_running
            try:
                if running:
                    with self._lock:
                        self._last_callback = time.monotonic()  # the stall clock starts now
                    await asyncio.to_thread(self._stream.start_stream)
                else:
                    await asyncio.to_thread(self._stream.stop_stream)
            except Exception as exc:
                # fault() now says the stream is not running: the device is reopened.
                self._log(
                    "switch",
                    logging.ERROR,
                    "speaker %s: cannot %s its stream: %s (logged once)",
                    self.device["name"],
                    "start" if running else "stop",
                    exc,
                )
                return
            self._running = running
            logger.debug("speaker: %s", "awake" if running else "resting")

    def play(self, pcm: bytes) -> None:
        if self._closed or not pcm:
            return  # late audio during shutdown is not an error
        if len(pcm) % SAMPLE_WIDTH:
            self._log("odd", logging.WARNING, "speaker got %d bytes, not whole samples", len(pcm))
            pcm = pcm[:-1]
            if not pcm:
                return
        self.counters["chunks"] += 1
        if self.volume != 1.0:
            from .convert import apply_gain

            pcm = apply_gain(pcm, self.volume)
        data = self._conv.process(pcm) if self._conv is not None else pcm
        with self._lock:
            starting = not self._active
            dry_at = self._dry_at if starting else None
            self._buf += data
            excess = len(self._buf) - self._max_bytes
            if excess > 0:
                excess += -excess % self._frame  # never split a frame
                del self._buf[:excess]  # oldest first: the newest audio is what the user waits for
            self._active = True
        if not self._want_running or self._rest_timer is not None:
            self._run(True)
        if excess > 0:
            self.counters["overflow_dropped"] += excess * self._in_bps // self._dev_bps
            self._log(
                "overflow",
                logging.WARNING,
                "speaker buffer full (%.0f s): dropping oldest audio (counted in "
                "overflow_dropped, logged once)",
                self._max_bytes / self._dev_bps,
            )
        if starting:
            # Audio soon after the buffer ran dry is the same reply arriving
            # late (an underrun); later, it is a new reply after a pause.
            if dry_at is not None and time.monotonic() - dry_at < UNDERRUN_GAP_S:
                self.counters["underruns"] += 1
            self._idle.clear()

    def flush(self) -> int:
        with self._lock:
            dropped = len(self._buf)
            self._buf.clear()
            self._active = False
            self._dry_at = None  # the next reply is a new one, not a late one
        self._trace_flush = trace.ON
        if self._conv is not None:
            self._conv.reset()
        dropped = dropped * self._in_bps // self._dev_bps
        self.counters["flushes"] += 1
        self.counters["bytes_flushed"] += dropped
        self._idle.set()
        self._arm_rest()
        return dropped

    async def wait_idle(self) -> None:
        if not self.playing:
            return
        if self._loop is None:
            raise RuntimeError("speaker has queued audio but was never started")
        while True:
            try:
                async with asyncio.timeout(STALL_S):
                    await self._idle.wait()
                return
            except TimeoutError:
                with self._lock:
                    silent_for = time.monotonic() - self._last_callback
                if silent_for >= STALL_S:
                    self._stalled()
                    return

    def fault(self) -> str:
        """Why the device has stopped working ("" while it works); see the
        microphone's. A resting stream, or one being started, is not lost."""
        if not self._want_running or (self._switch is not None and not self._switch.done()):
            return ""
        with self._lock:
            last = self._last_callback
        return _fault(self._stream, self._loop, self._closed, last, self.device)

    def _stalled(self) -> None:
        # The device stopped asking for audio: drop what it will never play
        # rather than leave the daemon waiting for it forever.
        self.counters["stalls"] += 1
        self._log(
            "stall",
            logging.ERROR,
            "speaker %s stopped playing for over %.0f s: unplugged or wedged? queued audio "
            "dropped (counted in stalls, logged once)",
            self.device["name"],
            STALL_S,
        )
        self.flush()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._rest_timer is not None:
            self._rest_timer.cancel()
        with self._lock:
            self._buf.clear()
            self._active = False
        self._idle.set()
        if self._switch is not None:
            await asyncio.gather(self._switch, return_exceptions=True)  # never two calls at once
        await asyncio.to_thread(_close_stream, self._stream, self._portaudio)


# -- opening ----------------------------------------------------------------------


def _open_side(
    pa: Any, devices: list[Device], spec: str, direction: Direction, rate: int
) -> tuple[Device, int, int]:
    device = resolve_device(devices, spec, direction, cards=alsa_cards())
    dev_rate, channels = choose_format(pa, device, direction, rate)
    return device, dev_rate, channels


def _open_error(device: Device, direction: Direction, exc: BaseException) -> AudioConfigError:
    # PyAudio raises OSError(code, text) and ValueError(text, code).
    detail = exc.strerror if isinstance(exc, OSError) else None
    detail = detail or (exc.args[0] if exc.args else exc)
    return AudioConfigError(
        f"cannot open {direction} device {device['index']} ({device['name']}): {detail}; "
        "is another program (PulseAudio, PipeWire, another daemon) holding it?"
    )


def _fresh_portaudio(plughw: bool) -> _PortAudio:
    if plughw:
        import os

        # PortAudio lists hardware as hw:N,M unless told to use ALSA's plug
        # layer; read once, when PortAudio initialises, so set it first.
        os.environ.setdefault("PA_ALSA_PLUGHW", "1")
    return _PortAudio(new_pyaudio())


def open_pyaudio_microphone(
    *, chunk_ms: int = 40, device: str = "", plughw: bool = False
) -> PyAudioMicrophone:
    """The input device alone, on a PortAudio instance of its own (blocking).

    Each side holding its own instance is what lets them be reopened: PortAudio
    reads the list of devices again only after every instance has terminated.
    ``plughw``: list hardware as ALSA ``plughw`` devices (either side's name asks for it).
    """
    portaudio = _fresh_portaudio(plughw)
    portaudio.acquire()
    try:
        dev, rate, ch = _open_side(
            portaudio.pa, list_devices(portaudio.pa), device, "input", MIC_RATE
        )
        try:
            return PyAudioMicrophone(
                portaudio, dev, device_rate=rate, device_channels=ch, chunk_ms=chunk_ms
            )
        except (OSError, ValueError) as exc:
            raise _open_error(dev, "input", exc) from None
    finally:
        portaudio.release()


def open_pyaudio_speaker(
    *,
    device: str = "",
    volume: float = 1.0,
    plughw: bool = False,
    rest_s: float = SPEAKER_REST_S,
) -> PyAudioSpeaker:
    """The output device alone, on a PortAudio instance of its own (blocking);
    its stream rests after ``rest_s`` with nothing to play (0: never)."""
    if not 0 <= volume <= 2:
        raise AudioConfigError(f"audio.volume must be 0..2, got {volume!r}")
    portaudio = _fresh_portaudio(plughw)
    portaudio.acquire()
    try:
        dev, rate, ch = _open_side(
            portaudio.pa, list_devices(portaudio.pa), device, "output", SPEAKER_RATE
        )
        try:
            return PyAudioSpeaker(
                portaudio, dev, device_rate=rate, device_channels=ch, volume=volume, rest_s=rest_s
            )
        except (OSError, ValueError) as exc:
            raise _open_error(dev, "output", exc) from None
    finally:
        portaudio.release()


def open_pyaudio(
    *,
    chunk_ms: int = 40,
    input_device: str = "",
    output_device: str = "",
    volume: float = 1.0,
) -> tuple[PyAudioMicrophone, PyAudioSpeaker]:
    """Open the configured (or default) input and output devices; AudioConfigError if not.

    A device is opened at 16 kHz (mic) / 24 kHz (speaker) mono when it supports
    that, else at 48 or 44.1 kHz or its default rate, and stereo if it must,
    converting on the fly.
    """
    if not 0 <= volume <= 2:
        raise AudioConfigError(f"audio.volume must be 0..2, got {volume!r}")
    if wants_plughw(input_device, output_device):
        import os

        # PortAudio lists hardware as hw:N,M unless told to use ALSA's plug
        # layer; read once, when PortAudio initialises, so set it first.
        os.environ.setdefault("PA_ALSA_PLUGHW", "1")
    portaudio = _PortAudio(new_pyaudio())
    portaudio.acquire()  # held while opening, so a failure below terminates PortAudio
    mic: PyAudioMicrophone | None = None
    try:
        devices = list_devices(portaudio.pa)
        dev, rate, ch = _open_side(portaudio.pa, devices, input_device, "input", MIC_RATE)
        try:
            mic = PyAudioMicrophone(
                portaudio, dev, device_rate=rate, device_channels=ch, chunk_ms=chunk_ms
            )
        except (OSError, ValueError) as exc:
            raise _open_error(dev, "input", exc) from None
        dev, rate, ch = _open_side(portaudio.pa, devices, output_device, "output", SPEAKER_RATE)
        try:
            speaker = PyAudioSpeaker(
                portaudio, dev, device_rate=rate, device_channels=ch, volume=volume
            )
        except (OSError, ValueError) as exc:
            raise _open_error(dev, "output", exc) from None
    except BaseException:
        if mic is not None:
            _close_stream(mic._stream, portaudio)
        raise
    finally:
        portaudio.release()
    return mic, speaker
