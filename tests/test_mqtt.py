"""The daemon on a real Mosquitto, read and driven the way Home Assistant does:
every topic comes from the discovery configs, never from constants."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from support.broker import Broker, free_port, home_assistant, running_broker
from support.mqtt_rig import mqtt_rig

from edge_daemon import __version__
from edge_daemon.commands import announcement
from edge_daemon.config import Secret
from edge_daemon.daemon import Daemon, State

NODE = "den"
DEVICES: dict[str, Any] = {
    "tools.relay": [
        {"name": "pump", "pin": 27, "active_high": True, "min_switch_interval_s": 0.0}
    ],
    "tools.led": [{"name": "lamp", "pin": 17, "pwm": True}, {"name": "porch", "pin": 22}],
}
ENTITIES = {
    ("sensor", "state"),
    ("binary_sensor", "link"),
    ("button", "talk"),
    ("notify", "announce"),
    ("switch", "relay_pump"),
    ("light", "led_lamp"),
    ("light", "led_porch"),
    ("sensor", "tokens_used"),
    ("sensor", "reconnects"),
    ("sensor", "last_error"),
    # The daemon's status reports muted and volume: both are announced.
    ("switch", "mute"),
    ("number", "volume"),
}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def events(caplog: pytest.LogCaptureFixture, *names: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "EDGE_EVENT", None) in names]


def base_of(found: Mapping[Any, Mapping[str, Any]]) -> str:
    """The README's layout: everything of a node sits beside its availability topic."""
    return found[("sensor", "state")]["availability_topic"].rsplit("/", 1)[0]


async def test_home_assistant_finds_every_entity_with_its_state(broker: Broker) -> None:
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=DEVICES):
        found = await ha.found(NODE, len(ENTITIES))
        assert set(found) == ENTITIES
        assert len({c["unique_id"] for c in found.values()}) == len(found)
        device = found[("sensor", "state")]["device"]
        assert all(c["device"] == device for c in found.values())
        assert device["model"] == "edge-daemon" and device["sw_version"] == __version__
        availability = {c["availability_topic"] for c in found.values()}
        assert len(availability) == 1
        await ha.value(availability.pop(), "online")
        await ha.value(found[("sensor", "state")]["state_topic"], "idle")
        await ha.value(found[("binary_sensor", "link")]["state_topic"], "ON")
        await ha.value(found[("switch", "relay_pump")]["state_topic"], "OFF")
        lamp = found[("light", "led_lamp")]
        assert lamp["schema"] == "json" and lamp["brightness_scale"] == 100
        await ha.value(
            lamp["state_topic"],
            json.dumps({"state": "OFF", "color_mode": "brightness"}, separators=(",", ":")),
        )
        diagnostics = found[("sensor", "tokens_used")]["state_topic"]
        await ha.until(lambda: ha.last(diagnostics), what="diagnostics")
        values = json.loads(ha.last(diagnostics) or b"{}")
        assert values == {"tokens_used": 0, "reconnects": 0, "last_error": ""}
        for key in ("tokens_used", "reconnects", "last_error"):
            assert found[("sensor", key)]["value_template"] == f"{{{{ value_json.{key} }}}}"


