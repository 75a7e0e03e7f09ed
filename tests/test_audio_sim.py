"""The simulated audio backends: WAV/null mics and speakers, their pacing and barge-in.

Timing is checked on a virtual-clock event loop: its clock jumps straight to the
next timer instead of sleeping, so pacing is asserted exactly and instantly and
cannot flake on a loaded machine. One test also runs on the real clock, with a
strict lower bound and a generous upper one.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import shutil
import subprocess
import sys
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from edge_daemon.audio import (
    MIC_RATE,
    SAMPLE_WIDTH,
    SPEAKER_RATE,
    AudioConfigError,
    Microphone,
    NullMicrophone,
    NullSpeaker,
    PacedSpeaker,
    Speaker,
    WavMicrophone,
    WavSpeaker,
    open_audio,
)
from edge_daemon.audio.base import PACED_BATCH_BLOCKS

TIMEOUT = 30.0  # virtual seconds: a hang fails at once instead of stalling the run
SPEAKER_BPS = SPEAKER_RATE * SAMPLE_WIDTH


class VirtualClockLoop(asyncio.SelectorEventLoop):
    """An event loop whose clock jumps to the next due timer rather than waiting for it."""

    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        select = self._selector.select  # type: ignore[attr-defined]

        def jump(timeout: float | None = None) -> Any:
            if timeout is None:  # nothing scheduled: really wait (threads, sockets)
                return select(None)
            self._now += timeout
            return select(0)

        self._selector.select = jump  # type: ignore[attr-defined]

    def time(self) -> float:
        return self._now


def virtual_time(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
    """Run an async test on a VirtualClockLoop (pytest still sees its fixtures)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> None:
        with asyncio.Runner(loop_factory=VirtualClockLoop) as runner:
            runner.run(fn(*args, **kwargs))

    return run


def now() -> float:
    return asyncio.get_running_loop().time()


def tone(seconds: float, level: int, rate: int = SPEAKER_RATE) -> bytes:
    """Distinct, recognisable PCM: a constant level (never zero, so it is never 'silence')."""
    return level.to_bytes(2, "little", signed=True) * int(seconds * rate)


def read_wav(path: Path) -> tuple[tuple[int, int, int], bytes]:
    with wave.open(str(path), "rb") as w:
        fmt = (w.getframerate(), w.getnchannels(), w.getsampwidth())
        return fmt, w.readframes(w.getnframes())


def write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(SAMPLE_WIDTH)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


