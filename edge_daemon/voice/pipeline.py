"""The capture loop: each chunk the mic hears goes to the open turn, or,
while none is open, into the pre-roll (unless half duplex says it is the
speaker's own sound)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from .. import trace
from ..audio.base import Microphone, Speaker
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

    def open_turn(self) -> list[bytes]:
        """A turn opens: its first audio is the pre-roll, and a recording
        rewinds to say it again."""
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
