"""The PortAudio backend's parts, driven through their real callbacks.

A fake PyAudio stands in for PortAudio's device list and streams; the tests
then call the stream callbacks themselves, from a worker thread as PortAudio
would, and check what the event-loop side makes of it: chunking, capture
times, overflow, barge-in, underruns, volume, resampling and device choice.
The same code against the real PortAudio/ALSA path is in test_pyaudio_alsa.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import sys
import threading
import time
import types
from array import array
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pyaudio = pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")

from edge_daemon.audio import (  # noqa: E402
    MIC_RATE,
    SPEAKER_RATE,
    AudioConfigError,
    Microphone,
    Speaker,
    open_audio,
)
from edge_daemon.audio import pyaudio_backend as backend  # noqa: E402
from edge_daemon.audio.base import UNDERRUN_GAP_S, RestingSpeaker  # noqa: E402
from edge_daemon.audio.devices import (  # noqa: E402
    alsa_cards,
    choose_format,
    format_devices,
    list_devices,
    parse_alsa_name,
    resolve_device,
)

TIMEOUT = 10.0
BLOCK = SPEAKER_RATE * 20 // 1000  # speaker callback frames: 20 ms


# -- a fake PortAudio ---------------------------------------------------------------


class FakeStream:
    def __init__(self, pa: FakePyAudio, **kwargs: Any) -> None:
        self.pa = pa
        self.kwargs = kwargs
        self.callback: Callable[..., tuple[Any, int]] = kwargs["stream_callback"]
        self.running = False
        self.closed = False
        self.died = False  # PortAudio's thread quit on an error (an unplugged device)
        self.history: list[str] = []  # "start" and "stop", in order
        self.start_error: BaseException | None = None

    def start_stream(self) -> None:
        self.history.append("start")
        if self.start_error is not None:
            raise self.start_error
        self.running = True

    def is_active(self) -> bool:
        return self.running and not self.died

    def stop_stream(self) -> None:
        self.history.append("stop")
        self.running = False

    def is_stopped(self) -> bool:
        return not self.running

    def close(self) -> None:
        self.closed = True


def dev(name: str, inputs: int = 2, outputs: int = 2, rate: float = 48000.0) -> dict[str, Any]:
    return {"name": name, "in": inputs, "out": outputs, "rate": rate}


class FakePyAudio:
    """PyAudio's device list, format check and stream opening; nothing plays."""

    def __init__(
        self,
        devices: list[dict[str, Any]],
        *,
        default_in: int | None = 0,
        default_out: int | None = 0,
        supports: Callable[[int, int], bool] = lambda rate, channels: True,
        open_error: BaseException | None = None,
    ) -> None:
        self.devices = devices
        self.default_in, self.default_out = default_in, default_out
        self.supports = supports
        self.open_error = open_error
        self.streams: list[FakeStream] = []
        self.terminated = False
        # PortAudio reads its environment once, as it initialises: what it saw.
        self.environ_at_init = dict(os.environ)

    def get_device_count(self) -> int:
        return len(self.devices)

    def get_device_info_by_index(self, i: int) -> dict[str, Any]:
        d = self.devices[i]
        return {
            "index": i,
            "name": d["name"],
            "hostApi": 0,
            "maxInputChannels": d["in"],
            "maxOutputChannels": d["out"],
            "defaultSampleRate": d["rate"],
        }

    def get_host_api_info_by_index(self, i: int) -> dict[str, Any]:
        return {"index": i, "name": "ALSA"}

    def get_default_input_device_info(self) -> dict[str, Any]:
        if self.default_in is None:
            raise OSError("No Default Input Device Available")
        return self.get_device_info_by_index(self.default_in)

    def get_default_output_device_info(self) -> dict[str, Any]:
        if self.default_out is None:
            raise OSError("No Default Output Device Available")
        return self.get_device_info_by_index(self.default_out)

    def is_format_supported(self, rate: float, **kw: Any) -> bool:
        channels = kw.get("input_channels") or kw.get("output_channels")
        assert kw.get("input_format", kw.get("output_format")) == pyaudio.paInt16
        if not self.supports(int(rate), int(channels)):
            raise ValueError("Invalid sample rate", pyaudio.paInvalidSampleRate)
        return True

    def open(self, **kwargs: Any) -> FakeStream:
        if self.open_error is not None:
            raise self.open_error
        stream = FakeStream(self, **kwargs)
        self.streams.append(stream)
        return stream

    def terminate(self) -> None:
        self.terminated = True


def device(index: int, pa: FakePyAudio) -> dict[str, Any]:
    return list_devices(pa)[index]  # type: ignore[arg-type]


def make_mic(
    rate: int = MIC_RATE, channels: int = 1, chunk_ms: int = 40, **kw: Any
) -> tuple[backend.PyAudioMicrophone, FakeStream]:
    pa = FakePyAudio([dev("mic")])
    mic = backend.PyAudioMicrophone(
        backend._PortAudio(pa),
        device(0, pa),
        device_rate=rate,
        device_channels=channels,
        chunk_ms=chunk_ms,
        **kw,
    )
    return mic, pa.streams[-1]