class RecordingSpeaker(PacedSpeaker):
    """A sink that keeps every block, to see exactly what was played and in what pieces."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.blocks: list[bytes] = []

    def _write(self, block: bytes) -> None:
        self.blocks.append(block)


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """'turn on the lamp' spoken by espeak-ng: as made (22.05 kHz), at 16 kHz and at 24 kHz."""
    missing = [tool for tool in ("espeak-ng", "sox") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"needs {' and '.join(missing)} to make test speech (apt install espeak-ng sox)"
        )
    d = tmp_path_factory.mktemp("speech")
    raw, mic, spk = d / "s.wav", d / "in.wav", d / "out24.wav"
    subprocess.run(["espeak-ng", "-w", str(raw), "turn on the lamp"], check=True)
    subprocess.run(["sox", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(mic)], check=True)
    subprocess.run(["sox", str(raw), "-r", "24000", "-c", "1", "-b", "16", str(spk)], check=True)
    return {"raw": raw, "mic": mic, "speaker": spk}


# -- microphone ---------------------------------------------------------------


@virtual_time
async def test_wav_mic_returns_the_file_in_chunks_then_silence(speech: dict[str, Path]) -> None:
    fmt, pcm = read_wav(speech["mic"])
    assert fmt == (MIC_RATE, 1, SAMPLE_WIDTH)
    assert any(pcm), "espeak-ng made no sound"
    mic = WavMicrophone(str(speech["mic"]), chunk_ms=40)
    assert mic.rate == MIC_RATE and mic.chunk_bytes == 16000 * 40 // 1000 * SAMPLE_WIDTH
    await mic.start()
    n = math.ceil(len(pcm) / mic.chunk_bytes) + 5
    chunks = [await mic.read() for _ in range(n)]
    assert {len(c) for c in chunks} == {mic.chunk_bytes}
    got = b"".join(chunks)
    assert got[: len(pcm)] == pcm
    assert not any(got[len(pcm) :]), "after the recording a mic hears silence"
    assert mic.counters["chunks"] == n
    await mic.close()


@virtual_time
async def test_cue_rewinds_the_recording(speech: dict[str, Path]) -> None:
    _, pcm = read_wav(speech["mic"])
    mic = WavMicrophone(str(speech["mic"]), chunk_ms=20)
    await mic.start()
    first = [await mic.read() for _ in range(4)]
    mic.cue()
    assert [await mic.read() for _ in range(4)] == first
    for _ in range(len(pcm) // mic.chunk_bytes + 3):  # well past the end
        await mic.read()
    assert not any(await mic.read())
    mic.cue()
    assert await mic.read() == first[0]
    assert mic.counters["cues"] == 2


@virtual_time
async def test_mic_without_a_recording_is_silent() -> None:
    for mic in (WavMicrophone(None), WavMicrophone(""), NullMicrophone(chunk_ms=40)):
        await mic.start()
        mic.cue()
        for _ in range(3):
            chunk = await mic.read()
            assert len(chunk) == mic.chunk_bytes == 1280 and not any(chunk)
        await mic.close()
        with pytest.raises(RuntimeError):
            await mic.read()


def test_wrong_format_names_file_format_and_the_fix(
    speech: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(AudioConfigError) as err:
        WavMicrophone(str(speech["raw"]))  # espeak-ng's own 22050 Hz output
    msg = str(err.value)
    assert str(speech["raw"]) in msg and "22050 Hz" in msg
    assert "sox" in msg and "-r 16000 -c 1 -b 16" in msg

    stereo = write_wav(tmp_path / "stereo.wav", bytes(4 * 100), MIC_RATE, channels=2)
    with pytest.raises(AudioConfigError) as err:
        WavMicrophone(str(stereo))
    msg = str(err.value)
    assert str(stereo) in msg and "2 channel" in msg and "sox" in msg

    text = tmp_path / "notes.wav"
    text.write_text("not audio at all")
    with pytest.raises(AudioConfigError) as err:
        WavMicrophone(str(text))
    msg = str(err.value)
    assert str(text) in msg and "sox" in msg
    assert issubclass(AudioConfigError, ValueError)


def test_missing_input_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioConfigError) as err:
        WavMicrophone(str(missing))
    assert str(missing) in str(err.value) and "does not exist" in str(err.value)


def test_bad_chunk_ms_and_speed_are_rejected() -> None:
    with pytest.raises(AudioConfigError, match="chunk_ms"):
        NullMicrophone(chunk_ms=0)
    with pytest.raises(ValueError, match="speed"):
        NullSpeaker(speed=-1)


@virtual_time
async def test_mic_keeps_real_time_pace_without_drift() -> None:
    mic = NullMicrophone(chunk_ms=40)
    await mic.start()
    t0 = now()
    for _ in range(50):
        await mic.read()
        # The consumer's own work must be absorbed, not added: deadlines are anchored.
        await asyncio.sleep(0.03)
    # The 50th chunk ends 2 s after start; the consumer then worked 30 ms.
    assert now() - t0 == pytest.approx(2.0 + 0.03, abs=1e-9)


@virtual_time
async def test_speed_factor_scales_mic_pace() -> None:
    for speed, expected in ((4.0, 0.5), (0.0, 0.0)):
        mic = NullMicrophone(chunk_ms=40, speed=speed)
        await mic.start()
        t0 = now()
        for _ in range(50):
            await mic.read()
        assert now() - t0 == pytest.approx(expected, abs=1e-9)


@virtual_time
async def test_unread_mic_drops_its_backlog_and_counts_an_overflow(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mic = NullMicrophone(chunk_ms=40)
    await mic.start()
    await mic.read()
    await asyncio.sleep(0.3)  # a short stall: the backlog is served at once, like a buffer
    t0 = now()
    for _ in range(7):
        await mic.read()
    assert now() == t0 and mic.counters["overflows"] == 0
    with caplog.at_level(logging.WARNING, logger="edge_daemon.audio.base"):
        for _ in range(2):
            await asyncio.sleep(5)  # a long stall overruns it
            t0 = now()
            await mic.read()
            assert now() - t0 == pytest.approx(0.04)  # real-time pace again from now
    assert mic.counters["overflows"] == 2
    assert len([r for r in caplog.records if "microphone" in r.getMessage()]) == 1


@virtual_time
async def test_a_recording_in_standby_waits_and_keeps_nothing() -> None:
    mic = NullMicrophone(chunk_ms=40)
    await mic.start()
    await mic.read()
    assert mic.standby(10)
    reader = asyncio.create_task(mic.read())
    await asyncio.sleep(60)  # a minute idle (virtual time)
    assert not reader.done()
    assert mic.resume() == []  # a recording has no room to keep
    t0 = now()
    assert await reader == bytes(mic.chunk_bytes)
    assert now() - t0 == pytest.approx(0.04)  # paced from the resume, not a minute behind
    assert mic.counters["overflows"] == 0


async def test_a_simulated_live_mic_does_not_stand_by() -> None:
    mic = NullMicrophone(chunk_ms=40)
    mic.live = True  # as a test double of a room: only a real device keeps audio in standby
    assert not mic.standby(10)


async def test_pacing_on_the_real_clock() -> None:
    # Sleeps never end early, so the lower bound is exact; the upper one only
    # catches "not paced at all" versus "paced wildly wrong".
    loop = asyncio.get_running_loop()
    mic = NullMicrophone(chunk_ms=40, speed=20)
    speaker = NullSpeaker(speed=20)
    await mic.start()
    await speaker.start()
    t0 = loop.time()
    for _ in range(25):  # 1 s of audio at 20x
        await mic.read()
    speaker.play(tone(1.0, 1))
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    elapsed = loop.time() - t0
    assert 0.1 - 1e-3 <= elapsed < 5.0
    await speaker.close()


# -- speaker ------------------------------------------------------------------


@virtual_time
async def test_wav_speaker_writes_exactly_the_audio_with_a_valid_header(
    speech: dict[str, Path], tmp_path: Path
) -> None:
    _, pcm = read_wav(speech["speaker"])
    out = tmp_path / "out.wav"
    speaker = WavSpeaker(str(out))
    assert read_wav(out) == ((SPEAKER_RATE, 1, SAMPLE_WIDTH), b"")  # valid from the start
    await speaker.start()
    t0 = now()
    for i in range(0, len(pcm), 1234):  # network-sized pieces, not block-aligned
        speaker.play(pcm[i : i + 1234])
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert now() - t0 == pytest.approx(len(pcm) / SPEAKER_BPS, abs=1e-6)
    # Still open: the header was patched when the utterance ended.
    assert read_wav(out) == ((SPEAKER_RATE, 1, SAMPLE_WIDTH), pcm)
    assert speaker.counters["bytes_played"] == len(pcm)
    assert speaker.counters["chunks"] == math.ceil(len(pcm) / 1234)
    await speaker.close()
    assert read_wav(out) == ((SPEAKER_RATE, 1, SAMPLE_WIDTH), pcm)


@virtual_time
async def test_no_silence_between_utterances_and_short_tails_are_written(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    speaker = WavSpeaker(str(out))
    await speaker.start()
    a, b = tone(0.05, 100)[:1000], tone(0.3, 200)  # 1000 bytes: a part-block tail
    speaker.play(a)
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert read_wav(out)[1] == a
    await asyncio.sleep(3)  # the user thinks for a while: nothing may be written meanwhile
    assert read_wav(out)[1] == a
    speaker.play(b)
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    await speaker.close()
    assert read_wav(out)[1] == a + b


@virtual_time
async def test_flush_drops_queued_audio_at_once_and_the_next_utterance_follows(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.wav"
    speaker = WavSpeaker(str(out))
    await speaker.start()
    first, second = tone(2.0, 1000), tone(0.5, -2000)
    speaker.play(first)
    assert speaker.playing
    # Scenario time, not synchronisation: the user barges in mid-block, 0.51 s into the reply.
    await asyncio.sleep(0.51)
    t0 = now()
    dropped = speaker.flush()
    assert not speaker.playing
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert now() == t0, "a flush must not wait out the block being played"
    played = speaker.counters["bytes_played"]
    assert played + dropped == len(first)
    assert played == 26 * (SPEAKER_BPS // 50)  # whole 20 ms blocks: the one in flight was heard
    assert speaker.counters["flushes"] == 1 and speaker.counters["bytes_flushed"] == dropped
    assert speaker.flush() == 0

    speaker.play(second)
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    # The new reply starts at the flush, not when the interrupted block would have ended.
    assert now() - t0 == pytest.approx(0.5, abs=1e-6)
    _, written = read_wav(out)
    assert written == first[:played] + second
    await speaker.close()


@virtual_time
async def test_flush_then_play_at_once_plays_only_the_new_audio() -> None:
    speaker = RecordingSpeaker()
    await speaker.start()
    speaker.play(tone(1.0, 7))
    await asyncio.sleep(0.1)
    speaker.flush()
    speaker.play(tone(0.1, 9))  # before the playback task even runs again
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    heard, new = b"".join(speaker.blocks), tone(0.1, 9)
    assert heard.endswith(new)
    old_part = heard[: -len(new)]
    assert set(old_part[::2]) == {7}
    assert len(old_part) == speaker.counters["bytes_played"] - len(new)
    await speaker.close()


@virtual_time
async def test_wait_idle_and_the_playing_flag() -> None:
    speaker = NullSpeaker()
    t0 = now()
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)  # nothing queued: at once
    assert now() == t0 and not speaker.playing
    speaker.play(tone(0.1, 5))
    assert speaker.playing
    with pytest.raises(RuntimeError, match="never started"):
        await speaker.wait_idle()
    await speaker.start()
    await asyncio.sleep(0.05)
    assert speaker.playing  # half played
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert not speaker.playing and now() - t0 == pytest.approx(0.1, abs=1e-6)
    await speaker.close()


@virtual_time
async def test_speaker_pace_blocks_and_speed() -> None:
    for speed, expected in ((1.0, 1.0), (4.0, 0.25), (0.0, 0.0)):
        speaker = RecordingSpeaker(speed=speed)
        await speaker.start()
        t0 = now()
        speaker.play(tone(1.0, 3))
        await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
        assert now() - t0 == pytest.approx(expected, abs=1e-6)
        assert {len(b) for b in speaker.blocks} == {SPEAKER_BPS // 50}  # 20 ms blocks
        await speaker.close()


@virtual_time
async def test_a_paced_speaker_wakes_once_per_batch_of_blocks() -> None:
    speaker = RecordingSpeaker()
    sleeps = 0
    sleep_until = speaker._pacer.sleep_until

    async def counted(when: float | None) -> bool:
        nonlocal sleeps
        sleeps += 1
        return await sleep_until(when)

    speaker._pacer.sleep_until = counted  # type: ignore[method-assign]
    await speaker.start()
    speaker.play(tone(1.0, 3))
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert len(speaker.blocks) == 50 and sleeps == 50 // PACED_BATCH_BLOCKS
    await speaker.close()


@virtual_time
async def test_overflow_drops_the_oldest_counts_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    speaker = RecordingSpeaker(max_buffer_s=0.1)  # 4800 bytes
    old, new = tone(0.0625, 1), tone(0.0625, 2)  # 3000 bytes each
    with caplog.at_level(logging.WARNING, logger="edge_daemon.audio.base"):
        speaker.play(old)
        speaker.play(new)
        speaker.play(new)
    assert speaker.counters["overflow_dropped"] == 3000 + 3000 - 4800 + 3000
    assert len([r for r in caplog.records if "buffer full" in r.getMessage()]) == 1
    await speaker.start()
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert b"".join(speaker.blocks) == (new + new)[-4800:]
    await speaker.close()


@virtual_time
async def test_underruns_count_late_audio_but_not_new_utterances() -> None:
    speaker = NullSpeaker()
    await speaker.start()
    speaker.play(tone(0.1, 1))
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    speaker.play(tone(0.1, 1))  # the stream went dry and resumed at once: a late feeder
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert speaker.counters["underruns"] == 1
    await asyncio.sleep(2)
    speaker.play(tone(0.1, 1))  # a new reply, seconds later
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert speaker.counters["underruns"] == 1
    await speaker.close()


@virtual_time
async def test_a_failing_sink_is_counted_not_fatal(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(PacedSpeaker):
        def _write(self, block: bytes) -> None:
            raise OSError(28, "No space left on device")

    speaker = Broken()
    await speaker.start()
    with caplog.at_level(logging.WARNING, logger="edge_daemon.audio.base"):
        speaker.play(tone(0.1, 1))
        await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    assert speaker.counters["write_errors"] == 5 and speaker.counters["bytes_played"] == 0
    assert len([r for r in caplog.records if "No space" in r.getMessage()]) == 1
    await speaker.close()


@virtual_time
async def test_close_stops_playback_and_finalises_the_file(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    speaker = WavSpeaker(str(out))
    await speaker.start()
    speaker.play(tone(5.0, 4))
    await asyncio.sleep(0.2)
    await speaker.close()
    assert not speaker.playing
    await asyncio.wait_for(speaker.wait_idle(), TIMEOUT)
    speaker.play(tone(0.1, 4))  # late audio during shutdown is ignored
    assert not speaker.playing
    fmt, pcm = read_wav(out)
    assert fmt == (SPEAKER_RATE, 1, SAMPLE_WIDTH)
    assert len(pcm) == speaker.counters["bytes_played"] > 0 and set(pcm[::2]) == {4}
    await speaker.close()  # idempotent


def test_output_in_a_missing_directory_is_named(tmp_path: Path) -> None:
    path = tmp_path / "no" / "such" / "out.wav"
    with pytest.raises(AudioConfigError, match="does not exist") as err:
        WavSpeaker(str(path))
    assert str(path) in str(err.value)


# -- open_audio ---------------------------------------------------------------


@virtual_time
async def test_open_audio_backends(tmp_path: Path) -> None:
    recording = write_wav(tmp_path / "in.wav", tone(0.1, 5, MIC_RATE), MIC_RATE)
    mic, speaker = open_audio("null", chunk_ms=20)
    assert isinstance(mic, NullMicrophone) and isinstance(speaker, NullSpeaker)
    assert mic.chunk_bytes == 640
    mic, speaker = open_audio("wav", input_wav=str(recording))
    assert isinstance(mic, WavMicrophone) and isinstance(speaker, NullSpeaker)
    out = tmp_path / "o.wav"
    mic, speaker = open_audio("wav", output_wav=str(out), speed=0)
    assert isinstance(mic, WavMicrophone) and isinstance(speaker, WavSpeaker)
    assert isinstance(mic, Microphone) and isinstance(speaker, Speaker)
    await speaker.close()
    with pytest.raises(AudioConfigError, match="unknown audio backend 'alsa'"):
        open_audio("alsa")


def test_importing_audio_loads_no_pyaudio_nor_the_live_side() -> None:
    code = (
        "import sys, edge_daemon.audio; "
        "bad = [m for m in sys.modules if m.split('.')[0] == 'pyaudio' "
        "or m.startswith(('edge_daemon.live', 'edge_daemon.daemon'))]; "
        "print(bad); sys.exit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
