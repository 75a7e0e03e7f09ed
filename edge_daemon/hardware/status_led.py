"""The status LED: one distinct pattern per daemon state.

It only knows state names; the daemon subscribes it to its state changes.
Patterns run on gpiozero's own blink/pulse threads, so ``show`` returns at
once and the loop never waits on a LED.

    state         pattern      plain LED             PWM LED             RGB LED
    starting      blink_slow   1 s on, 1 s off       same                white
    idle          beacon       0.1 s every 3 s       dim, steady         blue, dim, steady
    listening     on           on                    on                  green
    thinking      pulse_quick  0.2 s on, 0.2 s off   0.25 s breathing    amber, breathing
    speaking      pulse_slow   0.8 s on, 0.2 s off   1 s breathing       cyan, breathing
    reconnecting  blink        0.5 s on, 0.5 s off   same                orange
    error         blink_fast   0.1 s on, 0.1 s off   same                red

A notice (a safety stop, a turn the model cut short) is a burst of quick
flashes, magenta on an RGB LED, for about a second; then the state's pattern
shows again.

The AIY Voice Kit's LED patterns (BEACON, PULSE_QUICK, PULSE_SLOW...) were the model.
"""

from __future__ import annotations

import logging
from typing import Any

from gpiozero import LED, PWMLED, RGBLED
from gpiozero.pins import Factory

from ..config import StatusLedConfig
from .pins import for_outputs

log = logging.getLogger(__name__)

STATE_PATTERNS: dict[str, str] = {
    "starting": "blink_slow",
    "idle": "beacon",
    "listening": "on",
    "thinking": "pulse_quick",
    "speaking": "pulse_slow",
    "reconnecting": "blink",
    "error": "blink_fast",
    # Not a daemon state: shown instead of idle while muted.
    "muted": "muted",
}

STATE_COLOURS: dict[str, tuple[float, float, float]] = {
    "starting": (1.0, 1.0, 1.0),
    "idle": (0.0, 0.0, 1.0),
    "listening": (0.0, 1.0, 0.0),
    "thinking": (1.0, 0.6, 0.0),
    "speaking": (0.0, 1.0, 1.0),
    "reconnecting": (1.0, 0.3, 0.0),
    "error": (1.0, 0.0, 0.0),
    "muted": (1.0, 0.0, 0.3),
}

# (on_time, off_time) of the blinking patterns; a plain LED cannot breathe,
# so it blinks the two pulse patterns too, at rates no other state uses.
_BLINKS: dict[str, tuple[float, float]] = {
    "blink_slow": (1.0, 1.0),
    "beacon": (0.1, 2.9),
    "pulse_quick": (0.2, 0.2),
    "pulse_slow": (0.8, 0.2),
    "blink": (0.5, 0.5),
    "blink_fast": (0.1, 0.1),
    "muted": (1.5, 0.5),  # mostly on, a short dark beat: unlike any state
}
# Fade-in/fade-out seconds of the breathing patterns (PWM and RGB).
_PULSES: dict[str, float] = {"pulse_quick": 0.25, "pulse_slow": 1.0}
# "Dim" for idle on a PWM or RGB LED, as a share of the configured brightness.
_DIM = 0.1
# A notice: this many quick flashes, then the state's pattern again.
NOTICE_FLASHES = 5
NOTICE_S = NOTICE_FLASHES * 0.2
_NOTICE_COLOUR = (1.0, 0.0, 1.0)


class _CappedPWMLED(PWMLED):
    """A PWMLED whose full on is ``ceiling``: gpiozero's pulse and blink always
    go to 1.0, and the configured brightness must hold for them too."""

    def __init__(self, pin: int, *, ceiling: float, **kwargs: Any) -> None:
        self._ceiling = ceiling  # before super(): its __init__ already writes
        super().__init__(pin, **kwargs)

    def _write(self, value: float) -> None:
        super()._write(value * self._ceiling)


