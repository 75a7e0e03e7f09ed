"""Feedback sounds: the earcons of audio/earcons.py played through the
speaker path (so the echo canceller knows them too) on the events the
``[feedback]`` keys switch on."""

from __future__ import annotations

from .audio.base import Speaker
from .audio.earcons import earcon
from .config import FeedbackConfig


class Feedback:
    def __init__(self, speaker: Speaker, cfg: FeedbackConfig) -> None:
        self.speaker = speaker
        self.cfg = cfg
        self.played: list[str] = []  # names, newest last (bounded): `ctl status` and tests

    def _play(self, name: str) -> None:
        self.speaker.play(earcon(name, self.cfg.level))
        self.played.append(name)
        del self.played[:-16]

    def wake(self, _name: str = "") -> None:
        if self.cfg.wake:
            self._play("wake")

    def listen_end(self, _why: str = "") -> None:
        if self.cfg.listen_end:
            self._play("listen_end")

    def error(self) -> None:
        if self.cfg.error:
            self._play("error")

    def link(self, up: bool) -> None:
        if self.cfg.link:
            self._play("link_back" if up else "link_lost")

    def mute(self, on: bool) -> None:
        # Muting by voice is impossible and by switch is silent to the room
        # otherwise: always say it, on the same key as the wake sound.
        if self.cfg.wake:
            self._play("mute" if on else "unmute")

    def volume(self) -> None:
        self._play("volume")  # the new level, heard: what a volume button is for