async def test_commands_as_home_assistant_sends_them(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    fast = {**DEVICES, "mqtt.listen_s": 0.5}
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=fast) as r:
        found = await ha.found(NODE, len(ENTITIES))
        state = found[("sensor", "state")]["state_topic"]
        await ha.value(state, "idle")

        # The talk button: a listening turn, answered, back to idle; and the
        # turn's events on the event topic.
        talk = found[("button", "talk")]
        await ha.send(talk["command_topic"], talk["payload_press"])
        await ha.value(state, "listening")
        await ha.value(state, "idle", timeout_s=30)
        assert [v.decode() for v in ha.history[state]] == [
            "idle",
            "listening",
            "thinking",
            "speaking",
            "idle",
        ]
        event_topic = f"{base_of(found)}/event"
        await ha.until(lambda: len(ha.history[event_topic]) >= 2, what="turn events")
        kinds = [json.loads(e)["event"] for e in ha.history[event_topic]]
        assert kinds == ["turn_started", "turn_ended"]

        # The relay: on through the model's path, its state published back.
        pump = found[("switch", "relay_pump")]
        await ha.send(pump["command_topic"], pump["payload_on"])
        await ha.value(pump["state_topic"], "ON")
        assert r.pins.pin(27).state == 1
        await ha.send(pump["command_topic"], pump["payload_off"])
        await ha.value(pump["state_topic"], "OFF")
        assert r.pins.pin(27).state == 0

        # The lights, in the JSON schema.
        lamp, porch = found[("light", "led_lamp")], found[("light", "led_porch")]
        await ha.send(lamp["command_topic"], '{"state": "ON", "brightness": 40}')
        await ha.until(
            lambda: json.loads(ha.last(lamp["state_topic"]) or b"{}").get("brightness") == 40
        )
        assert r.pins.pin(17).state == pytest.approx(0.4)
        await ha.send(porch["command_topic"], '{"state": "ON", "effect": "blink"}')
        await ha.until(
            lambda: json.loads(ha.last(porch["state_topic"]) or b"{}").get("effect") == "blink"
        )
        await ha.send(porch["command_topic"], '{"state": "OFF"}')
        await ha.until(lambda: json.loads(ha.last(porch["state_topic"]) or b"{}")["state"] == "OFF")

        # An announcement: said through the model, word for word.
        await ha.send(found[("notify", "announce")]["command_topic"], "Dinner is ready")
        await r.fake.wait_for(lambda f: any(t.typed for t in f.turns))
        assert [t.input_text for t in r.fake.turns if t.typed] == [
            announcement("Dinner is ready")
        ]
    switched = [
        (rec.EDGE_TOOL, rec.EDGE_EVENT, rec.EDGE_CAUSE)
        for rec in events(caplog, "relay_on", "relay_off", "led_on", "led_off", "led_blink")
        if rec.EDGE_CAUSE == "mqtt"
    ]
    assert switched == [
        ("pump", "relay_on", "mqtt"),
        ("pump", "relay_off", "mqtt"),
        ("lamp", "led_on", "mqtt"),
        ("porch", "led_blink", "mqtt"),
        ("porch", "led_off", "mqtt"),
    ]
    opened = [rec.getMessage() for rec in events(caplog, "state") if rec.EDGE_STATE == "listening"]
    assert opened == ["state idle -> listening (mqtt)"]


async def test_a_relay_from_home_assistant_keeps_the_relays_rules(broker: Broker) -> None:
    rules = {
        "tools.relay": [
            {
                "name": "pump",
                "pin": 27,
                "active_high": True,
                "min_switch_interval_s": 3600.0,
                "max_on_seconds": 2.0,
            }
        ]
    }
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=rules) as r:
        found = await ha.found(NODE, 8)
        pump = found[("switch", "relay_pump")]
        await ha.value(pump["state_topic"], "OFF")
        await ha.send(pump["command_topic"], "ON")
        await ha.value(pump["state_topic"], "ON")
        # Off by itself after max_on_seconds: no command, and the dashboard hears it.
        await ha.value(pump["state_topic"], "OFF", timeout_s=20)
        # On again within min_switch_interval_s: refused, nothing moves, and
        # the state is said again so a toggled dashboard snaps back.
        before = len(ha.history[pump["state_topic"]])
        await ha.send(pump["command_topic"], "ON")
        await r.until(lambda: r.bridge.counters["commands_failed"] == 1)
        await ha.until(lambda: len(ha.history[pump["state_topic"]]) > before)
        assert [v.decode() for v in ha.history[pump["state_topic"]]] == ["OFF", "ON", "OFF", "OFF"]
        assert [s.state for s in r.pins.pin(27).states] == [0, 1, 0]
        (refusal,) = [c for c in r.bridge.recent if not c["ok"]]
        assert "refused" in refusal["error"] and refusal["topic"] == pump["command_topic"]


HOSTILE: dict[tuple[str, str], list[bytes | str]] = {
    ("button", "talk"): ["PRESSS", "-1", "nan", "61", "1e999", "x" * 5000, b"\xff\xfe"],
    ("notify", "announce"): ["", "   ", b"\xc3\x28", "y" * 2000, "z" * 100_000],
    ("switch", "relay_pump"): ["on", "1", "true", '{"state": "ON"}', "ON ON", b"\xff", "O" * 10**6],
    ("light", "led_lamp"): [
        "{",
        "[]",
        "[" * 4000,
        '{"state": "ON", "brightness": "40"}',
        '{"state": "ON", "brightness": 400}',
        '{"state": "ON", "brightness": true}',
        '{"state": "MAYBE"}',
        '{"state": "ON", "colour": "red"}',
        '{"state": "OFF", "brightness": 3}',
        '{"state": "ON", "effect": "strobe"}',
    ],
    ("light", "led_porch"): ['{"state": "ON", "brightness": 50}', "null", "{}"],
    ("switch", "mute"): ["on", "1", "MUTE", b"\xff", "M" * 10**5],
    ("number", "volume"): ["loud", "-5", "101", "50.5.5", "nan", "1e999", b"\xfe"],
}