def make_speaker(
    rate: int = SPEAKER_RATE, channels: int = 1, **kw: Any
) -> tuple[backend.PyAudioSpeaker, FakeStream]:
    pa = FakePyAudio([dev("speaker")])
    spk = backend.PyAudioSpeaker(
        backend._PortAudio(pa), device(0, pa), device_rate=rate, device_channels=channels, **kw
    )
    return spk, pa.streams[-1]


def tone(seconds: float, level: int, rate: int = SPEAKER_RATE) -> bytes:
    """A constant, recognisable, never-silent level."""
    return array("h", [level]).tobytes() * int(seconds * rate)


def sine(seconds: float, hz: float, rate: int, amplitude: int = 10000) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype("<i2")


def frequency(x: np.ndarray, rate: int) -> float:
    """Estimated from zero crossings: plenty for telling 440 Hz from an aliased mess."""
    signs = np.signbit(x.astype(np.int32))
    return float(np.count_nonzero(signs[1:] != signs[:-1])) / 2 / (len(x) / rate)


async def in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """Run a callback on another thread, as PortAudio does."""
    return await asyncio.to_thread(fn, *args)


async def settle() -> None:
    """Let call_soon_threadsafe handles from the 'PortAudio thread' run."""
    for _ in range(3):
        await asyncio.sleep(0)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    # Only the backend's view of time: the event loop keeps the real clock.
    monkeypatch.setattr(backend, "time", types.SimpleNamespace(monotonic=fake.monotonic))
    return fake


# -- microphone ---------------------------------------------------------------------


async def test_mic_delivers_chunks_in_order_with_their_capture_time() -> None:
    mic, stream = make_mic(chunk_ms=40)
    assert isinstance(mic, Microphone)
    assert stream.kwargs["frames_per_buffer"] == 640 and stream.kwargs["rate"] == MIC_RATE
    assert mic.chunk_bytes == 1280
    await mic.start()
    assert stream.running
    blocks = [bytes([i + 1]) * mic.chunk_bytes for i in range(5)]
    before = time.monotonic()
    for b in blocks:
        assert await in_thread(stream.callback, b, 640, {}, 0) == (None, pyaudio.paContinue)
    after = time.monotonic()
    got = []
    for _ in blocks:
        got.append(await asyncio.wait_for(mic.read(), TIMEOUT))
        assert mic.last_capture_time is not None and before <= mic.last_capture_time <= after
    assert got == blocks
    assert mic.counters["chunks"] == 5 and mic.counters["overflows"] == 0
    mic.cue()  # a live mic has nothing to rewind
    await mic.close()
    assert stream.closed
    with pytest.raises(RuntimeError, match="closed"):
        await mic.read()


async def test_a_waiting_read_wakes_when_the_callback_delivers() -> None:
    mic, stream = make_mic()
    await mic.start()
    reader = asyncio.create_task(mic.read())
    await settle()
    assert not reader.done()
    await in_thread(stream.callback, b"\x07" * mic.chunk_bytes, 640, {}, 0)
    assert await asyncio.wait_for(reader, TIMEOUT) == b"\x07" * mic.chunk_bytes
    await mic.close()


async def test_unread_mic_drops_the_oldest_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mic, stream = make_mic(chunk_ms=40, queue_s=0.2)  # room for 5 chunks
    await mic.start()
    with caplog.at_level(logging.WARNING, logger=backend.__name__):
        for burst in range(2):
            for i in range(8):
                await in_thread(stream.callback, bytes([10 * burst + i]) * 1280, 640, {}, 0)
            got = [(await mic.read())[0] for _ in range(5)]
            assert got == [10 * burst + i for i in range(3, 8)], "the newest audio survives"
    assert mic.counters["overflows"] == 6
    assert len([r for r in caplog.records if "oldest audio dropped" in r.getMessage()]) == 1
    await mic.close()


async def test_the_backlog_as_a_whole_sheds_its_oldest_chunks() -> None:
    mic, stream = make_mic(chunk_ms=40, queue_s=0.2)  # 5 chunks
    await mic.start()
    for i in range(5):
        await in_thread(stream.callback, bytes([i]) * 1280, 640, {}, 0)
    assert (await mic.read())[0] == 0  # chunks 1-4 are now ready to read ...
    for i in range(5, 10):
        await in_thread(stream.callback, bytes([i]) * 1280, 640, {}, 0)
    # ... but five newer ones came in: those are what a late reader gets.
    assert [(await mic.read())[0] for _ in range(5)] == [5, 6, 7, 8, 9]
    assert mic.counters["overflows"] == 4
    await mic.close()


async def test_mic_counts_portaudio_overflows() -> None:
    mic, stream = make_mic()
    await mic.start()
    await in_thread(stream.callback, bytes(1280), 640, {}, pyaudio.paInputOverflow)
    await mic.read()
    assert mic.counters["device_overflows"] == 1
    await mic.close()


