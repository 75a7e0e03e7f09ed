"""Every client message we build and every server message we parse (PROTOCOL.md)."""

from __future__ import annotations

import base64
import json
import logging

import pytest

from edge_daemon.live import messages as m


def one_key(text: str) -> tuple[str, dict]:
    msg = json.loads(text)
    assert isinstance(msg, dict) and len(msg) == 1, "exactly one top-level key"
    ((key, body),) = msg.items()
    return key, body


# --------------------------------------------------------------------------- client -> server


def test_setup_is_setup_not_config_and_modalities_inside_generation_config() -> None:
    key, setup = one_key(
        m.build_setup(
            m.SetupOptions(
                model="models/gemini-x",
                voice="Kore",
                language="en-US",
                system_instruction="Be brief.",
                function_declarations=[{"name": "set_led", "description": "d"}],
                resumption_handle="h-1",
            )
        )
    )
    assert key == "setup"
    assert setup["model"] == "models/gemini-x"
    assert "responseModalities" not in setup
    gen = setup["generationConfig"]
    assert gen["responseModalities"] == ["AUDIO"]
    assert gen["speechConfig"] == {
        "voiceConfig": {"prebuiltVoiceConfig": {"voiceName": "Kore"}},
        "languageCode": "en-US",
    }
    assert setup["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
    assert setup["tools"] == [{"functionDeclarations": [{"name": "set_led", "description": "d"}]}]
    assert setup["realtimeInputConfig"] == {
        "automaticActivityDetection": {"disabled": True},
        "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
    }
    assert setup["inputAudioTranscription"] == {}
    assert setup["outputAudioTranscription"] == {}
    assert setup["sessionResumption"] == {"handle": "h-1"}
    assert setup["contextWindowCompression"] == {"slidingWindow": {}}


def test_setup_minimal_new_session_has_empty_resumption_and_no_optional_parts() -> None:
    _, setup = one_key(
        m.build_setup(
            m.SetupOptions(
                model="models/x",
                push_to_talk=False,
                transcribe_input=False,
                transcribe_output=False,
                context_window_compression=False,
            )
        )
    )
    assert setup["sessionResumption"] == {}
    for absent in (
        "tools",
        "systemInstruction",
        "realtimeInputConfig",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "contextWindowCompression",
    ):
        assert absent not in setup
    assert "speechConfig" not in setup["generationConfig"]


def test_audio_chunk_round_trips_and_matches_json_dumps() -> None:
    pcm = bytes(range(256)) * 5
    text = m.build_audio(pcm)
    key, body = one_key(text)
    assert key == "realtimeInput"
    assert list(body) == ["audio"]
    assert body["audio"]["mimeType"] == "audio/pcm;rate=16000"
    assert base64.b64decode(body["audio"]["data"]) == pcm
    # The hand-formatted fast path must be byte-for-byte what json would write.
    assert json.loads(text) == json.loads(
        json.dumps(
            {
                "realtimeInput": {
                    "audio": {"data": base64.b64encode(pcm).decode(), "mimeType": m.MIC_MIME}
                }
            }
        )
    )


def test_video_text_activity_messages() -> None:
    jpeg = b"\xff\xd8\xff\xe0fake"
    key, body = one_key(m.build_video(jpeg))
    assert key == "realtimeInput" and list(body) == ["video"]
    assert body["video"]["mimeType"] == "image/jpeg"
    assert base64.b64decode(body["video"]["data"]) == jpeg
    assert one_key(m.build_text('Turn "on" the lights\n')) == (
        "realtimeInput",
        {"text": 'Turn "on" the lights\n'},
    )
    assert one_key(m.ACTIVITY_START) == ("realtimeInput", {"activityStart": {}})
    assert one_key(m.ACTIVITY_END) == ("realtimeInput", {"activityEnd": {}})
    assert one_key(m.AUDIO_STREAM_END) == ("realtimeInput", {"audioStreamEnd": True})


def test_tool_response_output_error_and_scheduling() -> None:
    key, body = one_key(
        m.build_tool_response(
            [
                m.FunctionResult("c1", "set_led", output={"on": True}),
                m.FunctionResult("c2", "set_relay", error="pin busy"),
                m.FunctionResult("c3", "slow", output={}, scheduling="WHEN_IDLE"),
            ]
        )
    )
    assert key == "toolResponse"
    assert body["functionResponses"] == [
        {"id": "c1", "name": "set_led", "response": {"output": {"on": True}}},
        {"id": "c2", "name": "set_relay", "response": {"error": "pin busy"}},
        {"id": "c3", "name": "slow", "response": {"output": {}}, "scheduling": "WHEN_IDLE"},
    ]


# --------------------------------------------------------------------------- server -> client


def frame(msg: dict) -> bytes:
    # The server sends pretty-printed JSON in binary frames.
    return json.dumps(msg, indent=2).encode()


def test_setup_complete() -> None:
    assert m.parse_server_message(frame({"setupComplete": {}})) == [m.SetupComplete()]


def test_model_audio_with_rate_and_default_rate() -> None:
    pcm = b"\x01\x02" * 960
    b64 = base64.b64encode(pcm).decode()
    events = m.parse_server_message(
        frame(
            {
                "serverContent": {
                    "modelTurn": {
                        "parts": [
                            {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": b64}},
                            {"inlineData": {"mimeType": "audio/pcm", "data": b64}},
                            {"inlineData": {"mimeType": "audio/pcm;rate=16000", "data": b64}},
                        ]
                    }
                }
            }
        )
    )
    assert events == [m.AudioOut(pcm, 24000), m.AudioOut(pcm, 24000), m.AudioOut(pcm, 16000)]


def test_transcripts_interrupted_generation_and_turn_complete_with_usage() -> None:
    assert m.parse_server_message(
        frame({"serverContent": {"inputTranscription": {"text": "hi"}}})
    ) == [m.InputTranscript("hi")]
    assert m.parse_server_message(
        frame({"serverContent": {"outputTranscription": {"text": "Done."}}})
    ) == [m.OutputTranscript("Done.")]
    assert m.parse_server_message(frame({"serverContent": {"interrupted": True}})) == [
        m.Interrupted()
    ]
    assert m.parse_server_message(frame({"serverContent": {"generationComplete": True}})) == [
        m.GenerationComplete()
    ]
    events = m.parse_server_message(
        frame({"serverContent": {"turnComplete": True}, "usageMetadata": {"totalTokenCount": 553}})
    )
    assert events[0] == m.TurnComplete()
    assert isinstance(events[1], m.Usage) and events[1].total_tokens == 553


def test_one_message_can_carry_audio_transcript_and_turn_complete_in_order() -> None:
    pcm = b"\x00\x10" * 10
    events = m.parse_server_message(
        frame(
            {
                "serverContent": {
                    "modelTurn": {
                        "parts": [
                            {
                                "inlineData": {
                                    "mimeType": "audio/pcm;rate=24000",
                                    "data": base64.b64encode(pcm).decode(),
                                }
                            }
                        ]
                    },
                    "outputTranscription": {"text": "ok"},
                    "turnComplete": True,
                },
                "usageMetadata": {"totalTokenCount": 1},
            }
        )
    )
    assert [type(e) for e in events] == [m.AudioOut, m.OutputTranscript, m.TurnComplete, m.Usage]


def test_tool_call_and_cancellation() -> None:
    events = m.parse_server_message(
        frame(
            {
                "toolCall": {
                    "functionCalls": [
                        {"id": "function-call-58", "name": "set_led", "args": {"on": True}},
                        {"id": "function-call-59", "name": "get_device_states"},
                    ]
                }
            }
        )
    )
    assert events == [
        m.ToolCall(
            (
                m.FunctionCall("function-call-58", "set_led", {"on": True}),
                m.FunctionCall("function-call-59", "get_device_states", {}),
            )
        )
    ]
    assert m.parse_server_message(
        frame({"toolCallCancellation": {"ids": ["function-call-58"]}})
    ) == [m.ToolCallCancellation(("function-call-58",))]


def test_tool_call_with_non_object_args_is_kept_so_it_can_be_answered() -> None:
    (event,) = m.parse_server_message(
        frame({"toolCall": {"functionCalls": [{"id": "c", "name": "f", "args": [1, 2]}]}})
    )
    assert isinstance(event, m.ToolCall)
    assert event.calls[0].args == {"__invalid__": [1, 2]}


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("50s", 50.0),
        ("1.5s", 1.5),
        ("0s", 0.0),
        (30, 30.0),
        ({"seconds": 2, "nanos": 5e8}, 2.5),
        ("x", None),
    ],
)
def test_go_away_time_left(value: object, seconds: float | None) -> None:
    assert m.parse_server_message(frame({"goAway": {"timeLeft": value}})) == [m.GoAway(seconds)]


