"""Where GPIO pins come from: the real chip, or gpiozero's mock pins under --simulate."""

from __future__ import annotations

import re
from typing import Any

from gpiozero import Device
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin


def make_pin_factory(simulate: bool) -> Factory | None:
    """Mock pins (PWM-capable, so PWM LEDs work) when simulating; else None.

    None lets gpiozero pick its default, which is lgpio on a Pi 5 / Bookworm,
    and only when a device is first made: a desktop that never touches GPIO
    never needs a GPIO library.
    """
    return MockFactory(pin_class=MockPWMPin) if simulate else None


def _gpio_number(pin: Any) -> int | None:
    # PinInfo.name is "GPIO17" on every factory; pins without one (e.g. a
    # header-only pin name) are not GPIOs we drive.
    found = re.fullmatch(r"GPIO(\d+)", str(getattr(getattr(pin, "info", None), "name", "")))
    return int(found[1]) if found else None


def pin_states(factory: Factory | None) -> dict[int, dict[str, Any]]:
    """Every pin the factory has handed out, by BCM number, for `ctl status`.

    ``{17: {"function": "output", "state": 1.0, "pwm": True}}``. With ``None``
    the global default factory is read; before any device exists there is none,
    and the answer is empty.
    """
    factory = factory or Device.pin_factory
    pins = getattr(factory, "pins", None)
    if not isinstance(pins, dict):
        return {}
    out: dict[int, dict[str, Any]] = {}
    for pin in list(pins.values()):
        number = _gpio_number(pin)
        if number is None:
            continue
        try:
            function, state = pin.function, pin.state
        except Exception:  # a closed pin on a real chip: report what we can
            function, state = "closed", None
        entry: dict[str, Any] = {"function": function, "state": _plain(state)}
        if isinstance(pin, MockPin):
            entry["pwm"] = isinstance(pin, MockPWMPin)
        out[number] = entry
    return dict(sorted(out.items()))


def _plain(state: object) -> object:
    # JSON-friendly: mock PWM pins hold floats, plain ones bools.
    if isinstance(state, bool) or state is None:
        return state
    if isinstance(state, int | float):
        return round(float(state), 3)
    return str(state)
