"""The MQTT parts that need no broker: templates of the remote tools, what a
command payload becomes (or why it is refused), topic filters, discovery."""

from __future__ import annotations

import json

import pytest

from edge_daemon import __version__
from edge_daemon.mqtt import discovery, inbound
from edge_daemon.mqtt.bridge import _light_state
from edge_daemon.mqtt.topics import Topics, matches
from edge_daemon.tools import template

T = Topics("edge-daemon/den", "homeassistant", "den")
CAPS = discovery.Capabilities(relays=("pump",), leds=(("lamp", True), ("porch", False)))


# ---------------------------------------------------------------- templates


def test_json_payloads_take_json_values_and_text_payloads_take_text() -> None:
    args = {"state": 'O"N', "level": 50.0, "on": True, "n": 3}
    assert template.render_payload('{"state": {state}, "level": {level}}', args) == (
        '{"state": "O\\"N", "level": 50}'
    )
    assert template.render_payload("{state} {level} {on} {n}", args) == 'O"N 50 true 3'
    assert template.render_payload("{state}", args) == 'O"N'  # Tasmota's plain ON
    assert template.render_payload("[{n}, {on}]", args) == "[3, true]"
    # Braces that name no parameter are text, in either kind.
    assert template.render_payload('{"x": {"y": {n}}}', args) == '{"x": {"y": 3}}'
    assert template.render_payload("x {unknown}", args) == "x {unknown}"
    with pytest.raises(ValueError, match="not valid JSON"):
        template.render_payload('{"a": {state}', args)
    with pytest.raises(ValueError, match="larger than"):
        template.render_payload("{state}", {"state": "x" * (template.PAYLOAD_MAX + 1)})


def test_topics_take_only_plain_values() -> None:
    assert template.render_topic("z2m/{room}/{n}/set", {"room": "hall", "n": 2}) == "z2m/hall/2/set"
    assert template.render_topic("z/{on}", {"on": False}) == "z/false"
    for bad in ("#", "a+b", "\x00"):
        with pytest.raises(ValueError, match="wildcard"):
            template.render_topic("z/{room}", {"room": bad})
    with pytest.raises(ValueError, match=r"starts with \$"):
        template.render_topic("{room}/x", {"room": "$SYS"})
    assert template.topic_value_problem({"type": "STRING"})
    assert template.topic_value_problem({"type": "NUMBER"})
    assert template.topic_value_problem({"type": "STRING", "enum": ["a/b"]})
    assert not template.topic_value_problem({"type": "STRING", "enum": ["kitchen"]})
    assert not template.topic_value_problem({"type": "INTEGER"})


def test_sample_args_fit_their_schema() -> None:
    props = {
        "s": {"type": "STRING", "enum": ["ON", "OFF"]},
        "t": {"type": "STRING"},
        "i": {"type": "INTEGER", "minimum": 3},
        "f": {"type": "NUMBER", "maximum": -1.5},
        "b": {"type": "BOOLEAN"},
    }
    assert template.sample_args(props) == {"s": "ON", "t": "text", "i": 3, "f": -1.5, "b": True}


# ---------------------------------------------------------------- topics


@pytest.mark.parametrize(
    ("pattern", "topic", "hit"),
    [
        ("a/+/set", "a/b/set", True),
        ("a/+/set", "a/b/c/set", False),
        ("a/#", "a/b/c", True),
        ("a/#", "a", True),
        ("a/b", "a/b/c", False),
        ("homeassistant/+/den/+/config", "homeassistant/switch/den/relay_pump/config", True),
        ("homeassistant/+/den/+/config", "homeassistant/switch/kitchen/relay_pump/config", False),
    ],
)
def test_topic_filters(pattern: str, topic: str, hit: bool) -> None:
    assert matches(pattern, topic) is hit


def test_every_command_topic_is_heard() -> None:
    for topic in (T.listen, T.say, T.command("mute"), T.command("relay", "x")):
        assert any(matches(f, topic) for f in T.commands), topic
    for topic in (T.state, T.entity("relay", "x"), T.availability, "edge-daemon/hall/say"):
        assert not any(matches(f, topic) for f in T.commands), topic


# ---------------------------------------------------------------- commands in


def parse(topic: str, payload: bytes | str, caps: discovery.Capabilities = CAPS, **kw: bool):  # type: ignore[no-untyped-def]
    data = payload.encode() if isinstance(payload, str) else payload
    return inbound.parse(T, caps, topic, data, retain=kw.get("retain", False), listen_s=5.0)