async def test_hostile_payloads_on_every_command_topic_change_nothing(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=DEVICES) as r:
        found = await ha.found(NODE, len(ENTITIES))
        await ha.value(found[("sensor", "state")]["availability_topic"], "online")
        commanded = {key for key, c in found.items() if "command_topic" in c}
        assert commanded == set(HOSTILE), "every entity with a command topic is attacked"
        base = base_of(found)
        sent: list[tuple[str, bytes | str, bool]] = [
            (found[key]["command_topic"], payload, False)
            for key, payloads in HOSTILE.items()
            for payload in payloads
        ]
        sent += [
            # Entities this device does not have.
            (f"{base}/relay/ghost/set", "ON", False),
            (f"{base}/led/ghost/set", '{"state": "ON"}', False),
            (f"{base}/fan/set", "ON", False),
            (f"{base}/a/b/set", "ON", False),
        ]
        history = list(r.daemon.history)
        pins = {n: list(r.pins.pin(n).states) for n in (17, 22, 27)}
        volume = r.daemon.volume.level
        for topic, payload, retain in sent:
            await ha.send(topic, payload, retain=retain)
        handled = lambda: r.bridge.counters["rejected"] + r.bridge.counters["commands"]  # noqa: E731
        await r.until(lambda: handled() >= len(sent), what="every hostile message handled")
        # Nothing changed: no state, no pin, no turn; every message said why.
        assert list(r.daemon.history) == history
        assert {n: list(r.pins.pin(n).states) for n in pins} == pins
        assert not r.fake.turns
        assert r.bridge.counters["commands"] == r.bridge.counters["commands_failed"]
        lines = events(caplog, "mqtt_rejected") + [
            rec for rec in events(caplog, "mqtt_command") if rec.levelno == logging.WARNING
        ]
        assert len(lines) == len(sent)
        for key in (("switch", "relay_pump"), ("light", "led_lamp"), ("light", "led_porch")):
            values = {v for v in ha.history[found[key]["state_topic"]]}
            assert len(values) == 1, (key, values)  # said again, never changed
        assert r.daemon.state is State.IDLE
        assert not r.daemon.muted and r.daemon.volume.level == volume
        # Still listening, and still obeying a good command.
        pump = found[("switch", "relay_pump")]
        await ha.send(pump["command_topic"], "ON")
        await ha.value(pump["state_topic"], "ON")


