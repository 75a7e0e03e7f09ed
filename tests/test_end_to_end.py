"""The whole daemon as a process: real speech in, the fake Gemini, a WAV out."""

from __future__ import annotations

from pathlib import Path

from conftest import SECRET, wav_frames

from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.hardware.status_led import STATE_PATTERNS


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
    # Transcripts are opt-in: by default a line says how long, never what.
    assert "user: (" in log and "model: (" in log and "logging.transcripts is off" in log
    assert turn.reply_text and turn.reply_text not in log
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
    assert status["counters"]["turns"] == 2  # the tap and the typed turn
    assert status["counters"]["speaker"]["bytes_played"] > 0
    assert daemon.stop() == 0
    assert "simulating: built-in fake Gemini" in daemon.log()


async def test_tool_calls_drive_mock_pins_end_to_end(
    fake: FakeGemini, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    from conftest import DaemonProcess

    sock = tmp_path / "ctl.sock"
    cfg = tmp_path / "tools.toml"
    cfg.write_text(
        f'[gemini]\nendpoint = "{fake.url}"\n'
        f'[control]\nsocket = "{sock}"\nkeyboard = false\n'
        '[status_led]\nkind = "pwm"\npin = 25\n'
        "[[tools.led]]\n"
        'name = "kitchen_light"\npin = 17\npwm = true\ndescription = "Ceiling light"\n'
        "[[tools.relay]]\n"
        'name = "garden_pump"\npin = 27\nactive_high = false\nmax_on_seconds = 600\n'
    )
    daemon = DaemonProcess(cfg, sock, tmp_path / "d.log", daemon_env, ("--simulate",))
    try:
        await daemon.ready()
        conn = await fake.wait_for(
            lambda f: f.active if f.active and f.active.setup_complete_sent else None, 20
        )
        declared = {
            d["name"]: d
            for t in conn.setup.get("tools", [])
            for d in t.get("functionDeclarations", [])
        }
        assert {"kitchen_light", "garden_pump", "get_device_states"} <= set(declared)
        before = await daemon.ctl("status")
        # Relays start safe: active-low, so "off" is a high pin.
        assert before["pins"]["27"]["state"] == 1
        patterns = [(before["state"], before["status_led"]["pattern"])]
        ids = await fake.tool_call(
            [
                ("kitchen_light", {"action": "on", "brightness": 40}),
                ("garden_pump", {"on": True}),
                ("kitchen_light", {"action": "on", "brightness": 400}),
            ]
        )
        await fake.wait_for(lambda f: len(f.tool_responses) == 3, 15)
        by_id = {r["id"]: r for r in fake.tool_responses}
        assert set(by_id) == set(ids)
        assert "output" in by_id[ids[0]]["response"]
        assert "output" in by_id[ids[1]]["response"]
        assert "brightness" in by_id[ids[2]]["response"]["error"]
        status = await daemon.ctl("status")
        assert status["pins"]["17"]["state"] == 0.4
        assert status["pins"]["27"]["state"] == 0  # on = low for an active-low relay
        assert status["devices"]["garden_pump"]["on"] is True
        # ctl press drives the mock button pin: the real Button code path.
        assert (await daemon.ctl("press"))["ok"]
        await daemon.wait_state("listening")
        held = await daemon.ctl("status")  # taken while the button is still held
        patterns.append((held["state"], held["status_led"]["pattern"]))
        assert held["pins"]["25"]["state"] == 1.0  # the PWM LED solid on, full brightness
        assert (await daemon.ctl("release"))["ok"]
        await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
        await daemon.wait_state("idle", 20)
        after = await daemon.ctl("status")
        patterns.append((after["state"], after["status_led"]["pattern"]))
        # The LED followed the turn: idle's beacon, listening's solid on, the beacon again.
        assert patterns == [(s, STATE_PATTERNS[s]) for s in ("idle", "listening", "idle")]
    finally:
        assert daemon.stop() == 0
    log = daemon.log()
    # Shutdown put the relay back in its safe state, and said so.
    assert "EDGE_EVENT=relay_off EDGE_TOOL=garden_pump EDGE_PIN=27 EDGE_CAUSE=shutdown" in log


async def test_missing_audio_device_degrades_to_silence_and_keeps_running(
    spawn_daemon, daemon_env: dict[str, str], tmp_path: Path
) -> None:
    env = dict(daemon_env)
    env.pop("GEMINI_API_KEY")
    daemon = spawn_daemon(
        {"audio": {"backend": "wav", "input_wav": str(tmp_path / "no-such.wav")}},
        env=env,
        extra_args=("--simulate",),
    )
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    # Typed turns still work without sound.
    assert (await daemon.ctl("say", text="are you there?"))["ok"]
    await daemon.wait_state("speaking", 20)
    assert daemon.stop() == 0
    log = daemon.log()
    assert "audio unavailable" in log and "no-such.wav" in log
    assert "Traceback" not in log
