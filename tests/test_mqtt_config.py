"""The [mqtt] section and the [[tools.mqtt]] remote tools: what loads, what is
refused with the key to fix, and where the password comes from."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_daemon.config import (
    Config,
    ConfigError,
    MqttConfig,
    MqttParameterConfig,
    MqttToolConfig,
    load_config,
    mqtt_base_topic,
    mqtt_client_id,
    mqtt_node_id,
    render_effective,
    resolve_mqtt_password,
)

BROKER = '[mqtt]\nhost = "127.0.0.1"\n'
LIGHTS = (
    BROKER
    + """
[[tools.mqtt]]
name = "kitchen_lights"
description = "The kitchen lights."
topic = "zigbee2mqtt/{room}/set"
payload = '{"state": {state}}'
state_topic = "zigbee2mqtt/{room}"
[[tools.mqtt.parameters]]
name = "state"
type = "STRING"
enum = ["ON", "OFF"]
description = "on or off"
[[tools.mqtt.parameters]]
name = "room"
type = "STRING"
enum = ["kitchen", "hall"]
description = "which room"
"""
)


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.file == str(path)
    return info.value


def test_off_by_default() -> None:
    assert Config().mqtt == MqttConfig()
    assert Config().mqtt.host == ""
    assert Config().mqtt.discovery_prefix == "homeassistant"


def test_names_derive_from_the_host_name() -> None:
    m = MqttConfig(host="broker")
    assert mqtt_node_id(m, "Kitchen-Pi.local") == "kitchen_pi_local"
    assert mqtt_node_id(m, "---") == "edge_daemon"
    assert mqtt_base_topic(m, "kitchen") == "edge-daemon/kitchen"
    assert mqtt_client_id(m, "kitchen") == "edge-daemon-kitchen"
    named = MqttConfig(host="b", node_id="den", base_topic="house/den", client_id="c1")
    assert mqtt_node_id(named, "ignored") == "den"
    assert mqtt_base_topic(named, "ignored") == "house/den"
    assert mqtt_client_id(named, "ignored") == "c1"


def test_a_remote_tool_loads(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, LIGHTS), env={})
    (tool,) = cfg.tools.mqtt
    assert tool == MqttToolConfig(
        name="kitchen_lights",
        description="The kitchen lights.",
        topic="zigbee2mqtt/{room}/set",
        payload='{"state": {state}}',
        state_topic="zigbee2mqtt/{room}",
        parameters=(
            MqttParameterConfig("state", "STRING", "on or off", enum=("ON", "OFF")),
            MqttParameterConfig("room", "STRING", "which room", enum=("kitchen", "hall")),
        ),
    )
    assert tool.parameters[0].minimum is None


def test_render_round_trips_remote_tools(tmp_path: Path) -> None:
    text = LIGHTS.replace(
        "payload = '{\"state\": {state}}'", 'payload = \'{"state": {state}, "level": {level}}\''
    ) + (
        '[[tools.mqtt.parameters]]\nname = "level"\ntype = "NUMBER"\n'
        'description = "how bright"\nminimum = 0.5\n'
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.tools.mqtt[0].parameters[2].minimum == 0.5
    assert cfg.tools.mqtt[0].parameters[2].maximum is None
    rendered = render_effective(cfg, None)
    assert "[[tools.mqtt.parameters]]" in rendered and "maximum" not in rendered
    again = load_config(write(tmp_path, rendered, "again.toml"), env={})
    assert dataclasses.replace(again, source="") == dataclasses.replace(cfg, source="")


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[mqtt]\nhost = "mqtt://broker"\n', "mqtt.host", "no mqtt://"),
        ('[mqtt]\nhost = "broker:1883"\n', "mqtt.host", "no :port"),
        ('[mqtt]\nhost = "b"\nport = 0\n', "mqtt.port", "from 1 to 65535"),
        ('[mqtt]\nnode_id = "the den"\n', "mqtt.node_id", "letters, digits"),
        ('[mqtt]\nbase_topic = "home/+/x"\n', "mqtt.base_topic", "no +, #"),
        ('[mqtt]\nbase_topic = "home//x"\n', "mqtt.base_topic", "empty levels"),
        ('[mqtt]\nbase_topic = "$SYS/x"\n', "mqtt.base_topic", "leading $"),
        ('[mqtt]\ndiscovery_prefix = ""\n', "mqtt.discovery_prefix", "a topic"),
        ('[mqtt]\nclient_id = "a b"\n', "mqtt.client_id", "printable ASCII"),
        ('[mqtt]\nca_file = "/etc/ca.pem"\n', "mqtt.ca_file", "a CA file needs tls"),
        ('[mqtt]\npassword_file = "p"\n', "mqtt.password_file", "needs a user name"),
        ("[mqtt]\nkeepalive_s = 1\n", "mqtt.keepalive_s", "from 5 to 3600"),
        ("[mqtt]\nlisten_s = 0\n", "mqtt.listen_s", "from 0 to 60"),
        (
            "[mqtt]\nbackoff_initial_s = 90.0\n",
            "mqtt.backoff_initial_s",
            "no greater than mqtt.backoff_max_s",
        ),
        ('[mqtt]\npassword = "hunter2hunter2"\n', "mqtt.password", "mqtt.password_file"),
    ],
)
def test_bad_mqtt_settings(tmp_path: Path, text: str, key: str, words: str) -> None:
    err = load_error(tmp_path, text)
    assert err.key == key
    assert words in str(err)
    assert "hunter2" not in str(err)


def _tool(**changes: str) -> str:
    """LIGHTS with keys of the tool's own table set (a value of "" drops the key)."""
    head, params = LIGHTS.split("[[tools.mqtt.parameters]]", 1)
    lines = [line for line in head.splitlines() if line.split(" = ")[0] not in changes]
    lines += [f"{key} = {value}" for key, value in changes.items() if value]
    return "\n".join(lines) + "\n[[tools.mqtt.parameters]]" + params


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        (LIGHTS.replace(BROKER, ""), "tools.mqtt", "set mqtt.host"),
        (_tool(topic='"zigbee2mqtt/{name}/set"'), "tools.mqtt[0].topic", "{name}"),
        (_tool(topic='"zigbee2mqtt/#"'), "tools.mqtt[0].topic", "wildcard"),
        (_tool(topic='"homeassistant/switch/x/set"'), "tools.mqtt[0].topic", "own topics"),
        (_tool(topic='"edge-daemon/den/say"'), "tools.mqtt[0].topic", None),
        (_tool(state_topic='"z/{room}/+"'), "tools.mqtt[0].state_topic", "wildcard"),
        (_tool(payload="'{\"state\": {colour}}'"), "tools.mqtt[0].payload", "{colour}"),
        (_tool(payload="'{\"state\": {state},}'"), "tools.mqtt[0].payload", "not valid JSON"),
        (
            _tool(topic='"zigbee2mqtt/lights/set"', state_topic=""),
            "tools.mqtt[0].parameters",
            "room fill(s) no placeholder",
        ),
        (_tool(description='""'), "tools.mqtt[0].description", "a description"),
        (_tool(name='"get_device_states"'), "tools.mqtt[0].name", "a function name"),
        (_tool(qos="3"), "tools.mqtt[0].qos", "from 0 to 2"),
        (_tool(max_calls_per_minute="0"), "tools.mqtt[0].max_calls_per_minute", "from 1"),
        (
            LIGHTS.replace('enum = ["kitchen", "hall"]\n', ""),
            "tools.mqtt[0].topic",
            "only a STRING with an enum",
        ),
        (
            LIGHTS.replace('"kitchen", "hall"', '"kitchen", "up/stairs"'),
            "tools.mqtt[0].topic",
            "holds /",
        ),
        (
            LIGHTS.replace('name = "room"', 'name = "state"'),
            "tools.mqtt[0].parameters[1].name",
            "no other parameter",
        ),
        (
            LIGHTS.replace(
                'type = "STRING"\nenum = ["ON", "OFF"]', 'type = "BOOLEAN"\nenum = ["x"]'
            ),
            "tools.mqtt[0].parameters",
            "enum only on STRING",
        ),
        (
            LIGHTS.replace('type = "STRING"\nenum = ["ON", "OFF"]', 'type = "string"'),
            "tools.mqtt[0].parameters[0].type",
            "'STRING'",
        ),
        (
            LIGHTS + '[[tools.relay]]\nname = "kitchen_lights"\npin = 5\nactive_high = true\n',
            "tools.mqtt[0].name",
            "already the name of tools.relay[0]",
        ),
    ],
)
def test_bad_remote_tools(tmp_path: Path, text: str, key: str, words: str | None) -> None:
    if words is None:  # another daemon's topics are fair game: a fleet may talk
        load_config(write(tmp_path, text), env={})
        return
    err = load_error(tmp_path, text)
    assert err.key == key, str(err)
    assert words in str(err)