async def test_mic_callback_never_raises_even_once_the_loop_is_gone() -> None:
    mic, stream = make_mic()
    dead = asyncio.new_event_loop()
    dead.close()
    mic._loop = dead  # call_soon_threadsafe now raises RuntimeError
    assert await in_thread(stream.callback, bytes(1280), 640, {}, 0) == (None, pyaudio.paContinue)
    assert stream.callback(None, 640, {}, 0) == (None, pyaudio.paContinue)


async def test_a_silent_device_is_logged_as_a_stall_not_fatal(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend, "STALL_S", 0.02)
    mic, stream = make_mic()
    await mic.start()
    with caplog.at_level(logging.ERROR, logger=backend.__name__):
        reader = asyncio.create_task(mic.read())
        for _ in range(500):  # the stall timer runs on the real clock: wait for two rounds
            if mic.counters["stalls"] >= 2:
                break
            await asyncio.sleep(0.01)
        await in_thread(stream.callback, b"\x01" * 1280, 640, {}, 0)
        assert await asyncio.wait_for(reader, TIMEOUT) == b"\x01" * 1280
    assert len([r for r in caplog.records if "delivered nothing" in r.getMessage()]) == 1
    await mic.close()


async def test_standby_wakes_nobody_and_resume_hands_over_the_newest_chunks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend, "STALL_S", 0.02)
    mic, stream = make_mic(chunk_ms=40, queue_s=0.2)  # room for 5 blocks
    await mic.start()
    reader = asyncio.create_task(mic.read())  # waiting as the daemon goes idle
    await settle()
    assert mic.standby(3)
    loop = mic._loop
    woken: list[Any] = []
    mic._loop = types.SimpleNamespace(call_soon_threadsafe=lambda *a: woken.append(a))  # type: ignore[assignment]
    with caplog.at_level(logging.WARNING, logger=backend.__name__):
        for i in range(8):  # more than the backlog holds
            await in_thread(stream.callback, bytes([i + 1]) * 1280, 640, {}, 0)
        with pytest.raises(TimeoutError):  # five stall periods: no stall, no read
            await asyncio.wait_for(asyncio.shield(reader), 0.1)
    assert woken == [], "the PortAudio thread woke the loop in standby"
    assert mic.counters["stalls"] == 0 and mic.counters["overflows"] == 0
    assert caplog.records == []
    mic._loop = loop
    monkeypatch.setattr(backend, "STALL_S", 10.0)
    assert [c[0] for c in mic.resume()] == [6, 7, 8]  # the newest three, oldest first
    assert mic.resume() == []  # once
    await in_thread(stream.callback, b"\x09" * 1280, 640, {}, 0)
    assert await asyncio.wait_for(reader, TIMEOUT) == b"\x09" * 1280  # what came after
    assert mic.counters["overflows"] == 0
    await mic.close()


async def test_mic_converts_a_48k_stereo_device_to_16k_mono_chunks() -> None:
    mic, stream = make_mic(rate=48000, channels=2, chunk_ms=40)
    assert stream.kwargs["rate"] == 48000 and stream.kwargs["channels"] == 2
    assert stream.kwargs["frames_per_buffer"] == 1920
    await mic.start()
    left = sine(1.0, 440, 48000)
    stereo = np.column_stack([left, np.zeros_like(left)]).reshape(-1)  # one live channel
    pcm = stereo.astype("<i2").tobytes()
    for i in range(0, len(pcm), 1920 * 4):
        await in_thread(stream.callback, pcm[i : i + 1920 * 4], 1920, {}, 0)
    chunks = []
    while mic._raw or len(chunks) < 20:
        chunks.append(await asyncio.wait_for(mic.read(), TIMEOUT))
    assert {len(c) for c in chunks} == {mic.chunk_bytes}
    got = np.frombuffer(b"".join(chunks), "<i2")
    steady = got[800:]  # past the resampler's start-up
    assert frequency(steady, MIC_RATE) == pytest.approx(440, rel=0.02)
    # Two channels averaged: the dead one halves the level, nothing worse.
    assert np.abs(steady).max() == pytest.approx(5000, rel=0.05)
    await mic.close()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(1, 3000), min_size=1, max_size=12))
def test_mic_rechunks_any_device_blocks_exactly(sizes: list[int]) -> None:
    async def run() -> None:
        # A converting device (44.1 kHz) hands over blocks of any length.
        mic, stream = make_mic(rate=44100, channels=1, chunk_ms=20)
        mic._conv = None  # keep the bytes comparable: only the re-chunking is under test
        await mic.start()
        data = bytes(i % 251 + 1 for i in range(sum(sizes) * 2))
        pos = 0
        for n in sizes:
            stream.callback(data[pos : pos + 2 * n], n, {}, 0)
            pos += 2 * n
        await settle()
        out = b""
        while len(out) + mic.chunk_bytes <= len(data):
            out += await asyncio.wait_for(mic.read(), TIMEOUT)
        assert out == data[: len(out)]
        await mic.close()

    asyncio.run(run())


# -- speaker ------------------------------------------------------------------------


def pull(stream: FakeStream, blocks: int = 1, frames: int = BLOCK) -> bytes:
    """What PortAudio would fetch for the device over ``blocks`` periods."""
    out = b""
    for _ in range(blocks):
        data, flag = stream.callback(None, frames, {}, 0)
        assert flag == pyaudio.paContinue
        assert len(data) == frames * stream.kwargs["channels"] * 2
        out += data
    return out


