"""The fake Gemini Live server, driven by a bare websockets client.

The client here is deliberately minimal and independent of edge_daemon.live: these
tests pin the fake to PROTOCOL.md, so the daemon's end-to-end tests can trust it.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import struct
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from edge_daemon.fake_gemini import (
    BAD_API_KEY,
    INVALID_ARGUMENT,
    FakeGemini,
    add_arguments,
    run_from_args,
    serve,
    synthesize_speech,
    tone_pcm,
)

MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
TIMEOUT = 5.0
CHUNK_40MS_16K = 16000 * 2 * 40 // 1000  # 1280 bytes
CHUNK_40MS_24K = 24000 * 2 * 40 // 1000  # 1920 bytes
TOOLS = [
    {
        "functionDeclarations": [
            {
                "name": "set_led",
                "description": "Switch the LED",
                "parameters": {
                    "type": "OBJECT",
                    "properties": {
                        "on": {"type": "BOOLEAN"},
                        "level": {"type": "INTEGER", "minimum": 2},
                        "colour": {"type": "STRING", "enum": ["red", "green"]},
                    },
                    "required": ["on", "level", "colour"],
                },
            }
        ]
    }
]


def make_setup(
    *, vad_disabled: bool = True, resumption: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    setup: dict[str, Any] = {
        "model": MODEL,
        "generationConfig": {"responseModalities": ["AUDIO"]},
        "realtimeInputConfig": {"automaticActivityDetection": {"disabled": vad_disabled}},
        "inputAudioTranscription": {},
        "outputAudioTranscription": {},
    }
    if resumption is not None:
        setup["sessionResumption"] = resumption
    setup.update(extra)
    return {"setup": setup}


def audio_msg(pcm: bytes, rate: int = 16000) -> dict[str, Any]:
    return {
        "realtimeInput": {
            "audio": {"data": base64.b64encode(pcm).decode(), "mimeType": f"audio/pcm;rate={rate}"}
        }
    }


ACTIVITY_START = {"realtimeInput": {"activityStart": {}}}
ACTIVITY_END = {"realtimeInput": {"activityEnd": {}}}


async def typed(ws: ClientConnection, text: str) -> None:
    """A typed turn with detection off: the activity window around the text."""
    await send(ws, ACTIVITY_START)
    await send(ws, {"realtimeInput": {"text": text}})
    await send(ws, ACTIVITY_END)


async def send(ws: ClientConnection, msg: dict[str, Any]) -> None:
    await ws.send(json.dumps(msg))


async def recv(ws: ClientConnection) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        frame = await ws.recv()
    assert isinstance(frame, bytes), "the server sends JSON in binary frames"
    return json.loads(frame.decode("utf-8"))


async def recv_until(ws: ClientConnection, done: str) -> list[dict[str, Any]]:
    """Messages up to and including the first whose serverContent (or top level) has ``done``."""
    out = []
    while True:
        msg = await recv(ws)
        out.append(msg)
        if done in msg or done in msg.get("serverContent", {}):
            return out


async def expect_close(ws: ClientConnection) -> tuple[int | None, str | None]:
    with contextlib.suppress(ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def open_session(
    fake: FakeGemini, *, url: str | None = None, **setup_kw: Any
) -> ClientConnection:
    ws = await connect(url or fake.url, max_size=16 * 2**20)
    await send(ws, make_setup(**setup_kw))
    assert await recv(ws) == {"setupComplete": {}}
    if setup_kw.get("resumption") is not None:
        update = (await recv(ws))["sessionResumptionUpdate"]
        assert update["resumable"] is True and update["newHandle"]
    return ws


async def talk(ws: ClientConnection, seconds: float = 1.0) -> None:
    await send(ws, ACTIVITY_START)
    for _ in range(round(seconds * 25)):
        await send(ws, audio_msg(b"\x01\x00" * (CHUNK_40MS_16K // 2)))
    await send(ws, ACTIVITY_END)


def kinds(msgs: list[dict[str, Any]]) -> list[str]:
    out = []
    for m in msgs:
        body = m.get("serverContent")
        out.append(next(iter(body)) if body else next(iter(m)))
    return out


def audio_of(msgs: list[dict[str, Any]]) -> bytes:
    return b"".join(
        base64.b64decode(p["inlineData"]["data"])
        for m in msgs
        for p in m.get("serverContent", {}).get("modelTurn", {}).get("parts", [])
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(pace=0, use_speech=False) as server:
        yield server


async def test_setup_complete_is_a_pretty_printed_binary_frame_then_a_handle(
    fake: FakeGemini,
) -> None:
    async with connect(fake.url) as ws:
        await send(ws, make_setup(resumption={}))
        frame = await ws.recv()
        assert isinstance(frame, bytes)
        assert json.loads(frame) == {"setupComplete": {}}
        update = await recv(ws)
        handle = update["sessionResumptionUpdate"]["newHandle"]
        assert update["sessionResumptionUpdate"]["resumable"] is True
        assert fake.sessions[handle] is fake.connections[0].session
        assert b"\n" in (await _raw_after(fake, ws, {"goAway": {"timeLeft": "1s"}}))
    conn = fake.connections[0]
    await fake.wait_for(lambda f: conn.ended)
    assert conn.setup == make_setup(resumption={})["setup"]
    assert conn.request_path.endswith("GenerativeService.BidiGenerateContent")
    assert conn.close_code == 1000 and conn.closed_by == "client"


async def _raw_after(fake: FakeGemini, ws: ClientConnection, msg: dict[str, Any]) -> bytes:
    await fake.send(msg)
    frame = await ws.recv()
    assert isinstance(frame, bytes)
    return frame


@pytest.mark.parametrize(
    "first",
    [
        {"config": {"model": MODEL, "responseModalities": ["AUDIO"]}},
        {"realtimeInput": {"text": "hello"}},
        {"setup": {"model": MODEL}, "realtimeInput": {"text": "hello"}},
        {"setup": {"model": MODEL, "responseModalities": ["AUDIO"]}},  # unknown setup field
        {"setup": {"model": MODEL, "generationConfig": {"responseModalities": ["AUDIO", "TEXT"]}}},
    ],
)
async def test_bad_first_message_closes_1007(fake: FakeGemini, first: dict[str, Any]) -> None:
    async with connect(fake.url) as ws:
        await send(ws, first)
        assert await expect_close(ws) == (1007, INVALID_ARGUMENT)
    assert fake.connections[0].close_detail


@pytest.mark.parametrize("frame", ["{not json", b"\xff\xfe", "[1, 2]"])
async def test_malformed_frames_close_1007(fake: FakeGemini, frame: str | bytes) -> None:
    async with connect(fake.url) as ws:
        await ws.send(frame)
        assert (await expect_close(ws))[0] == 1007


async def test_binary_client_frames_are_accepted(fake: FakeGemini) -> None:
    async with connect(fake.url) as ws:
        await ws.send(json.dumps(make_setup()).encode())
        assert await recv(ws) == {"setupComplete": {}}


@pytest.mark.parametrize(
    "msg",
    [
        {"realtimeInput": {"activityStart": {}, "audio": {"data": "", "mimeType": "audio/pcm"}}},
        make_setup(),  # a second setup
        {
            "realtimeInput": {"audio": {"data": "AA==", "mimeType": "audio/pcm;rate=16000"}}
        },  # 1 byte
        {"realtimeInput": {"audio": {"data": "%%%", "mimeType": "audio/pcm;rate=16000"}}},
        {"realtimeInput": {"audio": {"data": "AAAA", "mimeType": "audio/wav"}}},
        {"realtimeInput": {"video": {"data": "AAAA", "mimeType": "image/jpeg"}}},  # not a JPEG
        {"realtimeInput": {"video": {"data": "/9j/", "mimeType": "image/gif"}}},
        {"realtimeInput": {"bogus": {}}},
        {"toolResponse": {"functionResponses": {}}},
        {"realtimeInput": {"mediaChunks": [["not", "an", "object"]]}},  # a shape error deep inside
    ],
)
async def test_bad_messages_after_setup_close_1007(fake: FakeGemini, msg: dict[str, Any]) -> None:
    ws = await open_session(fake)
    await send(ws, msg)
    assert (await expect_close(ws))[0] == 1007


async def test_activity_start_needs_vad_disabled(fake: FakeGemini) -> None:
    ws = await open_session(fake, vad_disabled=False)
    await send(ws, ACTIVITY_START)
    assert await expect_close(ws) == (1007, INVALID_ARGUMENT)


async def test_messages_before_setup_complete_close_1007() -> None:
    # The delay only has to outlast the next message; a long one cannot be
    # outrun by a slow machine, and the close ends the test long before it.
    async with FakeGemini(pace=0, use_speech=False, setup_complete_delay_s=30) as fake:
        ws = await connect(fake.url)
        await send(ws, make_setup())
        await send(ws, ACTIVITY_START)
        assert (await expect_close(ws))[0] == 1007
        assert "before setupComplete" in (fake.connections[0].close_detail or "")


async def test_send_setup_complete_false_never_answers() -> None:
    async with FakeGemini(send_setup_complete=False) as fake, connect(fake.url) as ws:
        await send(ws, make_setup())
        await fake.wait_for(lambda f: f.connections and f.connections[0].setup)
        # A message before setupComplete earns a 1007 close: the first thing to
        # arrive is that close, so nothing (no setupComplete) was sent before it.
        await send(ws, ACTIVITY_START)
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1007
        assert fake.connections[0].sent == []


async def test_unknown_model_closes_1008(fake: FakeGemini) -> None:
    async with connect(fake.url) as ws:
        await send(ws, {"setup": {"model": "gemini-2.5-flash"}})
        assert await expect_close(ws) == (
            1008,
            "gemini-2.5-flash is not found for API version v1beta",
        )


async def test_api_key_header_query_and_ephemeral_token() -> None:
    async with FakeGemini(api_key="sekrit", pace=0) as fake:
        for bad in ({}, {"additional_headers": {"x-goog-api-key": "wrong"}}):
            async with connect(fake.url, **bad) as ws:
                assert await expect_close(ws) == (1008, BAD_API_KEY)
        ws = await connect(fake.url, additional_headers={"x-goog-api-key": "sekrit"})
        await send(ws, make_setup())
        assert await recv(ws) == {"setupComplete": {}}
        await ws.close()
        ws = await connect(fake.url + "?key=sekrit")
        await send(ws, make_setup())
        assert await recv(ws) == {"setupComplete": {}}
        await ws.close()
        ephemeral = fake.url.replace("v1beta", "v1alpha").replace(
            "BidiGenerateContent", "BidiGenerateContentConstrained"
        )
        ws = await connect(ephemeral, additional_headers={"Authorization": "Token sekrit"})
        await send(ws, make_setup())
        assert await recv(ws) == {"setupComplete": {}}
        await ws.close()
        # A token only counts on the ephemeral endpoint.
        async with connect(fake.url + "?access_token=sekrit") as ws:
            assert (await expect_close(ws))[0] == 1008
        await fake.wait_for(lambda f: all(c.ended for c in f.connections))
        assert [c.auth_method for c in fake.connections] == [
            None,
            None,
            "header",
            "query",
            "token-header",
            None,
        ]


async def test_push_to_talk_turn(fake: FakeGemini) -> None:
    fake.script_turn(input_text="turn on the lamp", reply_text="Sure, the lamp is on now.")
    ws = await open_session(fake, resumption={})
    await talk(ws, seconds=1.0)
    msgs = await recv_until(ws, "turnComplete")
    update = await recv(ws)
    assert update["sessionResumptionUpdate"]["resumable"] is True

    assert msgs[0] == {"serverContent": {"inputTranscription": {"text": "turn on the lamp"}}}
    assert kinds(msgs)[-2:] == ["generationComplete", "turnComplete"]
    usage = msgs[-1]["usageMetadata"]
    assert usage["totalTokenCount"] == usage["promptTokenCount"] + usage["responseTokenCount"]
    parts = [
        m["serverContent"]["modelTurn"]["parts"][0]["inlineData"]
        for m in msgs
        if "modelTurn" in m.get("serverContent", {})
    ]
    assert {p["mimeType"] for p in parts} == {"audio/pcm;rate=24000"}
    sizes = [len(base64.b64decode(p["data"])) for p in parts]
    assert all(s == CHUNK_40MS_24K for s in sizes[:-1]) and 0 < sizes[-1] <= CHUNK_40MS_24K
    said = "".join(
        m["serverContent"]["outputTranscription"]["text"]
        for m in msgs
        if "outputTranscription" in m.get("serverContent", {})
    )
    assert said == "Sure, the lamp is on now."
    first_audio, last_audio = kinds(msgs).index("modelTurn"), len(msgs) - 3
    assert "outputTranscription" in kinds(msgs)[first_audio:last_audio], "interleaved"

    conn = fake.connections[0]
    assert fake.audio_received_s() == pytest.approx(1.0)
    assert fake.count("activityStart") == 1 and fake.count("audio") == 25
    assert fake.count("turnComplete", sent=True) == 1
    turn = fake.turns[0]
    assert turn.input_text == "turn on the lamp" and turn.heard_s == pytest.approx(1.0)
    assert len(turn.heard_pcm) == 25 * CHUNK_40MS_16K
    assert audio_of(msgs) == turn.reply_pcm == fake.reply_audio_bytes == tone_pcm()
    assert turn.completed and not turn.interrupted and turn.audio_kind == "tone"
    assert conn.session is not None
    assert conn.session.history == [
        ("user", "turn on the lamp"),
        ("model", "Sure, the lamp is on now."),
    ]
    assert fake.protocol_violations == []
    # The recording replaces audio payloads in .sent by their length.
    recorded = fake.messages_of("modelTurn", sent=True)[0]
    assert recorded["serverContent"]["modelTurn"]["parts"][0]["inlineData"]["data"] == 1920


async def test_unscripted_turn_transcribes_the_duration(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    await talk(ws, seconds=0.4)
    msgs = await recv_until(ws, "turnComplete")
    assert msgs[0]["serverContent"]["inputTranscription"]["text"] == "(0.4 seconds of audio)"
    assert fake.turns[0].reply_text == "I heard 0.4 seconds of audio."


async def test_a_typed_turn_inside_an_activity_window_is_answered(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    await send(ws, ACTIVITY_START)
    await send(ws, {"realtimeInput": {"text": "hello there"}})
    await send(ws, ACTIVITY_END)
    msgs = await recv_until(ws, "turnComplete")
    assert fake.turns[0].reply_text == "You said: hello there"
    assert fake.protocol_violations == []
    assert msgs[-1]["serverContent"] == {"turnComplete": True}


async def test_bare_text_with_detection_off_is_never_answered(fake: FakeGemini) -> None:
    """AutomaticActivityDetection.disabled: "the client must send activity
    signals". Text outside a window starts no turn; a later framed turn is
    answered first, so nothing was in flight for the bare text."""
    ws = await open_session(fake)
    await send(ws, {"realtimeInput": {"text": "anyone there?"}})
    await fake.wait_for(lambda f: f.connections[0].ignored_texts == ["anyone there?"])
    await talk(ws, seconds=0.2)
    msgs = await recv_until(ws, "turnComplete")
    assert [t.source for t in fake.turns] == ["activity"]
    assert "You said" not in str(msgs)
    assert "outside activityStart/activityEnd" in fake.protocol_violations[0]


async def test_text_turn_with_automatic_detection_and_stray_audio_violation(
    fake: FakeGemini,
) -> None:
    ws = await open_session(fake, vad_disabled=False)
    await send(ws, {"realtimeInput": {"text": "hello there"}})
    msgs = await recv_until(ws, "turnComplete")
    assert "inputTranscription" not in kinds(msgs)
    assert fake.turns[0].reply_text == "You said: hello there"
    ptt = await open_session(fake)
    await send(ptt, audio_msg(b"\0\0" * 320, rate=44100))
    await fake.wait_for(lambda f: len(f.protocol_violations) == 2)
    assert "rate=16000" in fake.protocol_violations[0]
    assert "outside activityStart" in fake.protocol_violations[1]


async def test_text_modality_replies_in_text(fake: FakeGemini) -> None:
    ws = await connect(fake.url)
    await send(
        ws, {"setup": {"model": MODEL, "generationConfig": {"responseModalities": ["TEXT"]}}}
    )
    assert await recv(ws) == {"setupComplete": {}}
    fake.script_turn(reply_text="one two three four")
    await send(ws, {"realtimeInput": {"text": "hi"}})
    msgs = await recv_until(ws, "turnComplete")
    texts = [m["serverContent"]["modelTurn"]["parts"][0]["text"] for m in msgs[:-2]]
    assert texts == ["one two three", " four"]


async def test_barge_in_interrupts_then_answers_the_new_turn() -> None:
    async with FakeGemini(pace=1.0, use_speech=False) as fake:
        fake.script_turn(reply_pcm=b"\0\0" * 24000 * 10)  # ten seconds: never finishes alone
        ws = await open_session(fake)
        await talk(ws, seconds=0.2)
        msgs = await recv_until(ws, "modelTurn")
        await send(ws, ACTIVITY_START)
        rest = await recv_until(ws, "turnComplete")
        assert kinds(rest)[-2:] == ["interrupted", "turnComplete"]
        assert "modelTurn" not in kinds(rest)[kinds(rest).index("interrupted") :]
        old = fake.turns[0]
        assert old.interrupted and not old.completed
        assert old.audio_sent_bytes == len(audio_of(msgs + rest)) < len(old.reply_pcm)
        await send(ws, audio_msg(b"\0\0" * 640))
        await send(ws, ACTIVITY_END)
        fake.pace = 0
        again = await recv_until(ws, "turnComplete")
        assert kinds(again)[-2:] == ["generationComplete", "turnComplete"]
        assert fake.turns[1].completed and not fake.turns[1].interrupted


async def test_scripted_tool_call_waits_for_the_response(fake: FakeGemini) -> None:
    fake.script_turn(input_text="lamp please", tool_calls=[("set_led", {"on": True})])
    ws = await open_session(fake, resumption={}, tools=TOOLS)
    await talk(ws, seconds=0.2)
    msgs = await recv_until(ws, "toolCall")
    call = msgs[-1]["toolCall"]["functionCalls"][0]
    assert call["name"] == "set_led" and call["args"] == {"on": True}
    assert call["id"].startswith("function-call-")
    assert (await recv(ws))["sessionResumptionUpdate"] == {"newHandle": "", "resumable": False}
    await send(
        ws,
        {
            "toolResponse": {
                "functionResponses": [
                    {"id": call["id"], "name": "set_led", "response": {"output": {"on": True}}}
                ]
            }
        },
    )
    msgs = await recv_until(ws, "turnComplete")
    assert "modelTurn" in kinds(msgs)
    assert fake.turns[0].reply_text == "Done."
    assert fake.tool_responses == [
        {"id": call["id"], "name": "set_led", "response": {"output": {"on": True}}}
    ]
    assert fake.protocol_violations == []
    # The same id again, and one never issued, are flagged but not fatal.
    await send(
        ws,
        {
            "toolResponse": {
                "functionResponses": [
                    {"id": call["id"], "response": {}},
                    {"id": "nope", "response": {}},
                ]
            }
        },
    )
    await fake.wait_for(lambda f: len(f.protocol_violations) == 2)
    assert "duplicated" in fake.protocol_violations[0]
    assert "unknown id" in fake.protocol_violations[1]


async def test_mentioning_a_declared_function_calls_it(fake: FakeGemini) -> None:
    ws = await open_session(fake, tools=TOOLS)
    await typed(ws, "please set led now")
    call = (await recv_until(ws, "toolCall"))[-1]["toolCall"]["functionCalls"][0]
    assert call["args"] == {"on": True, "level": 2, "colour": "red"}
    # Mic audio while the call is unanswered is what gets real sessions closed. (Not after
    # activityStart here: that would barge in and cancel the call.)
    await send(ws, audio_msg(b"\0\0" * 640))
    await fake.wait_for(lambda f: any("unanswered" in v for v in f.protocol_violations))


async def test_strict_tool_audio_closes_1008() -> None:
    async with FakeGemini(pace=0, use_speech=False, strict_tool_audio=True) as fake:
        ws = await open_session(fake)
        await fake.tool_call([("set_led", {"on": False})])
        assert "toolCall" in await recv(ws)
        await send(ws, ACTIVITY_START)
        await send(ws, audio_msg(b"\0\0" * 640))
        assert (await expect_close(ws))[0] == 1008


async def test_cancel_tool_calls(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    ids = await fake.tool_call([("set_led", {"on": True}), ("beep", {})])
    assert [c["id"] for c in (await recv(ws))["toolCall"]["functionCalls"]] == ids
    await fake.cancel_tool_calls(ids[:1])
    assert await recv(ws) == {"toolCallCancellation": {"ids": ids[:1]}}
    assert fake.active is not None and fake.active.pending_tool_ids == {ids[1]}
    # A response that crossed the cancellation on the wire is not a violation.
    await send(
        ws,
        {
            "toolResponse": {
                "functionResponses": [{"id": i, "response": {"output": {}}} for i in ids]
            }
        },
    )
    await fake.wait_for(lambda f: len(f.tool_responses) == 2)
    assert fake.protocol_violations == []


async def test_barge_in_during_a_tool_call_cancels_it(fake: FakeGemini) -> None:
    fake.script_turn(tool_calls=[("set_led", {"on": True})])
    ws = await open_session(fake)
    await typed(ws, "lamp")
    call = (await recv(ws))["toolCall"]["functionCalls"][0]
    await typed(ws, "never mind")
    assert await recv(ws) == {"toolCallCancellation": {"ids": [call["id"]]}}
    assert kinds([await recv(ws), await recv(ws)]) == ["interrupted", "turnComplete"]
    assert kinds(await recv_until(ws, "turnComplete"))[-1] == "turnComplete"


async def test_resumption_keeps_history_and_rejects_unknown_handles(fake: FakeGemini) -> None:
    fake.script_turn(input_text="remember the number seven")
    ws = await open_session(fake, resumption={})
    await talk(ws, seconds=0.2)
    await recv_until(ws, "turnComplete")
    handle = (await recv(ws))["sessionResumptionUpdate"]["newHandle"]
    await ws.close()

    ws = await open_session(fake, resumption={"handle": handle})
    conn = fake.connections[1]
    assert conn.resumed_from == handle
    assert conn.session is fake.sessions[handle] is fake.connections[0].session
    await typed(ws, "what number?")
    await recv_until(ws, "turnComplete")
    assert [text for _, text in conn.session.history][:2] == [
        "remember the number seven",
        "You said: remember the number seven",
    ]
    assert len(conn.session.history) == 4
    await ws.close()

    async with connect(fake.url) as ws:
        await send(ws, make_setup(resumption={"handle": "stale"}))
        assert await expect_close(ws) == (1008, "session not found")
    assert fake.protocol_violations == []


async def test_go_away_then_close_1000() -> None:
    # The clock starts as the connection opens: 2 s leaves a slow machine the
    # time to finish setup first, which the test reads before the goAway.
    async with FakeGemini(pace=0, go_away_after_s=2.0, go_away_grace_s=0.1) as fake:
        ws = await open_session(fake)
        assert await recv(ws) == {"goAway": {"timeLeft": "0.1s"}}
        assert await expect_close(ws) == (1000, "")
        assert fake.connections[0].close_detail == "goAway time elapsed"


async def test_direct_go_away_and_close(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    await fake.go_away(50)
    assert await recv(ws) == {"goAway": {"timeLeft": "50s"}}
    await fake.close_connection(1011, "Internal error encountered.")
    assert await expect_close(ws) == (1011, "Internal error encountered.")


async def test_drop_connection_is_an_abnormal_close(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    await fake.drop_connection()
    assert (await expect_close(ws))[0] == 1006
    await fake.wait_for(lambda f: f.connections[0].ended)
    assert fake.active is None and fake.connections[0].closed_by == "drop"


async def test_stall_sends_nothing_and_ignores_input(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    fake.stall(True)
    await talk(ws, seconds=0.2)
    await fake.wait_for(lambda f: f.count("activityEnd") == 1)
    pending = asyncio.create_task(fake.send({"goAway": {"timeLeft": "1s"}}))
    # Input is still recorded while stalled: once the fake has this one, the
    # send above has long started, and it is held.
    await send(ws, {"realtimeInput": {"text": "hello?"}})
    await fake.wait_for(lambda f: f.count("text") == 1)
    assert not pending.done()
    assert fake.turns == [] and fake.active is not None
    fake.stall(False)
    await pending
    # The held goAway is the first thing that arrives: nothing went out while
    # stalled, neither an answer to the turn nor one to the text.
    assert await recv(ws) == {"goAway": {"timeLeft": "1s"}}
    await typed(ws, "still there?")
    assert kinds(await recv_until(ws, "turnComplete"))[-1] == "turnComplete"


async def test_video_frames_are_checked(fake: FakeGemini) -> None:
    ws = await open_session(fake)
    # A minimal JPEG header: SOI, then an SOF0 segment declaring 2048x100.
    jpeg = b"\xff\xd8" + b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 100, 2048) + b"\0" * 12
    frame = {
        "realtimeInput": {
            "video": {"data": base64.b64encode(jpeg).decode(), "mimeType": "image/jpeg"}
        }
    }
    await send(ws, frame)
    await send(ws, frame)
    await fake.wait_for(lambda f: f.connections[0].video_frames == 2)
    assert any("2048x100" in v for v in fake.protocol_violations)
    assert any("1 frame/s" in v for v in fake.protocol_violations)


async def test_wait_for_timeout_explains_itself(fake: FakeGemini) -> None:
    with pytest.raises(TimeoutError, match="turns=0"):
        await fake.wait_for(lambda f: f.turns, timeout=0.05)


def test_tone_is_one_and_a_half_seconds_at_24k() -> None:
    assert len(tone_pcm()) == int(1.5 * 24000) * 2


@pytest.mark.skipif(
    not (shutil.which("espeak-ng") and shutil.which("sox")),
    reason="espeak-ng and sox are needed for spoken replies (apt-get install espeak-ng sox)",
)
async def test_reply_audio_is_speech() -> None:
    async with FakeGemini(pace=0) as fake:
        fake.script_turn(reply_text="-v hello there")  # a leading dash is text, not an option
        ws = await open_session(fake)
        await typed(ws, "say something")
        msgs = await recv_until(ws, "turnComplete")
        turn = fake.turns[0]
        assert turn.audio_kind == "speech"
        assert audio_of(msgs) == turn.reply_pcm == synthesize_speech(turn.reply_text)
        assert 0.5 < len(turn.reply_pcm) / 48000 < 10


class _Stdout(io.StringIO):
    """stdout that says when a line arrives, so the test waits on an event, not a poll."""

    def __init__(self) -> None:
        super().__init__()
        self.line = asyncio.Event()

    def write(self, text: str) -> int:
        if "\n" in text:
            self.line.set()
        return super().write(text)


async def test_serve_prints_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    stdout = _Stdout()
    monkeypatch.setattr(sys, "stdout", stdout)
    task = asyncio.create_task(serve(port=0, pace=0, use_speech=False))
    async with asyncio.timeout(TIMEOUT):
        await stdout.line.wait()
    prefix, url = stdout.getvalue().strip().splitlines()[0].rsplit(" ", 1)
    assert prefix == "fake-gemini listening on" and url.startswith("ws://127.0.0.1:")
    async with connect(url) as ws:
        await send(ws, make_setup())
        assert await recv(ws) == {"setupComplete": {}}
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_cli_arguments() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        ["--port", "0", "--pace", "10", "--api-key-env", "FAKE_KEY", "--go-away-after", "3"]
    )
    assert (args.port, args.pace, args.api_key_env, args.go_away_after) == (0, 10, "FAKE_KEY", 3)


def test_run_from_args_refuses_a_missing_key_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAKE_GEMINI_TEST_KEY", raising=False)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert run_from_args(parser.parse_args(["--api-key-env", "FAKE_GEMINI_TEST_KEY"])) == 2


async def test_command_line_server_requires_the_key_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_daemon.fake_gemini",
        "--port",
        "0",
        "--no-speech",
        "--api-key-env",
        "FAKE_GEMINI_TEST_KEY",
        env={**os.environ, "FAKE_GEMINI_TEST_KEY": "k3y"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(10):
            line = (await proc.stdout.readline()).decode()
        assert line.startswith("fake-gemini listening on ws://127.0.0.1:")
        url = line.split()[-1]
        async with connect(url, additional_headers={"x-goog-api-key": "k3y"}) as ws:
            await send(ws, make_setup())
            assert await recv(ws) == {"setupComplete": {}}
        async with connect(url) as ws:
            assert (await expect_close(ws))[0] == 1008
        proc.terminate()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
