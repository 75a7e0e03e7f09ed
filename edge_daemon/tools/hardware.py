"""LEDs and relays from the config, offered to the model as functions.

Each ``[[tools.led]]`` and ``[[tools.relay]]`` entry becomes one function named
after it, plus ``get_device_states`` to read them all. The rules live here, not
in the model's good sense:

- arguments are checked against the declared schema before any pin moves;
- a relay is off at start-up, at shutdown, at interpreter exit (atexit), after
  ``max_on_seconds`` on, and after the link has been down
  ``off_after_link_lost_s``; the timers run on the loop, not on the model;
- a relay is not switched on again within ``min_switch_interval_s`` of its last
  switch, nor within ``min_off_after_auto_s`` of an automatic off, nor past its
  hourly budgets (seconds on, switch-ons), nor, with
  ``require_recent_press_s``, unless a finger was on the button recently
  (refused with an error the model reads, and a journal record; pin
  untouched); switching off is never refused, because off is the safe
  direction and "stop!" must always work;
- every pin change, whoever caused it, is one log record with ``EDGE_EVENT``,
  ``EDGE_TOOL``, ``EDGE_PIN`` and ``EDGE_CAUSE``.

Timing and cancellation. A call applies its action and answers at once (the
model is waiting, and PROTOCOL.md says to answer tool calls fast); the end of a
timed action (a blink for N seconds, a relay pulse) is a loop timer. With
``tools.non_blocking`` the model is not waiting, so a timed call instead lasts
as long as its action and reports how it ended. A cancelled call
(``toolCallCancellation``) undoes what it did, if nothing has changed the
device since: a relay it switched on goes off, a blink stops and the LED
returns to what it showed before. Undoing never switches a relay on.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from gpiozero import LED, PWMLED, OutputDevice
from gpiozero.pins import Factory

from ..config import LedToolConfig, RelayToolConfig, ToolsConfig
from ..hardware.pins import for_outputs
from .registry import Tool, ToolRegistry, function_declaration
from .schema import check_declaration, describe, validate_args

log = logging.getLogger(__name__)

GET_DEVICE_STATES = "get_device_states"
BLINK_PERIOD_S = 1.0  # half on, half off: readable across a room
BLINK_SECONDS = (0.1, 3600.0)
PULSE_MIN_S = 0.1


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class _Context:
    """What every device needs from the toolset: a loop for its timers and
    whether calls are NON_BLOCKING. Times are time.monotonic() (the loop's
    clock too), so switching off needs no loop: close() works after the loop
    is gone, and at interpreter exit."""

    loop: Callable[[], asyncio.AbstractEventLoop]
    non_blocking: bool
    # When a finger was last on the physical button (time.monotonic()), or None.
    last_press: Callable[[], float | None] = lambda: None


class _Device(ABC):
    """The parts LEDs and relays share: naming, logging, the call that owns the
    current state, and the future a NON_BLOCKING timed call waits on."""

    kind = ""

    def __init__(self, name: str, pin: int, ctx: _Context) -> None:
        self.name = name
        self.pin = pin
        self._ctx = ctx
        # The call whose action the device shows now: a cancelled call undoes
        # only if it is still the owner, never over a later call's action.
        self._owner: object | None = None
        self._waiter: asyncio.Future[str] | None = None
        # Told the device's name after every change it records (HardwareTools.subscribe).
        self.on_change: Callable[[str], None] | None = None

    @property
    @abstractmethod
    def parameters(self) -> Mapping[str, Any]: ...

    @abstractmethod
    def declaration(self) -> dict[str, Any]: ...

    @abstractmethod
    async def run(self, args: Mapping[str, Any], cause: str = "tool") -> Mapping[str, Any]: ...

    @abstractmethod
    def state(self) -> dict[str, Any]: ...

    @abstractmethod
    def safe(self, cause: str) -> None: ...

    @abstractmethod
    def close(self) -> None: ...

    def _check(self, args: Mapping[str, Any]) -> dict[str, Any]:
        return validate_args(self.name, self.parameters, args)

    def _refuse(self, problem: str) -> ValueError:
        return ValueError(
            f"{self.name}: {problem}. Nothing was changed. {describe(self.parameters)}"
        )

    def _record(self, event: str, cause: str, message: str, *args: object) -> None:
        log.info(
            f"%s %s (GPIO%d) {message} [%s]",
            self.kind,
            self.name,
            self.pin,
            *args,
            cause,
            extra={
                "EDGE_EVENT": event,
                "EDGE_TOOL": self.name,
                "EDGE_PIN": self.pin,
                "EDGE_CAUSE": cause,
            },
        )
        if self.on_change is not None:
            self.on_change(self.name)

    def _settle_waiter(self, how: str) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(how)
        self._waiter = None

    async def _wait(self) -> str:
        self._waiter = self._ctx.loop().create_future()
        return await self._waiter


# ---------------------------------------------------------------- LEDs


@dataclass(frozen=True)
class _Look:
    """What an LED shows: off, on at a level (0-1), or blinking."""

    mode: Literal["off", "on", "blink"]
    level: float = 0.0


_OFF = _Look("off")


@dataclass(frozen=True)
class _LedSnapshot:
    look: _Look
    after_blink: _Look | None
    blink_until: float | None


class _Led(_Device):
    kind = "led"

    def __init__(self, cfg: LedToolConfig, factory: Factory | None, ctx: _Context) -> None:
        super().__init__(cfg.name, cfg.pin, ctx)
        self.cfg = cfg
        self.device: LED | PWMLED = (
            PWMLED(cfg.pin, active_high=cfg.active_high, initial_value=0, pin_factory=factory)
            if cfg.pwm
            else LED(cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory)
        )
        self.look = _OFF
        # A blink for N seconds: what to show when it ends, and when that is.
        self._after_blink: _Look | None = None
        self._blink_until: float | None = None
        self._blink_end: asyncio.TimerHandle | None = None
        self._record("led_off", "startup", "off")

    @property
    def parameters(self) -> Mapping[str, Any]:
        props: dict[str, Any] = {
            "action": {
                "type": "STRING",
                "enum": ["on", "off", "blink"],
                "description": "on: light it. off: dark. blink: flash on and off once a second.",
            }
        }
        if self.cfg.pwm:
            props["brightness"] = {
                "type": "INTEGER",
                "minimum": 0,
                "maximum": 100,
                "description": 'Only with action "on": brightness in percent (0 is off). '
                "Default 100.",
            }
        lo, hi = BLINK_SECONDS
        props["seconds"] = {
            "type": "NUMBER",
            "minimum": lo,
            "maximum": hi,
            "description": 'Only with action "blink": blink for this many seconds, then show '
            "what it showed before. Leave out to blink until told otherwise.",
        }
        return {"type": "OBJECT", "properties": props, "required": ["action"]}

    def declaration(self) -> dict[str, Any]:
        what = self.cfg.description or f"The LED {self.name!r}."
        how = " Switch it on or off, or make it blink."
        if self.cfg.pwm:
            how += " It is dimmable."
        return function_declaration(
            self.name, what + how, self.parameters, blocking=not self._ctx.non_blocking
        )

    async def run(self, args: Mapping[str, Any], cause: str = "tool") -> Mapping[str, Any]:
        a = self._check(args)
        action = a["action"]
        if "brightness" in a and action != "on":
            raise self._refuse(f'"brightness" goes only with action "on", not "{action}"')
        if "seconds" in a and action != "blink":
            raise self._refuse(f'"seconds" goes only with action "blink", not "{action}"')
        token = object()
        before = self._snapshot()
        self._settle_waiter("superseded by a later call")
        seconds: float | None = a.get("seconds")
        if action == "blink":
            # Back to the steady look from before, even when a timed blink
            # replaces another one.
            back_to = self._after_blink or self.look
            self._cancel_blink_end()
            self._show(_Look("blink"), cause)
            if seconds is not None:
                self._arm_blink_end(back_to, seconds)
        else:
            self._cancel_blink_end()
            level = a.get("brightness", 100) / 100
            self._show(_Look("on", level) if action == "on" and level > 0 else _OFF, cause)
        self._owner = token
        try:
            if self._ctx.non_blocking and seconds is not None:
                how = await self._wait()
                return {"result": f"the blink is over ({how})", **self.state()}
        except asyncio.CancelledError:
            if self._owner is token:
                self._restore(before)
            raise
        return self.state()

    def state(self) -> dict[str, Any]:
        look = self.look
        out: dict[str, Any] = {
            "kind": "led",
            "pin": self.pin,
            "pwm": self.cfg.pwm,
            "state": {"off": "off", "on": "on", "blink": "blinking"}[look.mode],
            "brightness": round(look.level * 100) if look.mode == "on" else 0,
        }
        if self._blink_until is not None:
            left = max(0.0, self._blink_until - time.monotonic())
            out["blink_ends_in_s"] = _round(left)
        return out

    def safe(self, cause: str) -> None:
        self._cancel_blink_end()
        self._owner = None
        self._settle_waiter(f"switched off ({cause})")
        if self.look != _OFF:
            self._show(_OFF, cause)
        else:
            # Written and logged even when off already: the journal then
            # shows every device's safe state at each stop, not just changes.
            self.device.off()
            self._record("led_off", cause, "off")

    def close(self) -> None:
        self.device.close()

    # -- internals

    def _show(self, look: _Look, cause: str) -> None:
        if look == self.look and look.mode != "blink":
            return  # nothing moves, so nothing to log (a blink restarts, though)
        if look.mode == "off":
            self.device.off()
            self._record("led_off", cause, "off")
        elif look.mode == "blink":
            half = BLINK_PERIOD_S / 2
            self.device.blink(on_time=half, off_time=half)
            self._record("led_blink", cause, "blinking")
        elif isinstance(self.device, PWMLED):
            self.device.value = look.level
            self._record("led_on", cause, "on at %d%%", round(look.level * 100))
        else:
            self.device.on()
            self._record("led_on", cause, "on")
        self.look = look

    def _arm_blink_end(self, back_to: _Look, seconds: float) -> None:
        self._after_blink = back_to
        self._blink_until = time.monotonic() + seconds
        self._blink_end = self._ctx.loop().call_later(seconds, self._end_blink)

    def _cancel_blink_end(self) -> None:
        if self._blink_end is not None:
            self._blink_end.cancel()
        self._blink_end = None
        self._after_blink = None
        self._blink_until = None

    def _end_blink(self) -> None:
        self._blink_end = None
        back_to = self._after_blink or _OFF
        self._after_blink = self._blink_until = None
        self._show(back_to, "blink_end")
        self._settle_waiter("it ran its time")

    def _snapshot(self) -> _LedSnapshot:
        return _LedSnapshot(self.look, self._after_blink, self._blink_until)

    def _restore(self, before: _LedSnapshot) -> None:
        self._cancel_blink_end()
        self._owner = None
        left = None if before.blink_until is None else before.blink_until - time.monotonic()
        if before.after_blink is not None and left is not None and left <= 0:
            self._show(before.after_blink, "cancelled")  # that earlier blink is over by now
            return
        self._show(before.look, "cancelled")
        if before.after_blink is not None and left is not None:
            self._arm_blink_end(before.after_blink, left)


# ---------------------------------------------------------------- relays

# Offs the device made on its own (not asked for): a minimum off-time follows.
_AUTOMATIC_OFF = frozenset({"max_on_time", "hour_budget", "link_lost"})


class _Relay(_Device):
    kind = "relay"

    def __init__(self, cfg: RelayToolConfig, factory: Factory | None, ctx: _Context) -> None:
        super().__init__(cfg.name, cfg.pin, ctx)
        self.cfg = cfg
        # initial_value=False drives the pin to "off" (honouring active_high)
        # the moment it is claimed, whatever it was before we started; on lgpio
        # only through a factory from for_outputs (see hardware/pins.py).
        self.device = OutputDevice(
            cfg.pin, active_high=cfg.active_high, initial_value=False, pin_factory=factory
        )
        self.is_on = False
        self._on_since: float | None = None  # time.monotonic()
        self._on_since_wall: float | None = None  # time.time(), for people
        self._last_switch: float | None = None
        self._auto_off_at: float | None = None
        self._auto_off: asyncio.TimerHandle | None = None
        self._link_lost: asyncio.TimerHandle | None = None
        # The last hour, for the budgets: switch-on times and finished on-periods.
        self._switch_ons: deque[float] = deque()
        self._on_periods: deque[tuple[float, float]] = deque()
        self._auto_off_until: float | None = None  # min_off_after_auto_s runs to here
        self.refusals = 0
        self._record("relay_off", "startup", "off")

    @property
    def parameters(self) -> Mapping[str, Any]:
        most = self.cfg.max_on_seconds
        return {
            "type": "OBJECT",
            "properties": {
                "on": {"type": "BOOLEAN", "description": "true: switch on. false: switch off."},
                "seconds": {
                    "type": "NUMBER",
                    "minimum": min(PULSE_MIN_S, most),
                    "maximum": most,
                    "description": "Only with on = true: stay on this many seconds, then switch "
                    "off by itself. Leave out to stay on until switched off "
                    f"(at most {most:g} s).",
                },
            },
            "required": ["on"],
        }

    def declaration(self) -> dict[str, Any]:
        cfg = self.cfg
        what = cfg.description or f"The relay {self.name!r}."
        rules = (
            f" Switch it on or off. It switches itself off after {cfg.max_on_seconds:g} s on"
            + (
                f", and cannot be switched on again within {cfg.min_switch_interval_s:g} s "
                "of its last switch."
                if cfg.min_switch_interval_s > 0
                else "."
            )
            + f" At most {cfg.max_on_per_hour_s:g} s on and {cfg.max_switches_per_hour} "
            "switch-ons per hour."
            + (
                f" It switches on only within {cfg.require_recent_press_s:g} s of a press of "
                "the device's button."
                if cfg.require_recent_press_s > 0
                else ""
            )
        )
        return function_declaration(
            self.name, what + rules, self.parameters, blocking=not self._ctx.non_blocking
        )

    async def run(self, args: Mapping[str, Any], cause: str = "tool") -> Mapping[str, Any]:
        a = self._check(args)
        on: bool = a["on"]
        seconds: float | None = a.get("seconds")
        if seconds is not None and not on:
            raise self._refuse('"seconds" goes only with "on": true (on for that long, then off)')
        now = time.monotonic()
        if on and not self.is_on:
            self._check_may_switch_on(now)
        token = object()
        before_off_at = self._auto_off_at
        switched_on = False
        self._settle_waiter("superseded by a later call")
        if on:
            if not self.is_on:
                self._switch(True, cause)
                switched_on = True
            assert self._on_since is not None
            limit, why = self._limit(now)
            if seconds is not None and now + seconds < limit:
                self._arm_auto_off(now + seconds, "pulse_end")
            else:
                self._arm_auto_off(limit, why)
        elif self.is_on:
            self._switch(False, cause)
        self._owner = token
        try:
            if self._ctx.non_blocking and seconds is not None:
                how = await self._wait()
                return {"result": f"the pulse is over ({how})", **self.state()}
        except asyncio.CancelledError:
            if self._owner is token and self.is_on:
                if switched_on:
                    self._switch(False, "cancelled")
                elif before_off_at is not None:
                    self._arm_auto_off(before_off_at, self._limit(time.monotonic())[1])
            raise
        return self.state()

    def state(self) -> dict[str, Any]:
        now, wall = time.monotonic(), time.time()
        out: dict[str, Any] = {
            "kind": "relay",
            "pin": self.pin,
            "active_high": self.cfg.active_high,
            "on": self.is_on,
            "on_since": None,
            "on_for_s": None,
            "auto_off_at": None,
            "auto_off_in_s": None,
            "can_switch_on_in_s": _round(self._interval_left(now)),
            "on_last_hour_s": _round(self._on_last_hour(now)),
            "switches_last_hour": self._switches_last_hour(now),
            "refusals": self.refusals,
        }
        if self.is_on and self._on_since is not None:
            out["on_since"] = _round(self._on_since_wall)
            out["on_for_s"] = _round(now - self._on_since)
        if self._auto_off_at is not None:
            left = max(0.0, self._auto_off_at - now)
            out["auto_off_at"] = _round(wall + left)
            out["auto_off_in_s"] = _round(left)
        return out

    def safe(self, cause: str) -> None:
        self._owner = None
        self.link_up()
        if self.is_on:
            self._switch(False, cause)  # never refused: off is the safe direction
        else:
            # Written and logged even when off already (see _Led.safe); not a
            # switch, so the minimum interval's clock is left alone.
            self.device.off()
            self._record("relay_off", cause, "off")
        self._settle_waiter(f"switched off ({cause})")

    def close(self) -> None:
        self.device.close()

    def link_down(self) -> None:
        delay = self.cfg.off_after_link_lost_s
        if delay > 0 and self._link_lost is None:
            self._link_lost = self._ctx.loop().call_later(delay, self._off_link_lost)

    def link_up(self) -> None:
        if self._link_lost is not None:
            self._link_lost.cancel()
            self._link_lost = None

    # -- internals

    def _interval_left(self, now: float) -> float:
        if self._last_switch is None:
            return 0.0
        return max(0.0, self.cfg.min_switch_interval_s - (now - self._last_switch))

    def _check_may_switch_on(self, now: float) -> None:
        """Every rule that can refuse "on", in the order a person would ask
        about them; a refusal is an error the model reads, and a journal record."""
        cfg = self.cfg
        problem = ""
        left = self._interval_left(now)
        if left > 0:
            assert self._last_switch is not None
            problem = (
                f"it was switched {now - self._last_switch:.1f} s ago, and it may be switched on "
                f"only {cfg.min_switch_interval_s:g} s after its last switch: try again in "
                f"{left:.1f} s"
            )
        elif self._auto_off_until is not None and now < self._auto_off_until:
            problem = (
                f"it was switched off automatically and stays off for "
                f"{cfg.min_off_after_auto_s:g} s after that: try again in "
                f"{self._auto_off_until - now:.1f} s"
            )
        elif self._on_last_hour(now) >= cfg.max_on_per_hour_s:
            problem = (
                f"it has been on {self._on_last_hour(now):.0f} s in the last hour, its budget "
                f"is {cfg.max_on_per_hour_s:g} s"
            )
        elif self._switches_last_hour(now) >= cfg.max_switches_per_hour:
            problem = (
                f"it was switched on {self._switches_last_hour(now)} times in the last hour, "
                f"its budget is {cfg.max_switches_per_hour}"
            )
        elif cfg.require_recent_press_s > 0:
            pressed = self._ctx.last_press()
            if pressed is None or now - pressed > cfg.require_recent_press_s:
                problem = (
                    f"it switches on only within {cfg.require_recent_press_s:g} s of a press of "
                    "the device's button; ask the user to press the button and say it again"
                )
        if not problem:
            return
        self.refusals += 1
        log.warning(
            "relay %s (GPIO%d) refused on: %s",
            self.name,
            self.pin,
            problem,
            extra={
                "EDGE_EVENT": "relay_refused",
                "EDGE_TOOL": self.name,
                "EDGE_PIN": self.pin,
                "EDGE_REASON": problem,
            },
        )
        raise ValueError(f"{self.name}: refused: {problem}. Nothing was changed; it is still off.")

    def _forget_before(self, now: float) -> None:
        hour_ago = now - 3600.0
        while self._switch_ons and self._switch_ons[0] < hour_ago:
            self._switch_ons.popleft()
        while self._on_periods and self._on_periods[0][1] < hour_ago:
            self._on_periods.popleft()

    def _on_last_hour(self, now: float) -> float:
        self._forget_before(now)
        hour_ago = now - 3600.0
        used = sum(end - max(start, hour_ago) for start, end in self._on_periods)
        if self.is_on and self._on_since is not None:
            used += now - max(self._on_since, hour_ago)
        return used

    def _switches_last_hour(self, now: float) -> int:
        self._forget_before(now)
        return len(self._switch_ons)

    def _limit(self, now: float) -> tuple[float, str]:
        """When this on-period must end at the latest, and why: its maximum
        on-time, or the hour's on-time budget running out first."""
        assert self._on_since is not None
        by_max = self._on_since + self.cfg.max_on_seconds
        by_budget = now + max(0.0, self.cfg.max_on_per_hour_s - self._on_last_hour(now))
        return (by_budget, "hour_budget") if by_budget < by_max else (by_max, "max_on_time")

    def _switch(self, on: bool, cause: str) -> None:
        now = time.monotonic()
        if on:
            self.device.on()
            self._on_since, self._on_since_wall = now, time.time()
            self._switch_ons.append(now)
        else:
            self.device.off()
            if self._on_since is not None:
                self._on_periods.append((self._on_since, now))
            if cause in _AUTOMATIC_OFF:
                self._auto_off_until = now + self.cfg.min_off_after_auto_s
            self._on_since = self._on_since_wall = None
            self._cancel_auto_off()
            self._settle_waiter(f"switched off ({cause})")
        self.is_on = on
        self._last_switch = now
        self._record("relay_on" if on else "relay_off", cause, "on" if on else "off")

    def _arm_auto_off(self, at: float, cause: str) -> None:
        self._cancel_auto_off()
        self._auto_off_at = at
        delay = max(0.0, at - time.monotonic())
        self._auto_off = self._ctx.loop().call_later(delay, self._timed_off, cause)

    def _cancel_auto_off(self) -> None:
        if self._auto_off is not None:
            self._auto_off.cancel()
        self._auto_off = None
        self._auto_off_at = None

    def _timed_off(self, cause: str) -> None:
        self._auto_off = None
        self._auto_off_at = None
        if self.is_on:
            self._switch(False, cause)

    def _off_link_lost(self) -> None:
        self._link_lost = None
        if self.is_on:
            self._owner = None
            self._switch(False, "link_lost")