async def test_speaker_plays_what_it_is_given_then_silence() -> None:
    spk, stream = make_speaker()
    assert isinstance(spk, Speaker)
    assert stream.kwargs["frames_per_buffer"] == BLOCK and stream.kwargs["rate"] == SPEAKER_RATE
    await spk.start()
    assert not spk.playing
    await asyncio.wait_for(spk.wait_idle(), TIMEOUT)  # nothing queued: at once
    audio = tone(0.1, 300)
    for i in range(0, len(audio), 1234):  # network-sized pieces
        spk.play(audio[i : i + 1234])
    assert spk.playing
    assert await in_thread(pull, stream, 5) == audio  # 5 periods of 20 ms
    assert spk.playing, "the last block is still sounding until the next callback"
    idle = asyncio.create_task(spk.wait_idle())
    assert not any(await in_thread(pull, stream))
    await asyncio.wait_for(idle, TIMEOUT)
    assert not spk.playing
    assert spk.counters["bytes_played"] == len(audio)
    assert spk.counters["chunks"] == math.ceil(len(audio) / 1234)
    assert spk.counters["underruns"] == 0
    await spk.close()
    assert stream.closed


async def test_flush_silences_at_once_and_the_next_reply_is_the_new_turn() -> None:
    spk, stream = make_speaker()
    await spk.start()
    old, new = tone(2.0, 1000), tone(0.2, -2000)
    spk.play(old)
    heard = await in_thread(pull, stream, 10)
    assert heard == old[: len(heard)]
    dropped = spk.flush()
    assert dropped == len(old) - len(heard)
    assert not spk.playing
    await asyncio.wait_for(spk.wait_idle(), TIMEOUT)
    assert not any(await in_thread(pull, stream)), "nothing of the old reply after a flush"
    assert spk.flush() == 0
    spk.play(new)
    assert (await in_thread(pull, stream)) == new[: BLOCK * 2]
    assert spk.counters["flushes"] == 2 and spk.counters["bytes_flushed"] == dropped
    assert spk.counters["underruns"] == 0, "a new reply after a barge-in is not an underrun"
    await spk.close()


async def test_underruns_count_late_audio_mid_reply_but_not_idle_silence(
    clock: FakeClock,
) -> None:
    spk, stream = make_speaker()
    await spk.start()
    pull(stream, 50)  # a second of idle silence: nobody was waiting for audio
    assert spk.counters["underruns"] == 0
    spk.play(tone(0.02, 5))
    pull(stream, 2)  # played, then found dry
    clock.now += UNDERRUN_GAP_S / 2
    spk.play(tone(0.02, 5))  # the rest of the reply, late: an audible gap
    assert spk.counters["underruns"] == 1
    pull(stream, 2)
    clock.now += 5.0
    spk.play(tone(0.02, 5))  # the next reply, seconds later
    assert spk.counters["underruns"] == 1
    await settle()
    await spk.close()


async def test_speaker_buffer_overflow_drops_the_oldest(caplog: pytest.LogCaptureFixture) -> None:
    spk, stream = make_speaker(max_buffer_s=0.1)  # 4800 bytes
    old, new = tone(0.0625, 1), tone(0.0625, 2)  # 3000 bytes each
    with caplog.at_level(logging.WARNING, logger=backend.__name__):
        spk.play(old)
        spk.play(new)
        spk.play(new)
    assert spk.counters["overflow_dropped"] == 3000 + 3000 - 4800 + 3000
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1
    await spk.start()
    heard = pull(stream, 6)
    assert heard[:4800] == (new + new)[-4800:] and not any(heard[4800:])
    await spk.close()


def test_volume_scales_and_clips() -> None:
    samples = array("h", [1000, -1000, 20000, -20000, 32767, -32768, 0, 7]).tobytes()
    for volume, expected in (
        (0.5, [500, -500, 10000, -10000, 16384, -16384, 0, 4]),
        (2.0, [2000, -2000, 32767, -32768, 32767, -32768, 0, 14]),
        (0.0, [0] * 8),
    ):
        spk, stream = make_speaker(volume=volume)
        spk.play(samples)
        assert array("h", pull(stream)[: len(samples)]).tolist() == expected
    with pytest.raises(AudioConfigError, match="volume"):
        make_speaker(volume=2.5)
    with pytest.raises(AudioConfigError, match="volume"):
        make_speaker(volume=float("nan"))


async def test_speaker_converts_to_a_48k_stereo_device() -> None:
    spk, stream = make_speaker(rate=48000, channels=2)
    assert stream.kwargs["frames_per_buffer"] == 960
    await spk.start()
    x = sine(1.0, 440, SPEAKER_RATE)
    for i in range(0, len(x), 960):
        spk.play(x[i : i + 960].tobytes())
    out = b""
    idle = asyncio.create_task(spk.wait_idle())
    for _ in range(200):
        if idle.done():
            break
        out += await in_thread(pull, stream, 5, 960)
        await settle()
    assert idle.done()
    frames = np.frombuffer(out, "<i2").reshape(-1, 2)
    assert (frames[:, 0] == frames[:, 1]).all()
    assert frequency(frames[2000:40000, 0], 48000) == pytest.approx(440, rel=0.02)
    # Every input byte is accounted for as played, the resampler's tail included.
    assert spk.counters["bytes_played"] == len(x) * 2
    assert np.count_nonzero(frames[:, 0]) > 47000
    await spk.close()


