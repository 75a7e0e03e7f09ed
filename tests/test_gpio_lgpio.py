"""gpiozero's real lgpio pin factory under the daemon's GPIO adapters.

The mock pins of test_hardware.py skip the code that runs on a Pi: gpiozero's
LGPIOFactory and LGPIOPin, and the lgpio module under them. Here that code is
real and only the GPIO chip is not: ``tests/support/fake_lgpio.py`` stands in
for lgpio's calls, with the installed lgpio's signatures (checked below) and
the semantics of its C library. The lgpio import itself is real too, in a
working directory no one can write (``/proc``), as a system service's ``/`` is.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from gpiozero import OutputDevice
from support.fake_lgpio import SET_PULL_NONE, SET_PULL_UP, FakeLgpio

from edge_daemon.config import (
    ButtonConfig,
    LedToolConfig,
    RelayToolConfig,
    StatusLedConfig,
    ToolsConfig,
)
from edge_daemon.hardware import PushToTalk, StatusLed
from edge_daemon.hardware.pins import for_outputs, prepare_lgpio
from edge_daemon.tools.hardware import HardwareTools

ROOT = Path(__file__).resolve().parent.parent
PI5_REVISION = 0xD04170  # Raspberry Pi 5 8GB: gpiozero's board data for the pin names


@pytest.fixture(scope="module")
def backend() -> ModuleType:
    """gpiozero.pins.lgpio over the real lgpio module, imported as the daemon imports it."""
    prepare_lgpio()
    import gpiozero.pins.lgpio

    return gpiozero.pins.lgpio


@pytest.fixture
def chip(backend: ModuleType, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeLgpio, Any]]:
    """A fake chip under a real LGPIOFactory, as gpiozero makes it on a Pi 5."""
    import gpiozero.pins.local

    fake = FakeLgpio()
    monkeypatch.setattr(backend, "lgpio", fake)
    monkeypatch.setattr(gpiozero.pins.local, "get_pi_revision", lambda: PI5_REVISION)
    factory = backend.LGPIOFactory()
    yield fake, factory
    factory.close()


def test_the_fake_has_lgpios_own_signatures_and_constants(backend: ModuleType) -> None:
    real = backend.lgpio
    fake = FakeLgpio()
    for name in FakeLgpio.API:
        want = [
            (p.name, p.kind, p.default)
            for p in inspect.signature(getattr(real, name)).parameters.values()
        ]
        have = [
            (p.name, p.kind, p.default)
            for p in inspect.signature(getattr(fake, name)).parameters.values()
        ]
        assert have == want, f"lgpio.{name}: the fake takes {have}, lgpio takes {want}"
    for const in (
        "SET_PULL_UP",
        "SET_PULL_DOWN",
        "SET_PULL_NONE",
        "RISING_EDGE",
        "FALLING_EDGE",
        "BOTH_EDGES",
    ):
        assert getattr(fake, const) == getattr(real, const), const


# ---------------------------------------------------------------- outputs


def _claims(fake: FakeLgpio, gpio: int) -> list[tuple[str, tuple[Any, ...]]]:
    return [
        (name, args) for name, args in fake.calls if name.startswith("gpio_") and args[0] == gpio
    ]


async def test_an_active_low_relay_is_claimed_off_and_never_blips_on(
    chip: tuple[FakeLgpio, Any],
) -> None:
    fake, factory = chip
    cfg = ToolsConfig(relay=(RelayToolConfig(name="pump", pin=27, active_high=False),))
    tools = HardwareTools(cfg, factory, asyncio.get_running_loop())
    try:
        # High is off for an active-low module: the line was never low.
        assert fake.levels(27) == [1]
        assert ("gpio_claim_output", (27, 1, 0)) in _claims(fake, 27)
        relay = tools.devices[0]
        await relay.run({"on": True})
        await relay.run({"on": False})
        assert fake.levels(27) == [1, 0, 1]
    finally:
        tools.close()
    # gpiozero hands a closed pin back as an input with no pull (gpiozero #1146):
    # README.md says what that means for relay modules.
    assert _claims(fake, 27)[-1] == ("gpio_claim_input", (27, SET_PULL_NONE))
    assert fake.lines[27].mode == "input"


@pytest.mark.parametrize(("active_high", "off"), [(True, 0), (False, 1)])
async def test_leds_and_the_status_led_start_at_their_off_level(
    chip: tuple[FakeLgpio, Any], active_high: bool, off: int
) -> None:
    fake, factory = chip
    cfg = ToolsConfig(led=(LedToolConfig(name="lamp", pin=17, active_high=active_high),))
    tools = HardwareTools(cfg, factory, asyncio.get_running_loop())
    status = StatusLed(StatusLedConfig(kind="led", pin=25, active_high=active_high), factory)
    try:
        assert fake.levels(17) == [off]
        assert fake.levels(25) == [off]
    finally:
        status.close()
        tools.close()


def test_without_the_fix_gpiozero_claims_at_low_first(
    backend: ModuleType, chip: tuple[FakeLgpio, Any]
) -> None:
    """Why ``for_outputs`` exists: gpiozero's own LGPIOPin claims the line at
    level 0, then sets it. Should gpiozero claim at the level itself (pull
    request #1177), ``for_outputs`` steps aside and this test says so."""
    fake, factory = chip
    relay = OutputDevice(27, active_high=False, initial_value=False, pin_factory=factory)
    relay.close()
    if "output_with_state" in vars(backend.LGPIOPin):
        assert fake.levels(27) == [1], "gpiozero's own output_with_state must claim at the level"
        assert for_outputs(factory).pin_class is backend.LGPIOPin
    else:
        assert fake.levels(27) == [0, 1], "gpiozero now claims at the level: drop for_outputs"


# ---------------------------------------------------------------- the button


async def until(cond: Callable[[], bool], what: str, timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@pytest.fixture
async def ptt(chip: tuple[FakeLgpio, Any]) -> AsyncIterator[tuple[PushToTalk, list[str], set[int]]]:
    _fake, factory = chip
    events: list[str] = []
    threads: set[int] = set()

    def note(what: str) -> Callable[[], None]:
        def record() -> None:
            events.append(what)
            threads.add(threading.get_ident())

        return record

    cfg = ButtonConfig(pin=23, bounce_s=0.01, min_press_s=0.03)
    button = PushToTalk(cfg, asyncio.get_running_loop(), note("press"), note("release"), factory)
    button.start()
    yield button, events, threads
    button.close()


async def test_the_button_is_pulled_up_debounced_and_alerted_on_both_edges(
    chip: tuple[FakeLgpio, Any], ptt: tuple[PushToTalk, list[str], set[int]]
) -> None:
    fake, _factory = chip
    claims = _claims(fake, 23)
    assert ("gpio_claim_input", (23, SET_PULL_UP)) in claims
    assert ("gpio_set_debounce_micros", (23, 10_000)) in claims
    assert claims[-1] == ("gpio_claim_alert", (23, fake.BOTH_EDGES, SET_PULL_UP))
    assert ("callback", (23, fake.BOTH_EDGES)) in fake.calls


async def test_a_press_arrives_from_lgpios_thread_and_is_handled_in_the_loop(
    chip: tuple[FakeLgpio, Any], ptt: tuple[PushToTalk, list[str], set[int]]
) -> None:
    fake, _factory = chip
    _button, events, threads = ptt
    fake.drive(23, 0).join()  # pressed: the button shorts the pulled-up pin to ground
    await until(lambda: events == ["press"], "the press")
    fake.drive(23, 1).join()
    await until(lambda: events == ["press", "release"], "the release")
    assert threads == {threading.get_ident()}, "handlers run in the loop thread only"


# ---------------------------------------------------------------- importing lgpio


def _import_lgpio_in(
    cwd: str, code: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    full_env = {k: v for k, v in os.environ.items() if k not in ("LG_WD", "RUNTIME_DIRECTORY")}
    full_env["PYTHONPATH"] = str(ROOT)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_lgpio_cannot_be_imported_where_it_cannot_make_its_fifo() -> None:
    """What a system service meets in "/" (read-only to it): lgpio's import fails."""
    done = _import_lgpio_in("/proc", "import lgpio")
    assert done.returncode != 0 and ".lgd-nfy" in done.stderr


def test_the_daemon_imports_lgpio_anywhere_and_keeps_its_working_directory() -> None:
    code = (
        "import os, sys\n"
        "from edge_daemon.hardware.pins import make_pin_factory\n"
        "assert make_pin_factory(False) is None\n"
        "import lgpio\n"
        "print(os.getcwd()); print(sorted(os.listdir(os.environ['LG_WD'])))\n"
    )
    done = _import_lgpio_in("/proc", code)
    assert done.returncode == 0, done.stderr
    cwd, fifos = done.stdout.splitlines()
    assert cwd == "/proc" and fifos == "['.lgd-nfy0']"


def test_under_systemd_the_fifo_goes_in_the_runtime_directory(tmp_path: Path) -> None:
    code = "from edge_daemon.hardware.pins import prepare_lgpio\nprepare_lgpio()\nimport lgpio\n"
    done = _import_lgpio_in("/proc", code, {"RUNTIME_DIRECTORY": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert [p.name for p in tmp_path.iterdir()] == [".lgd-nfy0"]