class StatusLed:
    def __init__(self, cfg: StatusLedConfig, pin_factory: Factory | None = None) -> None:
        self._cfg = cfg
        self._device: LED | PWMLED | RGBLED | None = None
        if cfg.kind != "none":
            pin_factory = for_outputs(pin_factory)  # an active-low LED starts dark
        if cfg.kind == "led":
            self._device = LED(cfg.pin, active_high=cfg.active_high, pin_factory=pin_factory)
        elif cfg.kind == "pwm":
            self._device = _CappedPWMLED(
                cfg.pin,
                ceiling=cfg.brightness,
                active_high=cfg.active_high,
                pin_factory=pin_factory,
            )
        elif cfg.kind == "rgb":
            red, green, blue = cfg.rgb_pins
            self._device = RGBLED(
                red, green, blue, active_high=cfg.active_high, pin_factory=pin_factory
            )
        self._state: str | None = None
        self._pattern = "off"
        self._closed = False

    @property
    def pattern(self) -> str:
        """The pattern showing now ("off" before the first state and after close)."""
        return self._pattern

    @property
    def state(self) -> str | None:
        return self._state

    def show(self, state: str, *, again: bool = False) -> None:
        """Show a daemon state. Showing the state already shown changes nothing,
        so a blink keeps its rhythm through repeated notifications (``again``:
        after a flash, it does)."""
        if self._closed or (state == self._state and not again):
            return
        pattern = STATE_PATTERNS.get(state)
        if pattern is None:
            # A state this LED does not know (a newer daemon): dark, not a crash.
            log.warning("status LED: no pattern for state %r; LED off", state)
            pattern = "off"
        self._state = state
        self._pattern = pattern
        try:
            self._render(pattern, STATE_COLOURS.get(state, (0.0, 0.0, 0.0)))
        except Exception:
            # A status light is not worth stopping the daemon for.
            log.exception("status LED failed to show %r", state)

    def flash(self) -> None:
        """A burst of NOTICE_FLASHES quick flashes; the caller shows the state
        again after NOTICE_S (``show(state, again=True)``)."""
        if self._closed or self._device is None:
            return
        self._pattern = "notice"
        try:
            device = self._device
            if isinstance(device, RGBLED):
                on = tuple(c * self._cfg.brightness for c in _NOTICE_COLOUR)
                device.blink(0.1, 0.1, on_color=on, n=NOTICE_FLASHES)
            else:
                device.blink(0.1, 0.1, n=NOTICE_FLASHES)
        except Exception:
            log.exception("status LED failed to flash")

    def close(self) -> None:
        """Off, and the pins released. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._pattern = "off"
        if self._device is not None:
            try:
                self._device.off()
            finally:
                self._device.close()

    def _render(self, pattern: str, colour: tuple[float, float, float]) -> None:
        device = self._device
        if device is None:
            return
        if pattern == "off":
            device.off()
        elif isinstance(device, RGBLED):
            self._render_rgb(device, pattern, colour)
        elif isinstance(device, PWMLED):
            self._render_pwm(device, pattern)
        elif pattern == "on":
            device.on()
        else:
            device.blink(*_BLINKS[pattern])

    @staticmethod
    def _render_pwm(device: PWMLED, pattern: str) -> None:
        if pattern == "on":
            device.on()
        elif pattern == "beacon":
            device.value = _DIM
        elif pattern in _PULSES:
            device.pulse(_PULSES[pattern], _PULSES[pattern])
        else:
            device.blink(*_BLINKS[pattern])

    def _render_rgb(self, device: RGBLED, pattern: str, colour: tuple[float, float, float]) -> None:
        scale = self._cfg.brightness
        on = tuple(c * scale for c in colour)
        if pattern == "on":
            device.value = on
        elif pattern == "beacon":
            device.value = tuple(c * _DIM for c in on)
        elif pattern in _PULSES:
            device.pulse(_PULSES[pattern], _PULSES[pattern], on_color=on)
        else:
            on_time, off_time = _BLINKS[pattern]
            device.blink(on_time, off_time, on_color=on)
