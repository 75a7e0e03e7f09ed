"""The hands-free turn source: the wake word, a follow-up without it, and
speech over the model, beside the button.

Like every turn source it only says "start" and "end" (``press`` and
``release`` on the daemon). It tells the mic pipeline what to listen for
from the daemon's state, and turns what the pipeline heard into turns:

    idle ──wake word──► listening (hands-free) ──end of speech──► thinking
    speaking ──wake word, or speech with echo cancellation──► listening (barge-in)
    speaking ──answer played──► idle, follow-up window: speech ──► listening

A turn someone opened with the button is theirs to end: the end of speech
only ends the turns opened here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

from .state_machine import State
from .voice.pipeline import Listen, MicPipeline, VoiceEvent

log = logging.getLogger(__name__)


class TurnTaker(Protocol):
    """What the hands-free source needs of the daemon."""

    state: State
    muted: bool

    @property
    def talking(self) -> bool: ...

    def press(self, source: str = "button") -> None: ...

    def release(self, source: str = "button") -> None: ...


class HandsFree:
    def __init__(
        self,
        daemon: TurnTaker,
        voice: MicPipeline,
        *,
        follow_up_s: float,
        on_wake: Callable[[str], None] = lambda _name: None,
        on_listen_end: Callable[[str], None] = lambda _why: None,
    ) -> None:
        self.daemon = daemon
        self.voice = voice
        self.follow_up_s = follow_up_s
        self.on_wake = on_wake
        self.on_listen_end = on_listen_end
        self.counters = {"wakes": 0, "follow_ups": 0, "barge_ins_by_voice": 0, "ends": 0}
        self._ours = False  # the open turn was opened here (not by the button)
        self._opening = False  # press() is running on our behalf
        self._window: asyncio.TimerHandle | None = None
        self.follow_up_open = False
        voice.on_event = self._on_event

    @property
    def has_wake_word(self) -> bool:
        return self.voice.d.wake is not None

    # ------------------------------------------------------------ state -> listening

    def on_state(self, old: State, new: State) -> None:
        """Subscribed to the daemon's state changes."""
        if new is State.LISTENING:
            if self._opening:
                self._ours = True
        elif old is State.LISTENING:
            self._ours = False
        if new is State.IDLE and old is State.SPEAKING and self.follow_up_s > 0:
            self._open_window()
        elif new is not State.IDLE:
            self._close_window()
        self.refresh()

    def refresh(self) -> None:
        """Set what the pipeline listens for from where the daemon stands."""
        self.voice.set_listen(self._listen())

    def _listen(self) -> Listen:
        d = self.daemon
        if d.muted:
            return Listen.NOTHING
        if d.talking:
            return Listen.TURN if self._ours else Listen.NOTHING
        if d.state in (State.THINKING, State.SPEAKING):
            return Listen.ANSWER
        if self.follow_up_open:
            return Listen.FOLLOW_UP
        return Listen.WAKE if self.has_wake_word else Listen.NOTHING

    # ------------------------------------------------------------ the follow-up window

    def _open_window(self) -> None:
        self._close_window()
        self.follow_up_open = True
        loop = asyncio.get_running_loop()
        self._window = loop.call_later(self.follow_up_s, self._window_over)
        log.info(
            "listening %.1f s for a follow-up",
            self.follow_up_s,
            extra={"EDGE_EVENT": "follow_up_window"},
        )

    def _window_over(self) -> None:
        self._window = None
        self.follow_up_open = False
        self.refresh()

    def _close_window(self) -> None:
        if self._window is not None:
            self._window.cancel()
            self._window = None
        self.follow_up_open = False

    def close(self) -> None:
        self._close_window()

    # ------------------------------------------------------------ what was heard

    def _on_event(self, event: VoiceEvent) -> None:
        if event.kind == "wake":
            self.counters["wakes"] += 1
            log.info(
                "wake word %s heard",
                event.detail,
                extra={"EDGE_EVENT": "wake", "EDGE_WAKE_WORD": event.detail},
            )
            if self._start("wake"):
                self.on_wake(event.detail)  # after press(): a barge-in flush must not cut it
        elif event.kind == "speech":
            follow_up = event.detail == Listen.FOLLOW_UP.value
            self.counters["follow_ups" if follow_up else "barge_ins_by_voice"] += 1
            self._start("follow-up" if follow_up else "voice")
        elif event.kind == "end":
            if not (self.daemon.talking and self._ours):
                return
            self.counters["ends"] += 1
            log.info(
                "end of speech (%s)",
                event.detail,
                extra={"EDGE_EVENT": "end_of_speech", "EDGE_DETAIL": event.detail},
            )
            self.daemon.release(f"end of speech: {event.detail}")
            self.on_listen_end(event.detail)

    def _start(self, source: str) -> bool:
        if self.daemon.talking or self.daemon.muted:
            return False
        self._close_window()
        self._opening = True
        try:
            self.daemon.press(source)
        finally:
            self._opening = False
        self.refresh()
        return self.daemon.talking
