"""The mute switch and the volume buttons: gpiozero edges in, callbacks on
the event loop out (the same hop as the push-to-talk button).

A mute *switch* is read as a level: muted while closed, at start-up too. A
mute *button* toggles on each press. Volume buttons step the level on each
press. gpiozero's own debounce is used (``bounce_time``): these are not
timing-critical like push-to-talk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from gpiozero import Button
from gpiozero.pins import Factory

from ..config import MuteConfig, VolumeConfig

log = logging.getLogger(__name__)

_BOUNCE_S = 0.05


class MuteSwitch:
    def __init__(
        self,
        cfg: MuteConfig,
        loop: asyncio.AbstractEventLoop,
        set_muted: Callable[[bool], None],
        is_muted: Callable[[], bool],
        pin_factory: Factory | None = None,
    ) -> None:
        self._cfg = cfg
        self._loop = loop
        self._set_muted = set_muted
        self._is_muted = is_muted
        self._button = Button(
            cfg.pin, pull_up=cfg.pull_up, bounce_time=_BOUNCE_S, pin_factory=pin_factory
        )
        self._button.when_pressed = lambda: self._hop(True)
        self._button.when_released = lambda: self._hop(False)

    def start(self) -> None:
        """A switch already closed at start-up means muted from the start."""
        if self._cfg.mode == "switch" and self._button.is_pressed:
            self._set_muted(True)

    def _hop(self, closed: bool) -> None:
        self._loop.call_soon_threadsafe(self._edge, closed)

    def _edge(self, closed: bool) -> None:
        if self._cfg.mode == "switch":
            self._set_muted(closed)
        elif closed:
            self._set_muted(not self._is_muted())

    def close(self) -> None:
        self._button.close()


class VolumeButtons:
    def __init__(
        self,
        cfg: VolumeConfig,
        loop: asyncio.AbstractEventLoop,
        step: Callable[[int], None],
        pin_factory: Factory | None = None,
    ) -> None:
        self._buttons: list[Button] = []
        for pin, delta in ((cfg.up_pin, cfg.step), (cfg.down_pin, -cfg.step)):
            if pin < 0:
                continue
            button = Button(
                pin, pull_up=cfg.pull_up, bounce_time=_BOUNCE_S, pin_factory=pin_factory
            )
            button.when_pressed = lambda d=delta: loop.call_soon_threadsafe(step, d)
            self._buttons.append(button)

    def close(self) -> None:
        for button in self._buttons:
            button.close()