async def test_wait_idle_needs_a_started_speaker_and_survives_a_dead_device(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(backend, "STALL_S", 0.02)
    spk, _stream = make_speaker()
    spk.play(tone(0.1, 3))
    with pytest.raises(RuntimeError, match="never started"):
        await spk.wait_idle()
    await spk.start()  # but PortAudio never calls back: the device is gone
    with caplog.at_level(logging.ERROR, logger=backend.__name__):
        await asyncio.wait_for(spk.wait_idle(), TIMEOUT)
    assert spk.counters["stalls"] == 1 and not spk.playing
    assert any("stopped playing" in r.getMessage() for r in caplog.records)
    await spk.close()


async def test_speaker_callback_never_raises() -> None:
    spk, stream = make_speaker()
    dead = asyncio.new_event_loop()
    dead.close()
    spk._loop = dead
    spk.play(tone(0.02, 9))
    pull(stream, 3)  # the drained notice cannot be delivered: still no exception
    spk._buf = None  # type: ignore[assignment]  # anything at all going wrong inside
    assert not any(pull(stream))


async def test_late_audio_after_close_is_ignored() -> None:
    spk, _stream = make_speaker()
    await spk.start()
    await spk.close()
    spk.play(tone(0.1, 1))
    assert not spk.playing
    await spk.close()  # idempotent


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("play"), st.integers(1, 4000)),
            st.tuples(st.just("pull"), st.integers(1, 2000)),
        ),
        max_size=30,
    )
)
def test_speaker_output_is_its_input_with_silence_only_where_it_ran_dry(
    ops: list[tuple[str, int]],
) -> None:
    spk, stream = make_speaker()
    fed, heard = bytearray(), bytearray()
    level = 0
    for op, n in ops:
        if op == "play":
            level = level % 120 + 1
            spk.play(bytes([level, 1]) * n)  # never a zero sample
            fed += bytes([level, 1]) * n
        else:
            data, _ = stream.callback(None, n, {}, 0)
            assert len(data) == 2 * n
            heard += data
    audio = bytes(heard).replace(b"\x00\x00", b"")
    assert audio == fed[: len(audio)]
    assert spk.counters["bytes_played"] == len(audio)
    if len(audio) < len(fed):
        assert spk.playing


# -- conversion ---------------------------------------------------------------------


def test_converter_streams_like_one_shot_resampling() -> None:
    soxr = pytest.importorskip("soxr")
    from edge_daemon.audio.convert import PcmConverter

    x = sine(0.5, 300, SPEAKER_RATE)
    conv = PcmConverter(SPEAKER_RATE, 44100)
    pcm = x.tobytes()
    out = b"".join(conv.process(pcm[i : i + 777]) for i in range(0, len(pcm), 777))
    out += conv.drain()
    got = np.frombuffer(out, "<i2").astype(np.int32)
    ref = soxr.resample(x, SPEAKER_RATE, 44100, quality="HQ").astype(np.int32)
    assert len(got) == len(ref)
    assert np.abs(got - ref).max() <= 4  # streaming rounds a little differently, no more
    conv.process(pcm[:1001])  # an odd byte is carried, not lost or misaligned
    conv.reset()
    assert conv.process(b"") == b""


def test_apply_gain_is_exact_for_simple_gains() -> None:
    from edge_daemon.audio.convert import apply_gain

    pcm = array("h", [3, -3, 16383, -16384]).tobytes()
    assert array("h", apply_gain(pcm, 2.0)).tolist() == [6, -6, 32766, -32768]
    assert apply_gain(pcm, 1.0) == pcm


def test_plain_16k_24k_mono_devices_load_no_numpy() -> None:
    # The common case (and its import time on a Pi) must not pay for conversion.
    code = (
        "import sys; sys.path.insert(0, 'tests'); "
        "import test_pyaudio_unit as t; "
        "t.make_mic(); s, st = t.make_speaker(); s.play(bytes(960)); "
        "st.callback(None, 480, {}, 0); "
        "print('edge_daemon.audio.convert' in sys.modules, 'soxr' in sys.modules)"
    )
    import subprocess

    root = Path(__file__).resolve().parent.parent
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True
    )
    assert result.stdout.split() == ["False", "False"]


# -- choosing devices ---------------------------------------------------------------

PI_DEVICES = [
    dev("bcm2835 Headphones: - (hw:0,0)", inputs=0, outputs=8, rate=44100),
    dev("seeed-2mic-voicecard: bcm2835-i2s-wm8960-hifi wm8960-hifi-0 (hw:1,0)", 2, 2),
    dev("USB PnP Sound Device: Audio (hw:2,0)", inputs=1, outputs=0),
    dev("sysdefault", 128, 128),
    dev("default", 128, 128),
]


