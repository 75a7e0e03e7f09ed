"""The fake's automatic activity detection honours the setup's knobs
(silenceDurationMs, prefixPaddingMs, the sensitivities) and audioStreamEnd:
what the end-of-speech benchmark compares our own detection with."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from websockets.asyncio.client import connect

from edge_daemon.fake_gemini import FakeGemini

CHUNK_S = 0.04


def chunk(peak: int) -> dict[str, Any]:
    n = int(16000 * CHUNK_S)
    pcm = b"".join(
        int(peak if i % 2 else -peak).to_bytes(2, "little", signed=True) for i in range(n)
    )
    data = base64.b64encode(pcm).decode()
    return {"realtimeInput": {"audio": {"data": data, "mimeType": "audio/pcm;rate=16000"}}}


async def quiet_chunks_to_end(knobs: dict[str, Any], loud: int = 5000) -> int:
    """Speak 0.2 s, then send quiet chunks one by one: how many end the turn."""
    async with FakeGemini(use_speech=False) as fake, connect(fake.url) as ws:
        setup = {"model": "models/x", "realtimeInputConfig": {"automaticActivityDetection": knobs}}
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        for _ in range(5):
            await ws.send(json.dumps(chunk(loud)))
        for quiet in range(1, 200):
            await ws.send(json.dumps(chunk(10)))
            await fake.wait_for(lambda f, n=quiet: len(f.messages_of("audio")) == 5 + n)
            if fake.turns:
                return quiet
    raise AssertionError("the turn never ended")


@pytest.mark.parametrize(
    ("knobs", "quiet"),
    [
        ({}, 13),  # 500 ms by default: 13 chunks of 40 ms
        ({"silenceDurationMs": 1000}, 25),
        ({"silenceDurationMs": 200}, 5),
        ({"silenceDurationMs": 200, "endOfSpeechSensitivity": "END_SENSITIVITY_LOW"}, 8),
    ],
)
async def test_silence_duration_decides_when_the_turn_ends(
    knobs: dict[str, Any], quiet: int
) -> None:
    assert await quiet_chunks_to_end(knobs) == quiet


async def test_low_start_sensitivity_ignores_quieter_speech_and_audio_stream_end_ends_it() -> None:
    async with FakeGemini(use_speech=False) as fake, connect(fake.url) as ws:
        knobs = {"startOfSpeechSensitivity": "START_SENSITIVITY_LOW", "prefixPaddingMs": 100}
        setup = {"model": "models/x", "realtimeInputConfig": {"automaticActivityDetection": knobs}}
        await ws.send(json.dumps({"setup": setup}))
        await ws.recv()
        for _ in range(10):
            await ws.send(json.dumps(chunk(2000)))  # loud for HIGH, not for LOW
        await fake.wait_for(lambda f: len(f.messages_of("audio")) == 10)
        assert fake.active.capture is None
        for _ in range(3):  # 120 ms of speech: past the 100 ms prefix
            await ws.send(json.dumps(chunk(6000)))
        await fake.wait_for(lambda f: f.active.capture is not None)
        await ws.send(json.dumps({"realtimeInput": {"audioStreamEnd": True}}))
        await fake.wait_for(lambda f: len(f.turns) == 1)
        assert fake.turns[0].source == "vad"
