"""What the command dispatch does for other ways in than the control socket
(MQTT): switch a named LED or relay on the model's own path, announce a text
through the model, and say who asked (the source) in the journal record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from test_daemon import rig, turn

from edge_daemon import hardware_setup
from edge_daemon.commands import ANNOUNCE_MAX_CHARS, announcement
from edge_daemon.config import Config, LedToolConfig, RelayToolConfig, ToolsConfig
from edge_daemon.daemon import State
from edge_daemon.hardware_setup import attach_hardware
from edge_daemon.tools.hardware import HardwareTools
from edge_daemon.tools.registry import Tool, ToolOutcome, ToolRegistry, function_declaration

PUMP = RelayToolConfig(name="pump", pin=27, active_high=True, min_switch_interval_s=3600.0)
LAMP = LedToolConfig(name="lamp", pin=17, pwm=True)


@pytest.fixture
def pins() -> Iterator[MockFactory]:
    factory = MockFactory(pin_class=MockPWMPin)
    yield factory
    factory.reset()


def records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "EDGE_EVENT", None) == event]


async def test_device_switches_on_the_models_path_with_its_cause(
    pins: MockFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    hw = HardwareTools(ToolsConfig(led=(LAMP,), relay=(PUMP,)), pins, asyncio.get_running_loop())
    changes: list[str] = []
    hw.subscribe(changes.append)
    try:
        async with rig() as r:
            r.daemon.devices = hw
            dispatch = r.daemon.commands.dispatch
            reply = await dispatch({"cmd": "device", "name": "pump", "args": {"on": True}}, "mqtt")
            assert reply["ok"] and reply["device"]["on"] is True
            assert pins.pin(27).state == 1
            reply = await dispatch(
                {"cmd": "device", "name": "lamp", "args": {"action": "on", "brightness": 40}},
                "mqtt",
            )
            assert reply["ok"] and pins.pin(17).state == pytest.approx(0.4)
            # Off is never refused; on again within min_switch_interval_s is,
            # in the device's own words, and the pin stays where it was.
            assert (await dispatch({"cmd": "device", "name": "pump", "args": {"on": False}}))["ok"]
            refused = await dispatch({"cmd": "device", "name": "pump", "args": {"on": True}})
            assert not refused["ok"] and "refused" in refused["error"]
            assert pins.pin(27).state == 0
            # Bad arguments are the validator's, as for the model.
            bad = await dispatch({"cmd": "device", "name": "lamp", "args": {"action": "glow"}})
            assert not bad["ok"] and '"action" must be one of' in bad["error"].replace("'", '"')
            unknown = await dispatch({"cmd": "device", "name": "ghost", "args": {"on": True}})
            assert not unknown["ok"] and "lamp, pump" in unknown["error"]
            assert not (await dispatch({"cmd": "device", "name": "pump", "args": [1]}))["ok"]
    finally:
        hw.close()
    switched = [
        (rec.EDGE_EVENT, rec.EDGE_TOOL, rec.EDGE_CAUSE)
        for rec in caplog.records
        if getattr(rec, "EDGE_EVENT", "") in ("relay_on", "relay_off", "led_on", "led_off")
    ]
    assert switched == [
        ("led_off", "lamp", "startup"),
        ("relay_off", "pump", "startup"),
        ("relay_on", "pump", "mqtt"),
        ("led_on", "lamp", "mqtt"),
        ("relay_off", "pump", "ctl"),
        ("led_off", "lamp", "shutdown"),
        ("relay_off", "pump", "shutdown"),
    ]
    # The listener heard every change after it subscribed, refusals none.
    assert changes == ["pump", "lamp", "pump", "lamp", "pump"]


async def test_a_daemon_without_devices_says_so() -> None:
    async with rig() as r:
        reply = await r.daemon.commands.dispatch({"cmd": "device", "name": "pump"}, "mqtt")
        assert reply == {
            "ok": False,
            "error": "this daemon has no LEDs or relays (GPIO unavailable?)",
        }


async def test_announce_goes_through_the_model_quoted() -> None:
    async with rig() as r:
        dispatch = r.daemon.commands.dispatch
        reply = await dispatch({"cmd": "announce", "text": ' Dinner is "ready" '}, "mqtt")
        assert reply["ok"]
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].typed)
        assert r.fake.turns[-1].input_text == announcement('Dinner is "ready"')
        assert r.fake.turns[-1].input_text.endswith(': "Dinner is \\"ready\\""')
        await r.state(State.IDLE)
        for bad in ("", "   ", 5, None, "x" * (ANNOUNCE_MAX_CHARS + 1)):
            reply = await dispatch({"cmd": "announce", "text": bad}, "mqtt")
            assert not reply["ok"], bad
        assert sum(t.typed for t in r.fake.turns) == 1


async def test_a_turn_names_its_source(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with rig() as r:
        await r.daemon.commands.dispatch({"cmd": "tap", "seconds": 0.3}, "mqtt")
        await r.state(State.IDLE)
    opened = [rec.getMessage() for rec in records(caplog, "state") if rec.EDGE_STATE == "listening"]
    assert opened == ["state idle -> listening (mqtt)"]


async def test_tokens_used_add_up_over_answers() -> None:
    async with rig() as r:
        assert r.daemon.counters.tokens_used == 0
        await turn(r)
        await r.state(State.SPEAKING)
        await r.state(State.IDLE)
        first = r.daemon.counters.tokens_used
        assert first > 0
        await turn(r)
        await r.state(State.SPEAKING)
        await r.state(State.IDLE)
        assert r.daemon.counters.tokens_used > first
        assert r.daemon.status()["counters"]["tokens_used"] == r.daemon.counters.tokens_used


async def test_the_registry_tells_listeners_of_every_answered_call() -> None:
    async def ok(args: Mapping[str, Any]) -> Mapping[str, Any]:
        return {"echo": dict(args)}

    registry = ToolRegistry()
    registry.add(Tool("echo", function_declaration("echo", "Echoes."), ok))
    heard: list[tuple[str, dict[str, Any], ToolOutcome]] = []
    registry.listeners.append(lambda name, args, outcome: heard.append((name, dict(args), outcome)))

    def broken(*_: object) -> None:
        raise RuntimeError("a listener that breaks")

    registry.listeners.append(broken)
    assert (await registry.call("echo", {"a": 1})).output == {"echo": {"a": 1}}
    assert not (await registry.call("nope", {})).ok
    assert [(n, a, o.ok) for n, a, o in heard] == [("echo", {"a": 1}, True), ("nope", {}, False)]


async def test_the_button_clock_counts_only_the_button(
    pins: MockFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with rig() as r:
        # What service.py does, on these mock pins: the daemon learns the button's clock.
        monkeypatch.setattr(hardware_setup, "make_pin_factory", lambda _simulate: pins)
        attach_hardware(r.daemon, Config(), simulate=True)
        assert r.daemon.button_touched() is None
        # A turn from MQTT is no finger, not even under --simulate.
        await r.daemon.commands.dispatch({"cmd": "tap", "seconds": 0.2}, "mqtt")
        await r.state(State.THINKING)
        await r.state(State.IDLE)
        assert r.daemon.button_touched() is None
        # Under --simulate, ctl drives the mock pin: that is a touch.
        await r.daemon.commands.dispatch({"cmd": "tap", "seconds": 0.2}, "ctl")
        await r.state(State.THINKING)
        await r.state(State.IDLE)
        touched = r.daemon.button_touched()
        assert touched is not None
        # A turn opened any other way is not.
        r.daemon.press("mqtt")
        r.daemon.release("mqtt")
        await r.state(State.IDLE)
        assert r.daemon.button_touched() == touched
        assert [s for _, s in r.daemon.history].count("listening") == 3


async def test_a_tap_never_ends_someone_elses_turn() -> None:
    def taps() -> list[asyncio.Task[object]]:
        return [t for t in asyncio.all_tasks() if t.get_name() == "tap" and not t.done()]

    async with rig() as r:
        dispatch = r.daemon.commands.dispatch
        # The button is held: a tap from outside is refused, and nothing is
        # left to release the button's turn later.
        r.daemon.press("button")
        refused = await dispatch({"cmd": "tap", "seconds": 0.2}, "mqtt")
        assert refused == {"ok": False, "error": "a turn is already open"}
        assert taps() == []
        r.daemon.release("button")
        await r.state(State.IDLE)
        # A tap's turn ended early and a finger opened another: the tap's
        # release, when it comes, leaves that one alone.
        assert (await dispatch({"cmd": "tap", "seconds": 0.3}, "mqtt"))["ok"]
        (pending,) = taps()
        r.daemon.release("button")
        r.daemon.press("button")
        await pending
        assert r.daemon.talking
        r.daemon.release("button")
        await r.state(State.IDLE)