# ---------------------------------------------------------------- the password


def test_password_from_a_file_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "mqtt.pass").write_text("s3cret-pässword\n")
    path = write(tmp_path, '[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "mqtt.pass"\n')
    cfg = load_config(path, env={})
    secret = resolve_mqtt_password(cfg, env={})
    assert secret is not None and secret.reveal() == "s3cret-pässword"
    assert secret.source == f"file {tmp_path / 'mqtt.pass'}"
    assert "s3cret" not in repr(secret)


def test_password_from_the_systemd_credential(tmp_path: Path) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    cfg = Config(mqtt=MqttConfig(host="b", username="u"))
    env = {"CREDENTIALS_DIRECTORY": str(creds)}
    assert resolve_mqtt_password(cfg, env=env) is None  # no file: anonymous or no password
    (creds / "mqtt-password").write_text("")
    assert resolve_mqtt_password(cfg, env=env) is None  # empty, as the installer leaves it
    (creds / "mqtt-password").write_text("from-systemd\n")
    secret = resolve_mqtt_password(cfg, env=env)
    assert secret is not None and secret.reveal() == "from-systemd"
    assert secret.source == "systemd credential mqtt-password"


def test_a_password_file_that_cannot_be_used_says_so_without_its_content(tmp_path: Path) -> None:
    (tmp_path / "two").write_text("first-line-secret\nsecond\n")
    cfg = load_config(
        write(tmp_path, '[mqtt]\nhost = "b"\nusername = "u"\npassword_file = "two"\n'), env={}
    )
    with pytest.raises(ConfigError) as info:
        resolve_mqtt_password(cfg, env={})
    assert info.value.key == "mqtt.password_file"
    assert "one line" in str(info.value) and "first-line" not in str(info.value)
    cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, password_file="missing"))
    with pytest.raises(ConfigError) as info:
        resolve_mqtt_password(cfg, env={})
    assert "cannot read" in str(info.value)