def test_resumption_update_keeps_empty_handles_visible_as_empty() -> None:
    assert m.parse_server_message(
        frame({"sessionResumptionUpdate": {"newHandle": "abc", "resumable": True}})
    ) == [m.ResumptionUpdate("abc", True)]
    assert m.parse_server_message(frame({"sessionResumptionUpdate": {"resumable": False}})) == [
        m.ResumptionUpdate("", False)
    ]


def test_text_frames_parse_too_and_pretty_printing_is_not_split() -> None:
    text = json.dumps({"serverContent": {"outputTranscription": {"text": "a\nb"}}}, indent=4)
    assert m.parse_server_message(text) == [m.OutputTranscript("a\nb")]


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00garbage",
        b"[1, 2, 3]",
        b'"just a string"',
        b'{"serverContent": []}',
        b'{"serverContent": {"modelTurn": {"parts": {"no": "list"}}}}',
        b'{"serverContent": {"modelTurn": {"parts": [{"inlineData":'
        b' {"mimeType": "audio/pcm", "data": "@@@"}}]}}}',
        b'{"toolCall": {"functionCalls": [{"id": "x"}]}}',
        b'{"toolCall": {"functionCalls": "nope"}}',
        b'{"toolCallCancellation": {"ids": "x"}}',
        b'{"goAway": 5}',
    ],
)
def test_malformed_frames_raise_malformed_message_only(raw: bytes) -> None:
    with pytest.raises(m.MalformedMessage):
        m.parse_server_message(raw)


def test_unknown_types_and_fields_are_ignored_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m._seen_unknown.clear()
    caplog.set_level(logging.DEBUG, logger="edge_daemon.live.messages")
    msg = frame(
        {"brandNewThing": {"x": 1}, "serverContent": {"futureField": 1, "turnComplete": True}}
    )
    assert m.parse_server_message(msg) == [m.TurnComplete()]
    assert m.parse_server_message(msg) == [m.TurnComplete()]
    unknown = [r.getMessage() for r in caplog.records if "unknown server field" in r.getMessage()]
    assert sorted(unknown) == [
        "ignoring unknown server field message.brandNewThing",
        "ignoring unknown server field serverContent.futureField",
    ]
    assert all(r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize("left", [10**400, "1e999s", -5, "nan", {"seconds": 10**400}, True])
def test_a_go_away_time_that_is_no_duration_is_none_not_an_exception(left: object) -> None:
    assert m.parse_server_message(json.dumps({"goAway": {"timeLeft": left}})) == [m.GoAway(None)]
