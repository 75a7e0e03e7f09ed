"""The tool registry, the argument validator and the hardware tools on mock pins.

Every call goes through ToolRegistry.call, as the daemon makes it, so errors are
checked as the model would read them (ToolOutcome.error).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_daemon.config import LedToolConfig, RelayToolConfig, ToolsConfig
from edge_daemon.tools import hardware as hw_mod
from edge_daemon.tools.hardware import GET_DEVICE_STATES, HardwareTools
from edge_daemon.tools.registry import (
    NON_BLOCKING,
    Tool,
    ToolOutcome,
    ToolRegistry,
    function_declaration,
)
from edge_daemon.tools.schema import check_declaration, describe, validate_args

LAMP = LedToolConfig(name="lamp", pin=17, description="The desk lamp.")
DIMMER = LedToolConfig(name="dimmer", pin=18, pwm=True, active_high=False)
PUMP = RelayToolConfig(name="pump", pin=27, description="The garden pump.", active_high=True)
# Active-low, like most relay modules; a long interval makes "refused" certain.
VALVE = RelayToolConfig(name="valve", pin=22, active_high=False, min_switch_interval_s=3600)


async def until(cond: Callable[[], bool], timeout_s: float = 3.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what or cond}")
        await asyncio.sleep(0.002)


def lit(factory: MockFactory, pin: int, active_high: bool = True) -> float:
    """How far on the device on ``pin`` is, whatever its polarity."""
    state = float(factory.pin(pin).state)
    return state if active_high else 1.0 - state


def pins(factory: MockFactory) -> dict[int, float]:
    return {int(p.info.name[4:]): float(p.state) for p in factory.pins.values()}


@pytest.fixture(autouse=True)
def quick_blink(monkeypatch: pytest.MonkeyPatch) -> None:
    # A readable 1 s blink on a desk, a quick one in a test.
    monkeypatch.setattr(hw_mod, "BLINK_PERIOD_S", 0.04)


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    f = MockFactory(pin_class=MockPWMPin)
    yield f
    f.reset()


Make = Callable[..., tuple[HardwareTools, ToolRegistry]]


@pytest.fixture
async def make(factory: MockFactory) -> AsyncIterator[Make]:
    made: list[HardwareTools] = []

    def build(
        led: tuple[LedToolConfig, ...] = (LAMP, DIMMER),
        relay: tuple[RelayToolConfig, ...] = (PUMP, VALVE),
        pin_factory: MockFactory | None = None,
        **kw: Any,
    ) -> tuple[HardwareTools, ToolRegistry]:
        tools = HardwareTools(ToolsConfig(led=led, relay=relay, **kw), pin_factory or factory)
        made.append(tools)
        registry = ToolRegistry()
        tools.register(registry)
        return tools, registry

    yield build
    for tools in made:
        tools.close()


async def ok(registry: ToolRegistry, name: str, args: Mapping[str, Any]) -> Mapping[str, Any]:
    outcome = await registry.call(name, args)
    assert outcome.ok, outcome.error
    assert outcome.output is not None
    return outcome.output


async def error(registry: ToolRegistry, name: str, args: object) -> str:
    outcome = await registry.call(name, args)  # type: ignore[arg-type]
    assert not outcome.ok, f"{name}({args}) was accepted: {outcome.output}"
    assert outcome.error
    return outcome.error


def hardware_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge_daemon.tools.hardware"]


# ---------------------------------------------------------------- the validator

SCHEMA: dict[str, Any] = {
    "type": "OBJECT",
    "properties": {
        "mode": {"type": "STRING", "enum": ["a", "b"], "description": "m"},
        "level": {"type": "INTEGER", "minimum": 0, "maximum": 100, "description": "l"},
        "seconds": {"type": "NUMBER", "minimum": 0.1, "maximum": 10, "description": "s"},
        "flag": {"type": "BOOLEAN", "description": "f"},
        "text": {"type": "STRING", "description": "t"},
    },
    "required": ["mode"],
}


def test_validate_normalises_numbers() -> None:
    got = validate_args("f", SCHEMA, {"mode": "a", "level": 50.0, "seconds": 5, "flag": False})
    assert got == {"mode": "a", "level": 50, "seconds": 5.0, "flag": False}
    assert type(got["level"]) is int and type(got["seconds"]) is float
    assert validate_args("f", None, None) == {}
    assert validate_args("f", None, {}) == {}


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({}, "missing required parameter 'mode'"),
        ({"mode": "a", "colour": 1}, "unknown parameter 'colour'"),
        ({"mode": "c"}, "'mode' must be one of \"a\", \"b\", got 'c'"),
        ({"mode": 1}, "'mode' must be one of"),
        ({"mode": "a", "level": True}, "'level' must be an integer from 0 to 100, got true"),
        ({"mode": "a", "level": 50.5}, "'level' must be an integer"),
        ({"mode": "a", "level": "50"}, "got '50'"),
        ({"mode": "a", "level": 101}, "from 0 to 100, got 101"),
        ({"mode": "a", "level": -1}, "got -1"),
        ({"mode": "a", "seconds": math.nan}, "'seconds' must be a number from 0.1 to 10"),
        ({"mode": "a", "seconds": math.inf}, "'seconds' must be a number"),
        ({"mode": "a", "seconds": 0.05}, "got 0.05"),
        ({"mode": "a", "seconds": None}, "got null"),
        ({"mode": "a", "flag": 1}, "'flag' must be true or false, got 1"),
        ({"mode": "a", "flag": "true"}, "'flag' must be true or false"),
        ({"mode": "a", "text": ["x"]}, "'text' must be a string, got an array"),
        ({"mode": "a", 3: 1}, "unknown parameter 3"),
        ([], "the arguments must be an object"),
    ],
)
def test_validate_errors(args: object, words: str) -> None:
    with pytest.raises(ValueError) as info:
        validate_args("fn", SCHEMA, args)
    message = str(info.value)
    assert message.startswith("fn: ")
    assert words in message
    # ... and what would have been accepted, so the model can fix its call.
    assert 'mode (required): one of "a", "b"' in message
    assert "level (optional): an integer from 0 to 100" in message


def test_validate_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError) as info:
        validate_args("fn", SCHEMA, {"level": 500, "x": 1})
    message = str(info.value)
    assert "missing required parameter 'mode'" in message
    assert "got 500" in message
    assert "unknown parameter 'x'" in message


def test_no_parameters() -> None:
    assert describe(None) == "This function takes no parameters."
    with pytest.raises(ValueError, match=r"unknown parameter 'x'.*takes no parameters"):
        validate_args("fn", None, {"x": 1})


@pytest.mark.parametrize(
    "decl",
    [
        {"name": "1x", "description": "d"},
        {"name": "x", "description": ""},
        {"name": "x", "description": "d", "extra": 1},
        {"name": "x", "description": "d", "behavior": "BLOCKING_SOMETIMES"},
        {"name": "x", "description": "d", "parameters": {"type": "OBJECT", "properties": {}}},
        {
            "name": "x",
            "description": "d",
            "parameters": {"type": "OBJECT", "properties": {"a": {"type": "ARRAY"}}},
        },
        {
            "name": "x",
            "description": "d",
            "parameters": {"type": "OBJECT", "properties": {"a": {"type": "STRING"}}},
        },
        {
            "name": "x",
            "description": "d",
            "parameters": {
                "type": "OBJECT",
                "properties": {"a": {"type": "STRING", "description": "a"}},
                "required": ["b"],
            },
        },
    ],
)
def test_check_declaration_refuses_what_the_validator_cannot_check(decl: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        check_declaration(decl)


# ---------------------------------------------------------------- the registry


async def test_unknown_function_lists_the_known_ones(make: Make) -> None:
    _, registry = make()
    message = await error(registry, "kitchen_light", {"action": "on"})
    assert message.startswith("unknown function 'kitchen_light'")
    for name in ("lamp", "dimmer", "pump", "valve", GET_DEVICE_STATES):
        assert name in message


async def test_registry_refuses_inconsistent_tools() -> None:
    async def run(args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {}

    registry = ToolRegistry()
    with pytest.raises(ValueError, match="named differently"):
        registry.add(Tool("a", function_declaration("b", "d"), run))
    with pytest.raises(ValueError, match="disagree"):
        registry.add(Tool("a", function_declaration("a", "d", blocking=False), run))
    with pytest.raises(ValueError, match="disagree"):
        registry.add(Tool("a", function_declaration("a", "d"), run, blocking=False))
    registry.add(Tool("a", function_declaration("a", "d", blocking=False), run, blocking=False))
    with pytest.raises(ValueError, match="declared twice"):
        registry.add(Tool("a", function_declaration("a", "d"), run))
    assert registry.declarations() == [{"name": "a", "description": "d", "behavior": NON_BLOCKING}]


# ---------------------------------------------------------------- declarations


async def test_declarations(make: Make) -> None:
    _, registry = make()
    decls = {d["name"]: d for d in registry.declarations()}
    assert list(decls) == ["lamp", "dimmer", "pump", "valve", GET_DEVICE_STATES]
    for decl in decls.values():
        check_declaration(decl)
        assert "behavior" not in decl
        assert registry.is_blocking(decl["name"])
    lamp, dimmer, pump = decls["lamp"], decls["dimmer"], decls["pump"]
    assert lamp["description"].startswith("The desk lamp.")  # the config's words first
    assert lamp["parameters"]["required"] == ["action"]
    assert lamp["parameters"]["properties"]["action"]["enum"] == ["on", "off", "blink"]
    assert "brightness" not in lamp["parameters"]["properties"]  # only a PWM LED dims
    brightness = dimmer["parameters"]["properties"]["brightness"]
    assert (brightness["type"], brightness["minimum"], brightness["maximum"]) == ("INTEGER", 0, 100)
    assert pump["description"].startswith("The garden pump.")
    assert "600 s" in pump["description"] and "2 s" in pump["description"]
    props = pump["parameters"]["properties"]
    assert props["on"]["type"] == "BOOLEAN" and pump["parameters"]["required"] == ["on"]
    assert (props["seconds"]["type"], props["seconds"]["maximum"]) == ("NUMBER", 600.0)
    assert "parameters" not in decls[GET_DEVICE_STATES]


async def test_non_blocking_declarations(make: Make) -> None:
    _, registry = make(non_blocking=True, timeout_s=2.0)
    for name in ("lamp", "dimmer", "pump", "valve"):
        assert registry.tools[name].declaration["behavior"] == NON_BLOCKING
        assert not registry.is_blocking(name)
    # A read answers at once: the model may as well wait for it.
    assert registry.is_blocking(GET_DEVICE_STATES)
    # A NON_BLOCKING call lasts as long as its blink or pulse may.
    assert registry.tools["pump"].timeout_s == 2.0 + 600.0
    assert registry.tools["lamp"].timeout_s == 2.0 + 3600.0


async def test_no_devices_no_tools(make: Make) -> None:
    _, registry = make(led=(), relay=())
    assert registry.declarations() == []


# ---------------------------------------------------------------- LEDs


async def test_led_on_off(make: Make, factory: MockFactory) -> None:
    _, registry = make()
    out = await ok(registry, "lamp", {"action": "on"})
    assert out == {"kind": "led", "pin": 17, "pwm": False, "state": "on", "brightness": 100}
    assert factory.pin(17).state == 1
    await ok(registry, "lamp", {"action": "off"})
    assert factory.pin(17).state == 0


async def test_pwm_led_brightness_honours_active_low(make: Make, factory: MockFactory) -> None:
    _, registry = make()
    assert factory.pin(18).state == 1.0  # active-low and off
    out = await ok(registry, "dimmer", {"action": "on", "brightness": 30})
    assert out["brightness"] == 30
    assert lit(factory, 18, active_high=False) == pytest.approx(0.3)
    await ok(registry, "dimmer", {"action": "on", "brightness": 80.0})  # JSON's 80.0 is 80
    assert lit(factory, 18, active_high=False) == pytest.approx(0.8)
    await ok(registry, "dimmer", {"action": "on"})
    assert lit(factory, 18, active_high=False) == 1.0
    out = await ok(registry, "dimmer", {"action": "on", "brightness": 0})
    assert out["state"] == "off" and factory.pin(18).state == 1.0


async def test_led_blink_toggles_the_pin(make: Make, factory: MockFactory) -> None:
    _, registry = make()
    pin = factory.pin(17)
    out = await ok(registry, "lamp", {"action": "blink"})
    assert out["state"] == "blinking" and "blink_ends_in_s" not in out
    await until(lambda: len(pin.states) >= 5, what="the LED to blink")
    await ok(registry, "lamp", {"action": "off"})
    assert pin.state == 0


async def test_timed_blink_returns_to_what_was_before(make: Make, factory: MockFactory) -> None:
    tools, registry = make()
    await ok(registry, "dimmer", {"action": "on", "brightness": 40})
    out = await ok(registry, "dimmer", {"action": "blink", "seconds": 0.2})
    assert out["state"] == "blinking" and 0 < out["blink_ends_in_s"] <= 0.2
    await until(lambda: tools.states()["dimmer"]["state"] == "on", what="the blink to end")
    assert tools.states()["dimmer"]["brightness"] == 40
    assert lit(factory, 18, active_high=False) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("name", "args", "words"),
    [
        ("lamp", {}, "missing required parameter 'action'"),
        ("lamp", {"action": "dim"}, '\'action\' must be one of "on", "off", "blink"'),
        ("lamp", {"action": True}, "'action' must be one of"),
        ("lamp", {"action": "on", "brightness": 50}, "unknown parameter 'brightness'"),
        ("lamp", {"action": "on", "colour": "red"}, "unknown parameter 'colour'"),
        ("lamp", {"action": "on", "seconds": 3}, '"seconds" goes only with action "blink"'),
        ("lamp", {"action": "blink", "seconds": 0}, "'seconds' must be a number from 0.1 to 3600"),
        ("lamp", {"action": "blink", "seconds": 3601}, "from 0.1 to 3600"),
        ("lamp", {"action": "blink", "seconds": "5"}, "got '5'"),
        ("dimmer", {"action": "on", "brightness": 150}, "from 0 to 100, got 150"),
        ("dimmer", {"action": "on", "brightness": -5}, "got -5"),
        ("dimmer", {"action": "on", "brightness": 50.5}, "'brightness' must be an integer"),
        ("dimmer", {"action": "on", "brightness": True}, "got true"),
        ("dimmer", {"action": "off", "brightness": 50}, '"brightness" goes only with action "on"'),
        ("lamp", ["on"], "the arguments must be an object"),
    ],
)
async def test_bad_led_calls_change_nothing(
    make: Make, factory: MockFactory, name: str, args: object, words: str
) -> None:
    _, registry = make()
    await ok(registry, "dimmer", {"action": "on", "brightness": 20})
    before = pins(factory)
    message = await error(registry, name, args)
    assert words in message
    assert "Nothing was changed" in message and "Parameters: action (required)" in message
    assert pins(factory) == before


# ---------------------------------------------------------------- relays


@pytest.mark.parametrize(("relay", "on_level"), [(PUMP, 1.0), (VALVE, 0.0)])
async def test_relay_on_off_honours_active_high(
    make: Make, factory: MockFactory, relay: RelayToolConfig, on_level: float
) -> None:
    _, registry = make(relay=(relay,), led=())
    assert factory.pin(relay.pin).state == 1.0 - on_level  # off from the start
    out = await ok(registry, relay.name, {"on": True})
    assert factory.pin(relay.pin).state == on_level
    assert out["on"] is True and out["on_for_s"] == 0.0
    assert out["auto_off_in_s"] == pytest.approx(600.0, abs=0.5)
    assert out["auto_off_at"] == pytest.approx(time.time() + 600, abs=2)
    await ok(registry, relay.name, {"on": False})
    assert factory.pin(relay.pin).state == 1.0 - on_level


async def test_relay_pulse(make: Make, factory: MockFactory, caplog) -> None:
    caplog.set_level(logging.INFO)
    tools, registry = make(relay=(PUMP,), led=())
    out = await ok(registry, "pump", {"on": True, "seconds": 0.15})
    assert out["on"] and out["auto_off_in_s"] == pytest.approx(0.15, abs=0.05)
    assert factory.pin(27).state == 1.0
    await until(lambda: factory.pin(27).state == 0.0, what="the pulse to end")
    assert tools.states()["pump"]["on"] is False
    last = hardware_records(caplog)[-1]
    assert (last.EDGE_EVENT, last.EDGE_TOOL, last.EDGE_CAUSE) == ("relay_off", "pump", "pulse_end")


async def test_relay_max_on_time_switches_off_without_the_model(
    make: Make, factory: MockFactory, caplog
) -> None:
    caplog.set_level(logging.INFO)
    relay = RelayToolConfig(name="heater", pin=5, max_on_seconds=0.2, active_high=False)
    tools, registry = make(relay=(relay,), led=())
    await ok(registry, "heater", {"on": True})
    assert factory.pin(5).state == 0.0
    await until(lambda: factory.pin(5).state == 1.0, what="the max-on timer")
    assert tools.states()["heater"]["on"] is False
    last = hardware_records(caplog)[-1]
    # str(): journald fields are text, and the daemon's log filter makes them so.
    assert (last.EDGE_EVENT, last.EDGE_CAUSE, str(last.EDGE_PIN)) == (
        "relay_off",
        "max_on_time",
        "5",
    )


async def test_a_pulse_never_outlasts_max_on(make: Make) -> None:
    relay = RelayToolConfig(
        name="heater", pin=5, max_on_seconds=10, min_switch_interval_s=0, active_high=True
    )
    _, registry = make(relay=(relay,), led=())
    await ok(registry, "heater", {"on": True})
    # Already on: a pulse shortens the time left, never lengthens it past the max.
    out = await ok(registry, "heater", {"on": True, "seconds": 10})
    assert out["auto_off_in_s"] <= 10
    out = await ok(registry, "heater", {"on": True, "seconds": 1})
    assert out["auto_off_in_s"] == pytest.approx(1, abs=0.1)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        ({}, "missing required parameter 'on'"),
        ({"on": "true"}, "'on' must be true or false, got 'true'"),
        ({"on": 1}, "'on' must be true or false, got 1"),
        ({"on": True, "seconds": 601}, "'seconds' must be a number from 0.1 to 600, got 601"),
        ({"on": True, "seconds": 0}, "got 0"),
        ({"on": True, "seconds": True}, "got true"),
        ({"on": False, "seconds": 5}, '"seconds" goes only with "on": true'),
        ({"on": True, "speed": 3}, "unknown parameter 'speed'"),
        (None, "missing required parameter 'on'"),
    ],
)
async def test_bad_relay_calls_change_nothing(
    make: Make, factory: MockFactory, args: object, words: str
) -> None:
    _, registry = make()
    before = pins(factory)
    message = await error(registry, "pump", args)
    assert words in message and "Nothing was changed" in message
    assert "on (required): true or false" in message
    assert pins(factory) == before
    assert factory.pin(27).state == 0.0  # still safe


async def test_switching_on_again_too_soon_is_refused(make: Make, factory: MockFactory) -> None:
    tools, registry = make()
    await ok(registry, "valve", {"on": True})
    await ok(registry, "valve", {"on": True})  # already on: not a switch, not refused
    await ok(registry, "valve", {"on": False})  # off is never refused
    assert factory.pin(22).state == 1.0
    message = await error(registry, "valve", {"on": True})
    assert "refused" in message and "3600 s after its last switch" in message
    assert "try again in" in message and "still off" in message
    assert factory.pin(22).state == 1.0  # left as it was: off
    assert tools.states()["valve"]["can_switch_on_in_s"] > 3500


async def test_safe_at_start_up_whatever_the_pins_were(factory: MockFactory, make: Make) -> None:
    # Left "on" by whatever ran before: high for an active-high relay, low for
    # an active-low one.
    factory.pin(27).drive_high()
    factory.pin(22).drive_low()
    make()
    assert factory.pin(27).state == 0.0
    assert factory.pin(22).state == 1.0


async def test_close_and_exit_leave_relays_off(caplog) -> None:
    caplog.set_level(logging.INFO)
    # Plain mock pins keep their level when released, like a real chip; a
    # closed MockPWMPin would drop to 0 and hide an active-low relay left on.
    factory = MockFactory()
    tools = HardwareTools(ToolsConfig(led=(LAMP,), relay=(PUMP, VALVE)), factory)
    registry = ToolRegistry()
    tools.register(registry)
    for name in ("pump", "valve"):
        await ok(registry, name, {"on": True})
    await ok(registry, "lamp", {"action": "on"})
    tools.close()
    tools.close()  # idempotent
    assert (factory.pin(27).state, factory.pin(22).state, factory.pin(17).state) == (0, 1, 0)
    causes = {(r.EDGE_TOOL, r.EDGE_CAUSE) for r in hardware_records(caplog)}
    assert {("pump", "shutdown"), ("valve", "shutdown"), ("lamp", "shutdown")} <= causes


async def test_atexit_hook_makes_it_safe(factory: MockFactory, monkeypatch) -> None:
    hooks: list[Callable[[], None]] = []
    monkeypatch.setattr(hw_mod.atexit, "register", hooks.append)
    monkeypatch.setattr(hw_mod.atexit, "unregister", hooks.remove)
    tools = HardwareTools(ToolsConfig(relay=(PUMP,)), factory)
    registry = ToolRegistry()
    tools.register(registry)
    await ok(registry, "pump", {"on": True})
    assert len(hooks) == 1
    hooks[0]()  # what the interpreter does on the way out of a crash
    assert factory.pin(27).state == 0.0
    assert hooks == []  # close() unregistered it


async def test_all_safe(make: Make, factory: MockFactory) -> None:
    tools, registry = make()
    await ok(registry, "pump", {"on": True, "seconds": 100})
    await ok(registry, "dimmer", {"action": "blink"})
    tools.all_safe()
    assert factory.pin(27).state == 0.0 and lit(factory, 18, active_high=False) == 0.0
    states = tools.states()
    assert states["pump"]["auto_off_in_s"] is None
    assert states["dimmer"]["state"] == "off"
    # The valve was off already: its safe-off was no switch, so no interval runs.
    assert states["valve"]["can_switch_on_in_s"] == 0
    await ok(registry, "valve", {"on": True})


async def test_link_lost_switches_relays_off(make: Make, factory: MockFactory, caplog) -> None:
    caplog.set_level(logging.INFO)
    quick = RelayToolConfig(name="fan", pin=5, off_after_link_lost_s=0.1, active_high=True)
    never = RelayToolConfig(name="pump", pin=27, off_after_link_lost_s=0, active_high=True)
    tools, registry = make(relay=(quick, never), led=())
    await ok(registry, "fan", {"on": True})
    await ok(registry, "pump", {"on": True})
    tools.link_down()
    tools.link_down()  # still down: the clock is not restarted
    await until(lambda: factory.pin(5).state == 0.0, what="the link-lost timer")
    assert factory.pin(27).state == 1.0  # 0 means never
    assert [(r.EDGE_TOOL, r.EDGE_CAUSE) for r in hardware_records(caplog)][-1] == (
        "fan",
        "link_lost",
    )


async def test_link_back_in_time_keeps_relays_on(make: Make, factory: MockFactory) -> None:
    quick = RelayToolConfig(name="fan", pin=5, off_after_link_lost_s=0.1, active_high=True)
    tools, registry = make(relay=(quick,), led=())
    await ok(registry, "fan", {"on": True})
    tools.link_down()
    tools.link_up()
    # The link-lost timer is an event-loop timer (call_later, 0.1 s): the loop
    # runs timers in deadline order, so when this later one fires, it would
    # have fired too, however slow the machine.
    await asyncio.sleep(0.3)
    assert factory.pin(5).state == 1.0


# ---------------------------------------------------------------- reading states


async def test_get_device_states(make: Make) -> None:
    tools, registry = make()
    await ok(registry, "pump", {"on": True, "seconds": 30})
    await ok(registry, "dimmer", {"action": "on", "brightness": 25})
    out = await ok(registry, GET_DEVICE_STATES, {})
    devices = out["devices"]
    assert set(devices) == {"lamp", "dimmer", "pump", "valve"}
    assert devices["lamp"] == {
        "kind": "led",
        "pin": 17,
        "pwm": False,
        "state": "off",
        "brightness": 0,
    }
    assert devices["dimmer"]["brightness"] == 25 and devices["dimmer"]["pin"] == 18
    pump = devices["pump"]
    assert pump["on"] is True and pump["pin"] == 27
    assert pump["on_since"] == pytest.approx(time.time(), abs=2)
    assert pump["auto_off_in_s"] == pytest.approx(30, abs=0.5)
    assert devices["valve"]["on"] is False and devices["valve"]["auto_off_at"] is None
    assert devices == tools.states()
    message = await error(registry, GET_DEVICE_STATES, {"name": "pump"})
    assert "unknown parameter 'name'" in message


async def test_one_log_record_per_action(make: Make, caplog) -> None:
    _, registry = make()
    caplog.set_level(logging.INFO)
    caplog.clear()
    await ok(registry, "lamp", {"action": "on"})
    await ok(registry, "lamp", {"action": "on"})  # no change, no record
    await ok(registry, "pump", {"on": True})
    await ok(registry, "pump", {"on": True})
    await error(registry, "valve", {"on": "yes"})  # refused: no pin moved
    records = hardware_records(caplog)
    assert [(r.EDGE_EVENT, r.EDGE_TOOL, str(r.EDGE_PIN), r.EDGE_CAUSE) for r in records] == [
        ("led_on", "lamp", "17", "tool"),
        ("relay_on", "pump", "27", "tool"),
    ]


# ---------------------------------------------------------------- cancellation


async def test_cancelled_pulse_switches_the_relay_back_off(
    make: Make, factory: MockFactory, caplog
) -> None:
    caplog.set_level(logging.INFO)
    _, registry = make(non_blocking=True)
    task = asyncio.create_task(registry.call("pump", {"on": True, "seconds": 30}))
    await until(lambda: factory.pin(27).state == 1.0, what="the relay to go on")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert factory.pin(27).state == 0.0
    last = hardware_records(caplog)[-1]
    assert (last.EDGE_EVENT, last.EDGE_CAUSE) == ("relay_off", "cancelled")


async def test_cancelled_blink_restores_the_led(make: Make, factory: MockFactory) -> None:
    tools, registry = make(non_blocking=True)
    await ok(registry, "dimmer", {"action": "on", "brightness": 60})
    task = asyncio.create_task(registry.call("dimmer", {"action": "blink", "seconds": 30}))
    await until(lambda: tools.states()["dimmer"]["state"] == "blinking")
    pin = factory.pin(18)
    await until(lambda: len(pin.states) > 3, what="the blink to run")
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert tools.states()["dimmer"] == {
        "kind": "led",
        "pin": 18,
        "pwm": True,
        "state": "on",
        "brightness": 60,
    }
    assert lit(factory, 18, active_high=False) == pytest.approx(0.6)
    # The blink thread is stopped: no more toggling. A blink on the lamp is the
    # clock: while it toggles six times, one still running would have too.
    count = len(pin.states)
    control = factory.pin(17)
    control.clear_states()
    witness = asyncio.create_task(registry.call("lamp", {"action": "blink", "seconds": 30}))
    await until(lambda: len(control.states) >= 6, what="the lamp to blink")
    witness.cancel()
    with pytest.raises(asyncio.CancelledError):
        await witness
    assert len(pin.states) == count


async def test_non_blocking_pulse_reports_when_it_is_over(make: Make, factory: MockFactory) -> None:
    _, registry = make(non_blocking=True)
    outcome = await registry.call("pump", {"on": True, "seconds": 0.1})
    assert outcome.ok and outcome.output is not None
    assert outcome.output["result"] == "the pulse is over (switched off (pulse_end))"
    assert outcome.output["on"] is False and factory.pin(27).state == 0.0


async def test_a_later_call_takes_over_and_cancelling_the_first_undoes_nothing(
    make: Make, factory: MockFactory
) -> None:
    tools, registry = make(non_blocking=True)
    first = asyncio.create_task(registry.call("lamp", {"action": "blink", "seconds": 30}))
    await until(lambda: tools.states()["lamp"]["state"] == "blinking")
    await ok(registry, "lamp", {"action": "on"})
    outcome = await first  # superseded: it answers instead of waiting on
    assert outcome.ok and "superseded" in outcome.output["result"]  # type: ignore[index]
    assert tools.states()["lamp"]["state"] == "on" and factory.pin(17).state == 1


async def test_cancelled_before_it_ran_moves_nothing(make: Make, factory: MockFactory) -> None:
    _, registry = make()
    before = pins(factory)
    task = asyncio.create_task(registry.call("pump", {"on": True}))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert pins(factory) == before


async def test_timeout_is_an_error_and_undoes(make: Make, factory: MockFactory) -> None:
    _, registry = make(non_blocking=True)
    registry.tools["pump"] = dataclasses.replace(registry.tools["pump"], timeout_s=0.05)
    outcome = await registry.call("pump", {"on": True, "seconds": 30})
    assert outcome.error == "pump did not finish within 0.05 s"
    assert factory.pin(27).state == 0.0


# ---------------------------------------------------------------- any arguments at all

_KEYS = st.sampled_from(["action", "brightness", "seconds", "on", "x"])
_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=200),
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(min_value=0, max_value=1000),
    st.sampled_from(["on", "off", "blink", "ON", ""]),
    st.lists(st.integers(), max_size=2),
)
_ARGS = st.one_of(
    st.dictionaries(_KEYS, _VALUES, max_size=4),
    st.fixed_dictionaries(
        {"action": st.sampled_from(["on", "off", "blink"])},
        optional={"brightness": _VALUES, "seconds": _VALUES},
    ),
    st.fixed_dictionaries({"on": st.booleans()}, optional={"seconds": _VALUES}),
    st.sampled_from([None, [], "on"]),
)
_NAMES = st.sampled_from(["lamp", "dimmer", "pump", "valve", GET_DEVICE_STATES])


def _number(value: object, lo: float, hi: float, integer: bool = False) -> bool:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return False
    if integer and isinstance(value, float) and not value.is_integer():
        return False
    return lo <= value <= hi


def _should_accept(name: str, args: object, valve_switched: bool, valve_on: bool) -> bool:
    """An independent reading of the rules, to hold the implementation to."""
    if args is None:
        args = {}
    if not isinstance(args, dict):
        return False
    if name == GET_DEVICE_STATES:
        return args == {}
    if name in ("lamp", "dimmer"):
        allowed = {"action", "seconds"} | ({"brightness"} if name == "dimmer" else set())
        action = args.get("action")
        return (
            set(args) <= allowed
            and action in ("on", "off", "blink")
            and (
                "brightness" not in args
                or (action == "on" and _number(args["brightness"], 0, 100, True))
            )
            and (
                "seconds" not in args or (action == "blink" and _number(args["seconds"], 0.1, 3600))
            )
        )
    on = args.get("on")
    if not (set(args) <= {"on", "seconds"} and isinstance(on, bool)):
        return False
    if "seconds" in args and not (on and _number(args["seconds"], 0.1, 600)):
        return False
    # The valve may switch on once only: its interval is an hour.
    return not (name == "valve" and on and not valve_on and valve_switched)


@settings(max_examples=75, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(_NAMES, _ARGS), min_size=1, max_size=8))
def test_any_arguments_give_an_error_or_a_valid_action(calls: list[tuple[str, object]]) -> None:
    asyncio.run(_run_calls(calls))


async def _run_calls(calls: list[tuple[str, object]]) -> None:
    factory = MockFactory(pin_class=MockPWMPin)
    tools = HardwareTools(ToolsConfig(led=(LAMP, DIMMER), relay=(PUMP, VALVE)), factory)
    registry = ToolRegistry()
    tools.register(registry)
    relays = {"pump": (27, True), "valve": (22, False)}
    valve_switched = False
    try:
        for name, args in calls:
            before = pins(factory)
            valve_on = tools.states()["valve"]["on"]
            outcome: ToolOutcome = await registry.call(name, args)  # type: ignore[arg-type]
            assert outcome.ok == _should_accept(name, args, valve_switched, valve_on), (
                name,
                args,
                outcome,
            )
            if not outcome.ok:
                assert outcome.error and pins(factory) == before
            if name == "valve" and tools.states()["valve"]["on"] != valve_on:
                valve_switched = True
            # Whatever happened, each relay pin says exactly what the tool thinks.
            for relay, (pin, active_high) in relays.items():
                on = tools.states()[relay]["on"]
                assert factory.pin(pin).state == float(on == active_high)
        tools.all_safe()
        assert factory.pin(27).state == 0.0 and factory.pin(22).state == 1.0
    finally:
        tools.close()


async def test_a_name_gemini_would_refuse_is_refused_at_register(factory: MockFactory) -> None:
    # The config loader refuses it already; this is the last line of defence.
    tools = HardwareTools(ToolsConfig(led=(LedToolConfig(name="desk lamp", pin=17),)), factory)
    try:
        with pytest.raises(ValueError, match="not a valid function name"):
            tools.register(ToolRegistry())
    finally:
        tools.close()


async def test_every_device_logs_its_safe_state_at_shutdown(make: Make, caplog) -> None:
    caplog.set_level(logging.INFO)
    tools, registry = make()
    await ok(registry, "pump", {"on": True})
    caplog.clear()
    tools.close()
    # Never switched or not, each device leaves one record saying it is off.
    assert sorted((r.EDGE_TOOL, r.EDGE_EVENT, r.EDGE_CAUSE) for r in hardware_records(caplog)) == [
        ("dimmer", "led_off", "shutdown"),
        ("lamp", "led_off", "shutdown"),
        ("pump", "relay_off", "shutdown"),
        ("valve", "relay_off", "shutdown"),
    ]
