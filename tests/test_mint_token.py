"""`edge-daemon mint-token` against the fake's auth_tokens endpoint: the
README's command, with --base-url pointed at the fake."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from conftest import ROOT, SECRET

from edge_daemon.fake_gemini import FakeGemini


def mint(*args: str, key: str = SECRET, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "EDGE_DAEMON_CONFIG"}
    env["GEMINI_API_KEY"] = key
    return subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", "mint-token", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
    )


async def test_it_prints_only_the_token_and_asks_for_the_limits_given(tmp_path: Path) -> None:
    async with FakeGemini(api_key=SECRET, pace=0, use_speech=False) as fake:
        done = await asyncio.to_thread(
            mint,
            "--uses",
            "2",
            "--expire",
            "10m",
            "--new-session",
            "2m",
            "--base-url",
            fake.auth_url,
        )
        assert done.returncode == 0, done.stderr
        token = done.stdout.strip()
        assert token in fake.tokens.tokens and done.stdout == token + "\n"
        body = fake.tokens.mint_requests[-1]
        assert body["uses"] == 2 and "bidiGenerateContentSetup" not in body
        ahead = datetime.fromisoformat(body["expireTime"].replace("Z", "+00:00")).timestamp()
        assert 590 < ahead - time.time() < 610
        assert fake.tokens.tokens[token].uses_left == 2
        assert SECRET not in done.stdout + done.stderr


async def test_lock_setup_and_json(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[gemini]\nvoice = "Puck"\nlanguage = "de-DE"\n')
    async with FakeGemini(api_key=SECRET, pace=0, use_speech=False) as fake:
        done = await asyncio.to_thread(
            mint, "--config", str(cfg), "--lock-setup", "--json", "--base-url", fake.auth_url
        )
        assert done.returncode == 0, done.stderr
        printed = json.loads(done.stdout)
        assert printed["name"] in fake.tokens.tokens and printed["uses"] == 1
        body = fake.tokens.mint_requests[-1]
        setup = body["bidiGenerateContentSetup"]
        assert setup["generationConfig"]["speechConfig"]["voiceConfig"] == {
            "prebuiltVoiceConfig": {"voiceName": "Puck"}
        }
        assert "sessionResumption" not in setup and "realtimeInputConfig" not in setup
        assert "generationConfig.speechConfig" in body["fieldMask"].split(",")


async def test_a_refused_key_and_an_unreachable_endpoint_are_one_line_each() -> None:
    async with FakeGemini(api_key=SECRET, pace=0, use_speech=False) as fake:
        done = await asyncio.to_thread(
            mint, "--base-url", fake.auth_url, key="AIzaWRONG-KEY-000000000000"
        )
    assert done.returncode == 1
    assert "HTTP 400 API key not valid" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    done = await asyncio.to_thread(mint, "--base-url", "http://127.0.0.1:9")
    assert done.returncode == 69 and "cannot reach" in done.stderr
