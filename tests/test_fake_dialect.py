"""The fake's rules of the real service's dialect, each pinned: what it closes
with 1007 or 1008, what it ignores, and its ephemeral tokens."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.fake_gemini.tokens import TOKEN_EXPIRED, TOKEN_LATE, TOKEN_SPENT, TOKEN_UNKNOWN

NATIVE = "models/gemini-2.5-flash-native-audio-preview-12-2025"
LIVE3 = "models/gemini-3.1-flash-live-preview"
CASCADE = "models/gemini-live-2.5-flash-preview"
V1ALPHA = "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContent"


@pytest.fixture
async def fake() -> Any:
    async with FakeGemini(pace=0, use_speech=False) as server:
        yield server


def setup(model: str = NATIVE, **gen: Any) -> dict[str, Any]:
    return {
        "setup": {
            "model": model,
            "generationConfig": {"responseModalities": ["AUDIO"], **gen},
            "realtimeInputConfig": {"automaticActivityDetection": {"disabled": True}},
        }
    }


async def close_of(url: str, first: dict[str, Any], **kw: Any) -> tuple[int | None, str]:
    """Send ``first``; the close code and reason the server answers with (None: accepted)."""
    async with connect(url, **kw) as ws:
        await ws.send(json.dumps(first))
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except ConnectionClosed as exc:
            assert exc.rcvd is not None
            return exc.rcvd.code, exc.rcvd.reason
        assert "setupComplete" in reply
        return None, ""


@pytest.mark.parametrize(
    ("message", "path_v1alpha", "code", "reason"),
    [
        # Native-audio models choose their own language.
        (setup(NATIVE, speechConfig={"languageCode": "de-DE"}), False, 1007, "invalid argument"),
        (setup(LIVE3, speechConfig={"languageCode": "de-DE"}), False, 1007, "invalid argument"),
        # 3.x thinks by level, 2.5 by budget, half-cascade not at all.
        (setup(LIVE3, thinkingConfig={"thinkingBudget": 0}), False, 1007, "invalid argument"),
        (setup(NATIVE, thinkingConfig={"thinkingLevel": "LOW"}), False, 1007, "invalid argument"),
        (setup(CASCADE, thinkingConfig={"thinkingBudget": 0}), False, 1007, "invalid argument"),
        # v1alpha-only fields on v1beta: the proto parser's "Unknown name".
        (setup(NATIVE, enableAffectiveDialog=True), False, 1007, 'Unknown name "enableAff'),
        (
            {"setup": {**setup(NATIVE)["setup"], "proactivity": {"proactiveAudio": True}}},
            False,
            1007,
            'Unknown name "proactivity"',
        ),
        (setup(NATIVE, bogusKnob=1), False, 1007, 'Unknown name "bogusKnob"'),
        # What each family does take.
        (setup(CASCADE, speechConfig={"languageCode": "de-DE"}), False, None, ""),
        (setup(LIVE3, thinkingConfig={"thinkingLevel": "MINIMAL"}), False, None, ""),
        (
            setup(NATIVE, thinkingConfig={"thinkingBudget": 0}, enableAffectiveDialog=True),
            True,
            None,
            "",
        ),
    ],
)
async def test_setup_dialect(
    fake: FakeGemini, message: dict[str, Any], path_v1alpha: bool, code: int | None, reason: str
) -> None:
    url = (
        fake.url.replace(
            "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent", V1ALPHA
        )
        if path_v1alpha
        else fake.url
    )
    got_code, got_reason = await close_of(url, message)
    assert got_code == code
    assert reason.lower() in got_reason.lower()


async def open_with_token(
    fake: FakeGemini, token: str, handle: str | None = None
) -> ClientConnection:
    ws = await connect(fake.constrained_url, additional_headers={"Authorization": f"Token {token}"})
    body = setup()
    if handle is not None:
        body["setup"]["sessionResumption"] = {"handle": handle}
    else:
        body["setup"]["sessionResumption"] = {}
    await ws.send(json.dumps(body))
    return ws


async def first_reply(ws: ClientConnection) -> dict[str, Any] | tuple[int, str]:
    try:
        return json.loads(await asyncio.wait_for(ws.recv(), 10))
    except ConnectionClosed as exc:
        assert exc.rcvd is not None
        return exc.rcvd.code, exc.rcvd.reason


async def test_a_single_use_token_opens_one_session_and_any_resumes(
    fake: FakeGemini,
) -> None:
    token = fake.mint_token(uses=1)
    ws = await open_with_token(fake, token)
    assert await first_reply(ws) == {"setupComplete": {}}
    handle = json.loads(await ws.recv())["sessionResumptionUpdate"]["newHandle"]
    await ws.close()
    for _ in range(2):
        ws = await open_with_token(fake, token, handle)
        assert await first_reply(ws) == {"setupComplete": {}}
        await ws.close()
    ws = await open_with_token(fake, token)
    assert await first_reply(ws) == (1008, TOKEN_SPENT)


async def test_the_new_session_window_and_the_expiry(fake: FakeGemini) -> None:
    late = fake.mint_token(uses=0, new_session_s=0)
    ws = await open_with_token(fake, late)
    assert await first_reply(ws) == (1008, TOKEN_LATE)
    expired = fake.mint_token(uses=0, expire_s=0)
    ws = await open_with_token(fake, expired)
    assert await first_reply(ws) == (1008, TOKEN_EXPIRED)
    unknown = "auth_tokens/never-minted"
    ws = await connect(
        fake.constrained_url, additional_headers={"Authorization": f"Token {unknown}"}
    )
    assert await first_reply(ws) == (1008, TOKEN_UNKNOWN)


async def test_a_token_past_its_expiry_ends_the_session_at_its_next_message(
    fake: FakeGemini,
) -> None:
    token = fake.mint_token(uses=0, expire_s=60)
    ws = await open_with_token(fake, token)
    assert await first_reply(ws) == {"setupComplete": {}}
    fake.tokens.tokens[token].expires_at = 0.0  # the clock passes expireTime
    await ws.send(json.dumps({"realtimeInput": {"activityStart": {}}}))
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            await asyncio.wait_for(ws.recv(), 10)
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (1008, TOKEN_EXPIRED)


async def test_tokens_minted_over_http_as_the_service_mints_them() -> None:
    async with FakeGemini(api_key="AIzaFAKE-KEY-0123456789", pace=0, use_speech=False) as fake:

        def post(body: dict[str, Any], key: str) -> tuple[int, dict[str, Any]]:
            req = urllib.request.Request(
                f"{fake.auth_url}/v1alpha/auth_tokens",
                data=json.dumps(body).encode(),
                headers={"x-goog-api-key": key, "Content-Type": "application/json"},
                method="POST",
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())

        status, body = await asyncio.to_thread(post, {"uses": 2}, "AIzaFAKE-KEY-0123456789")
        assert status == 200 and body["name"].startswith("auth_tokens/")
        assert fake.tokens.tokens[body["name"]].uses_left == 2
        status, body = await asyncio.to_thread(post, {"uses": 1}, "AIzaWRONG-KEY-000000000")
        assert status == 400 and "API key not valid" in body["error"]["message"]
        status, body = await asyncio.to_thread(post, {"usesX": 1}, "AIzaFAKE-KEY-0123456789")
        assert status == 400 and "Unknown name" in body["error"]["message"]
        status, body = await asyncio.to_thread(
            post, {"expireTime": "2000-01-01T00:00:00Z"}, "AIzaFAKE-KEY-0123456789"
        )
        assert status == 400 and "future" in body["error"]["message"]


def test_every_rule_in_the_fakes_table_names_a_test_that_exists() -> None:
    import re
    from pathlib import Path

    import edge_daemon.fake_gemini as package

    doc = package.__doc__ or ""
    tests = Path(__file__).parent
    named = re.findall(r"(test_\w+)::(test_\w+)", doc)
    # Continuation lines name more tests of the same file.
    assert len(named) >= 20
    for file, test in named:
        assert f"def {test}(" in (tests / f"{file}.py").read_text(), f"{file}::{test}"
    for test in re.findall(r"^\s+(test_\w+)$", doc, re.M):
        assert any(f"def {test}(" in p.read_text() for p in tests.glob("test_*.py")), test
