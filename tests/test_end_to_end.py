"""The whole daemon as a process: real speech in, the fake Gemini, a WAV out."""

from __future__ import annotations

from pathlib import Path

from conftest import SECRET, wav_frames

from edge_daemon.fake_gemini import FakeGemini


async def test_push_to_talk_turn_end_to_end(
    fake: FakeGemini, spawn_daemon, speech_wav: Path, tmp_path: Path
) -> None:
    out_wav = tmp_path / "speaker.wav"
    daemon = spawn_daemon(
        {
            "gemini": {"endpoint": fake.url},
            "audio": {
                "backend": "wav",
                "input_wav": str(speech_wav),
                "output_wav": str(out_wav),
                "chunk_ms": 40,
            },
            "logging": {"level": "debug", "target": "stderr"},
        }
    )
    await fake.wait_for(lambda f: f.active is not None and f.active.setup_complete_sent, 20)
    await daemon.wait_state("idle")
    conn = fake.active
    assert conn is not None
    # The key travelled in the header, never in the URL.
    assert conn.request_headers.get("x-goog-api-key") == SECRET
    assert SECRET not in conn.request_path

    assert (await daemon.ctl("press"))["ok"]
    await fake.wait_for(lambda f: f.audio_received_s() >= 1.2, 15)
    assert (await daemon.ctl("release"))["ok"]
    await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
    await daemon.wait_state("idle")

    kinds = [k for msg in conn.received for k in msg.get("realtimeInput", {"setup": 0})]
    assert kinds[0] == "setup"
    assert kinds[1] == "activityStart"
    assert kinds[-1] == "activityEnd"
    audio = fake.messages_of("audio")
    assert all(m["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000" for m in audio)
    turn = fake.turns[-1]
    # What the server heard is the start of the speech file, sample for sample.
    _, speech = wav_frames(speech_wav)
    heard = bytes(turn.heard_pcm)
    assert len(heard) >= 2 * 16000  # >= 1 s
    assert len(heard) % 1280 == 0  # 40 ms chunks of 16 kHz s16le
    assert heard[: min(len(heard), len(speech))] == speech[: min(len(heard), len(speech))]

    # The reply landed in the speaker file, byte for byte.
    rate, played = wav_frames(out_wav)
    assert rate == 24000
    assert turn.reply_pcm and played == turn.reply_pcm

    status = await daemon.ctl("status")
    seen = [h["state"] for h in status["history"]]
    assert seen[:5] == ["idle", "listening", "thinking", "speaking", "idle"]
    assert status["connection"]["state"] == "connected"
    assert status["counters"]["turns"] == 1
    assert status["counters"]["chunks_sent"] >= 30

    assert daemon.stop() == 0
    log = daemon.log()
    assert "user: " in log and "model: " in log  # transcripts logged
    assert SECRET not in log


async def test_run_simulate_needs_no_key_and_no_hardware(
    spawn_daemon, daemon_env: dict[str, str]
) -> None:
    env = dict(daemon_env)
    env.pop("GEMINI_API_KEY")
    daemon = spawn_daemon({"logging": {"level": "info"}}, env=env, extra_args=("--simulate",))
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    status = await daemon.ctl("status")
    assert status["connection"]["url"].startswith("ws://127.0.0.1:")
    assert (await daemon.ctl("tap", seconds=0.5))["ok"]
    await daemon.wait_state("speaking", 20)
    await daemon.wait_state("idle", 30)
    assert (await daemon.ctl("say", text="hello there"))["ok"]
    await daemon.wait_state("speaking", 20)
    await daemon.wait_state("idle", 30)
    status = await daemon.ctl("status")
    assert status["counters"]["turns"] == 1
    assert status["counters"]["speaker"]["bytes_played"] > 0
    assert daemon.stop() == 0
    assert "simulating: built-in fake Gemini" in daemon.log()