@pytest.fixture
def pi() -> list[dict[str, Any]]:
    return list_devices(FakePyAudio(PI_DEVICES, default_in=4, default_out=4))  # type: ignore[arg-type]


def test_list_devices_reports_channels_rates_and_defaults(pi: list[dict[str, Any]]) -> None:
    assert pi[1] == {
        "index": 1,
        "name": PI_DEVICES[1]["name"],
        "host_api": "ALSA",
        "max_input_channels": 2,
        "max_output_channels": 2,
        "default_sample_rate": 48000.0,
        "default_input": False,
        "default_output": False,
    }
    assert pi[4]["default_input"] and pi[4]["default_output"]
    table = format_devices(pi)
    assert "(hw:2,0)" in table and "default in+out" in table


def test_devices_by_default_index_name_and_part_of_a_name(pi: list[dict[str, Any]]) -> None:
    assert resolve_device(pi, "", "input")["name"] == "default"
    assert resolve_device(pi, "2", "input")["index"] == 2
    assert resolve_device(pi, " 1 ", "output")["index"] == 1
    assert resolve_device(pi, "usb pnp", "input")["index"] == 2  # any case
    assert resolve_device(pi, "Headphones", "output")["index"] == 0
    assert resolve_device(pi, "DEFAULT", "output")["index"] == 4  # exact beats "sysdefault"


def test_devices_by_alsa_name(pi: list[dict[str, Any]]) -> None:
    cards = {"Headphones": 0, "seeed2micvoicec": 1, "Device": 2}
    for spec, index in (
        ("plughw:CARD=seeed2micvoicec,DEV=0", 1),
        ("plughw:seeed2micvoicec", 1),
        ("hw:CARD=Device,DEV=0", 2),
        ("hw:2,0", 2),
        ("plughw:1", 1),
    ):
        direction = "input"
        assert resolve_device(pi, spec, direction, cards=cards)["index"] == index, spec
    # With PA_ALSA_PLUGHW set, PortAudio names the same device "(plughw:1,0)".
    plug = [dict(d, name=d["name"].replace("(hw:", "(plughw:")) for d in pi]
    assert resolve_device(plug, "plughw:CARD=seeed2micvoicec", "output", cards=cards)["index"] == 1
    assert parse_alsa_name("plughw:CARD=x,DEV=3") == ("x", 3, True)
    assert parse_alsa_name("hw:0") == ("0", 0, False)
    assert parse_alsa_name("default") is None and parse_alsa_name("pulse") is None
    with pytest.raises(AudioConfigError, match=r"no card 'nope' \(cards: Device, Headphones"):
        resolve_device(pi, "plughw:CARD=nope", "input", cards=cards)
    with pytest.raises(AudioConfigError, match="not a PortAudio input device"):
        resolve_device(pi, "hw:0,0", "input", cards=cards)  # headphones have no input


def test_unknown_devices_are_errors_that_list_what_there_is(pi: list[dict[str, Any]]) -> None:
    with pytest.raises(AudioConfigError) as err:
        resolve_device(pi, "ReSpeaker", "input")
    msg = str(err.value)
    assert "no input device matches 'ReSpeaker'" in msg and "audio.input_device" in msg
    assert "2: USB PnP Sound Device: Audio (hw:2,0)" in msg
    assert "Headphones" not in msg, "only devices that can record are offered for input"
    with pytest.raises(AudioConfigError, match="there is no audio device 9"):
        resolve_device(pi, "9", "output")
    with pytest.raises(AudioConfigError, match=r"device 2 \(USB PnP.*\) has no output channels"):
        resolve_device(pi, "2", "output")
    with pytest.raises(AudioConfigError, match="matches several input devices"):
        resolve_device(pi, "(hw:", "input")
    none = list_devices(FakePyAudio(PI_DEVICES[:1], default_in=None))  # type: ignore[arg-type]
    with pytest.raises(AudioConfigError, match=r"no default input device[\s\S]*\(none"):
        resolve_device(none, "", "input")


def test_alsa_cards_come_from_proc(tmp_path: Path) -> None:
    (tmp_path / "card0").mkdir()
    (tmp_path / "card1").mkdir()
    (tmp_path / "Headphones").symlink_to("card0")
    (tmp_path / "seeed2micvoicec").symlink_to("card1")
    (tmp_path / "cards").write_text(" 0 [Headphones ]: ...\n")
    assert alsa_cards(tmp_path) == {"Headphones": 0, "seeed2micvoicec": 1}
    assert alsa_cards(tmp_path / "missing") == {}