async def test_a_retained_command_waiting_on_the_broker_is_never_run(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    """A command someone published retained would be handed out again at every
    connect: a relay would switch at every start of the daemon."""
    caplog.set_level(logging.INFO)
    async with home_assistant(broker.port) as ha:
        await ha.send(f"edge-daemon/{NODE}/relay/pump/set", "ON", retain=True)
        async with mqtt_rig(broker.port, overrides=DEVICES) as r:
            found = await ha.found(NODE, len(ENTITIES))
            await ha.value(found[("sensor", "state")]["availability_topic"], "online")
            await r.until(lambda: r.bridge.counters["rejected"] == 1, what="the rejection")
            assert "retained" in r.bridge.recent[0]["error"]
            assert [s.state for s in r.pins.pin(27).states] == [0]
            assert r.bridge.counters["commands"] == 0
        await ha.send(f"edge-daemon/{NODE}/relay/pump/set", "", retain=True)  # tidy up
    (line,) = events(caplog, "mqtt_rejected")
    assert "retained command is ignored" in line.getMessage()


def with_mute_and_volume(calls: list[tuple[str, Any]]):  # type: ignore[no-untyped-def]
    """A dispatch with the mute and volume commands of the hands-free work
    (``ctl mute on|off``, ``ctl volume N``): ``{"cmd": "mute", "on": bool}``,
    ``{"cmd": "volume", "level": 0-100}``, and ``muted``/``volume`` in the
    status. Stands in for them where this branch has no voice pipeline."""

    def wrap(daemon: Daemon) -> None:
        real = daemon.commands.dispatch
        held: dict[str, Any] = {"muted": False, "volume": 50}

        async def dispatch(request: Mapping[str, Any], source: str = "ctl") -> Mapping[str, Any]:
            cmd = request.get("cmd")
            if cmd == "mute":
                calls.append(("mute", request["on"]))
                held["muted"] = request["on"]
                return {"ok": True, "muted": held["muted"]}
            if cmd == "volume":
                calls.append(("volume", request["level"]))
                held["volume"] = request["level"]
                return {"ok": True, "volume": held["volume"]}
            reply = await real(request, source)
            return {**reply, **held} if cmd == "status" else reply

        daemon.commands.dispatch = dispatch  # type: ignore[method-assign]

    return wrap


async def test_mute_and_volume_when_the_daemon_has_them(broker: Broker) -> None:
    calls: list[tuple[str, Any]] = []
    async with (
        home_assistant(broker.port) as ha,
        mqtt_rig(broker.port, wrap_dispatch=with_mute_and_volume(calls)),
    ):
        found = await ha.found(NODE, 9)
        mute, volume = found[("switch", "mute")], found[("number", "volume")]
        assert (volume["min"], volume["max"], volume["step"]) == (0, 100, 1)
        await ha.value(mute["state_topic"], "OFF")
        await ha.value(volume["state_topic"], "50")
        await ha.send(mute["command_topic"], mute["payload_on"])
        await ha.value(mute["state_topic"], "ON")
        await ha.send(volume["command_topic"], "42.6")
        await ha.value(volume["state_topic"], "43")
        for bad in ("101", "-1", "loud", "on"):
            await ha.send(volume["command_topic"], bad)
            await ha.send(mute["command_topic"], bad)
        await ha.send(volume["command_topic"], "7")
        await ha.value(volume["state_topic"], "7")
        assert calls == [("mute", True), ("volume", 43), ("volume", 7)]


async def test_remote_tools_publish_and_read_the_state_back(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    tool = {
        "name": "kitchen_lights",
        "description": "The ceiling lights of a room.",
        "topic": "zigbee2mqtt/{room}/set",
        "payload": '{"state": {state}}',
        "state_topic": "zigbee2mqtt/{room}",
        "state_timeout_s": 3.0,
        "max_calls_per_minute": 3,
        "parameters": [
            {"name": "state", "type": "STRING", "enum": ["ON", "OFF"], "description": "on/off"},
            {"name": "room", "type": "STRING", "enum": ["kitchen", "hall"], "description": "room"},
        ],
    }
    async with (
        home_assistant(broker.port) as ha,
        mqtt_rig(broker.port, overrides={"tools.mqtt": [tool]}) as r,
        zigbee_light(broker.port, "zigbee2mqtt/kitchen"),
    ):
        declared = r.fake.connections[0].received[0]["setup"]["tools"][0]["functionDeclarations"]
        (decl,) = [d for d in declared if d["name"] == "kitchen_lights"]
        assert decl["parameters"]["required"] == ["state", "room"]

        async def call(args: dict[str, Any]) -> dict[str, Any]:
            (call_id,) = await r.fake.tool_call([("kitchen_lights", args)])
            await r.fake.wait_for(lambda f: any(t["id"] == call_id for t in f.tool_responses))
            (answer,) = [t for t in r.fake.tool_responses if t["id"] == call_id]
            return dict(answer["response"])

        on = await call({"state": "ON", "room": "kitchen"})
        assert on["output"]["published"] == "zigbee2mqtt/kitchen/set"
        assert on["output"]["state"] == {"state": "ON", "linkquality": 80}
        # A device that does not answer: the publish still went, and the model is told.
        quiet = await call({"state": "OFF", "room": "hall"})
        assert quiet["output"]["state"] is None and "no answer" in quiet["output"]["note"]
        # Bad arguments: the hardware tools' validator, nothing published.
        bad = await call({"state": "DIM", "room": "kitchen"})
        assert '"state" must be one of' in bad["error"].replace("'", '"')
        # The fourth call in a minute is refused.
        assert "output" in await call({"state": "OFF", "room": "kitchen"})
        refused = await call({"state": "ON", "room": "kitchen"})
        assert "times in the last minute" in refused["error"]
        assert [m.decode() for m in ha.history["zigbee2mqtt/kitchen/set"]] == [
            '{"state": "ON"}',
            '{"state": "OFF"}',
        ]
        assert [m.decode() for m in ha.history["zigbee2mqtt/hall/set"]] == ['{"state": "OFF"}']
        # Every call is an event on the daemon's event topic.
        event_topic = f"edge-daemon/{NODE}/event"
        await ha.until(lambda: len(ha.history[event_topic]) >= 5)
        calls = [json.loads(e) for e in ha.history[event_topic]]
        assert [(c["name"], c["ok"]) for c in calls] == [
            ("kitchen_lights", True),
            ("kitchen_lights", True),
            ("kitchen_lights", False),
            ("kitchen_lights", True),
            ("kitchen_lights", False),
        ]
    assert len(events(caplog, "remote_tool")) == 3
    assert len(events(caplog, "remote_tool_refused")) == 1


async def test_a_remote_tool_behind_the_button_needs_a_finger(broker: Broker) -> None:
    tool = {
        "name": "garage_door",
        "description": "Opens the garage door.",
        "topic": "garage/door/set",
        "payload": "OPEN",
        "require_recent_press_s": 30.0,
    }
    async with (
        home_assistant(broker.port) as ha,
        mqtt_rig(broker.port, overrides={"tools.mqtt": [tool]}) as r,
    ):
        found = await ha.found(NODE, 7)

        async def call() -> dict[str, Any]:
            (call_id,) = await r.fake.tool_call([("garage_door", {})])
            await r.fake.wait_for(lambda f: any(t["id"] == call_id for t in f.tool_responses))
            return dict(next(t for t in r.fake.tool_responses if t["id"] == call_id)["response"])

        assert "press of the device's button" in (await call())["error"]
        # A turn started from Home Assistant is not a finger on the button.
        talk = found[("button", "talk")]
        await ha.send(talk["command_topic"], "0.3")
        await r.state(State.LISTENING)
        await r.state(State.IDLE, timeout_s=30)
        assert "press of the device's button" in (await call())["error"]
        # The physical button is.
        r.press_button()
        await r.state(State.LISTENING)
        r.release_button()
        await r.state(State.IDLE, timeout_s=30)
        assert (await call())["output"]["published"] == "garage/door/set"
        assert ha.history["garage/door/set"] == [b"OPEN"]


class zigbee_light:
    """A device on the broker: answers each command on ``<topic>/set`` with its
    new state on ``<topic>``, as Zigbee2MQTT does."""

    def __init__(self, port: int, topic: str) -> None:
        self.port, self.topic = port, topic
        self._task: asyncio.Task[None] | None = None
        self._ready = asyncio.Event()

    async def __aenter__(self) -> zigbee_light:
        self._task = asyncio.create_task(self._serve())
        await asyncio.wait_for(self._ready.wait(), 15)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _serve(self) -> None:
        import aiomqtt

        async with aiomqtt.Client("127.0.0.1", self.port) as client:
            await client.subscribe(f"{self.topic}/set", qos=1)
            self._ready.set()
            async for message in client.messages:
                state = json.loads(message.payload)["state"]  # type: ignore[arg-type]
                reply = json.dumps({"state": state, "linkquality": 80})
                await client.publish(self.topic, reply, qos=1, retain=True)


async def test_a_broker_restart_mid_session(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    b = Broker(tmp_path)
    b.start()
    try:
        async with mqtt_rig(b.port, overrides=DEVICES) as r:
            async with home_assistant(b.port) as ha:
                found = await ha.found(NODE, len(ENTITIES))
                await ha.value(found[("switch", "relay_pump")]["state_topic"], "OFF")
            b.stop()
            await r.until(lambda: not r.bridge.status()["connected"], what="the drop seen")
            # Meanwhile the device goes on: a turn, and the relay switched locally.
            r.daemon.press("test")
            r.daemon.release("test")
            await r.state(State.IDLE, timeout_s=30)
            reply = await r.daemon.commands.dispatch(
                {"cmd": "device", "name": "pump", "args": {"on": True}}
            )
            assert reply["ok"]
            await r.until(lambda: r.bridge.link.failures >= 2, what="two failed redials")
            # The broker comes back empty (no persistence): everything is announced again.
            b.start()
            async with home_assistant(b.port) as ha:
                found = await ha.found(NODE, len(ENTITIES))
                await ha.value(found[("sensor", "state")]["availability_topic"], "online")
                await ha.value(found[("switch", "relay_pump")]["state_topic"], "ON")
                await ha.value(found[("sensor", "state")]["state_topic"], "idle")
            assert r.bridge.link.connects == 2
    finally:
        b.stop()
    retries = events(caplog, "mqtt_retry")
    assert len(retries) == r.bridge.link.failures >= 2
    assert all(0 < rec.EDGE_DELAY_S <= 0.5 for rec in retries)
    assert len(events(caplog, "mqtt_connected")) == 2


async def test_a_broker_that_is_down_costs_only_log_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    nobody = free_port()
    tool = {"name": "doorbell", "description": "Rings it.", "topic": "door/bell", "payload": "1"}
    overrides = {**DEVICES, "tools.mqtt": [tool]}
    async with mqtt_rig(nobody, overrides=overrides, wait_connected=False) as r:
        await r.until(lambda: r.bridge.link.failures >= 3, what="three failed dials")
        r.daemon.press("test")
        r.daemon.release("test")
        await r.state(State.SPEAKING)
        await r.state(State.IDLE, timeout_s=30)
        status = r.daemon.status()["mqtt"]
        assert status["connected"] is False and "refused" in status["last_error"].lower()
        # A remote tool says so to the model, at once.
        (call_id,) = await r.fake.tool_call([("doorbell", {})])
        await r.fake.wait_for(lambda f: any(t["id"] == call_id for t in f.tool_responses))
        (answer,) = r.fake.tool_responses
        assert "is not connected; nothing was sent" in answer["response"]["error"]
    assert len(events(caplog, "mqtt_retry")) == r.bridge.link.failures


async def test_without_discovery_the_topics_still_work(broker: Broker) -> None:
    overrides = {**DEVICES, "mqtt.discovery": False}
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=overrides) as r:
        # No entities announced: the README's topic layout is all there is.
        await ha.value(f"edge-daemon/{NODE}/availability", "online")
        await ha.value(f"edge-daemon/{NODE}/relay/pump", "OFF")
        await ha.send(f"edge-daemon/{NODE}/relay/pump/set", "ON")
        await ha.value(f"edge-daemon/{NODE}/relay/pump", "ON")
        assert r.pins.pin(27).state == 1
        assert not [t for t in ha.history if t.startswith("homeassistant/")]


async def test_home_assistant_coming_back_gets_the_entities_again(broker: Broker) -> None:
    async with home_assistant(broker.port) as ha, mqtt_rig(broker.port, overrides=DEVICES) as r:
        await ha.found(NODE, len(ENTITIES))
        topic = "homeassistant/switch/den/relay_pump/config"
        assert len(ha.history[topic]) == 1
        await ha.send("homeassistant/status", "online")  # Home Assistant's birth message
        await ha.until(lambda: len(ha.history[topic]) == 2, what="the config announced again")
        assert ha.history[topic][0] == ha.history[topic][1]
        assert r.bridge.counters["stale_entities_removed"] == 0


async def test_stale_entities_of_this_node_are_removed_and_others_kept(broker: Broker) -> None:
    async with home_assistant(broker.port) as ha:
        old = "homeassistant/switch/den/relay_old/config"
        theirs = "homeassistant/switch/kitchen/relay_old/config"
        for topic in (old, theirs):
            await ha.send(topic, json.dumps({"name": "old", "command_topic": "x"}), retain=True)
        async with mqtt_rig(broker.port, overrides=DEVICES) as r:
            await ha.found(NODE, len(ENTITIES))
            await ha.value(old, b"")
            assert r.bridge.counters["stale_entities_removed"] == 1
        assert len(ha.history[theirs]) == 1
    # What the broker keeps now: the kitchen's, and not the den's old relay.
    async with home_assistant(broker.port) as fresh:
        await fresh.until(lambda: fresh.last(theirs), what="the kitchen's config")
        await fresh.until(lambda: fresh.entities(NODE), what="the den's configs")
        assert old not in fresh.history
        assert ("switch", "relay_old") not in fresh.entities(NODE)


async def test_password_access(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    password = "correct-horse-battery"
    b = Broker(tmp_path, users={"daemon": password, "ha": "ha-password-1"})
    b.start()
    try:
        auth = {"mqtt.username": "daemon"}
        async with (
            home_assistant(b.port, username="ha", password="ha-password-1") as ha,
            mqtt_rig(b.port, overrides=auth, password=Secret(password, "test")),
        ):
            found = await ha.found(NODE, 7)
            await ha.value(found[("sensor", "state")]["availability_topic"], "online")
        wrong = Secret("wrong-password-123", "test")
        async with mqtt_rig(b.port, overrides=auth, password=wrong, wait_connected=False) as r:
            await r.until(lambda: r.bridge.link.failures >= 2, what="refused twice")
            assert "not authori" in r.bridge.link.last_error.lower()
            assert r.daemon.state is State.IDLE
    finally:
        b.stop()
    text = "\n".join(rec.getMessage() for rec in caplog.records)
    assert password not in text and "wrong-password-123" not in text
