"""Hands-free with real sound: the daemon as a process, on real PortAudio,
in a PulseAudio "room" whose speaker comes back into its mic through a
loopback (bench/room.py), with echo cancellation on. espeak-ng says the
user's words into the room; the fake Gemini answers with espeak-ng speech.

Each test checks what the fake server received, so "nothing was sent"
means nothing was: not a flag the daemon set.
"""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import SECRET
from support.voices import silence, speech

from bench.room import Room, RoomUnavailable, room
from edge_daemon.fake_gemini import FakeGemini

pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")
pytest.importorskip("pymicro_wakeword", reason="pip install 'edge-daemon[voice]'")
pytest.importorskip("pywebrtc_audio", reason="pip install 'edge-daemon[voice]'")


@pytest.fixture(scope="module")
def echo_room() -> Iterator[Room]:
    try:
        with room(latency_ms=30) as r:
            yield r
    except RoomUnavailable as exc:
        pytest.skip(str(exc))


def config(fake: FakeGemini, tmp_path: Path, **wake: Any) -> dict[str, dict[str, Any]]:
    return {
        "gemini": {"endpoint": fake.url},
        "audio": {
            "backend": "pyaudio",
            "input_device": "edge_mic",
            "output_device": "edge_spk",
            "echo_cancel": True,
        },
        "wake": {"model": "okay_nabu", **wake},
        "state": {"dir": str(tmp_path / "state")},
        "logging": {"level": "debug", "target": "stderr"},
    }


async def say(r: Room, pcm: bytes) -> None:
    await asyncio.to_thread(r.say, pcm)


def sent_after_setup(fake: FakeGemini) -> list[dict[str, Any]]:
    return [m for m in fake.received if "setup" not in m]


async def start(spawn_daemon, daemon_env, r: Room, sections) -> Any:  # type: ignore[no-untyped-def]
    daemon = spawn_daemon(sections, env={**daemon_env, **r.env})
    await daemon.ready(30)
    await daemon.wait_state("idle", 30)
    return daemon


async def test_okay_nabu_what_time_is_it_through_the_mic_gets_an_answer_played(
    echo_room: Room, fake: FakeGemini, spawn_daemon, daemon_env, tmp_path: Path
) -> None:
    fake.script_turn(input_text="what time is it", reply_text="It is ten past four.")
    daemon = await start(spawn_daemon, daemon_env, echo_room, config(fake, tmp_path))
    await say(echo_room, silence(0.5) + speech("okay nabu, what time is it") + silence(0.5))
    await fake.wait_for(lambda f: f.turns and f.turns[0].completed, 30)
    await daemon.wait_state("idle", 30)
    status = await daemon.ctl("status")
    kinds = [next(iter(m["realtimeInput"])) for m in sent_after_setup(fake)]
    assert kinds[0] == "activityStart" and "activityEnd" in kinds, kinds
    assert status["voice"]["wakes"] == 1 and status["voice"]["ends"] == 1, status["voice"]
    assert status["voice"]["echo_cancel"] is True
    # The answer was played whole (nothing cut it: not its own echo either).
    reply = fake.turns[0].reply_pcm
    speaker = status["counters"]["speaker"]
    assert fake.turns[0].audio_kind == "speech" and not fake.turns[0].interrupted
    assert speaker["bytes_played"] >= len(reply) and speaker["flushes"] == 0, speaker
    states = [h["state"] for h in status["history"]]
    assert states[-4:] == ["listening", "thinking", "speaking", "idle"], states
    assert fake.count("activityStart") == 1
    assert daemon.stop() == 0


async def test_a_sentence_without_the_wake_word_sends_nothing_at_all(
    echo_room: Room, fake: FakeGemini, spawn_daemon, daemon_env, tmp_path: Path
) -> None:
    daemon = await start(spawn_daemon, daemon_env, echo_room, config(fake, tmp_path))
    before = (await daemon.ctl("status"))["counters"]["audio_in_chunks"]
    await say(echo_room, speech("what is the weather like today in the kitchen") + silence(1.0))
    status = await daemon.ctl("status")
    heard_s = (status["counters"]["audio_in_chunks"] - before) * 0.04
    assert heard_s >= 2.0, status["counters"]  # the mic did hear it all
    assert sent_after_setup(fake) == []
    assert fake.audio_received_s() == 0
    assert [h["state"] for h in status["history"]] == ["idle"]
    assert status["voice"]["wakes"] == 0
    assert daemon.stop() == 0


