"""``edge-daemon safe-state``: every configured output at its off level, now,
and left there.

The daemon switches relays off at shutdown, but a process that is killed
(``kill -9``, the OOM killer, a watchdog abort, a crash) switches nothing,
and on a Pi the kernel keeps a line at the last level it was driven to. The
unit therefore runs this command after every kind of stop (``ExecStopPost=``)
and before every start (``ExecStartPre=``): it claims each relay, LED tool and
status LED pin at its off level (active_high decides which level that is),
logs one record per pin, and exits without handing the pins back, so they
stay driven at that level (gpiozero's close would make them floating inputs).

What covers the seconds before this can run (boot) is the wiring and the
boot config: see the README's Safety section.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from dataclasses import dataclass

from . import exits, systemd
from .config import Config, ConfigError, load_config

log = logging.getLogger("edge_daemon.safe_state")


@dataclass(frozen=True)
class Output:
    kind: str  # "relay", "led", "status_led"
    name: str
    pin: int
    active_high: bool

    @property
    def off_level(self) -> int:
        return 0 if self.active_high else 1


def outputs(cfg: Config) -> list[Output]:
    found = [Output("relay", r.name, r.pin, r.active_high) for r in cfg.tools.relay]
    found += [Output("led", led.name, led.pin, led.active_high) for led in cfg.tools.led]
    status = cfg.status_led
    if status.kind == "rgb":
        found += [
            Output("status_led", f"status_led.{colour}", pin, status.active_high)
            for colour, pin in zip(("red", "green", "blue"), status.rgb_pins, strict=False)
        ]
    elif status.kind != "none":
        found.append(Output("status_led", "status_led", status.pin, status.active_high))
    return found


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--simulate",
        action="store_true",
        help="drive gpiozero's mock pins instead of the GPIO chip (what `run --simulate` uses)",
    )


def why_now(env: dict[str, str] | os._Environ[str] | None = None) -> str:
    """When it runs: systemd gives ExecStopPost= the way the daemon ended
    ($SERVICE_RESULT, $EXIT_CODE, $EXIT_STATUS); else it runs before a start
    (ExecStartPre=) or by hand."""
    env = os.environ if env is None else env
    result = env.get("SERVICE_RESULT")
    if not result:
        return "start"
    return f"stop:{result}:{env.get('EXIT_CODE', '')}:{env.get('EXIT_STATUS', '')}"


def drive_off(cfg: Config, *, simulate: bool) -> int:
    """Claim every output at its off level; the number that failed."""
    from gpiozero import OutputDevice
    from gpiozero.exc import PinFactoryFallback

    from .hardware.pins import for_outputs, make_pin_factory

    failed = 0
    cause = why_now()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PinFactoryFallback)
        try:
            factory = for_outputs(make_pin_factory(simulate))
        except Exception as exc:  # gpiozero raises a zoo of types for "no GPIO here"
            log.error(
                "safe state: no GPIO to drive (%s); outputs are as the wiring holds them",
                exc,
                extra={"EDGE_EVENT": "safe_state_failed"},
            )
            return len(outputs(cfg))
        for out in outputs(cfg):
            try:
                # initial_value=False claims the pin at "off", honouring active_high.
                OutputDevice(
                    out.pin,
                    active_high=out.active_high,
                    initial_value=False,
                    pin_factory=factory,
                )
            except Exception as exc:
                failed += 1
                log.error(
                    "safe state: %s %s on GPIO%d could not be driven off: %s",
                    out.kind,
                    out.name,
                    out.pin,
                    exc,
                    extra={
                        "EDGE_EVENT": "safe_state_failed",
                        "EDGE_TOOL": out.name,
                        "EDGE_PIN": out.pin,
                    },
                )
                continue
            log.info(
                "safe state: %s %s on GPIO%d off (pin %s, %s) [%s]",
                out.kind,
                out.name,
                out.pin,
                "high" if out.off_level else "low",
                "active-high" if out.active_high else "active-low",
                cause,
                extra={
                    "EDGE_EVENT": "safe_state",
                    "EDGE_TOOL": out.name,
                    "EDGE_PIN": out.pin,
                    "EDGE_LEVEL": out.off_level,
                    "EDGE_CAUSE": cause,
                },
            )
    return failed


def run_from_args(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"edge-daemon safe-state: config error: {exc}", file=sys.stderr)
        return exits.CONFIG
    systemd.configure_logging(cfg.logging.level, cfg.logging.target)
    found = outputs(cfg)
    if not found:
        log.info("safe state: no outputs configured", extra={"EDGE_EVENT": "safe_state"})
        status = exits.OK
    else:
        failed = drive_off(cfg, simulate=args.simulate)
        status = exits.FAILED if failed else exits.OK
    systemd.stop_logging()
    sys.stdout.flush()
    sys.stderr.flush()
    # Not a normal exit: gpiozero's atexit handler would close every device,
    # and a closed pin is a floating input, not an output held off.
    os._exit(status)