@pytest.mark.parametrize(
    ("topic", "payload", "request_"),
    [
        (T.listen, "PRESS", {"cmd": "tap", "seconds": 5.0}),
        (T.listen, "", {"cmd": "tap", "seconds": 5.0}),
        (T.listen, "2.5", {"cmd": "tap", "seconds": 2.5}),
        (T.say, "Dinner is ready", {"cmd": "announce", "text": "Dinner is ready"}),
        (T.command("relay", "pump"), "ON", {"cmd": "device", "name": "pump", "args": {"on": True}}),
        (
            T.command("relay", "pump"),
            "OFF\n",
            {"cmd": "device", "name": "pump", "args": {"on": False}},
        ),
        (
            T.command("led", "lamp"),
            '{"state": "ON", "brightness": 40}',
            {"cmd": "device", "name": "lamp", "args": {"action": "on", "brightness": 40}},
        ),
        (
            T.command("led", "lamp"),
            '{"state": "ON", "effect": "blink"}',
            {"cmd": "device", "name": "lamp", "args": {"action": "blink"}},
        ),
        (
            T.command("led", "porch"),
            '{"state": "OFF"}',
            {"cmd": "device", "name": "porch", "args": {"action": "off"}},
        ),
        (
            T.command("led", "porch"),
            "ON",
            {"cmd": "device", "name": "porch", "args": {"action": "on"}},
        ),
    ],
)
def test_commands_in_home_assistants_formats(topic: str, payload: str, request_: dict) -> None:  # type: ignore[type-arg]
    assert parse(topic, payload) == request_


def test_mute_and_volume_only_when_the_daemon_has_them() -> None:
    with pytest.raises(inbound.Rejected, match="no such entity"):
        parse(T.command("mute"), "ON")
    caps = discovery.Capabilities(mute=True, volume=True)
    assert parse(T.command("mute"), "ON", caps) == {"cmd": "mute", "on": True}
    assert parse(T.command("volume"), "42.6", caps) == {"cmd": "volume", "level": 43}


@pytest.mark.parametrize(
    ("topic", "payload", "why"),
    [
        (T.listen, "PRESSS", "expected a number"),
        (T.listen, "0", "more than 0"),
        (T.listen, "61", "at most 60"),
        (T.listen, "nan", "expected a number"),
        (T.listen, "1e999", "expected a number"),
        (T.say, "   ", "needs some text"),
        (T.say, b"\xff\xfe", "not UTF-8"),
        (T.command("relay", "pump"), "on", "expected ON or OFF"),
        (T.command("relay", "pump"), "x" * 5000, "more than a command takes"),
        (T.command("relay", "ghost"), "ON", "no such entity"),
        (T.command("fan"), "ON", "no such entity"),
        (T.command("led", "lamp"), "{", "expected JSON"),
        (T.command("led", "lamp"), "[1]", "a JSON object"),
        (T.command("led", "lamp"), "[" * 4000, "expected JSON"),
        (T.command("led", "lamp"), '{"state": "MAYBE"}', '"state" must be'),
        (T.command("led", "lamp"), '{"state": "ON", "colour": "red"}', "unknown keys"),
        (T.command("led", "lamp"), '{"state": "ON", "brightness": "40"}', "must be a number"),
        (T.command("led", "lamp"), '{"state": "ON", "brightness": true}', "must be a number"),
        (T.command("led", "lamp"), '{"state": "OFF", "brightness": 3}', "takes nothing else"),
        (T.command("led", "lamp"), '{"state": "ON", "effect": "strobe"}', '"effect" must be'),
    ],
)
def test_bad_commands_are_refused_with_a_reason(topic: str, payload: str | bytes, why: str) -> None:
    with pytest.raises(inbound.Rejected, match=why):
        parse(topic, payload)


def test_a_retained_command_is_never_run() -> None:
    with pytest.raises(inbound.Rejected, match="retained"):
        parse(T.command("relay", "pump"), "ON", retain=True)


# ---------------------------------------------------------------- discovery


def test_discovery_configs_share_one_device_and_name_their_topics() -> None:
    configs = discovery.configs(T, CAPS, __version__)
    assert set(configs) == {
        "homeassistant/sensor/den/state/config",
        "homeassistant/binary_sensor/den/link/config",
        "homeassistant/button/den/talk/config",
        "homeassistant/notify/den/announce/config",
        "homeassistant/switch/den/relay_pump/config",
        "homeassistant/light/den/led_lamp/config",
        "homeassistant/light/den/led_porch/config",
        "homeassistant/sensor/den/tokens_used/config",
        "homeassistant/sensor/den/reconnects/config",
        "homeassistant/sensor/den/last_error/config",
    }
    devices = {json.dumps(c["device"], sort_keys=True) for c in configs.values()}
    assert len(devices) == 1
    assert len({c["unique_id"] for c in configs.values()}) == len(configs)
    assert {c["availability_topic"] for c in configs.values()} == {T.availability}
    assert configs["homeassistant/light/den/led_porch/config"]["supported_color_modes"] == ["onoff"]


def test_capabilities_come_from_the_status() -> None:
    status = {
        "devices": {
            "pump": {"kind": "relay", "on": False},
            "lamp": {"kind": "led", "pwm": True},
            "junk": 5,
        },
        "muted": False,
        "volume": 70,
    }
    caps = discovery.Capabilities.of(status)
    assert caps == discovery.Capabilities(("pump",), (("lamp", True),), mute=True, volume=True)
    assert discovery.Capabilities.of({"volume": True, "muted": "no"}) == discovery.Capabilities()


def test_light_state_in_the_json_schema() -> None:
    assert _light_state({"state": "on", "brightness": 40}, True) == {
        "state": "ON",
        "color_mode": "brightness",
        "brightness": 40,
    }
    assert _light_state({"state": "blinking"}, False) == {
        "state": "ON",
        "color_mode": "onoff",
        "effect": "blink",
    }
    assert _light_state({}, True) == {"state": "OFF", "color_mode": "brightness"}
