"""The life of one user turn, as one object with named states.

A turn source (the button, ``ctl``, the keyboard) only says "start" and
"end": it calls the daemon's ``press(source)`` and ``release(source)``, and
the daemon opens or ends the current :class:`Turn`. The turn then keeps what
was said until the server shows it heard it, so a dropped link loses nothing:

    opened ──end()──► audio owed ──end_sent()──► closed ──hear()──► answered
       ▲                  ▲                        │
       │                  └──────replay()──────────┘   (a new socket)
    press

    supersede(): a newer press cut off its answer; cut(): the daemon stopped mid-turn

``hear()`` may also come while the audio is still owed (a transcript of a
turn whose activityEnd waits behind a tool call): the turn stays "audio owed"
until its activityEnd is out, and is then answered, not closed.

Nothing here knows a socket: the sender (sender.py) reads ``audio``,
``total`` and ``sent`` to know what to send, and says when activityEnd is out.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable


class Phase(enum.StrEnum):
    OPENED = "opened"  # the user is speaking: audio keeps coming
    AUDIO_OWED = "audio owed"  # let go: the rest of the audio and activityEnd are still to go out
    CLOSED = "closed"  # all out; no sign yet that the server heard it
    ANSWERED = "answered"  # the server showed it heard the turn; nothing more is owed
    SUPERSEDED = "superseded"  # a newer turn cut off this one's answer
    CUT = "cut"  # the daemon stopped while the user was speaking


class Turn:
    """One user turn: its audio, kept until the server heard it, and where it
    stands. ``max_chunks`` bounds the audio kept (link.offline_buffer_s): the
    oldest goes first, and is counted, never silently taken for sent."""

    def __init__(
        self,
        first_audio: Iterable[bytes],
        max_chunks: int,
        *,
        phase: Phase = Phase.OPENED,
    ) -> None:
        self.phase = phase
        self.audio: deque[bytes] = deque(first_audio, maxlen=max_chunks)
        self.total = len(self.audio)  # chunks ever kept for this turn
        self.sent = 0  # of those, how many went out on the current socket
        self.lost = 0  # of those, how many the bounded buffer evicted before a replay
        self.heard = False  # the server showed it heard the turn

    @classmethod
    def none(cls) -> Turn:
        """The turn before the first press: nothing open, nothing owed."""
        return cls((), 1, phase=Phase.ANSWERED)

    # ------------------------------------------------------------ what it is

    @property
    def open(self) -> bool:
        """The user is still speaking (the button is held, or toggled on)."""
        return self.phase is Phase.OPENED

    @property
    def end_owed(self) -> bool:
        """Let go, but its activityEnd has not gone out on this socket yet."""
        return self.phase is Phase.AUDIO_OWED

    @property
    def unheard(self) -> bool:
        """Ended, but no sign yet that the server heard it: a drop now means
        the turn is replayed on the next connection."""
        return self.phase in (Phase.AUDIO_OWED, Phase.CLOSED) and not self.heard

    # ------------------------------------------------------------ what happens to it

    def append(self, chunk: bytes) -> None:
        self.audio.append(chunk)
        self.total += 1

    def end(self) -> None:
        """The source let go: the rest of the audio, then activityEnd, are owed."""
        if self.phase is Phase.OPENED:
            self.phase = Phase.AUDIO_OWED

    def end_sent(self) -> None:
        """activityEnd is out."""
        if self.phase is Phase.AUDIO_OWED:
            self.phase = Phase.ANSWERED if self.heard else Phase.CLOSED

    def hear(self) -> None:
        """The server showed it heard the turn (a transcript, an answer, a tool
        call): its audio is no longer needed for a replay."""
        if not self.unheard:
            return
        self.heard = True
        self.audio.clear()
        if self.phase is Phase.CLOSED:
            self.phase = Phase.ANSWERED

    def supersede(self) -> None:
        """A newer turn cut off this one's answer; its audio is never needed again."""
        self.phase = Phase.SUPERSEDED
        self.audio.clear()

    def cut(self) -> None:
        """The daemon is stopping: nothing more is sent for this turn."""
        if self.phase is Phase.OPENED:
            self.phase = Phase.CUT

    def unsent(self) -> tuple[int, int]:
        """(chunks still to send on this socket, chunks the bounded buffer
        evicted before they could be sent); the evicted count as sent."""
        unsent = self.total - self.sent
        evicted = max(0, unsent - len(self.audio))
        self.sent += evicted
        return unsent - evicted, evicted

    def replay(self) -> int:
        """A new socket: send again from the oldest chunk still kept, then
        activityEnd if the turn had ended. Returns the chunks newly lost (the
        speech beyond link.offline_buffer_s)."""
        gone = self.total - len(self.audio)
        newly_lost = max(0, gone - self.lost)
        self.lost = max(self.lost, gone)
        self.sent = gone
        if self.phase is Phase.CLOSED:
            self.phase = Phase.AUDIO_OWED
        return newly_lost
