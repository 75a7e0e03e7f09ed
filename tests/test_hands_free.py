"""Hands-free turns with real speech (espeak-ng) through the mic pipeline,
in-process against the fake Gemini: the wake word opens a turn, the end of
speech closes it, a follow-up needs no wake word, mute hears nothing, and
until a turn opens nothing at all goes up (what the server received, byte
for byte, says so)."""

from __future__ import annotations

import pytest
from support.rig import Rig, daemon_rig
from support.voices import SpeakingMic, silence, speech

from edge_daemon.daemon import State
from edge_daemon.voice.pipeline import WAKE_TAIL_S, Listen

pytest.importorskip("pymicro_wakeword", reason="pip install 'edge-daemon[voice]'")
pytest.importorskip("pymicro_vad", reason="pip install 'edge-daemon[voice]'")

RATE = 16000
WAKE = {"wake.model": "okay_nabu", "audio.preroll_ms": 500, "wake.end_silence_s": 0.7}


def sent_after_setup(rig: Rig) -> list[dict]:
    """Everything the server received except the setup messages."""
    return [m for m in rig.fake.received if "setup" not in m]


async def heard_everything(rig: Rig, mic: SpeakingMic, then_s: float = 1.0) -> None:
    """Wait until the mic has said all it was given, and ``then_s`` more."""
    await rig.until(lambda: mic.quiet)
    target = rig.daemon.counters.audio_in_chunks + round(then_s / 0.04)
    await rig.until(lambda: rig.daemon.counters.audio_in_chunks >= target)


async def test_okay_nabu_opens_a_turn_from_the_wake_word_that_ends_with_the_speech() -> None:
    mic = SpeakingMic(speed=4.0)
    async with daemon_rig(overrides=WAKE, mic=mic) as rig:
        said = silence(0.5) + speech("okay nabu, what time is it") + silence(3.0)
        mic.say(said)
        await rig.fake.wait_for(lambda f: f.turns and f.turns[0].completed, 30)
        await rig.state(State.IDLE, 30)
        states = [s for _, s in rig.daemon.history]
        assert states[-4:] == ["listening", "thinking", "speaking", "idle"], states
        # Nothing went up before the wake word; then one turn, framed.
        kinds = [next(iter(m["realtimeInput"])) for m in sent_after_setup(rig)]
        assert kinds[0] == "activityStart" and kinds[-1] == "activityEnd", kinds
        assert set(kinds[1:-1]) == {"audio"}, kinds
        # The turn's audio is the mic's, from just before the detection on:
        # the end of "okay nabu", all of "what time is it", then the quiet
        # that ended it (end_silence_s), and not the long silence after.
        heard = bytes(rig.fake.turns[0].heard_pcm)
        start = said.find(heard[:3200])
        assert start >= 0 and said[start : start + len(heard)] == heard
        phrase_end = len(said) - len(silence(3.0))
        wake_s = (start - len(silence(0.5))) / 2 / RATE + WAKE_TAIL_S
        assert 0.6 <= wake_s <= 1.2, wake_s  # "okay nabu," ends ~0.8 s in
        assert start + len(heard) > phrase_end  # all of the question
        trailing_quiet_s = (start + len(heard) - phrase_end) / 2 / RATE
        assert 0.6 <= trailing_quiet_s <= 1.5, trailing_quiet_s
        status = rig.daemon.status()["voice"]
        assert status["wakes"] == 1 and status["ends"] == 1
        assert rig.daemon.feedback.played == ["wake", "listen_end"]
        assert rig.daemon.voice.listen is Listen.WAKE


async def test_speech_without_the_wake_word_sends_nothing_at_all() -> None:
    mic = SpeakingMic(speed=4.0)
    async with daemon_rig(overrides=WAKE, mic=mic) as rig:
        for text in ("what time is it", "turn on the lamp in the kitchen", "hey mycroft"):
            mic.say(speech(text) + silence(0.5))
        await heard_everything(rig, mic)
        assert sent_after_setup(rig) == []
        assert rig.fake.audio_received_s() == 0
        assert [s for _, s in rig.daemon.history] == ["idle"]
        assert rig.daemon.status()["voice"]["wakes"] == 0


async def test_a_follow_up_needs_no_wake_word_until_the_window_closes() -> None:
    mic = SpeakingMic(speed=4.0)
    overrides = {**WAKE, "wake.follow_up_s": 5.0}
    async with daemon_rig(overrides=overrides, mic=mic) as rig:
        mic.say(speech("okay nabu, what time is it") + silence(1.5))
        await rig.fake.wait_for(lambda f: f.turns and f.turns[0].completed, 30)
        await rig.until(lambda: rig.daemon.hands_free.follow_up_open, 30)
        assert rig.daemon.voice.listen is Listen.FOLLOW_UP
        mic.say(speech("and what is the date today") + silence(1.5))
        await rig.fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[1].completed, 30)
        assert rig.fake.count("activityStart") == 2
        assert rig.daemon.hands_free.counters["follow_ups"] == 1
        assert rig.daemon.hands_free.counters["wakes"] == 1
        # The follow-up's own window closes with nobody speaking: then a
        # sentence without the wake word sends nothing.
        await rig.until(lambda: rig.daemon.hands_free.follow_up_open, 30)
        await rig.until(lambda: not rig.daemon.hands_free.follow_up_open, 30)
        before = list(rig.fake.received)
        mic.say(speech("what is the weather like") + silence(0.5))
        await heard_everything(rig, mic)
        assert rig.fake.received == before
        assert rig.daemon.voice.listen is Listen.WAKE


async def test_muted_the_wake_word_is_not_heard_and_nothing_goes_up() -> None:
    mic = SpeakingMic(speed=4.0)
    async with daemon_rig(overrides=WAKE, mic=mic) as rig:
        reply = await rig.daemon.control({"cmd": "mute", "on": True})
        assert reply["ok"] and reply["muted"] is True
        mic.say(speech("okay nabu, what time is it") + silence(1.0))
        await heard_everything(rig, mic)
        rig.daemon.press("button")  # muted: the button sends nothing either
        assert not rig.daemon.talking
        assert sent_after_setup(rig) == []
        assert rig.daemon.voice.listen is Listen.NOTHING
        await rig.daemon.control({"cmd": "mute", "on": False})
        # (Without echo cancellation the mic is deaf while the "unmuted" sound
        # plays and for audio.echo_tail_ms after: real seconds, 4x the mic's.)
        mic.say(silence(2.0) + speech("okay nabu, what time is it") + silence(1.5))
        await rig.fake.wait_for(lambda f: f.turns and f.turns[0].completed, 30)
        assert rig.daemon.feedback.played[:3] == ["mute", "mute", "unmute"]


async def test_a_button_turn_is_not_ended_by_silence_when_the_wake_word_is_on() -> None:
    mic = SpeakingMic(speed=4.0)
    overrides = {**WAKE, "wake.no_speech_s": 0.5, "wake.end_silence_s": 0.3}
    async with daemon_rig(overrides=overrides, mic=mic) as rig:
        rig.daemon.press("button")
        assert rig.daemon.voice.listen is Listen.NOTHING  # the button's turn is the button's
        await rig.fake.wait_for(lambda f: f.audio_received_s() >= 2.0, 30)
        assert rig.daemon.talking
        rig.daemon.release("button")
        await rig.fake.wait_for(lambda f: f.turns and f.turns[0].completed, 30)
        assert rig.daemon.status()["voice"]["ends"] == 0
