"""The capture loop: each chunk the mic hears is cleaned (echo cancellation,
when on), then goes to the open turn, or, while none is open, into the
pre-roll and past whatever detector the moment asks for.

What to listen for is set from outside (``listen``, by the hands-free turn
source) and what was heard goes back out as an event (``on_event``): the
pipeline never opens or ends a turn itself, and nothing it hears leaves
the device unless a turn is open. Muted, it keeps and hears nothing.

While nothing needs the chunks one by one (no turn open, nothing to listen
for, no echo to cancel: ``rest``), a mic that can stands by: it keeps the
pre-roll itself and wakes nobody for each chunk, until the next turn opens
(``open_turn``) or anything else happens (``wake``, ``set_listen``).
"""

from __future__ import annotations

import enum
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import trace
from ..audio.base import SAMPLE_WIDTH, Microphone, Speaker, StandbyMicrophone
from .activity import EndOfSpeech, SpeechOnset
from .preroll import PreRoll

if TYPE_CHECKING:
    # Imported where they are built (voice_setup.py), only when switched on:
    # numpy, TensorFlow Lite and WebRTC cost a daemon without them nothing.
    from ..counters import Counters
    from .activity import SpeechDetector
    from .echo import MicCleaner
    from .far_end import FarEnd
    from .wake import WakeWord

# Over the model's voice, speech counts as the user's only while the echo
# canceller leaves at least this share (dB) of the mic's energy, over the
# last barge_in_window_s. Its own echo it takes down by 30-40 dB, but what is
# left can still sound like speech to the detector (on the loopback room:
# half a second of it, at -35 to -48 dB); a voice in the room it leaves
# mostly alone (-3 to -10 dB over a window while the model talks on).
NEAR_END_DB = -20.0

# A wake turn's audio starts this long before the detection: the detector
# fires about 0.15 s after the phrase ends, and people run straight on into
# what they want ("okay nabu what time is it").
WAKE_TAIL_S = 0.25


class Listen(enum.StrEnum):
    """What the pipeline listens for while no turn is open (and, in
    ``TURN``, while a hands-free one is)."""

    NOTHING = "nothing"  # the button only: pre-roll, no detector
    WAKE = "wake"  # the wake word
    FOLLOW_UP = "follow-up"  # the wake word, or anyone starting to speak
    TURN = "turn"  # a hands-free turn is open: its end of speech
    ANSWER = "answer"  # the model is talking: the wake word, or speech (barge-in)


@dataclass(frozen=True)
class VoiceEvent:
    kind: str  # "wake" | "speech" | "end"
    detail: str = ""  # the wake word's name, or why the speech ended


EventSink = Callable[[VoiceEvent], None]


@dataclass
class Detectors:
    """The optional stages, built by whoever reads the config."""

    wake: WakeWord | None = None
    speech: SpeechDetector | None = None
    cleaner: MicCleaner | None = None
    far: FarEnd | None = None
    # Speech over the model interrupts it (needs echo cancellation).
    barge_in: bool = False
    end_silence_s: float = 0.3
    no_speech_s: float = 4.0
    max_turn_s: float = 30.0
    # Without echo cancellation: deaf while the speaker plays and this long after.
    echo_tail_s: float = 0.3
    follow_up_onset_s: float = 0.2
    # Over the model: this much of the user's speech within the window.
    barge_in_onset_s: float = 0.3
    barge_in_window_s: float = 0.8


