"""The configured pins exist on this board, the gpio group may open the chip,
and no other program holds them."""

from __future__ import annotations

import contextlib
import grp
import importlib
import re
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import Config
from .machine import SERVICE, Runner, under
from .report import Check, fail, ok, skip, warn


def configured_pins(cfg: Config) -> list[tuple[str, int]]:
    """(config key, BCM number) of every GPIO the daemon drives or reads."""
    pins = [("button.pin", cfg.button.pin)]
    led = cfg.status_led
    if led.kind == "rgb":
        pins += [(f"status_led.rgb_pins[{i}]", p) for i, p in enumerate(led.rgb_pins)]
    elif led.kind != "none":
        pins.append(("status_led.pin", led.pin))
    pins += [(f"tools.led[{i}].pin", t.pin) for i, t in enumerate(cfg.tools.led)]
    pins += [(f"tools.relay[{i}].pin", t.pin) for i, t in enumerate(cfg.tools.relay)]
    return pins


def board_model(root: Path) -> str:
    for path in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        with contextlib.suppress(OSError):
            return under(root, path).read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    return ""


PinProbe = Callable[[Sequence[int]], dict[int, str | None] | None]

_LGPIO_LINE_IN_USE = 1  # LINE_FLAG_KERNEL: the line is requested (by a program or a driver)


def probe_pins_lgpio(pins: Sequence[int]) -> dict[int, str | None] | None:
    """{pin: None if free, else who holds it}, read with lgpio from the Pi header's chip;
    None when lgpio is not installed or finds no header chip.

    It reads each line's flags rather than claiming the line: a claim turns the pin
    into an input for a moment, which can click a relay wired to it.
    """
    try:
        lgpio: Any = importlib.import_module("lgpio")
    except ImportError:
        return None
    for number in range(16):
        try:
            handle = lgpio.gpiochip_open(number)
        except Exception:  # no such chip, or not ours to open
            continue
        try:
            label = str(lgpio.gpio_get_chip_info(handle)[3])
            if not label.startswith("pinctrl-"):
                continue  # the header's chip is pinctrl-bcm2835/-bcm2711/-rp1
            result: dict[int, str | None] = {}
            for pin in pins:
                _status, _offset, flags, _name, user = lgpio.gpio_get_line_info(handle, pin)
                used = flags & _LGPIO_LINE_IN_USE
                result[pin] = f"in use by {user or 'the kernel'!r}" if used else None
            return result
        except Exception:  # an lgpio too old or too new for these calls: try another way
            return None
        finally:
            lgpio.gpiochip_close(handle)
    return None


_GPIOINFO_LINE = re.compile(r'^\s*line\s+(\d+):\s+("[^"]*"|unnamed)\s+("[^"]*"|unused)(.*)$')


def parse_gpioinfo(text: str) -> dict[int, str | None]:
    """{offset: consumer or None} from libgpiod v1 `gpioinfo` output for one chip."""
    lines: dict[int, str | None] = {}
    for raw in text.splitlines():
        m = _GPIOINFO_LINE.match(raw)
        if m is None:
            continue
        consumer = m[3].strip('"')
        used = m[3] != "unused" or "[used]" in m[4]
        lines[int(m[1])] = (consumer or "kernel") if used else None
    return lines


def probe_pins_gpioinfo(
    run: Runner, chip: str, pins: Sequence[int]
) -> dict[int, str | None] | None:
    done = run(["gpioinfo", chip])
    if done.returncode != 0:
        return None
    lines = parse_gpioinfo(done.stdout)
    if not lines:
        return None
    return {p: (f"in use by {lines[p]!r}" if lines.get(p) else None) for p in pins}


def probe_pins_debugfs(root: Path, pins: Sequence[int]) -> dict[int, str | None] | None:
    """/sys/kernel/debug/gpio lists only requested lines: `gpio-535 (GPIO23 |sysfs) in hi`."""
    try:
        text = under(root, "/sys/kernel/debug/gpio").read_text(errors="replace")
    except OSError:
        return None
    used = {int(m[1]): m[2].strip() for m in re.finditer(r"\(\s*GPIO(\d+)\s*\|([^)]*)\)", text)}
    return {p: (f"in use by {used[p]!r}" if p in used else None) for p in pins}


