"""Where GPIO pins come from: the real chip, or gpiozero's mock pins under --simulate.

Two things about gpiozero's lgpio backend (gpiozero/pins/lgpio.py, the default
on Raspberry Pi OS Bookworm) are put right here; README.md, "What the fakes
stand in for", says where in its source and lgpio's each was checked:

- At import, lgpio makes a FIFO for its edge alerts in ``$LG_WD``, else in the
  working directory, and changes into that directory. A system service runs in
  ``/``, which it cannot write: the import fails, gpiozero falls back from
  lgpio, and on a Pi 5 nothing else can drive the pins. ``make_pin_factory``
  gives lgpio a directory of the daemon's own and keeps the working directory.
- ``LGPIOPin`` has no ``output_with_state``: an output is claimed at level 0
  and only then set to its initial state, so an active-low relay is switched
  on for a moment whenever the daemon starts. ``for_outputs`` claims each
  output at its initial level instead.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import importlib
import importlib.util
import os
import re
import shutil
import sys
import tempfile
from types import ModuleType
from typing import Any

from gpiozero import Device
from gpiozero.pins import Factory
from gpiozero.pins.mock import MockFactory, MockPin, MockPWMPin


def make_pin_factory(simulate: bool) -> Factory | None:
    """Mock pins (PWM-capable, so PWM LEDs work) when simulating; else None.

    None lets gpiozero pick its default, which is lgpio on a Pi 5 / Bookworm,
    and only when a device is first made: a desktop that never touches GPIO
    never needs a GPIO library. lgpio itself, if installed, is imported now,
    where it can make its FIFO (see ``prepare_lgpio``).
    """
    if simulate:
        return MockFactory(pin_class=MockPWMPin)
    prepare_lgpio()
    return None


def prepare_lgpio() -> None:
    """Import lgpio (when gpiozero would use it and it is installed) with a
    directory for its alert FIFO that this process can write, and put the
    working directory back afterwards: relative paths in the config keep
    meaning what they meant.

    The directory is ``$LG_WD`` if set; under systemd, the unit's
    ``RuntimeDirectory`` (``$RUNTIME_DIRECTORY``, one service instance); else
    a private temporary one, removed at exit, since two processes sharing one
    would share the FIFO (lg issue #12).
    """
    if "lgpio" in sys.modules:
        return
    if os.environ.get("GPIOZERO_PIN_FACTORY", "lgpio").lower() != "lgpio":
        return  # another pin library was asked for: gpiozero never imports lgpio
    if importlib.util.find_spec("lgpio") is None:
        return  # not installed: gpiozero falls back from it, and says so
    if not os.environ.get("LG_WD"):
        os.environ["LG_WD"] = _lgpio_work_dir()
    try:
        cwd: str | None = os.getcwd()
    except OSError:  # the working directory was deleted: nothing to go back to
        cwd = None
    try:
        importlib.import_module("lgpio")
    except Exception:
        pass  # broken: gpiozero tries again, falls back from it and says why
    finally:
        if cwd is not None:
            with contextlib.suppress(OSError):
                os.chdir(cwd)


def _lgpio_work_dir() -> str:
    service_dir = os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    if service_dir:
        return service_dir
    private = tempfile.mkdtemp(prefix="edge-daemon-lgpio-")
    atexit.register(shutil.rmtree, private, ignore_errors=True)
    return private


def for_outputs(factory: Factory | None) -> Factory:
    """The factory to make output devices with: ``factory``, or gpiozero's
    default (made now, as the first device would make it). On lgpio its pins
    are claimed as outputs at their initial level, not at 0 and then set."""
    if factory is None:
        Device.ensure_pin_factory()
        factory = Device.pin_factory
        assert factory is not None
    backend = sys.modules.get("gpiozero.pins.lgpio")
    if (
        backend is not None
        and isinstance(factory, backend.LGPIOFactory)
        and factory.pin_class is backend.LGPIOPin
        # A gpiozero that claims at the level itself (pull request #1177) needs no help.
        and "output_with_state" not in vars(backend.LGPIOPin)
    ):
        factory.pin_class = _level_claiming_pin(backend)
    return factory


@functools.cache
def _level_claiming_pin(backend: ModuleType) -> type:
    class LevelClaimingLGPIOPin(backend.LGPIOPin):  # type: ignore[name-defined,misc]
        """An LGPIOPin whose outputs start at their initial level."""

        def output_with_state(self, state: Any) -> None:
            if self._pwm:
                super().output_with_state(state)
                return
            # What LGPIOPin._set_function("output") does, with the level in
            # the claim: lgpio.gpio_claim_output(handle, gpio, level=0, lFlags=0).
            if self._callback is not None:
                self._callback.cancel()
                self._callback = None
            backend.lgpio.gpio_claim_output(self.factory._handle, self._number, int(bool(state)))

    return LevelClaimingLGPIOPin


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
