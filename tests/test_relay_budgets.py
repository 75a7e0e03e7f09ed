"""The model's power over a relay is budgeted: a minimum off-time after an
automatic off, on-time and switch-ons per hour, and optionally a recent press
of the physical button. Every refusal is an error the model reads and a
journal record, and the pin never moves for it: checked from every level the
mock pin took, not from its final level."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge_daemon.config import RelayToolConfig, ToolsConfig
from edge_daemon.tools import hardware as hw_mod
from edge_daemon.tools.hardware import HardwareTools
from edge_daemon.tools.registry import ToolRegistry


class Clock:
    """time.monotonic() for the relay rules; loop timers keep real time."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now


class HistoryPin(MockPWMPin):
    """A mock pin that remembers every level it was driven to, from the claim on."""

    def __init__(self, factory: Any, info: Any, **kwargs: Any) -> None:
        self.levels: list[float] = []
        super().__init__(factory, info, **kwargs)

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        self.levels.append(float(self.state))


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=HistoryPin)
    yield f
    f.reset()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(hw_mod.time, "monotonic", c)
    return c


@pytest.fixture
async def relay_tools(
    factory: MockFactory,
) -> AsyncIterator[Callable[..., tuple[HardwareTools, ToolRegistry]]]:
    made: list[HardwareTools] = []

    def build(
        last_press: Callable[[], float | None] = lambda: None, **relay: Any
    ) -> tuple[HardwareTools, ToolRegistry]:
        cfg = RelayToolConfig(name="heater", pin=5, active_high=False, **relay)
        tools = HardwareTools(
            ToolsConfig(relay=(cfg,)), factory, asyncio.get_running_loop(), last_press
        )
        made.append(tools)
        registry = ToolRegistry()
        tools.register(registry)
        return tools, registry

    yield build
    for tools in made:
        tools.close()


async def call(registry: ToolRegistry, **args: Any) -> tuple[bool, str]:
    outcome = await registry.call("heater", args)
    return outcome.ok, outcome.error or ""


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.EDGE_REASON for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "relay_refused"
    ]


async def test_switch_ons_per_hour_are_budgeted_and_the_hour_rolls_on(
    relay_tools: Any, factory: MockFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tools, registry = relay_tools(max_switches_per_hour=3, min_switch_interval_s=0)
    for _ in range(3):
        assert (await call(registry, on=True))[0]
        assert (await call(registry, on=False))[0]
        clock.now += 60
    ok, error = await call(registry, on=True)
    assert not ok and "switched on 3 times in the last hour" in error
    assert "Nothing was changed; it is still off" in error
    assert refusals(caplog) and "budget is 3" in refusals(caplog)[-1]
    # Active-low: on is 0, off is 1. Three on-off pairs after the claim at off, no fourth.
    assert factory.pin(5).levels == [1.0] + [0.0, 1.0] * 3
    clock.now += 3600 - 170  # the first switch-on leaves the hour
    assert (await call(registry, on=True))[0]
    assert tools.states()["heater"]["switches_last_hour"] == 3


async def test_on_time_per_hour_is_budgeted(
    relay_tools: Any, factory: MockFactory, clock: Clock
) -> None:
    tools, registry = relay_tools(max_on_per_hour_s=100, min_switch_interval_s=0)
    assert (await call(registry, on=True))[0]
    clock.now += 70
    assert (await call(registry, on=False))[0]
    assert (await call(registry, on=True))[0]
    state = tools.states()["heater"]
    # The auto-off is armed where the hour's budget runs out: 30 s from now.
    assert state["auto_off_in_s"] == pytest.approx(30, abs=0.5)
    clock.now += 30
    assert (await call(registry, on=False))[0]
    ok, error = await call(registry, on=True)
    assert not ok and "on 100 s in the last hour, its budget is 100 s" in error
    assert factory.pin(5).levels == [1.0, 0.0, 1.0, 0.0, 1.0]


async def test_after_an_automatic_off_it_stays_off_for_a_while(
    relay_tools: Any, factory: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tools, registry = relay_tools(
        max_on_seconds=0.2, min_off_after_auto_s=3600, min_switch_interval_s=0
    )
    assert (await call(registry, on=True))[0]
    pin = factory.pin(5)
    deadline = time.monotonic() + 30
    while tools.states()["heater"]["on"]:
        assert time.monotonic() < deadline, "the max-on timer never fired"
        await asyncio.sleep(0.01)
    ok, error = await call(registry, on=True)
    assert not ok and "switched off automatically" in error
    assert pin.levels == [1.0, 0.0, 1.0]
    causes = [r.EDGE_CAUSE for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "relay_off"]
    assert causes == ["startup", "max_on_time"]
    # Off is never refused.
    assert (await call(registry, on=False))[0]


async def test_a_recent_press_of_the_button_is_required_when_configured(
    relay_tools: Any, factory: MockFactory, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pressed: list[float] = []
    _, registry = relay_tools(
        last_press=lambda: pressed[-1] if pressed else None,
        require_recent_press_s=20,
        min_switch_interval_s=0,
    )
    ok, error = await call(registry, on=True)  # typed text, a camera frame: no finger
    assert not ok and "within 20 s of a press of the device's button" in error
    pressed.append(clock.now)
    clock.now += 19
    assert (await call(registry, on=True))[0]
    assert (await call(registry, on=False))[0]
    clock.now += 2
    assert not (await call(registry, on=True))[0]
    assert len(refusals(caplog)) == 2
    assert factory.pin(5).levels == [1.0, 0.0, 1.0]


async def test_the_model_is_told_the_budgets(relay_tools: Any) -> None:
    _, registry = relay_tools(
        max_on_per_hour_s=900, max_switches_per_hour=6, require_recent_press_s=30
    )
    description = registry.declarations()[0]["description"]
    assert "At most 900 s on and 6 switch-ons per hour" in description
    assert "within 30 s of a press" in description