def test_format_falls_back_to_device_rates_and_stereo() -> None:
    cases: list[tuple[Callable[[int, int], bool], tuple[int, int]]] = [
        (lambda r, c: True, (16000, 1)),
        (lambda r, c: c == 2, (16000, 2)),
        (lambda r, c: r == 48000, (48000, 1)),
        (lambda r, c: r == 44100 and c == 2, (44100, 2)),
        (lambda r, c: r == 32000, (32000, 1)),  # the device's own default rate
    ]
    for supports, expected in cases:
        pa = FakePyAudio([dev("x", rate=32000)], supports=supports)
        assert choose_format(pa, device(0, pa), "input", MIC_RATE) == expected  # type: ignore[arg-type]
    pa = FakePyAudio([dev("mono", inputs=1, rate=8000)], supports=lambda r, c: False)
    with pytest.raises(AudioConfigError) as err:
        choose_format(pa, device(0, pa), "input", MIC_RATE)  # type: ignore[arg-type]
    assert "16000 Hz x1, 48000 Hz x1, 44100 Hz x1, 8000 Hz x1" in str(err.value)
    assert "x2" not in str(err.value)  # a mono device is never asked for stereo


# -- open_pyaudio / open_audio --------------------------------------------------------


class PortAudioFactory:
    """Stands in for ``new_pyaudio``: each call makes a FakePyAudio set up by ``setup``."""

    def __init__(self) -> None:
        self.made: list[FakePyAudio] = []
        self.setup: dict[str, Any] = {}

    def __call__(self) -> FakePyAudio:
        self.made.append(FakePyAudio(PI_DEVICES, default_in=4, default_out=4, **self.setup))
        return self.made[-1]


@pytest.fixture
def fake_portaudio(monkeypatch: pytest.MonkeyPatch) -> PortAudioFactory:
    factory = PortAudioFactory()
    monkeypatch.setattr(backend, "new_pyaudio", factory)
    monkeypatch.setattr(backend, "alsa_cards", lambda: {"seeed2micvoicec": 1})
    return factory


