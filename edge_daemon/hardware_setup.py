"""Connect the GPIO side to a daemon: the push-to-talk button, the status LED
and the hardware tools, all on one pin factory (gpiozero's mock pins under
``--simulate``).

A missing GPIO chip is not fatal: the daemon still runs with the control
socket and the keyboard as its button, and the log says what is missing.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Callable

from gpiozero.exc import PinFactoryFallback
from gpiozero.pins import Factory

from .config import Config
from .daemon import Daemon
from .hardware.button import PushToTalk
from .hardware.pins import make_pin_factory, pin_states
from .hardware.status_led import NOTICE_S, StatusLed
from .hardware.switches import MuteSwitch, VolumeButtons
from .tools.hardware import HardwareTools

log = logging.getLogger(__name__)


class FingerOnButton:
    """When a finger was last on the physical button (its press or release,
    time.monotonic()): the proof of presence a relay's require_recent_press_s
    asks for. Only the button's own callbacks set it, never ctl, MQTT or text."""

    def __init__(self) -> None:
        self._at: float | None = None

    def last(self) -> float | None:
        return self._at

    def wrap(self, action: Callable[[], None]) -> Callable[[], None]:
        def touched() -> None:
            self._at = time.monotonic()
            action()

        return touched


# The states the status LED gives up to the error pattern while a device is
# missing: at rest the owner should see that something needs a hand. A turn in
# progress (a typed one needs no microphone) shows as usual, except listening
# when there is nothing to listen with.
_RESTING = frozenset({"starting", "idle", "reconnecting"})


def led_state(daemon: Daemon) -> str:
    """What the status LED shows: the daemon's state, or ``error`` while a
    device is missing (the state itself stays what it is: ``ctl wait idle``
    and typed turns go on without a microphone)."""
    state = daemon.state.value
    missing = {h.name for h in daemon.device_health.not_up()}
    if missing and (state in _RESTING or (state == "listening" and "microphone" in missing)):
        return "error"
    return state


def attach_hardware(daemon: Daemon, cfg: Config, *, simulate: bool) -> None:
    """Create the GPIO devices, wire them to ``daemon`` and register their
    shutdown (relays safe, LED off) as daemon shutdown hooks."""
    loop = asyncio.get_running_loop()
    try:
        with warnings.catch_warnings():
            # gpiozero warns once per pin library it tries; one log line below
            # says what matters.
            warnings.simplefilter("ignore", PinFactoryFallback)
            pins = make_pin_factory(simulate)
            finger = FingerOnButton()
            tools = HardwareTools(cfg.tools, pins, loop, last_press=finger.last)
            button = PushToTalk(
                cfg.button,
                loop,
                finger.wrap(lambda: daemon.press("button")),
                finger.wrap(lambda: daemon.release("button")),
                pins,
            )
    except Exception as exc:  # gpiozero raises a zoo of types for "no GPIO here"
        if cfg.tools.led or cfg.tools.relay:
            log.error(
                "GPIO unavailable (%s): the LED and relay tools are disabled; "
                "on a desktop use --simulate",
                exc,
                extra={"EDGE_EVENT": "gpio_missing"},
            )
        else:
            log.warning(
                "GPIO unavailable (%s): no push-to-talk button; use `edge-daemon ctl` or "
                "the keyboard (--simulate gives a mock button)",
                exc,
                extra={"EDGE_EVENT": "gpio_missing"},
            )
        return
    # Outputs go safe at construction (above); from here on they are the
    # model's to switch, and safe again at shutdown and after long outages.
    tools.register(daemon.tools)
    daemon.add_shutdown_hook(tools.close)
    daemon.subscribe_link(lambda up: tools.link_up() if up else tools.link_down())
    daemon.status_providers["devices"] = tools.states
    daemon.devices = tools

    if cfg.status_led.kind != "none":
        led = StatusLed(cfg.status_led, pins)

        def show(again: bool = False) -> None:
            state = led_state(daemon)
            # Muted shows instead of idle: the one state in which it matters.
            if daemon.muted and state == "idle":
                state = "muted"
            led.show(state, again=again)

        show()
        daemon.subscribe(lambda _old, _new: show())
        daemon.device_health.subscribe(lambda _health: show())
        daemon.subscribe_mute(lambda _muted: show())

        def flash(_notice: str) -> None:
            led.flash()
            loop.call_later(NOTICE_S, lambda: show(again=True))

        daemon.subscribe_notice(flash)
        daemon.add_shutdown_hook(led.close)
        daemon.status_providers["status_led"] = lambda: {"pattern": led.pattern}

    _attach_switches(daemon, cfg, loop, pins)

    try:
        button.start()
    except Exception as exc:
        log.error(
            "push-to-talk button on GPIO%d unavailable: %s",
            cfg.button.pin,
            exc,
            extra={"EDGE_EVENT": "gpio_missing"},
        )
    else:
        daemon.add_shutdown_hook(button.close)
        daemon.button_touched = button.last_touch
        if simulate:
            daemon.virtual_button = button
    if simulate:
        daemon.status_providers["pins"] = lambda: {
            str(pin): state for pin, state in pin_states(pins).items()
        }
    log.info(
        "GPIO ready: button GPIO%d (%s), %d LED tool(s), %d relay tool(s)%s",
        cfg.button.pin,
        cfg.button.mode,
        len(cfg.tools.led),
        len(cfg.tools.relay),
        " on mock pins" if simulate else "",
        extra={"EDGE_EVENT": "gpio_ready"},
    )


def _attach_switches(
    daemon: Daemon, cfg: Config, loop: asyncio.AbstractEventLoop, pins: Factory | None
) -> None:
    """The optional mute switch and volume buttons: a missing one costs its
    function, never the daemon."""
    if cfg.mute.pin >= 0:
        try:
            mute = MuteSwitch(
                cfg.mute,
                loop,
                lambda on: daemon.set_muted(on, "switch"),
                lambda: daemon.muted,
                pins,
            )
            mute.start()
        except Exception as exc:
            log.error(
                "mute switch on GPIO%d unavailable: %s",
                cfg.mute.pin,
                exc,
                extra={"EDGE_EVENT": "gpio_missing"},
            )
        else:
            daemon.add_shutdown_hook(mute.close)
    if cfg.volume.up_pin >= 0 or cfg.volume.down_pin >= 0:
        try:
            buttons = VolumeButtons(
                cfg.volume,
                loop,
                lambda delta: daemon.set_volume(daemon.volume.level + delta, "button"),
                pins,
            )
        except Exception as exc:
            log.error("volume buttons unavailable: %s", exc, extra={"EDGE_EVENT": "gpio_missing"})
        else:
            daemon.add_shutdown_hook(buttons.close)