def check_gpio(
    cfg: Config,
    *,
    root: Path,
    simulate: bool = False,
    service_active: bool = False,
    gpio_gid: int | None = None,
    probe: PinProbe | None = None,
) -> Check:
    name = "gpio"
    if simulate:
        return skip(name, "simulated: gpiozero mock pins under --simulate, no GPIO is touched")
    pins = configured_pins(cfg)
    model = board_model(root)
    chips = sorted(under(root, "/dev").glob("gpiochip*"))
    is_pi = "raspberry pi" in model.lower()
    if not chips:
        if is_pi:
            return fail(
                name,
                f"no /dev/gpiochip* on this {model}",
                "the GPIO driver is missing: sudo apt full-upgrade && sudo reboot",
            )
        return fail(
            name,
            f"no GPIO: no /dev/gpiochip*, and this is not a Raspberry Pi "
            f"({model or 'no device-tree model'})",
            "on a desktop use mock GPIO: edge-daemon run --simulate (and doctor --simulate)",
        )
    names = " ".join(c.name for c in chips)
    if gpio_gid is not None:
        closed = []
        for chip in chips:
            st = chip.stat()
            group_rw = st.st_gid == gpio_gid and st.st_mode & 0o060 == 0o060
            if not group_rw and st.st_mode & 0o006 != 0o006:
                closed.append(f"{chip.name} ({oct(st.st_mode & 0o777)}, gid {st.st_gid})")
        if closed:
            return fail(
                name,
                f"the gpio group cannot open {', '.join(closed)}",
                'add a udev rule: echo \'SUBSYSTEM=="gpio", KERNEL=="gpiochip*", '
                'GROUP="gpio", MODE="0660"\' | sudo tee /etc/udev/rules.d/60-gpio.rules '
                "&& sudo udevadm trigger (Raspberry Pi OS ships this rule)",
            )
    listed = ", ".join(f"GPIO{p} ({key})" for key, p in pins)
    board = model or "not a Raspberry Pi"
    if not is_pi:
        return warn(
            name,
            f"{names} present, but this is {board}: the config's pins are BCM numbers of a "
            "Pi header",
            "on a desktop use mock GPIO: edge-daemon run --simulate",
        )
    if service_active:
        return ok(
            name,
            f"{names} on {model}; {listed} are held by the running {SERVICE} (stop it to test "
            "them free)",
        )
    found = probe([p for _k, p in pins]) if probe is not None else None
    if found is None:
        return warn(
            name,
            f"{names} on {model}; cannot tell whether {listed} are free (no lgpio, gpioinfo or "
            "/sys/kernel/debug/gpio)",
            "sudo apt-get install python3-lgpio (or gpiod for gpioinfo)",
        )
    busy = [(key, p, found[p]) for key, p in pins if found.get(p)]
    if busy:
        what = "; ".join(f"GPIO{p} ({key}) {why}" for key, p, why in busy)
        keys = ", ".join(key for key, _p, _why in busy)
        return fail(
            name,
            what,
            f"stop the program that holds it (`gpioinfo | grep -w used` names it), or move "
            f"{keys} to a free GPIO in the config",
        )
    return ok(name, f"{names} on {model}; {listed} free")


def probe_pins(pins: Sequence[int], run: Runner, root: Path) -> dict[int, str | None] | None:
    found = probe_pins_lgpio(pins)
    if found is None and shutil.which("gpioinfo"):
        for chip in sorted(under(root, "/dev").glob("gpiochip*")):
            done = run(["gpioinfo", chip.name])
            if "GPIO" in done.stdout:  # the header's chip names its lines GPIO0..GPIO27
                found = probe_pins_gpioinfo(run, chip.name, pins)
                break
    if found is None:
        found = probe_pins_debugfs(root, pins)
    return found


def gpio_gid() -> int | None:
    try:
        return grp.getgrnam("gpio").gr_gid
    except KeyError:
        return None