# ---------------------------------------------------------------- the README


def _readme_section() -> str:
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    return readme[readme.index("## Home Assistant and MQTT") : readme.index("## Exit statuses")]


def test_the_readme_examples_load(tmp_path: Path) -> None:
    blocks = re.findall(r"```toml\n(.*?)```", _readme_section(), re.S)
    assert len(blocks) == 2, "a [mqtt] example and a remote tool"
    cfg = load_config(write(tmp_path, "\n".join(blocks)), env={})
    assert cfg.mqtt.host == "192.168.1.10" and cfg.mqtt.username == "edge-daemon"
    assert [t.name for t in cfg.tools.mqtt] == ["kitchen_lights"]


def test_the_readme_names_every_entity() -> None:
    from edge_daemon.mqtt import discovery
    from edge_daemon.mqtt.topics import Topics

    caps = discovery.Capabilities(mute=True, volume=True)
    names = {e.config["name"] for e in discovery.entities(Topics("b", "p", "n"), caps, "0")}
    section = _readme_section()
    start = section.index("**The entities**") + len("**The entities**")
    listed = section[start : section.index("Every entity is")]
    said = set(re.findall(r"\*([A-Z][a-z ]+)\*", listed))
    assert said == names, (names - said, said - names)


_words = st.sampled_from(["ON", "x", "", "a/b", "#", "{s}", "{n}", '{"k": {s}}', "$x", "kitchen"])
_param = st.fixed_dictionaries(
    {"name": st.sampled_from(["s", "n", "1x", ""])},
    optional={
        "type": st.sampled_from(["STRING", "INTEGER", "NUMBER", "BOOLEAN", "string"]),
        "description": st.sampled_from(["", "d"]),
        "enum": st.lists(_words, max_size=3),
        "minimum": st.one_of(st.integers(-5, 5), st.floats(-1e300, 1e300)),
        "maximum": st.integers(-5, 5),
    },
)
_tool = st.fixed_dictionaries(
    {"name": st.sampled_from(["t", "u", "take_photo"])},
    optional={
        "description": st.sampled_from(["", "does"]),
        "topic": _words,
        "payload": _words,
        "state_topic": _words,
        "qos": st.integers(-1, 3),
        "parameters": st.lists(_param, max_size=3),
    },
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tools=st.lists(_tool, max_size=3), host=st.sampled_from(["", "b"]))
def test_any_remote_tools_load_or_name_the_key(
    tmp_path_factory: pytest.TempPathFactory, tools: list[dict[str, Any]], host: str
) -> None:
    path = tmp_path_factory.mktemp("remote") / "c.toml"
    path.write_text(tomli_w({"mqtt": {"host": host}, "tools": {"mqtt": tools}}), encoding="utf-8")
    try:
        cfg = load_config(path, env={})
    except ConfigError as e:
        assert e.key and e.key.startswith("tools.mqtt"), str(e)
        return
    again = path.with_name("again.toml")
    again.write_text(render_effective(cfg, None), encoding="utf-8")
    assert load_config(again, env={}) == dataclasses.replace(cfg, source=str(again))
    for tool in cfg.tools.mqtt:
        from edge_daemon.tools.remote import RemoteTool

        RemoteTool(tool, broker=None, last_press=lambda: None).declaration()  # type: ignore[arg-type]


def tomli_w(data: dict[str, Any]) -> str:
    """Just enough TOML writing for the generated documents above."""
    out = [f"[mqtt]\nhost = {json.dumps(data['mqtt']['host'])}"]
    for tool in data["tools"]["mqtt"]:
        out.append("[[tools.mqtt]]")
        out += [f"{k} = {json.dumps(v)}" for k, v in tool.items() if k != "parameters"]
        for param in tool.get("parameters", []):
            out.append("[[tools.mqtt.parameters]]")
            out += [f"{k} = {json.dumps(v)}" for k, v in param.items()]
    return "\n".join(out) + "\n"
