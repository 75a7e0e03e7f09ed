"""The capture loop: each chunk the mic hears goes to the open turn, or,
while none is open, into the pre-roll (unless half duplex says it is the
speaker's own sound).

While the daemon is idle (``rest``) a mic that can stands by: it keeps the
pre-roll itself and wakes nobody for each chunk, until the next turn opens
(``open_turn``) or anything else happens (``wake``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import trace
from ..audio.base import Microphone, Speaker, StandbyMicrophone
from .preroll import PreRoll

if TYPE_CHECKING:
    from ..counters import Counters


class MicPipeline:
    def __init__(
        self,
        mic: Microphone,
        speaker: Speaker,
        counters: Counters,
        *,
        preroll_chunks: int,
        half_duplex: bool,
    ) -> None:
        self.mic = mic
        self.speaker = speaker
        self.counters = counters
        self.preroll = PreRoll(preroll_chunks)
        self.half_duplex = half_duplex
        self.resting = False

    def rest(self) -> None:
        """Nothing is going on: stop taking the mic's chunks one by one."""
        if self.resting or not isinstance(self.mic, StandbyMicrophone):
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
        for chunk in kept:
            self.preroll.keep(chunk)

    def open_turn(self) -> list[bytes]:
        """A turn opens: its first audio is the pre-roll, and a recording
        rewinds to say it again."""
        self.wake()
        first = self.preroll.take()
        self.mic.cue()
        return first

    async def run(self, turn_open: Callable[[], bool], to_turn: Callable[[bytes], None]) -> None:
        """Read the mic for ever: ``to_turn(chunk)`` while ``turn_open()``."""
        while True:
            chunk = await self.mic.read()
            self.counters.audio_in_chunks += 1
            if not turn_open():
                # Half-duplex (no echo cancellation): what the mic hears while
                # the speaker plays is the model itself, never pre-roll.
                if self.half_duplex and self.speaker.playing:
                    self.preroll.clear()  # pre-roll is the last moments, never stale ones
                elif self.mic.live:
                    self.preroll.keep(chunk)
                continue
            to_turn(chunk)
            if trace.ON:
                captured = getattr(self.mic, "last_capture_time", None) or 0.0
                trace.event("mic", captured, time.monotonic())