async def test_open_audio_opens_the_named_devices(
    fake_portaudio: PortAudioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PA_ALSA_PLUGHW", "")
    monkeypatch.delenv("PA_ALSA_PLUGHW")
    fake_portaudio.setup["supports"] = lambda r, c: r == 48000
    mic, spk = open_audio(
        "pyaudio",
        chunk_ms=20,
        input_device="usb pnp",
        output_device="plughw:CARD=seeed2micvoicec,DEV=0",
        volume=0.8,
    )
    assert isinstance(mic, backend.PyAudioMicrophone) and isinstance(spk, backend.PyAudioSpeaker)
    pa = fake_portaudio.made[0]
    # A plughw: device is listed only if PortAudio saw this as it initialised.
    assert pa.environ_at_init.get("PA_ALSA_PLUGHW") == "1"
    mic_stream, spk_stream = pa.streams
    assert mic_stream.kwargs["input_device_index"] == 2 and mic_stream.kwargs["rate"] == 48000
    assert mic_stream.kwargs["frames_per_buffer"] == 960 and mic.chunk_bytes == 640
    assert spk_stream.kwargs["output_device_index"] == 1 and spk.volume == 0.8
    await mic.start()
    await spk.start()
    await mic.close()
    assert not pa.terminated, "the speaker still needs PortAudio"
    await spk.close()
    assert pa.terminated


def test_portaudio_starts_without_plughw_when_no_device_asks_for_it(
    fake_portaudio: PortAudioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PA_ALSA_PLUGHW", raising=False)
    open_audio("pyaudio", input_device="usb pnp", output_device="hw:CARD=seeed2micvoicec,DEV=0")
    assert "PA_ALSA_PLUGHW" not in fake_portaudio.made[0].environ_at_init
    assert "PA_ALSA_PLUGHW" not in os.environ


def test_a_device_that_will_not_open_is_named_and_nothing_leaks(
    fake_portaudio: PortAudioFactory,
) -> None:
    fake_portaudio.setup["open_error"] = OSError(-9985, "Device unavailable")
    with pytest.raises(AudioConfigError) as err:
        open_audio("pyaudio")
    assert "cannot open input device 4 (default)" in str(err.value)
    assert "holding it" in str(err.value)
    assert fake_portaudio.made[0].terminated


def test_a_failing_speaker_closes_the_open_mic(fake_portaudio: PortAudioFactory) -> None:
    with pytest.raises(AudioConfigError, match="no output device matches 'nope'"):
        open_audio("pyaudio", output_device="nope")
    pa = fake_portaudio.made[0]
    assert len(pa.streams) == 1 and pa.streams[0].closed and pa.terminated


def test_bad_volume_is_refused_before_portaudio_starts(
    fake_portaudio: PortAudioFactory,
) -> None:
    with pytest.raises(AudioConfigError, match=r"volume must be 0\.\.2"):
        open_audio("pyaudio", volume=3)
    assert not fake_portaudio.made


def test_each_side_opens_on_a_portaudio_of_its_own(
    fake_portaudio: PortAudioFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # PortAudio lists devices again only once every instance has terminated:
    # a side closed alone must leave none of its own behind.
    monkeypatch.delenv("PA_ALSA_PLUGHW", raising=False)
    mic = backend.open_pyaudio_microphone(chunk_ms=20, device="usb pnp", plughw=True)
    spk = backend.open_pyaudio_speaker(device="seeed", volume=0.5)
    assert os.environ.get("PA_ALSA_PLUGHW") == "1"
    mic_pa, spk_pa = fake_portaudio.made
    assert mic_pa.streams[0].kwargs["input_device_index"] == 2
    assert spk_pa.streams[0].kwargs["output_device_index"] == 1 and spk.volume == 0.5
    asyncio.run(mic.close())
    assert mic_pa.terminated and not spk_pa.terminated
    asyncio.run(spk.close())
    assert spk_pa.terminated
    with pytest.raises(AudioConfigError, match="no input device matches 'nope'"):
        backend.open_pyaudio_microphone(device="nope")
    assert fake_portaudio.made[-1].terminated, "a failed open leaves no PortAudio behind"


async def test_fault_says_when_a_stream_stopped_or_went_quiet(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for side in (make_mic(), make_speaker()):
        device, stream = side
        assert device.fault() == ""  # not started: nothing to say
        await device.start()
        await in_thread(stream.callback, None, 64, {}, 0)  # PortAudio calls back
        assert device.fault() == ""
        monkeypatch.setattr(backend, "STALL_S", 0.0)
        assert "no callback for" in device.fault()
        monkeypatch.setattr(backend, "STALL_S", 2.0)
        stream.died = True
        assert device.fault() == f"{device.device['name']}: the stream stopped (unplugged?)"
        await device.close()
        assert device.fault() == "", "a closed device is not a lost one"


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` on the event loop, with a generous deadline."""
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        await asyncio.sleep(0.005)


REST_S = 0.05  # the speaker's rest, short for the tests


async def test_an_idle_speaker_rests_and_audio_wakes_it() -> None:
    spk, stream = make_speaker(rest_s=REST_S)
    assert isinstance(spk, RestingSpeaker)
    await spk.start()
    assert stream.history == ["start"] and not spk.resting
    await until(lambda: not stream.running, "the idle speaker rests")
    assert spk.resting and stream.history == ["start", "stop"]
    assert spk.fault() == "", "a resting stream is not a lost device"
    audio = tone(0.06, 700)
    spk.play(audio)
    assert not spk.resting and spk.playing
    await until(lambda: stream.running, "audio wakes it")
    assert spk.fault() == ""
    assert await in_thread(pull, stream, 3) == audio, "nothing lost to the rest"
    await in_thread(pull, stream)  # silence: the reply has drained
    await asyncio.wait_for(spk.wait_idle(), TIMEOUT)
    await until(lambda: not stream.running, "it rests again after the reply")
    assert stream.history == ["start", "stop", "start", "stop"]
    assert spk.counters["underruns"] == 0
    await spk.close()
    assert stream.closed and stream.history == ["start", "stop", "start", "stop"]


async def test_a_speaker_kept_awake_runs_and_rests_only_once_let_go() -> None:
    spk, stream = make_speaker(rest_s=REST_S)
    await spk.start()
    await until(lambda: not stream.running, "the idle speaker rests")
    spk.keep_awake(True)  # a turn opens: the reply must not wait for the device
    await until(lambda: stream.running, "kept awake, it runs")
    spk.play(tone(0.02, 5))
    await in_thread(pull, stream, 2)
    await asyncio.wait_for(spk.wait_idle(), TIMEOUT)
    # Time passing, not a synchronisation: well past rest_s, still running.
    await asyncio.sleep(REST_S * 4)
    assert stream.running and stream.history == ["start", "stop", "start"]
    spk.keep_awake(False)
    await until(lambda: not stream.running, "let go, it rests")
    assert stream.history == ["start", "stop", "start", "stop"]
    await spk.close()


async def test_a_speaker_that_cannot_start_again_is_a_fault(
    caplog: pytest.LogCaptureFixture,
) -> None:
    spk, stream = make_speaker(rest_s=REST_S)
    await spk.start()
    await until(lambda: not stream.running, "the idle speaker rests")
    stream.start_error = OSError(-9999, "Unanticipated host error")
    with caplog.at_level(logging.ERROR, logger=backend.__name__):
        spk.play(tone(0.02, 5))
        await until(lambda: spk.fault() != "", "the failed start is seen")
    assert spk.fault() == f"{spk.device['name']}: the stream stopped (unplugged?)"
    assert any("cannot start its stream" in r.getMessage() for r in caplog.records)
    await spk.close()
    assert stream.closed


def test_callbacks_are_safe_to_call_from_any_thread() -> None:
    # A smoke test of the lock: a feeder and PortAudio hammering one speaker.
    spk, stream = make_speaker()
    fed = tone(0.5, 0x0101)  # no zero bytes: silence is told apart by them
    done = threading.Event()
    heard: list[bytes] = []

    def portaudio() -> None:
        while not done.is_set():
            heard.append(stream.callback(None, 64, {}, 0)[0])

    t = threading.Thread(target=portaudio)
    t.start()
    try:
        for i in range(0, len(fed), 100):
            spk.play(fed[i : i + 100])
    finally:
        done.set()
        t.join()
    heard.append(pull(stream, 40))
    assert b"".join(heard).replace(b"\x00\x00", b"") == fed
    assert spk.counters["bytes_played"] == len(fed)
