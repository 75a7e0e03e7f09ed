"""A GPIO chip behind lgpio's Python API, for gpiozero's real lgpio pin factory.

No GPIO chip exists on a CI machine, so the ``lgpio`` module that
``gpiozero/pins/lgpio.py`` calls is replaced by this object (monkeypatch
``gpiozero.pins.lgpio.lgpio``); everything above it, gpiozero's LGPIOFactory,
LGPIOPin and devices, is the real code.

It has the signatures of lgpio 0.2.2.0 (``lgpio.py`` from its sdist), which
``tests/test_gpio_lgpio.py`` compares with the installed module, and the
semantics of its C library for the calls gpiozero makes (``src/lgGpio.c``):

- claiming a line that already has that direction changes nothing: neither the
  line flags (pulls) nor, for an output, the level (``xSetAsOutput`` returns
  early); otherwise the line is freed and claimed again, an output at the
  ``level`` of the claim;
- ``gpio_claim_alert`` always frees and claims the line again as an input;
- alerts reach ``callback`` functions as ``func(chip, gpio, level, tick)`` from
  a thread of lgpio's own, never the caller's.

It does not debounce: the daemon's button filters bounce itself, and reads the
level once the line is quiet.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# lgpio's constants (lgpio.py, 0.2.2.0).
SET_ACTIVE_LOW = 4
SET_OPEN_DRAIN = 8
SET_OPEN_SOURCE = 16
SET_PULL_UP = 32
SET_PULL_DOWN = 64
SET_PULL_NONE = 128
RISING_EDGE = 1
FALLING_EDGE = 2
BOTH_EDGES = 3

# gpio_get_mode() bits (lgpio.py's docstring of gpio_get_mode).
_KERNEL_IN_USE = 1
_KERNEL_OUTPUT = 2
_LG_INPUT = 256
_LG_OUTPUT = 512
_LG_ALERT = 1024
_KERNEL_INPUT = 1 << 16
_LINE_FLAGS = SET_ACTIVE_LOW | SET_OPEN_DRAIN | SET_OPEN_SOURCE | SET_PULL_UP | SET_PULL_DOWN
_LINE_FLAGS |= SET_PULL_NONE


class error(Exception):  # lgpio's own name for its exception
    pass


@dataclass
class Line:
    mode: str = "free"  # free, input, output, alert
    flags: int = 0
    level: int = 0  # what an output drives
    outside: int | None = None  # what the world drives onto an input (None: only the pull)
    driven: list[int] = field(default_factory=list)  # every level driven, in order


class _Callback:
    def __init__(self, chip: FakeLgpio, gpio: int, edge: int, func: Callable[..., Any]) -> None:
        self._chip, self.gpio, self.edge, self.func = chip, gpio, edge, func

    def cancel(self) -> None:
        self._chip._callbacks = [cb for cb in self._chip._callbacks if cb is not self]


class FakeLgpio:
    SET_ACTIVE_LOW = SET_ACTIVE_LOW
    SET_OPEN_DRAIN = SET_OPEN_DRAIN
    SET_OPEN_SOURCE = SET_OPEN_SOURCE
    SET_PULL_UP = SET_PULL_UP
    SET_PULL_DOWN = SET_PULL_DOWN
    SET_PULL_NONE = SET_PULL_NONE
    RISING_EDGE = RISING_EDGE
    FALLING_EDGE = FALLING_EDGE
    BOTH_EDGES = BOTH_EDGES
    error = error

    # The functions gpiozero/pins/lgpio.py calls for pins (SPI left out).
    API = (
        "gpiochip_open",
        "gpiochip_close",
        "gpio_claim_input",
        "gpio_claim_output",
        "gpio_claim_alert",
        "gpio_free",
        "gpio_get_mode",
        "gpio_read",
        "gpio_write",
        "gpio_set_debounce_micros",
        "tx_pwm",
        "callback",
    )

    def __init__(self) -> None:
        self.lines: dict[int, Line] = {}
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.chip: int | None = None
        self._callbacks: list[_Callback] = []
        self._lock = threading.Lock()

    # ------------------------------------------------------------ lgpio's API

    def gpiochip_open(self, gpiochip: int) -> int:
        self.calls.append(("gpiochip_open", (gpiochip,)))
        self.chip = gpiochip
        return gpiochip << 16  # what lgpio.gpiochip_open returns for handle 0

    def gpiochip_close(self, handle: int) -> int:
        self.calls.append(("gpiochip_close", (handle,)))
        self.chip = None
        return 0

    def gpio_claim_input(self, handle: int, gpio: int, lFlags: int = 0) -> int:
        self.calls.append(("gpio_claim_input", (gpio, lFlags)))
        line = self._line(handle, gpio)
        if line.mode != "input":
            line.mode, line.flags = "input", lFlags & _LINE_FLAGS
        return 0

    def gpio_claim_output(self, handle: int, gpio: int, level: int = 0, lFlags: int = 0) -> int:
        self.calls.append(("gpio_claim_output", (gpio, level, lFlags)))
        line = self._line(handle, gpio)
        if line.mode != "output":
            line.mode, line.flags = "output", lFlags & _LINE_FLAGS
            self._drive(line, level)
        return 0

    def gpio_claim_alert(
        self,
        handle: int,
        gpio: int,
        eFlags: int,
        lFlags: int = 0,
        notify_handle: int | None = None,
    ) -> int:
        self.calls.append(("gpio_claim_alert", (gpio, eFlags, lFlags)))
        line = self._line(handle, gpio)
        line.mode, line.flags = "alert", lFlags & _LINE_FLAGS
        return 0

    def gpio_free(self, handle: int, gpio: int) -> int:
        self.calls.append(("gpio_free", (gpio,)))
        self._line(handle, gpio).mode = "free"
        return 0

    def gpio_get_mode(self, handle: int, gpio: int) -> int:
        line = self._line(handle, gpio)
        direction = {
            "free": 0,
            "input": _KERNEL_IN_USE | _KERNEL_INPUT | _LG_INPUT,
            "alert": _KERNEL_IN_USE | _KERNEL_INPUT | _LG_INPUT | _LG_ALERT,
            "output": _KERNEL_IN_USE | _KERNEL_OUTPUT | _LG_OUTPUT,
        }[line.mode]
        return direction | line.flags

    def gpio_read(self, handle: int, gpio: int) -> int:
        line = self._line(handle, gpio)
        return line.level if line.mode == "output" else self._input_level(line)

    def gpio_write(self, handle: int, gpio: int, level: int) -> int:
        self.calls.append(("gpio_write", (gpio, level)))
        line = self._line(handle, gpio)
        if line.mode != "output":
            raise error("GPIO not an output")
        self._drive(line, level)
        return 0

    def gpio_set_debounce_micros(self, handle: int, gpio: int, debounce_micros: int) -> int:
        self.calls.append(("gpio_set_debounce_micros", (gpio, debounce_micros)))
        return 0

    def tx_pwm(
        self,
        handle: int,
        gpio: int,
        pwm_frequency: float,
        pwm_duty_cycle: float,
        pulse_offset: int = 0,
        pulse_cycles: int = 0,
    ) -> int:
        self.calls.append(("tx_pwm", (gpio, pwm_frequency, pwm_duty_cycle)))
        line = self._line(handle, gpio)
        if line.mode != "output":
            raise error("GPIO not an output")
        # What the pin mostly is: off at 0 %, on at 100 %; in between, "pulsing".
        self._drive(line, 0 if pwm_frequency == 0 or pwm_duty_cycle == 0 else 1)
        return 0

    def callback(
        self,
        handle: int,
        gpio: int,
        edge: int = RISING_EDGE,
        func: Callable[..., Any] | None = None,
    ) -> _Callback:
        self.calls.append(("callback", (gpio, edge)))
        assert func is not None, "gpiozero always passes its own function"
        cb = _Callback(self, gpio, edge, func)
        self._callbacks.append(cb)
        return cb

    # ------------------------------------------------------------ the world outside

    def drive(self, gpio: int, level: int) -> threading.Thread:
        """The outside world drives an input (a button pulls it to ground):
        alerts go out from a thread of their own, as lgpio's do. Join the
        returned thread to know they were delivered."""
        line = self.lines[gpio]
        before = self._input_level(line)
        line.outside = level
        edge = RISING_EDGE if level else FALLING_EDGE
        wanted = [
            cb
            for cb in self._callbacks
            if cb.gpio == gpio and cb.edge & edge and line.mode == "alert" and before != level
        ]
        tick = time.monotonic_ns()

        def deliver() -> None:
            for cb in wanted:
                cb.func(self.chip, gpio, level, tick)

        thread = threading.Thread(target=deliver, name="fake-lgpio-alerts")
        thread.start()
        return thread

    def levels(self, gpio: int) -> list[int]:
        """Every level the line was driven to as an output, in order."""
        return list(self.lines[gpio].driven) if gpio in self.lines else []

    # ------------------------------------------------------------ internals

    def _line(self, handle: int, gpio: int) -> Line:
        if self.chip is None or handle >> 16 != self.chip:
            raise error("bad handle")
        with self._lock:
            return self.lines.setdefault(gpio, Line())

    @staticmethod
    def _input_level(line: Line) -> int:
        if line.outside is not None:
            return line.outside
        return 1 if line.flags & SET_PULL_UP else 0

    @staticmethod
    def _drive(line: Line, level: int) -> None:
        line.level = int(bool(level))
        if not line.driven or line.driven[-1] != line.level:
            line.driven.append(line.level)