# ---------------------------------------------------------------- the toolset


class HardwareTools:
    """Every configured LED and relay, as tools for a ToolRegistry.

    Construct it before the first session (the pins go to their safe state at
    once); ``register`` it; call ``link_down``/``link_up`` as the Live link
    drops and returns; ``close`` at shutdown (an atexit hook closes it too).
    Everything but ``close`` runs in the loop thread.
    """

    def __init__(
        self,
        cfg: ToolsConfig,
        pin_factory: Factory | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        last_press: Callable[[], float | None] = lambda: None,
    ) -> None:
        self._cfg = cfg
        self._loop = loop
        ctx = _Context(self._get_loop, cfg.non_blocking, last_press)
        self._leds: list[_Led] = []
        self._relays: list[_Relay] = []
        try:
            if cfg.led or cfg.relay:
                # Claimed at their off level: an active-low relay never clicks on.
                pin_factory = for_outputs(pin_factory)
            for led_cfg in cfg.led:
                self._leds.append(_Led(led_cfg, pin_factory, ctx))
            for relay_cfg in cfg.relay:
                self._relays.append(_Relay(relay_cfg, pin_factory, ctx))
        except BaseException:
            self._close_devices()  # a pin that cannot be claimed: free the others
            raise
        self._closed = False
        self._listeners: list[Callable[[str], None]] = []
        for device in self.devices:
            device.on_change = self._changed
        # A crash that skips close() still leaves every relay off. atexit runs
        # last-registered first, so this runs before gpiozero's own cleanup.
        atexit.register(self._at_exit)

    @property
    def devices(self) -> list[_Led | _Relay]:
        return [*self._leds, *self._relays]

    def register(self, registry: ToolRegistry) -> None:
        """Add one tool per device, and get_device_states if there is any device."""
        for device in self.devices:
            blocking = not self._cfg.non_blocking
            # A NON_BLOCKING timed call lasts as long as its blink or pulse.
            longest = 0.0
            if not blocking:
                longest = (
                    BLINK_SECONDS[1] if isinstance(device, _Led) else device.cfg.max_on_seconds
                )
            declaration = device.declaration()
            # Refuses a name Gemini would refuse, and a schema the validator
            # could not hold calls to, before the first session does.
            check_declaration(declaration)
            registry.add(
                Tool(
                    name=device.name,
                    declaration=declaration,
                    run=device.run,
                    blocking=blocking,
                    timeout_s=self._cfg.timeout_s + longest,
                )
            )
        if self.devices:
            registry.add(
                Tool(
                    name=GET_DEVICE_STATES,
                    # Always blocking: a read is instant, and its answer is
                    # what the model was about to say.
                    declaration=function_declaration(
                        GET_DEVICE_STATES,
                        "The current state of every LED and relay on this device: on or off, "
                        "brightness, blinking, and for relays how long until they switch "
                        "off by themselves.",
                    ),
                    run=self._get_device_states,
                    blocking=True,
                    timeout_s=self._cfg.timeout_s,
                )
            )

    def states(self) -> dict[str, dict[str, Any]]:
        """Every device by name: pin, on/off, brightness, blink and relay timers."""
        return {device.name: device.state() for device in self.devices}

    async def switch(self, name: str, args: Mapping[str, Any], cause: str) -> Mapping[str, Any]:
        """Switch a device from outside the model (ctl, MQTT), on the model's
        own path: the same argument checks, bounds and budgets, and ``cause``
        in the journal record. Raises ValueError for an unknown name or a
        refused call (nothing changed)."""
        for device in self.devices:
            if device.name == name:
                return await device.run(args, cause=cause)
        raise ValueError(f"no device named {name!r}")

    def subscribe(self, listener: Callable[[str], None]) -> None:
        """``listener(name)`` after every change a device records, whoever made
        it (the model, ctl, MQTT, a timer, a safe state). It runs inside the
        change: read ``states()`` later, not from the listener itself."""
        self._listeners.append(listener)

    def link_down(self) -> None:
        """The Live link is lost: relays go off after their off_after_link_lost_s.
        Calling it again while down does not restart the clocks."""
        if self._closed:
            return
        for relay in self._relays:
            relay.link_down()

    def link_up(self) -> None:
        for relay in self._relays:
            relay.link_up()

    def all_safe(self, cause: str = "safe") -> None:
        """Every relay and LED off, every timer stopped, now: one log record
        per device, whatever state it was in."""
        for device in self.devices:
            try:
                device.safe(cause)
            except Exception:
                # One broken device must not keep the others on.
                log.exception("could not switch %s off", device.name)

    def close(self) -> None:
        """Safe state, then the pins released. Idempotent."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self._at_exit)
        self.all_safe("shutdown")
        self._close_devices()

    # -- internals

    def _get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop or asyncio.get_running_loop()

    def _changed(self, name: str) -> None:
        for listener in list(self._listeners):
            try:
                listener(name)
            except Exception:  # an observer must never stop a switch (or a safe state)
                log.exception("device change listener failed")

    async def _get_device_states(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        validate_args(GET_DEVICE_STATES, None, args)
        return {"devices": self.states()}

    def _close_devices(self) -> None:
        for device in self.devices:
            try:
                device.close()
            except Exception:
                log.exception("could not release %s", device.name)

    def _at_exit(self) -> None:
        try:
            self.close()
        except Exception:  # at exit there is nobody left to raise to
            log.exception("hardware tools: safe state at exit failed")
