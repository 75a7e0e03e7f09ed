"""Every message builder's output, with every option, passes the google-genai
SDK's own types; and the check itself refuses what the service refuses."""

from __future__ import annotations

import json

import pytest
from support.sdk_wire import WireError, check_client_message

from edge_daemon.live import messages as m

MODELS = (
    "models/gemini-2.5-flash-native-audio-preview-12-2025",
    "models/gemini-3.1-flash-live-preview",
    "models/gemini-live-2.5-flash-preview",
)


@pytest.mark.parametrize("model", MODELS)
def test_every_setup_the_daemon_can_build_passes_the_sdk_types(model: str) -> None:
    decl = {
        "name": "set_led",
        "description": "A lamp.",
        "parameters": {
            "type": "OBJECT",
            "properties": {"on": {"type": "BOOLEAN"}},
            "required": ["on"],
        },
    }
    variants = [
        m.SetupOptions(model=model),
        m.SetupOptions(
            model=model,
            voice="Puck",
            language="de-DE",
            system_instruction="Be brief.",
            function_declarations=[decl, {**decl, "name": "x", "behavior": "NON_BLOCKING"}],
            resumption_handle="h-1",
            media_resolution="low",
            google_search=True,
            proactive_audio=True,
            affective_dialog=True,
            thinking_budget=512,
            thinking_level="low",
        ),
        m.SetupOptions(model=model, push_to_talk=False, transcribe_input=False, resumption=False),
    ]
    for opts in variants:
        check_client_message(m.build_setup(opts))


def test_every_realtime_and_tool_message_passes_the_sdk_types() -> None:
    for text in (
        m.build_audio(b"\x01\x00" * 320),
        m.build_video(b"\xff\xd8\xff\xd9"),
        m.build_text("hello"),
        m.ACTIVITY_START,
        m.ACTIVITY_END,
        m.AUDIO_STREAM_END,
        *m.build_typed_turn("what time is it"),
        m.build_tool_response(
            [
                m.FunctionResult("a", "set_led", output={"on": True}),
                m.FunctionResult("b", "set_led", error="no such pin"),
                m.FunctionResult("c", "slow", output={}, scheduling="WHEN_IDLE"),
            ]
        ),
    ):
        check_client_message(text)


@pytest.mark.parametrize(
    "bad",
    [
        # scheduling nested inside response instead of on FunctionResponse
        {"toolResponse": {"functionResponses": [
            {"id": "c", "name": "n", "response": {"output": {}, "scheduling": "WHEN_IDLE"}}
        ]}},
        {"setup": {"model": "models/x", "speechConfig": {}}},  # not a setup field
        {"setup": {"model": "models/x", "realtimeInputConfig": {"vad": True}}},
        {"realtimeInput": {"text": "a", "activityStart": {}}},  # two fields
        {"realtimeInput": {"audio": {"data": "AAAA"}}, "toolResponse": {}},  # two keys
        {"config": {"model": "models/x"}},  # the seed guide's first message
        {"toolResponse": {"functionResponses": [{"id": "c", "scheduling": "SOON"}]}},
    ],
)  # fmt: skip
def test_the_check_refuses_what_the_service_refuses(bad: dict) -> None:
    with pytest.raises(WireError):
        check_client_message(json.dumps(bad))
