"""The mic pipeline's stages on their own: the end of speech and speech
onset decisions, the far end lined up with the mic, the echo canceller on
a synthetic echo path, the pre-roll's wake tail."""

from __future__ import annotations

import numpy as np
import pytest

from edge_daemon.audio.reference import PlaybackTap
from edge_daemon.voice.activity import EndOfSpeech, SpeechOnset
from edge_daemon.voice.far_end import FarEnd
from edge_daemon.voice.preroll import PreRoll

S, Q = [True], [False]  # one 10 ms frame of speech, of quiet


def feed_until(decider: EndOfSpeech, frames: list[bool]) -> tuple[str | None, int]:
    for i, frame in enumerate(frames):
        why = decider.feed([frame])
        if why is not None:
            return why, i + 1
    return None, len(frames)


def test_end_of_speech_needs_speech_then_the_quiet_it_is_told() -> None:
    end = EndOfSpeech(end_silence_s=0.3, no_speech_s=4, max_s=30)
    # A pause shorter than the quiet asked for does not end it.
    why, n = feed_until(end, S * 50 + Q * 20 + S * 30 + Q * 100)
    assert (why, n) == ("silence", 50 + 20 + 30 + 30)


def test_end_of_speech_with_no_quiet_asked_still_waits_for_one_quiet_frame() -> None:
    end = EndOfSpeech(end_silence_s=0.0, no_speech_s=4, max_s=30)
    assert feed_until(end, S * 40 + Q * 5) == ("silence", 41)


def test_nobody_speaks_or_speaks_too_long() -> None:
    assert feed_until(EndOfSpeech(end_silence_s=0.3, no_speech_s=1, max_s=30), Q * 500) == (
        "no speech",
        100,
    )
    # A cough (shorter than min_speech_s) is not speech.
    assert (
        feed_until(EndOfSpeech(end_silence_s=0.3, no_speech_s=1, max_s=30), S * 10 + Q * 500)[0]
        == "no speech"
    )
    assert feed_until(EndOfSpeech(end_silence_s=0.3, no_speech_s=1, max_s=2), S * 500) == (
        "max length",
        200,
    )


def test_onset_bridges_short_gaps_and_forgets_after_long_ones() -> None:
    onset = SpeechOnset(min_speech_s=0.2, max_gap_s=0.1)
    assert not onset.feed(S * 10 + Q * 8 + S * 9)  # 19 frames of speech, gap bridged
    assert onset.feed(S)
    onset = SpeechOnset(min_speech_s=0.2, max_gap_s=0.1)
    assert not onset.feed(S * 15 + Q * 11 + S * 15)  # the long gap started it over
    assert onset.feed(S * 5)


def test_windowed_onset_counts_speech_within_the_window() -> None:
    onset = SpeechOnset(min_speech_s=0.3, window_s=0.8)
    # Speech every other 40 ms (the rest hidden as echo): 0.3 s within 0.8 s.
    assert not onset.feed((S * 4 + Q * 4) * 7)
    assert onset.feed(S * 4)
    onset = SpeechOnset(min_speech_s=0.3, window_s=0.8)
    assert not onset.feed((S * 4 + Q * 12) * 20)  # too sparse, however long


def test_the_far_end_lines_up_with_the_mic_by_time() -> None:
    tap = PlaybackTap(16000)
    far = FarEnd(tap)
    ramp = np.arange(16000, dtype=np.int16)  # sample i has value i: easy to place
    t0 = 1000.0
    for k in range(0, 16000, 320):  # 20 ms blocks, handed over in real time
        tap.feed(ramp[k : k + 320].tobytes(), t0 + k / 16000)
    # A 40 ms mic chunk captured by t0 + 0.5 s holds the far end of 0.46-0.5 s.
    got = far.take(t0 + 0.5, 640)
    assert list(got[[0, -1]]) == [7360, 7999]
    # The next chunk continues where that one ended, even with jitter in its stamp.
    assert far.take(t0 + 0.55, 640)[0] == 8000
    # Long after the speaker stopped: silence, and a jump (counted).
    assert not far.take(t0 + 5.0, 640).any()
    assert far.resyncs == 1


def test_a_pause_in_playback_is_silence_on_the_far_end() -> None:
    tap = PlaybackTap(16000)
    far = FarEnd(tap)
    tone = np.full(320, 1000, np.int16).tobytes()
    tap.feed(tone, 10.0)
    tap.feed(tone, 10.5)  # half a second later: a new stretch, not contiguous
    assert far.take(10.02, 320).all()
    assert not far.take(10.3, 320).any()
    assert far.take(10.52, 320).all()


def test_the_echo_canceller_takes_a_synthetic_echo_down() -> None:
    pytest.importorskip("pywebrtc_audio", reason="pip install 'edge-daemon[voice]'")
    from edge_daemon.voice.echo import MicCleaner

    rng = np.random.default_rng(0)
    far = (rng.standard_normal(16000 * 6) * 3000).astype(np.int16)
    near = np.zeros_like(far)
    near[480:] = far[:-480] // 2  # 30 ms later, 6 dB down
    cleaner = MicCleaner(echo=True)
    out = np.concatenate(
        [
            np.frombuffer(cleaner.process(near[i : i + 640].tobytes(), far[i : i + 640]), "<i2")
            for i in range(0, len(far), 640)
        ]
    ).astype(np.float64)
    tail = slice(len(out) // 2, None)
    erle = 10 * np.log10(np.sum(near[tail].astype(np.float64) ** 2) / np.sum(out[tail] ** 2))
    assert erle > 20, erle


def test_the_pre_roll_keeps_only_the_wake_tail() -> None:
    ring = PreRoll(12)
    for k in range(12):
        ring.keep(bytes([k]))
    ring.trim(6)
    assert ring.take() == [bytes([k]) for k in range(6, 12)]