class MicPipeline:
    def __init__(
        self,
        mic: Microphone,
        speaker: Speaker,
        counters: Counters,
        *,
        preroll_chunks: int,
        half_duplex: bool,
        detectors: Detectors | None = None,
    ) -> None:
        self.mic = mic
        self.speaker = speaker
        self.counters = counters
        self.preroll = PreRoll(preroll_chunks)
        self.half_duplex = half_duplex
        self.d = detectors or Detectors()
        self.listen = Listen.NOTHING
        self.muted = False
        self.on_event: EventSink = lambda _event: None
        self.stats = {
            "wakes": 0,
            "onsets": 0,
            "ends": 0,
            "deaf_chunks": 0,  # half duplex: not listened to while the speaker played
            "echo_chunks": 0,  # speech the echo canceller's leftovers, not the user's
            "speech_frames": 0,  # 10 ms frames of speech heard while asked to listen for it
        }
        self._end: EndOfSpeech | None = None
        self._onset: SpeechOnset | None = None
        self._heard_speaker_at = float("-inf")
        chunk_s = mic.chunk_bytes / SAMPLE_WIDTH / mic.rate
        # (clean, raw) energies of the last barge_in_window_s, over the model.
        self._energies: deque[tuple[float, float]] = deque(
            maxlen=max(1, round(self.d.barge_in_window_s / chunk_s))
        )
        self._wake_tail = max(1, round(WAKE_TAIL_S / chunk_s))
        self._chunk_s = chunk_s
        self.resting = False

    @property
    def echo_cancelled(self) -> bool:
        return self.d.cleaner is not None and self.d.cleaner.echo

    def rest(self) -> None:
        """Nothing is going on: stop taking the mic's chunks one by one, if
        nothing needs them (no detector listening, no echo to cancel)."""
        if (
            self.resting
            or self.listen is not Listen.NOTHING
            or self.d.cleaner is not None
            or not isinstance(self.mic, StandbyMicrophone)
        ):
            return
        self.resting = self.mic.standby(self.preroll.chunks if self.mic.live else 0)

    def wake(self) -> None:
        """Something is going on: read the mic chunk by chunk again."""
        if not self.resting:
            return
        self.resting = False
        assert isinstance(self.mic, StandbyMicrophone)
        kept = self.mic.resume()
        self.counters.audio_in_chunks += len(kept)
        if self.muted:
            return
        now = time.monotonic()
        for i, chunk in enumerate(kept):
            # Half duplex: what was heard while the speaker played, or in its
            # echo's tail, is the model, never pre-roll (as deaf() says).
            captured = now - (len(kept) - i) * self._chunk_s
            if self.half_duplex and captured - self._heard_speaker_at < self.d.echo_tail_s:
                continue
            self.preroll.keep(chunk)

    def set_listen(self, listen: Listen) -> None:
        """What to listen for from the next chunk on."""
        if listen is self.listen:
            return
        if listen is not Listen.NOTHING:
            self.wake()  # a detector needs every chunk
        self.listen = listen
        self._end = None
        self._onset = None
        self._energies.clear()
        if self.d.speech is not None:
            self.d.speech.reset()
        if listen is Listen.TURN:
            self._end = EndOfSpeech(
                end_silence_s=self.d.end_silence_s,
                no_speech_s=self.d.no_speech_s,
                max_s=self.d.max_turn_s,
            )
        elif listen is Listen.FOLLOW_UP:
            self._onset = SpeechOnset(min_speech_s=self.d.follow_up_onset_s)
        elif listen is Listen.ANSWER and self.d.barge_in and self.echo_cancelled:
            self._onset = SpeechOnset(
                min_speech_s=self.d.barge_in_onset_s, window_s=self.d.barge_in_window_s
            )

    def open_turn(self) -> list[bytes]:
        """A turn opens: its first audio is the pre-roll, and a recording
        rewinds to say it again."""
        self.wake()
        first = self.preroll.take()
        self.mic.cue()
        return first

    def deaf(self, now: float) -> bool:
        """The mic hears the speaker and nothing cancels it: while it plays
        and for the echo's tail after (half duplex)."""
        if self.speaker.playing:
            self._heard_speaker_at = now
        if self.echo_cancelled or not (self.half_duplex or self.listen is not Listen.NOTHING):
            return False
        return now - self._heard_speaker_at < self.d.echo_tail_s or self.speaker.playing

    async def run(self, turn_open: Callable[[], bool], to_turn: Callable[[bytes], None]) -> None:
        """Read the mic for ever: ``to_turn(chunk)`` while ``turn_open()``."""
        while True:
            chunk = await self.mic.read()
            self.counters.audio_in_chunks += 1
            if self.muted:
                # Nothing heard is kept, detected or sent.
                self.preroll.clear()
                continue
            now = time.monotonic()
            near_end = True  # what is left is the room's, not the speaker's echo
            if self.d.cleaner is not None:
                far = None
                if self.d.far is not None:
                    captured = getattr(self.mic, "last_capture_time", None) or now
                    far = self.d.far.take(captured, len(chunk) // SAMPLE_WIDTH)
                raw, chunk = chunk, self.d.cleaner.process(chunk, far)
                if self.listen is Listen.ANSWER and far is not None:
                    near_end = self._near_end(chunk, raw, bool(far.any()))
            deaf = self.deaf(now)
            if turn_open():
                to_turn(chunk)
                if trace.ON:
                    captured = getattr(self.mic, "last_capture_time", None) or 0.0
                    trace.event("mic", captured, time.monotonic())
                if self.listen is Listen.TURN:
                    self._listen_for_end(chunk)
                continue
            if deaf:
                # What the mic hears now is the model itself: never pre-roll,
                # never a wake word.
                self.preroll.clear()
                self.stats["deaf_chunks"] += 1
                if self.d.wake is not None:
                    self.d.wake.reset()
                continue
            if self.mic.live:
                self.preroll.keep(chunk)
            self._detect(chunk, near_end)

    def _near_end(self, clean: bytes, raw: bytes, far_active: bool) -> bool:
        """Is what the canceller left the room's (a voice), not its own leftovers?"""
        import numpy as np  # only with echo cancellation on, which has loaded it already

        c = np.frombuffer(clean, "<i2").astype(np.float32)
        r = np.frombuffer(raw, "<i2").astype(np.float32)
        self._energies.append((float(np.dot(c, c)), float(np.dot(r, r)) if far_active else 0.0))
        clean_e = sum(e for e, _ in self._energies)
        raw_e = sum(e for _, e in self._energies)
        if raw_e == 0.0:
            return True  # the speaker was silent all window: nothing to mistake
        return 10 * math.log10((clean_e + 1.0) / (raw_e + 1.0)) > NEAR_END_DB

    def _detect(self, chunk: bytes, near_end: bool = True) -> None:
        listen = self.listen
        if listen in (Listen.NOTHING, Listen.TURN):
            return
        wake = self.d.wake
        if wake is not None and wake.process(chunk):
            self.stats["wakes"] += 1
            self.preroll.trim(self._wake_tail)
            self.on_event(VoiceEvent("wake", wake.name))
            return
        onset, speech = self._onset, self.d.speech
        if onset is None or speech is None:
            return
        frames = speech.frames(chunk)
        if not near_end:
            self.stats["echo_chunks"] += any(frames)
            frames = [False] * len(frames)
        self.stats["speech_frames"] += sum(frames)
        if onset.feed(frames):
            self.stats["onsets"] += 1
            self.on_event(VoiceEvent("speech", listen.value))

    def _listen_for_end(self, chunk: bytes) -> None:
        if self._end is None or self.d.speech is None:
            return
        why = self._end.feed(self.d.speech.frames(chunk))
        if why is not None:
            self.stats["ends"] += 1
            self._end = None
            self.on_event(VoiceEvent("end", why))

