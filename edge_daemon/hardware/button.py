"""The push-to-talk button: gpiozero edges (or polling) in, on_press/on_release out.

gpiozero calls back in its own thread (in the mock, in whichever thread drove
the pin); the only thing done there is a hop into the loop with
``call_soon_threadsafe``. Everything else, debouncing and the decision whether
a press is a turn, happens in the loop thread, so on_press and on_release are
always called there and never concurrently.

Debouncing is ours even though gpiozero gets ``bounce_time``: the mock pins
ignore it, and a real bounce filter can swallow the last edge of a burst. So
every edge only (re)starts a settle timer of ``bounce_s``, and when the pin has
been quiet that long its level is *read*, not inferred from the edges.

A press becomes a turn once the button has been held ``min_press_s`` (a loop
timer); released sooner it was a bounce or a brush, and nothing fires. The
delay loses no speech: the daemon keeps a pre-roll of the microphone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from gpiozero import DigitalInputDevice
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockPin

from ..config import ButtonConfig

log = logging.getLogger(__name__)


class PushToTalk:
    """``hold``: on_press when held long enough, on_release when let go.
    ``toggle``: each accepted press alternates on_press and on_release.

    ``poll`` reads the pin every ``poll_interval_s`` instead of waiting for
    gpiozero's edge callbacks, which never fire on some lgpio setups
    (gpiozero issue #1090).
    """

    def __init__(
        self,
        cfg: ButtonConfig,
        loop: asyncio.AbstractEventLoop,
        on_press: Callable[[], None],
        on_release: Callable[[], None],
        pin_factory: Factory | None = None,
    ) -> None:
        self._cfg = cfg
        self._loop = loop
        self._on_press = on_press
        self._on_release = on_release
        # Not gpiozero's Button: its hold thread wakes ten times a second for
        # ever, to time a when_held this class never uses (it times presses
        # on the loop). The input device beneath it has the same edges.
        self._button = DigitalInputDevice(
            cfg.pin,
            pull_up=cfg.pull_up,
            bounce_time=cfg.bounce_s or None,
            pin_factory=pin_factory,
        )
        self._held = False  # debounced level: the button is down
        self._active = False  # a turn is on: on_press fired, on_release not yet
        self._settle: asyncio.TimerHandle | None = None
        self._accept: asyncio.TimerHandle | None = None
        self._poller: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False
        self._touched_at: float | None = None

    # ------------------------------------------------------------ public

    @property
    def held(self) -> bool:
        """The button is down (debounced), whether or not that is a turn yet."""
        return self._held

    @property
    def active(self) -> bool:
        """A turn is on: on_press has fired and on_release has not."""
        return self._active

    @property
    def pin(self) -> int:
        return self._cfg.pin

    def last_touch(self) -> float | None:
        """When a finger last pressed or let go of the button (a press that
        counted, time.monotonic()): the proof of presence a tool's
        require_recent_press_s asks for. ctl, MQTT and text never set it."""
        return self._touched_at

    def start(self) -> None:
        """Begin watching the button. Call it in the loop thread."""
        if self._started or self._closed:
            return
        self._started = True
        # A button already down at start-up is not a press: its release must
        # not end a turn that never began.
        self._held = self._read()
        if self._cfg.poll:
            self._poller = self._loop.create_task(self._poll(), name="ptt-poll")
        else:
            self._button.when_activated = self._from_gpio
            self._button.when_deactivated = self._from_gpio
        log.info(
            "push-to-talk on GPIO%d (%s, %s)",
            self._cfg.pin,
            self._cfg.mode,
            f"polled every {self._cfg.poll_interval_s:g} s" if self._cfg.poll else "edge events",
            extra={"EDGE_EVENT": "button_ready", "EDGE_PIN": self._cfg.pin},
        )

    def sim_press(self) -> None:
        """Press the simulated button: drives the mock pin, so the press takes
        the same gpiozero path (and the same debouncing) as a real one."""
        self._drive(pressed=True)

    def sim_release(self) -> None:
        self._drive(pressed=False)

    def close(self) -> None:
        """Stop watching. No callback fires afterwards, not even a pending one."""
        if self._closed:
            return
        self._closed = True
        for handle in (self._settle, self._accept):
            if handle is not None:
                handle.cancel()
        self._settle = self._accept = None
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None
        self._button.close()

    # ------------------------------------------------------------ gpiozero's thread

    def _from_gpio(self) -> None:
        # Runs in gpiozero's thread: nothing here but the hop into the loop.
        # The level is read later, in the loop, once the contacts are quiet.
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self._loop.call_soon_threadsafe(self._edge)

    # ------------------------------------------------------------ the loop thread

    def _read(self) -> bool:
        try:
            return bool(self._button.is_active)
        except Exception:  # a closed device while shutting down reads as released
            return False

    async def _poll(self) -> None:
        # The baseline is the level start() saw, not one read when this task
        # first runs: a press in between would otherwise never be an edge.
        last = self._held
        while not self._closed:
            await asyncio.sleep(self._cfg.poll_interval_s)
            now = self._read()
            if now != last:
                last = now
                self._edge()

    def _edge(self) -> None:
        if self._closed:
            return
        if self._settle is not None:
            self._settle.cancel()
        self._settle = self._loop.call_later(self._cfg.bounce_s, self._settled)

    def _settled(self) -> None:
        self._settle = None
        if self._closed:
            return
        down = self._read()
        if down == self._held:
            return  # a bounce that ended where it began
        self._held = down
        if down:
            self._accept = self._loop.call_later(self._cfg.min_press_s, self._accepted)
        elif self._accept is not None:
            self._accept.cancel()  # let go too soon: not a turn
            self._accept = None
            log.debug("press shorter than %g s ignored", self._cfg.min_press_s)
        elif self._cfg.mode == "hold" and self._active:
            self._active = False
            self._fire(self._on_release)

    def _accepted(self) -> None:
        self._accept = None
        if self._closed or not self._held:
            return
        if self._cfg.mode == "toggle" and self._active:
            self._active = False
            self._fire(self._on_release)
        else:
            self._active = True
            self._fire(self._on_press)

    def _fire(self, callback: Callable[[], None]) -> None:
        self._touched_at = time.monotonic()
        # A failing handler must not leave the button dead for the next turn.
        try:
            callback()
        except Exception:
            log.exception("push-to-talk handler failed")

    def _drive(self, *, pressed: bool) -> None:
        pin = self._button.pin
        if not isinstance(pin, MockPin):
            raise RuntimeError("a simulated press needs simulated GPIO (run with --simulate)")
        # A pulled-up button connects its pin to ground when pressed.
        if pressed == self._cfg.pull_up:
            pin.drive_low()
        else:
            pin.drive_high()
