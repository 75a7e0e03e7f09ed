"""Setups the service refuses with 1007 are refused by the config, naming the
key; and each option reaches the wire in the form the model family takes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_daemon.config import ConfigError, load_config
from edge_daemon.live import messages as m

NATIVE_25 = "gemini-2.5-flash-native-audio-preview-12-2025"
LIVE_31 = "gemini-3.1-flash-live-preview"
HALF_CASCADE = "gemini-live-2.5-flash-preview"


def load(tmp_path: Path, text: str):  # type: ignore[no-untyped-def]
    path = tmp_path / "c.toml"
    path.write_text(text)
    return load_config(path, env={})


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("[gemini]\nproactive_audio = true\n", "gemini.proactive_audio", "v1alpha"),
        ("[gemini]\naffective_dialog = true\n", "gemini.affective_dialog", "v1alpha"),
        (
            f'[gemini]\nmodel = "{HALF_CASCADE}"\napi_version = "v1alpha"\n'
            "proactive_audio = true\n",
            "gemini.proactive_audio",
            "half-cascade",
        ),
        (
            f'[gemini]\nmodel = "{LIVE_31}"\nthinking_budget = 512\n',
            "gemini.thinking_budget",
            "thinking_level",
        ),
        (
            f'[gemini]\nmodel = "{NATIVE_25}"\nthinking_level = "high"\n',
            "gemini.thinking_level",
            "thinking_budget",
        ),
        (
            f'[gemini]\nmodel = "{HALF_CASCADE}"\nthinking_budget = 100\n',
            "gemini.thinking_budget",
            "does not take",
        ),
        (
            f'[gemini]\nmodel = "{LIVE_31}"\n[tools]\nnon_blocking = true\n',
            "tools.non_blocking",
            "synchronously",
        ),
        ('[gemini]\ntoken_command = "mint"\n', "gemini.token_command", "ephemeral_token"),
        (
            '[gemini]\nauth = "ephemeral_token"\ntoken_command = "a \'b"\n',
            "gemini.token_command",
            "split",
        ),
        (
            "[gemini]\ntoken_new_session_s = 600\ntoken_expire_s = 300\n",
            "gemini.token_new_session_s",
            "token_expire_s",
        ),
        ('[gemini]\nmedia_resolution = "ultra"\n', "gemini.media_resolution", "low"),
        ("[gemini]\nthinking_budget = -5\n", "gemini.thinking_budget", "-1"),
    ],
)
def test_setups_the_service_refuses_are_config_errors(
    tmp_path: Path, text: str, key: str, words: str
) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, text)
    assert err.value.key == key
    assert words in str(err.value)


def test_the_accepted_combinations_load(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        f'[gemini]\nmodel = "{NATIVE_25}"\napi_version = "v1alpha"\nproactive_audio = true\n'
        "affective_dialog = true\nthinking_budget = -1\ngoogle_search = true\n",
    )
    assert cfg.gemini.proactive_audio and cfg.gemini.thinking_budget == -1
    # An ephemeral token always goes to v1alpha: no api_version needed there.
    cfg = load(
        tmp_path,
        '[gemini]\nauth = "ephemeral_token"\ntoken_command = "ssh tok@home \'mint --json\'"\n'
        "proactive_audio = true\n",
    )
    assert cfg.gemini.token_command


def setup_of(opts: m.SetupOptions) -> dict:
    return json.loads(m.build_setup(opts))["setup"]


def test_native_audio_models_never_get_a_language_code() -> None:
    for model in (f"models/{NATIVE_25}", f"models/{LIVE_31}"):
        setup = setup_of(m.SetupOptions(model=model, language="de-DE", system_instruction="Hi."))
        assert "languageCode" not in json.dumps(setup)
        text = setup["systemInstruction"]["parts"][0]["text"]
        assert text.startswith("Hi.") and "RESPOND IN GERMAN" in text
    setup = setup_of(m.SetupOptions(model=f"models/{HALF_CASCADE}", language="de-DE"))
    assert setup["generationConfig"]["speechConfig"]["languageCode"] == "de-DE"
    assert "RESPOND IN" not in json.dumps(setup)


def test_thinking_defaults_to_low_latency_in_each_family_dialect() -> None:
    assert setup_of(m.SetupOptions(model=f"models/{NATIVE_25}"))["generationConfig"][
        "thinkingConfig"
    ] == {"thinkingBudget": 0}
    assert setup_of(m.SetupOptions(model=f"models/{LIVE_31}"))["generationConfig"][
        "thinkingConfig"
    ] == {"thinkingLevel": "MINIMAL"}
    assert (
        "thinkingConfig"
        not in setup_of(m.SetupOptions(model=f"models/{HALF_CASCADE}"))["generationConfig"]
    )


def test_options_reach_the_setup_where_the_sdk_puts_them() -> None:
    setup = setup_of(
        m.SetupOptions(
            model=f"models/{NATIVE_25}",
            media_resolution="low",
            google_search=True,
            proactive_audio=True,
            affective_dialog=True,
            function_declarations=[{"name": "lamp", "description": "a lamp"}],
        )
    )
    gen = setup["generationConfig"]
    assert gen["mediaResolution"] == "MEDIA_RESOLUTION_LOW"
    assert gen["enableAffectiveDialog"] is True
    assert setup["proactivity"] == {"proactiveAudio": True}
    assert setup["tools"] == [
        {"functionDeclarations": [{"name": "lamp", "description": "a lamp"}]},
        {"googleSearch": {}},
    ]


def test_a_typed_turn_is_framed_by_activity_signals_when_detection_is_off() -> None:
    framed = [json.loads(x) for x in m.build_typed_turn("hi")]
    assert framed == [
        {"realtimeInput": {"activityStart": {}}},
        {"realtimeInput": {"text": "hi"}},
        {"realtimeInput": {"activityEnd": {}}},
    ]
    assert [json.loads(x) for x in m.build_typed_turn("hi", activity_signals=False)] == [
        {"realtimeInput": {"text": "hi"}}
    ]
