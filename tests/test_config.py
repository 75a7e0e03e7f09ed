"""Config loading, checking, secrets and the effective-config dump."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge_daemon import config as config_mod
from edge_daemon.config import (
    DEFAULT_CONFIG_PATH,
    DEFAULT_MODEL,
    GOOGLE_ENDPOINT,
    GOOGLE_EPHEMERAL_ENDPOINT,
    AudioConfig,
    Config,
    ConfigError,
    GeminiConfig,
    LedToolConfig,
    MqttParameterConfig,
    MqttToolConfig,
    RelayToolConfig,
    Secret,
    default_endpoint,
    load_config,
    render_effective,
    resolve_secret,
    with_overrides,
)

EXAMPLE = Path(__file__).resolve().parent.parent / "config" / "edge-daemon.toml"
FAKE_KEY = "AIzaTESTSECRET123"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert str(path) in str(info.value)
    assert info.value.file == str(path)
    return info.value


# ---------------------------------------------------------------- defaults and the example


def test_defaults() -> None:
    cfg = Config()
    assert cfg.source == ""
    assert cfg.audio.backend == "pyaudio"
    assert cfg.audio.chunk_ms == 40
    assert cfg.control.socket == "/run/edge-daemon/control.sock"
    assert cfg.logging.target == "auto"
    assert cfg.gemini.model == DEFAULT_MODEL


def test_missing_default_file_gives_builtin_defaults() -> None:
    if os.path.exists(DEFAULT_CONFIG_PATH):
        pytest.skip(f"{DEFAULT_CONFIG_PATH} exists on this machine")
    assert load_config(env={}) == Config()
    assert load_config(env={}).source == ""


def test_example_file_loads_and_equals_defaults() -> None:
    cfg = load_config(EXAMPLE, env={})
    assert cfg.source == str(EXAMPLE)
    assert dataclasses.replace(cfg, source="") == Config()


def test_example_file_shows_every_key_commented_out(tmp_path: Path) -> None:
    # The example is the owner's reference: every key must appear in it, and
    # as shipped it sets nothing (so --simulate may still fill the gaps).
    assert load_config(EXAMPLE, env={}).explicit == frozenset()
    text = EXAMPLE.read_text()
    # Keys, and the [[tools.led]]-style headers of the example devices.
    uncommented = re.sub(r"(?m)^#([a-z_]+ = |\[\[[a-z_.]+\]\]$)", r"\1", text)
    # The example remote tool needs a broker to publish to.
    uncommented = uncommented.replace('\nhost = ""\n', '\nhost = "broker.example"\n')
    cfg = load_config(write(tmp_path, uncommented), env={})
    every = {
        f"{section.name}.{key.name}"
        for section in dataclasses.fields(Config)
        if dataclasses.is_dataclass(section.default_factory)  # type: ignore[arg-type]
        for key in dataclasses.fields(section.default_factory)  # type: ignore[arg-type]
    }
    assert cfg.explicit == every
    # The scalar keys show their defaults; the device examples are examples,
    # one of each kind, each showing every key an entry takes.
    assert cfg.tools.led and cfg.tools.relay and cfg.tools.mqtt
    no_devices = dataclasses.replace(cfg.tools, led=(), relay=(), mqtt=())
    no_broker = dataclasses.replace(cfg.mqtt, host="")
    assert dataclasses.replace(cfg, tools=no_devices, mqtt=no_broker) == Config(source=cfg.source)
    raw = tomllib.loads(uncommented)["tools"]
    for kind, entry_cls in (
        ("led", LedToolConfig),
        ("relay", RelayToolConfig),
        ("mqtt", MqttToolConfig),
    ):
        for entry in raw[kind]:
            assert set(entry) == {f.name for f in dataclasses.fields(entry_cls)}, kind
    # A parameter takes enum or bounds, never both: together the examples show every key.
    shown = {key for entry in raw["mqtt"] for param in entry["parameters"] for key in param}
    assert shown == {f.name for f in dataclasses.fields(MqttParameterConfig)}


def test_env_var_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[audio]\nbackend = "wav"\n')
    cfg = load_config(env={"EDGE_DAEMON_CONFIG": str(path)})
    assert cfg.audio.backend == "wav"
    assert cfg.source == str(path)
    assert cfg.explicit == {"audio.backend"}


def test_explicit_path_beats_env_var(tmp_path: Path) -> None:
    named = write(tmp_path, '[audio]\nbackend = "null"\n', "a.toml")
    other = write(tmp_path, '[audio]\nbackend = "wav"\n', "b.toml")
    assert load_config(named, env={"EDGE_DAEMON_CONFIG": str(other)}).audio.backend == "null"


def test_missing_env_var_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="file not found") as info:
        load_config(env={"EDGE_DAEMON_CONFIG": str(missing)})
    assert info.value.file == str(missing)


def test_missing_explicit_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_config(missing, env={})
    assert str(info.value) == f"{missing}: file not found"
    assert info.value.key is None


def test_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path, env={})


def test_non_utf8_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_bytes(b'[gemini]\nvoice = "\xff"\n')
    with pytest.raises(ConfigError, match="UTF-8"):
        load_config(path, env={})


def test_partial_file_keeps_other_defaults(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[audio]\nchunk_ms = 20\nvolume = 1\n"), env={})
    assert cfg.audio == AudioConfig(chunk_ms=20, volume=1.0)
    assert isinstance(cfg.audio.volume, float)
    assert cfg.gemini == GeminiConfig()


# ---------------------------------------------------------------- errors


def test_toml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[audio]\nbackend = "wav"\nchunk_ms = = 3\n')
    assert err.key is None
    assert err.line == 3
    assert err.column is not None
    assert "line 3" in str(err)
    assert "TOML syntax error" in str(err)


def test_error_message_format(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[audio]\nchunk_ms = "abc"\n')
    path = tmp_path / "config.toml"
    assert str(err) == f"{path}: audio.chunk_ms: expected an integer from 20 to 40, got 'abc'"
    assert err.key == "audio.chunk_ms"
    assert err.expected == "an integer from 20 to 40"


def test_unknown_section(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[gemeni]\nvoice = 'Kore'\n")
    assert err.key == "gemeni"
    assert "unknown section" in str(err)
    assert "did you mean 'gemini'?" in str(err)
    assert "audio" in str(err)


def test_key_outside_a_section_points_at_its_section(tmp_path: Path) -> None:
    err = load_error(tmp_path, "chunk_ms = 20\n")
    assert err.key == "chunk_ms"
    assert "under [audio]" in str(err)


def test_unknown_key_with_suggestion(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[audio]\nchunk_msec = 20\n")
    assert err.key == "audio.chunk_msec"
    message = str(err)
    assert "unknown key" in message
    assert "did you mean 'chunk_ms'?" in message
    for valid in ("backend", "input_wav", "preroll_ms", "half_duplex"):
        assert valid in message


def test_unknown_key_without_close_match(tmp_path: Path) -> None:
    err = load_error(tmp_path, "[logging]\nzzzzzz = 1\n")
    assert "did you mean" not in str(err)
    assert "level, target" in str(err)


def test_internal_fields_are_not_settable(tmp_path: Path) -> None:
    assert load_error(tmp_path, 'source = "x"\n').key == "source"


def test_section_must_be_a_table(tmp_path: Path) -> None:
    err = load_error(tmp_path, "audio = 3\n")
    assert err.key == "audio"
    assert "expected a table [audio], got 3" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[gemini]\nvoice = 3", "gemini.voice", "a voice name"),
        ("[audio]\ninput_wav = 1.5", "audio.input_wav", "a string"),
        ("[audio]\nchunk_ms = 30.0", "audio.chunk_ms", "an integer"),
        ("[audio]\nchunk_ms = '30'", "audio.chunk_ms", "an integer"),
        ("[audio]\nvolume = '1'", "audio.volume", "a number"),
        ("[audio]\nhalf_duplex = 1", "audio.half_duplex", "true or false"),
        ("[audio]\nhalf_duplex = 'yes'", "audio.half_duplex", "true or false"),
        ("[audio]\nbackend = 'alsa'", "audio.backend", "one of 'pyaudio', 'wav', 'null'"),
        ("[audio]\nbackend = 1", "audio.backend", "one of 'pyaudio', 'wav', 'null'"),
        ("[logging]\nlevel = 'INFO'", "logging.level", "one of 'debug'"),
        ("[button]\nmode = ['hold']", "button.mode", "one of 'hold', 'toggle'"),
        ("[control]\nsocket = 2024-01-01", "control.socket", "a socket path"),
    ],
)
def test_wrong_type(tmp_path: Path, text: str, key: str, expected: str) -> None:
    err = load_error(tmp_path, text + "\n")
    assert err.key == key
    assert expected in err.expected
    assert ", got " in str(err)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("[audio]\nchunk_ms = true", "audio.chunk_ms"),
        ("[button]\npin = false", "button.pin"),
        ("[audio]\nvolume = true", "audio.volume"),
        ("[link]\nbackoff_max_s = true", "link.backoff_max_s"),
    ],
)
def test_bool_is_not_a_number(tmp_path: Path, text: str, key: str) -> None:
    err = load_error(tmp_path, text + "\n")
    assert err.key == key
    assert str(err).endswith("got true") or str(err).endswith("got false")


def test_int_is_accepted_for_float(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, "[link]\nbackoff_max_s = 60\n"), env={})
    assert cfg.link.backoff_max_s == 60.0
    assert isinstance(cfg.link.backoff_max_s, float)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("[audio]\nchunk_ms = 19", "audio.chunk_ms", "an integer from 20 to 40"),
        ("[audio]\nchunk_ms = 41", "audio.chunk_ms", "an integer from 20 to 40"),
        ("[audio]\nvolume = 2.5", "audio.volume", "a number from 0 to 2"),
        ("[audio]\nvolume = -0.1", "audio.volume", "a number from 0 to 2"),
        ("[audio]\nvolume = nan", "audio.volume", "a number from 0 to 2"),
        ("[audio]\npreroll_ms = 2001", "audio.preroll_ms", "an integer from 0 to 2000"),
        ("[audio]\npreroll_ms = -1", "audio.preroll_ms", "an integer from 0 to 2000"),
        ("[gemini]\nconnect_timeout_s = 0", "gemini.connect_timeout_s", "greater than 0"),
        ("[gemini]\nsetup_timeout_s = -1", "gemini.setup_timeout_s", "greater than 0"),
        ("[gemini]\nsetup_timeout_s = inf", "gemini.setup_timeout_s", "greater than 0"),
        ("[button]\nbounce_s = -0.01", "button.bounce_s", "at least 0"),
        ("[button]\npin = 28", "button.pin", "from 0 to 27"),
        ("[button]\npoll_interval_s = 0", "button.poll_interval_s", "greater than 0"),
        ("[link]\nbackoff_initial_s = 0", "link.backoff_initial_s", "greater than 0"),
        ("[link]\nbackoff_max_s = -5", "link.backoff_max_s", "greater than 0"),
        ("[link]\noffline_buffer_s = 61", "link.offline_buffer_s", "from 0 to 60"),
        (
            "[link]\nbackoff_initial_s = 5\nbackoff_max_s = 1",
            "link.backoff_initial_s",
            "no greater",
        ),
        ("[link]\noffline_buffer_s = 1" + "0" * 400, "link.offline_buffer_s", "from 0 to 60"),
    ],
)
def test_out_of_range(tmp_path: Path, text: str, key: str, expected: str) -> None:
    err = load_error(tmp_path, text + "\n")
    assert err.key == key
    assert expected in err.expected
    assert len(str(err)) < 400  # a huge value is shortened, not dumped


def test_range_edges_are_accepted(tmp_path: Path) -> None:
    text = (
        "[audio]\nchunk_ms = 20\nvolume = 0\npreroll_ms = 2000\n"
        "[button]\nbounce_s = 0\npin = 0\n"
        "[link]\nbackoff_initial_s = 30\nbackoff_max_s = 30\noffline_buffer_s = 0\n"
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert (cfg.audio.chunk_ms, cfg.audio.volume, cfg.link.backoff_initial_s) == (20, 0.0, 30.0)


@pytest.mark.parametrize(
    "endpoint", ["http://localhost:8765", "localhost:8765", "wss://", "ws://host /x", "ftp://x"]
)
def test_bad_endpoint(tmp_path: Path, endpoint: str) -> None:
    err = load_error(tmp_path, f"[gemini]\nendpoint = {json.dumps(endpoint)}\n")
    assert err.key == "gemini.endpoint"
    assert "ws://" in err.expected


@pytest.mark.parametrize("endpoint", ["", "ws://127.0.0.1:8765", "wss://proxy.example/ws?x=1"])
def test_good_endpoint(tmp_path: Path, endpoint: str) -> None:
    cfg = load_config(write(tmp_path, f"[gemini]\nendpoint = {json.dumps(endpoint)}\n"), env={})
    assert cfg.gemini.endpoint == endpoint


def test_model_gets_models_prefix(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[gemini]\nmodel = "gemini-live-x"\n'), env={})
    assert cfg.gemini.model == "models/gemini-live-x"
    cfg = load_config(write(tmp_path, '[gemini]\nmodel = "models/gemini-live-x"\n'), env={})
    assert cfg.gemini.model == "models/gemini-live-x"


@pytest.mark.parametrize("model", ["", "models/", "gemini live"])
def test_bad_model(tmp_path: Path, model: str) -> None:
    assert load_error(tmp_path, f"[gemini]\nmodel = {json.dumps(model)}\n").key == "gemini.model"


def test_bad_language_and_socket(tmp_path: Path) -> None:
    assert load_error(tmp_path, '[gemini]\nlanguage = "english please"\n').key == "gemini.language"
    long_socket = "/run/" + "x" * 200
    assert load_error(tmp_path, f'[control]\nsocket = "{long_socket}"\n').key == "control.socket"


@pytest.mark.parametrize("name", ["api_key", "key", "token", "API-KEY", "ephemeral_token"])
def test_secret_named_key_is_refused(tmp_path: Path, name: str) -> None:
    err = load_error(tmp_path, f'[gemini]\n"{name}" = "{FAKE_KEY}"\n')
    message = str(err)
    assert FAKE_KEY not in message
    assert "$GEMINI_API_KEY" in message
    assert "gemini.api_key_file" in message
    assert "gemini-api-key" in message
    assert "did you mean" not in message


def test_secret_at_top_level_is_refused(tmp_path: Path) -> None:
    err = load_error(tmp_path, f'api_key = "{FAKE_KEY}"\n')
    assert "$GEMINI_API_KEY" in str(err)
    assert FAKE_KEY not in str(err)


@pytest.mark.parametrize(
    "text",
    [
        '[gemini]\napi_key_file = "AIzaSyA-1234567890abcdefghijklmnopqrstu"\n',
        '[gemini]\nvoice = "AIzaSyA-1234567890abcdefghijklmnopqrstu"\n',
        '[gemini]\nauth = "AIzaSyA-1234567890abcdefghijklmnopqrstu"\n',
        '[gemini]\nendpoint = "wss://h/ws?key=AIzaSyA-1234567890abcdefghijklmnopqrstu"\n',
        '[gemini]\nendpoint = "wss://h/ws?access_token=auth_tokens/abc123"\n',
    ],
)
def test_key_pasted_into_a_value_is_never_echoed(tmp_path: Path, text: str) -> None:
    err = load_error(tmp_path, text)
    assert "1234567890abcdefghijklmnopqrstu" not in str(err)
    assert "auth_tokens/abc123" not in str(err)
    assert "$GEMINI_API_KEY" in str(err)


def test_error_keeps_no_value() -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), {"audio.chunk_ms": "abc"})
    assert "abc" not in vars(info.value).values()


# ---------------------------------------------------------------- devices: status LED and tools

LAMP = '[[tools.led]]\nname = "lamp"\npin = 17\n'
PUMP = '[[tools.relay]]\nname = "pump"\npin = 27\nactive_high = true\n'


def test_tool_entries_load(tmp_path: Path) -> None:
    text = (
        '[[tools.led]]\nname = "lamp"\npin = 17\npwm = true\ndescription = "desk lamp"\n'
        '[[tools.led]]\nname = "Led_2"\npin = 22\n'
        '[[tools.relay]]\nname = "pump"\npin = 27\nactive_high = false\nmax_on_seconds = 30\n'
        '[status_led]\nkind = "rgb"\nrgb_pins = [5, 6, 13]\n'
    )
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.tools.led == (
        LedToolConfig(name="lamp", pin=17, pwm=True, description="desk lamp"),
        LedToolConfig(name="Led_2", pin=22),
    )
    assert cfg.tools.relay == (
        RelayToolConfig(name="pump", pin=27, active_high=False, max_on_seconds=30.0),
    )
    assert cfg.status_led.rgb_pins == (5, 6, 13)
    assert {"tools.led", "tools.relay", "status_led.kind"} <= cfg.explicit


def test_a_relay_without_its_polarity_is_refused_naming_the_safe_level(tmp_path: Path) -> None:
    err = load_error(tmp_path, '[[tools.relay]]\nname = "pump"\npin = 27\n')
    assert err.key == "tools.relay[0].active_high"
    assert "off, the safe level, is HIGH" in str(err) and "is LOW" in str(err)


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ('[[tools.led]]\nname = "lamp"\n', "tools.led[0].pin"),
        ("[[tools.led]]\npin = 17\n", "tools.led[0].name"),
        (LAMP + "[[tools.led]]\npin = 22\n", "tools.led[1].name"),
        ("[[tools.relay]]\n", "tools.relay[0].name"),
    ],
)
def test_missing_required_key_names_its_path(tmp_path: Path, text: str, key: str) -> None:
    err = load_error(tmp_path, text)
    assert err.key == key
    assert str(err) == f"{tmp_path / 'config.toml'}: {key}: missing"


@pytest.mark.parametrize(
    "name",
    ["", "1lamp", "desk lamp", "lamp-1", "lämp", "a" * 65, "get_device_states", "take_photo"],
)
def test_bad_tool_name(tmp_path: Path, name: str) -> None:
    err = load_error(
        tmp_path, f"[[tools.relay]]\nname = {json.dumps(name)}\npin = 27\nactive_high = true\n"
    )
    assert err.key == "tools.relay[0].name"
    assert "function name" in err.expected
    assert "get_device_states" in err.expected  # says which names are taken


@pytest.mark.parametrize("name", ["_", "a" * 64, "Kitchen_Light_2", "_x9"])
def test_good_tool_name(tmp_path: Path, name: str) -> None:
    cfg = load_config(write(tmp_path, f'[[tools.led]]\nname = "{name}"\npin = 17\n'), env={})
    assert cfg.tools.led[0].name == name


def test_tool_names_are_unique_across_kinds(tmp_path: Path) -> None:
    err = load_error(
        tmp_path, LAMP + '[[tools.relay]]\nname = "lamp"\npin = 27\nactive_high = true\n'
    )
    assert err.key == "tools.relay[0].name"
    assert "'lamp' is already the name of tools.led[0]" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "owner"),
    [
        ('[[tools.led]]\nname = "lamp"\npin = 23\n', "tools.led[0].pin", "button.pin"),
        (
            LAMP + '[[tools.relay]]\nname = "pump"\npin = 17\nactive_high = true\n',
            "tools.relay[0].pin",
            "tools.led[0]",
        ),
        ('[status_led]\nkind = "led"\npin = 17\n' + LAMP, "tools.led[0].pin", "status_led.pin"),
        ('[status_led]\nkind = "pwm"\npin = 23\n', "status_led.pin", "button.pin"),
        (
            '[status_led]\nkind = "rgb"\nrgb_pins = [5, 6, 5]\n',
            "status_led.rgb_pins[2]",
            "status_led.rgb_pins[0]",
        ),
        (
            '[status_led]\nkind = "rgb"\nrgb_pins = [5, 6, 27]\n' + PUMP,
            "tools.relay[0].pin",
            "status_led.rgb_pins[2]",
        ),
        ("[button]\npin = 27\n" + PUMP, "tools.relay[0].pin", "button.pin"),
    ],
)
def test_a_pin_is_used_once(tmp_path: Path, text: str, key: str, owner: str) -> None:
    err = load_error(tmp_path, text)
    assert err.key == key
    assert f"is already used by {owner}" in str(err)


def test_unused_status_led_pins_do_not_collide(tmp_path: Path) -> None:
    # kind = "none" drives no pin; kind = "rgb" drives rgb_pins, not pin.
    text = "[status_led]\npin = 17\nrgb_pins = [27]\n" + LAMP + PUMP
    assert load_config(write(tmp_path, text), env={}).status_led.kind == "none"
    text = '[status_led]\nkind = "rgb"\npin = 17\nrgb_pins = [5, 6, 13]\n' + LAMP
    assert load_config(write(tmp_path, text), env={}).status_led.pin == 17


@pytest.mark.parametrize("pins", ["[]", "[5, 6]", "[5, 6, 13, 19]"])
def test_rgb_needs_three_pins(tmp_path: Path, pins: str) -> None:
    err = load_error(tmp_path, f'[status_led]\nkind = "rgb"\nrgb_pins = {pins}\n')
    assert err.key == "status_led.rgb_pins"
    assert "exactly three pins" in str(err)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[tools]\nled = [1]\n", "tools.led[0]", "a table"),
        ("[tools]\nled = 1\n", "tools.led", "an array"),
        (LAMP + 'colour = "red"\n', "tools.led[0].colour", "unknown key"),
        ('[[tools.led]]\nname = "lamp"\npin = 28\n', "tools.led[0].pin", "from 0 to 27"),
        ('[[tools.led]]\nname = "lamp"\npin = true\n', "tools.led[0].pin", "an integer"),
        (PUMP + "max_on_seconds = 0\n", "tools.relay[0].max_on_seconds", "from 0 to 86400"),
        (PUMP + "min_switch_interval_s = -1\n", "tools.relay[0].min_switch_interval_s", "0 to"),
        ("[status_led]\nrgb_pins = [5, 28, 6]\n", "status_led.rgb_pins[1]", "from 0 to 27"),
    ],
)
def test_bad_tool_entries(tmp_path: Path, text: str, key: str, words: str) -> None:
    err = load_error(tmp_path, text)
    assert err.key == key
    assert words in str(err)


def test_render_round_trips_devices(tmp_path: Path) -> None:
    text = (
        "[tools]\ntimeout_s = 3.0\n"
        '[[tools.led]]\nname = "lamp"\npin = 17\npwm = true\ndescription = "a \\"lamp\\""\n'
        '[[tools.led]]\nname = "led2"\npin = 22\n'
        '[[tools.relay]]\nname = "pump"\npin = 27\nactive_high = false\n'
        '[status_led]\nkind = "rgb"\nrgb_pins = [5, 6, 13]\n'
    )
    cfg = load_config(write(tmp_path, text), env={})
    rendered = render_effective(cfg, None)
    assert "[[tools.led]]" in rendered and "[[tools.relay]]" in rendered
    again = load_config(write(tmp_path, rendered, "again.toml"), env={})
    assert dataclasses.replace(again, source="") == dataclasses.replace(cfg, source="")
    assert again.tools.led[0].description == 'a "lamp"'


def test_with_overrides_keeps_and_checks_devices() -> None:
    cfg = with_overrides(Config(), {"tools.led": [{"name": "lamp", "pin": 17}]})
    assert cfg.tools.led == (LedToolConfig(name="lamp", pin=17),)
    cfg = with_overrides(cfg, {"audio.backend": "wav"})
    assert cfg.tools.led == (LedToolConfig(name="lamp", pin=17),)
    with pytest.raises(ConfigError) as info:
        with_overrides(cfg, {"button.pin": 17})
    assert info.value.key == "tools.led[0].pin"


def test_readme_wiring_example_loads(tmp_path: Path) -> None:
    readme = (EXAMPLE.parent.parent / "README.md").read_text()
    wiring = readme[readme.index("## Wiring") :]
    block = re.search(r"```toml\n(.*?)```", wiring, re.S)
    assert block, "the wiring section has a TOML example"
    cfg = load_config(write(tmp_path, block[1]), env={})
    assert [led.name for led in cfg.tools.led] == ["desk_lamp"]
    assert cfg.tools.relay[0].active_high is False
    assert cfg.status_led.pin == 25 and cfg.button.pin == 23


_entry_values = st.one_of(
    st.integers(min_value=-1, max_value=30),
    st.sampled_from(["lamp", "pump", "get_device_states", "1x", "", "a_b"]),
    st.booleans(),
    st.floats(min_value=-1, max_value=1e5),
)
_led_entry = st.dictionaries(
    st.sampled_from(["name", "pin", "description", "pwm", "active_high", "colour"]),
    _entry_values,
    max_size=5,
)
_relay_entry = st.dictionaries(
    st.sampled_from(["name", "pin", "active_high", "max_on_seconds", "min_switch_interval_s", "x"]),
    _entry_values,
    max_size=5,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    leds=st.lists(_led_entry, max_size=3),
    relays=st.lists(_relay_entry, max_size=3),
    button_pin=st.integers(min_value=0, max_value=27),
)
def test_any_device_entries_load_or_name_the_key(
    tmp_path_factory: pytest.TempPathFactory,
    leds: list[dict[str, object]],
    relays: list[dict[str, object]],
    button_pin: int,
) -> None:
    lines = [f"[button]\npin = {button_pin}"]
    for kind, entries in (("led", leds), ("relay", relays)):
        for entry in entries:
            lines.append(f"[[tools.{kind}]]")
            lines += [f"{k} = {emit(v)}" for k, v in entry.items()]
    path = tmp_path_factory.mktemp("devices") / "c.toml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    try:
        cfg = load_config(path, env={})
    except ConfigError as e:
        assert e.key and e.key.startswith(("tools.led[", "tools.relay[")), str(e)
        return
    used = [cfg.button.pin] + [d.pin for d in (*cfg.tools.led, *cfg.tools.relay)]
    assert len(set(used)) == len(used)
    names = [d.name for d in (*cfg.tools.led, *cfg.tools.relay)]
    assert len(set(names)) == len(names)
    again = path.with_name("again.toml")
    again.write_text(render_effective(cfg, None), encoding="utf-8")
    assert load_config(again, env={}) == dataclasses.replace(cfg, source=str(again))


# ---------------------------------------------------------------- with_overrides


def test_with_overrides_happy() -> None:
    base = Config(source="/etc/x.toml")
    cfg = with_overrides(base, {"audio.backend": "wav", "audio.volume": 1, "gemini.model": "m"})
    assert cfg.audio.backend == "wav"
    assert cfg.audio.volume == 1.0 and isinstance(cfg.audio.volume, float)
    assert cfg.gemini.model == "models/m"
    assert cfg.source == "/etc/x.toml"
    assert cfg.explicit == {"audio.backend", "audio.volume", "gemini.model"}
    assert base.audio.backend == "pyaudio"  # frozen: the original is untouched


def test_with_overrides_nested_mapping_and_explicit_union(tmp_path: Path) -> None:
    base = load_config(write(tmp_path, "[button]\npin = 5\n"), env={})
    cfg = with_overrides(base, {"audio": {"backend": "null"}})
    assert cfg.audio.backend == "null"
    assert cfg.button.pin == 5
    assert cfg.explicit == {"button.pin", "audio.backend"}


def test_with_overrides_empty_is_identity() -> None:
    assert with_overrides(Config(), {}) == Config()


@pytest.mark.parametrize(
    ("overrides", "key", "words"),
    [
        ({"audio.backend": "alsa"}, "audio.backend", "one of"),
        ({"audio.chunk_ms": True}, "audio.chunk_ms", "integer"),
        ({"audio.chunk_ms": 100}, "audio.chunk_ms", "from 20 to 40"),
        ({"audio.chunk": 20}, "audio.chunk", "did you mean 'chunk_ms'"),
        ({"audoi.backend": "wav"}, "audoi", "did you mean 'audio'"),
        ({"audio.chunk_ms.x": 1}, "audio.chunk_ms.x", "not a table"),
        ({"audio..x": 1}, "audio..x", "dotted key"),
        ({"audio": 3}, "audio", "a table"),
        ({"gemini.api_key": FAKE_KEY}, "gemini.api_key", "$GEMINI_API_KEY"),
        ({"link.backoff_initial_s": 99}, "link.backoff_initial_s", "no greater"),
        ({"audio.input_wav": Path("/x.wav")}, "audio.input_wav", "a string"),
    ],
)
def test_with_overrides_errors(overrides: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        with_overrides(Config(), overrides, origin="--simulate")
    assert info.value.key == key
    assert words in str(info.value)
    assert str(info.value).startswith("--simulate: ")
    assert FAKE_KEY not in str(info.value)


def test_default_endpoint() -> None:
    assert default_endpoint(Config()) == GOOGLE_ENDPOINT
    eph = with_overrides(Config(), {"gemini.auth": "ephemeral_token"})
    assert default_endpoint(eph) == GOOGLE_EPHEMERAL_ENDPOINT
    local = with_overrides(eph, {"gemini.endpoint": "ws://127.0.0.1:9"})
    assert default_endpoint(local) == "ws://127.0.0.1:9"


# ---------------------------------------------------------------- secrets


def test_secret_never_prints_itself() -> None:
    secret = Secret(FAKE_KEY, "$GEMINI_API_KEY")
    shown = [
        repr(secret),
        str(secret),
        f"{secret}",
        f"{secret!r}",
        f"{secret:>40}",
        "{}".format(secret),  # noqa: UP032 - str.format must be safe too
        "%s %r" % (secret, secret),  # noqa: UP031 - old-style formatting must be safe too
        repr([secret]),
        repr({"k": secret}),
    ]
    for text in shown:
        assert FAKE_KEY not in text
        assert "***" in text
    assert repr(secret) == "Secret('***')"
    assert secret.reveal() == FAKE_KEY
    assert secret.source == "$GEMINI_API_KEY"


def test_secret_equality_and_pickle() -> None:
    assert Secret("a", "x") == Secret("a", "y")
    assert Secret("a") != Secret("b")
    assert Secret("a") != "a"
    assert len({Secret("a"), Secret("a")}) == 1
    with pytest.raises(TypeError):
        pickle.dumps(Secret(FAKE_KEY))


def key_file(tmp_path: Path, content: str, name: str = "key") -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    return path


def test_resolve_order_env_then_file_then_credential(tmp_path: Path) -> None:
    keyf = key_file(tmp_path, "  from-file\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gemini-api-key").write_text("from-cred\n", encoding="utf-8")
    cfg = with_overrides(Config(), {"gemini.api_key_file": str(keyf)})
    env = {"GEMINI_API_KEY": "from-env", "CREDENTIALS_DIRECTORY": str(creds)}

    got = resolve_secret(cfg, env)
    assert got is not None and got.reveal() == "from-env" and got.source == "$GEMINI_API_KEY"

    got = resolve_secret(cfg, {**env, "GEMINI_API_KEY": ""})
    assert got is not None and got.reveal() == "from-file"
    assert got.source == f"file {keyf}"

    got = resolve_secret(Config(), env={"CREDENTIALS_DIRECTORY": str(creds)})
    assert got is not None and got.reveal() == "from-cred"
    assert got.source == "systemd credential gemini-api-key"


def test_resolve_nothing_is_none(tmp_path: Path) -> None:
    assert resolve_secret(Config(), env={}) is None
    assert resolve_secret(Config(), env={"CREDENTIALS_DIRECTORY": str(tmp_path)}) is None


def test_empty_key_is_absent(tmp_path: Path) -> None:
    keyf = key_file(tmp_path, "\n  \n")
    cfg = with_overrides(Config(), {"gemini.api_key_file": str(keyf)})
    assert resolve_secret(cfg, env={"GEMINI_API_KEY": "   "}) is None
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "gemini-api-key").write_text("k2\n", encoding="utf-8")
    got = resolve_secret(cfg, env={"GEMINI_API_KEY": "", "CREDENTIALS_DIRECTORY": str(creds)})
    assert got is not None and got.reveal() == "k2"


def test_relative_key_file_is_relative_to_config(tmp_path: Path) -> None:
    key_file(tmp_path, FAKE_KEY)
    cfg = load_config(write(tmp_path, '[gemini]\napi_key_file = "key"\n'), env={})
    got = resolve_secret(cfg, env={})
    assert got is not None and got.reveal() == FAKE_KEY


def test_missing_key_file_error_names_key_and_leaks_nothing(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, '[gemini]\napi_key_file = "/nonexistent/key"\n'), env={})
    with pytest.raises(ConfigError) as info:
        resolve_secret(cfg, env={"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert info.value.key == "gemini.api_key_file"
    assert "/nonexistent/key" in str(info.value)
    assert str(tmp_path / "config.toml") in str(info.value)


def test_unreadable_key_file_leaks_nothing(tmp_path: Path) -> None:
    # A directory cannot be read as a file, even by root.
    cfg = with_overrides(Config(), {"gemini.api_key_file": str(tmp_path)})
    with pytest.raises(ConfigError, match=r"cannot read") as info:
        resolve_secret(cfg, env={})
    assert info.value.key == "gemini.api_key_file"
    # Binary junk and a multi-line file: reported, content never shown.
    junk = tmp_path / "junk"
    junk.write_bytes(b"\xffAIzaTESTSECRET123")
    with pytest.raises(ConfigError) as info:
        resolve_secret(with_overrides(Config(), {"gemini.api_key_file": str(junk)}), env={})
    assert "TESTSECRET" not in str(info.value)
    big = key_file(tmp_path, FAKE_KEY * 10_000, "big")
    with pytest.raises(ConfigError, match="larger than") as info:
        resolve_secret(with_overrides(Config(), {"gemini.api_key_file": str(big)}), env={})
    assert "TESTSECRET" not in str(info.value)
    two = key_file(tmp_path, f"{FAKE_KEY}\nsecond line\n", "two")
    with pytest.raises(ConfigError) as info:
        resolve_secret(with_overrides(Config(), {"gemini.api_key_file": str(two)}), env={})
    assert FAKE_KEY not in str(info.value)
    assert "second" not in str(info.value)


def test_bad_key_in_env_leaks_nothing() -> None:
    with pytest.raises(ConfigError) as info:
        resolve_secret(Config(), env={"GEMINI_API_KEY": f"{FAKE_KEY} extra"})
    assert FAKE_KEY not in str(info.value)
    assert "$GEMINI_API_KEY" in str(info.value)


def test_ephemeral_token_env_first_only_in_ephemeral_mode() -> None:
    env = {"GEMINI_API_KEY": "key", "GEMINI_EPHEMERAL_TOKEN": "tok"}
    eph = with_overrides(Config(), {"gemini.auth": "ephemeral_token"})
    got = resolve_secret(eph, env)
    assert got is not None and got.reveal() == "tok" and got.source == "$GEMINI_EPHEMERAL_TOKEN"
    got = resolve_secret(Config(), env)
    assert got is not None and got.reveal() == "key"
    got = resolve_secret(eph, {"GEMINI_API_KEY": "key"})
    assert got is not None and got.reveal() == "key"


# ---------------------------------------------------------------- render_effective


def test_render_never_contains_the_secret_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(EXAMPLE, env={})
    text = render_effective(cfg, Secret(FAKE_KEY, "$GEMINI_API_KEY"))
    assert FAKE_KEY not in text
    assert "# api key: present (from $GEMINI_API_KEY), value redacted" in text
    assert str(EXAMPLE) in text.splitlines()[0]
    again = load_config(write(tmp_path, text), env={})
    assert dataclasses.replace(again, source="") == dataclasses.replace(cfg, source="")


def test_render_defaults_and_absent_key() -> None:
    text = render_effective(Config(), None)
    assert "built-in defaults" in text.splitlines()[0]
    assert "api key: absent" in text
    for section in ("gemini", "audio", "button", "control", "logging", "link"):
        assert f"[{section}]" in text
    assert tomllib.loads(text)["audio"]["chunk_ms"] == 40


def test_render_round_trips_awkward_strings(tmp_path: Path) -> None:
    awkward = 'quote " backslash \\ newline \n tab \t del \x7f bell \x07 unicode é 𝄞'
    cfg = with_overrides(
        Config(source="/tmp/odd\nname.toml"),
        {
            "gemini.system_instruction": awkward,
            "audio.input_wav": "C:\\sounds\\in.wav",
            "audio.volume": 1e-5,
            "link.backoff_max_s": 1e20,
            "gemini.auth": "ephemeral_token",
        },
    )
    text = render_effective(cfg, Secret(FAKE_KEY, "file /etc/edge-daemon/gemini-api-key"))
    assert "# ephemeral token: present (from file /etc/edge-daemon/gemini-api-key)" in text
    again = load_config(write(tmp_path, text), env={})
    assert dataclasses.replace(again, source="") == dataclasses.replace(cfg, source="")


# ---------------------------------------------------------------- fuzz


def emit(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # Python's repr of nan/inf/1e-05 is also TOML
    if isinstance(value, list):
        return "[" + ", ".join(emit(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def emit_document(doc: dict[str, object]) -> str:
    lines = [f"{emit(k)} = {emit(v)}" for k, v in doc.items() if not isinstance(v, dict)]
    for name, table in doc.items():
        if isinstance(table, dict):
            lines.append(f"[{emit(name)}]")
            lines += [f"{emit(k)} = {emit(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


_SECTIONS = {
    f.name: [k.name for k in dataclasses.fields(f.default_factory)]  # type: ignore[arg-type]
    for f in dataclasses.fields(Config)
    if f.name not in config_mod._INTERNAL
}
_text = st.text(max_size=20).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s))
_scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-5, max_value=100),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(min_value=-1, max_value=100),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["", "wav", "pyaudio", "hold", "debug", "ws://x", "gemini-x", "en-US"]),
    st.just(FAKE_KEY),
    _text,
)
_values = st.one_of(_scalars, st.lists(_scalars, max_size=3))
_names = _text.filter(bool)


def _table_for(section: str) -> st.SearchStrategy[dict[str, object]]:
    # Real keys only, so values reach the type and range checks; `_anything`
    # below supplies the unknown keys.
    return st.dictionaries(st.sampled_from(_SECTIONS[section]), _values, max_size=4)


_known_sections = st.fixed_dictionaries({}, optional={name: _table_for(name) for name in _SECTIONS})
_anything = st.dictionaries(
    st.one_of(st.sampled_from(list(_SECTIONS)), _names),
    st.one_of(st.dictionaries(_names, _values, max_size=3), _values),
    max_size=3,
)
_documents = st.one_of(_known_sections, _known_sections, _known_sections, _anything)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=_documents)
def test_any_document_loads_or_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, doc: dict[str, object]
) -> None:
    path = tmp_path_factory.mktemp("fuzz") / "c.toml"
    path.write_text(emit_document(doc), encoding="utf-8")
    try:
        cfg = load_config(path, env={})
    except ConfigError as e:
        assert FAKE_KEY not in str(e)
        return
    assert isinstance(cfg, Config)
    # Whatever loads renders and loads back to the same thing.
    again = path.with_name("again.toml")
    again.write_text(render_effective(cfg, None), encoding="utf-8")
    assert load_config(again, env={}) == dataclasses.replace(cfg, source=str(again))


@settings(max_examples=200, deadline=None)
@given(
    overrides=st.dictionaries(
        st.one_of(
            st.sampled_from([f"{s}.{k}" for s, keys in _SECTIONS.items() for k in keys]),
            _names.map(lambda k: f"audio.{k}"),
            _names,
        ),
        _values,
        max_size=4,
    )
)
def test_any_override_applies_or_raises_config_error(overrides: dict[str, object]) -> None:
    try:
        cfg = with_overrides(Config(), overrides)
    except ConfigError:
        return
    assert isinstance(cfg, Config)