def record_mic(r: Room, seconds: float) -> subprocess.Popen[bytes]:
    """What the room's mic hears (micsink's monitor), as the test's own ears."""
    return subprocess.Popen(
        [
            "parec",
            "--raw",
            "--rate=16000",
            "--channels=1",
            "--format=s16le",
            "--device=micsink.monitor",
            f"--latency-msec={20}",
        ],
        env=r.env,
        stdout=subprocess.PIPE,
    )


def wake_words_in(pcm: bytes) -> int:
    from edge_daemon.voice.wake import WakeWord

    ww = WakeWord("okay_nabu")
    return sum(ww.process(pcm[i : i + 1280]) for i in range(0, len(pcm), 1280))


async def test_the_answers_own_echo_triggers_nothing(
    echo_room: Room, fake: FakeGemini, spawn_daemon, daemon_env, tmp_path: Path
) -> None:
    # An answer that says the wake word, twice, into its own mic.
    text = "Okay nabu. I heard you. Okay nabu, what time is it? It is four."
    fake.script_turn(reply_text=text)
    daemon = await start(spawn_daemon, daemon_env, echo_room, config(fake, tmp_path))
    ears = record_mic(echo_room, 0)
    try:
        assert (await daemon.ctl("say", text="say the wake word"))["ok"]
        await daemon.wait_state("speaking", 30)
        await daemon.wait_state("idle", 60)
    finally:
        ears.terminate()
        heard = ears.communicate(timeout=10)[0]
    status = await daemon.ctl("status")
    # The echo was real and loud enough to wake a detector that had no
    # canceller in front of it ...
    level = np.sqrt(np.mean(np.frombuffer(heard, "<i2").astype(np.float64) ** 2))
    assert level > 300, level
    assert wake_words_in(heard) >= 1
    # ... and the daemon heard none of it: no wake, no barge-in, no turn.
    assert status["voice"]["wakes"] == 0 and status["voice"]["onsets"] == 0, status["voice"]
    # One activity window: the typed turn's own; no audio ever went up.
    assert fake.count("activityStart") == 1 and fake.audio_received_s() == 0
    assert len(fake.turns) == 1 and not fake.turns[0].interrupted
    assert status["counters"]["speaker"]["flushes"] == 0
    assert daemon.stop() == 0


@pytest.fixture
async def real_time_fake() -> AsyncIterator[FakeGemini]:
    """A fake that streams its answer in real time, so it is still talking
    when the user cuts in (a faster one has sent it all and only the
    speaker is still playing)."""
    async with FakeGemini(api_key=SECRET, pace=1.0) as server:
        yield server


async def test_speech_during_the_answer_interrupts_it_with_echo_cancellation(
    echo_room: Room, real_time_fake: FakeGemini, spawn_daemon, daemon_env, tmp_path: Path
) -> None:
    fake = real_time_fake
    long_answer = (
        "Here is a long story about a lighthouse keeper who lived on a small island "
        "far out at sea, and who every evening climbed the stairs to light the lamp, "
        "while the gulls circled and the waves broke on the rocks below."
    )
    fake.script_turn(reply_text=long_answer)
    fake.script_turn(input_text="stop, what time is it", reply_text="It is four.")
    daemon = await start(spawn_daemon, daemon_env, echo_room, config(fake, tmp_path))
    assert (await daemon.ctl("say", text="tell me a long story"))["ok"]
    await daemon.wait_state("speaking", 30)
    # Two seconds of the model talking to itself first: its echo must not
    # count as the user.
    await say(echo_room, silence(2.0))
    status = await daemon.ctl("status")
    assert status["state"] == "speaking" and status["voice"]["onsets"] == 0, status["voice"]
    await say(echo_room, speech("stop, what time is it") + silence(1.5))
    await fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[1].completed, 30)
    status = await daemon.ctl("status")
    assert fake.turns[0].interrupted, "the long answer was cut by the user's voice"
    assert status["counters"]["speaker"]["bytes_flushed"] > 0
    assert status["voice"]["barge_ins_by_voice"] == 1, status["voice"]
    assert status["counters"]["barge_ins"] == 1 and status["counters"]["speaker"]["flushes"] >= 1
    assert fake.turns[1].source == "activity" and fake.turns[1].heard_s > 0.5
    assert daemon.stop() == 0
