"""The capture loop: each chunk the mic hears is cleaned (echo cancellation,
when on), then goes to the open turn, or, while none is open, into the
pre-roll and past whatever detector the moment asks for.

What to listen for is set from outside (``listen``, by the hands-free turn
source) and what was heard goes back out as an event (``on_event``): the
pipeline never opens or ends a turn itself, and nothing it hears leaves
the device unless a turn is open. Muted, it keeps and hears nothing.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .. import trace
from ..audio.base import SAMPLE_WIDTH, Microphone, Speaker
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
    end_silence_s: float = 0.7
    no_speech_s: float = 4.0
    max_turn_s: float = 30.0
    # Without echo cancellation: deaf while the speaker plays and this long after.
    echo_tail_s: float = 0.3
    follow_up_onset_s: float = 0.2
    barge_in_onset_s: float = 0.3


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
        self.stats = {"wakes": 0, "onsets": 0, "ends": 0, "deaf_chunks": 0}
        self._end: EndOfSpeech | None = None
        self._onset: SpeechOnset | None = None
        self._heard_speaker_at = float("-inf")
        chunk_s = mic.chunk_bytes / SAMPLE_WIDTH / mic.rate
        self._wake_tail = max(1, round(WAKE_TAIL_S / chunk_s))

    @property
    def echo_cancelled(self) -> bool:
        return self.d.cleaner is not None and self.d.cleaner.echo

    def set_listen(self, listen: Listen) -> None:
        """What to listen for from the next chunk on."""
        if listen is self.listen:
            return
        self.listen = listen
        self._end = None
        self._onset = None
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
            self._onset = SpeechOnset(min_speech_s=self.d.barge_in_onset_s)

    def open_turn(self) -> list[bytes]:
        """A turn opens: its first audio is the pre-roll, and a recording
        rewinds to say it again."""
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
            if self.d.cleaner is not None:
                far = None
                if self.d.far is not None:
                    captured = getattr(self.mic, "last_capture_time", None) or now
                    far = self.d.far.take(captured, len(chunk) // SAMPLE_WIDTH)
                chunk = self.d.cleaner.process(chunk, far)
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
            self._detect(chunk)

    def _detect(self, chunk: bytes) -> None:
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
        if onset is not None and speech is not None and onset.feed(speech.frames(chunk)):
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
