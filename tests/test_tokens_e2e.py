"""A device that never holds the key: `gemini.token_command` runs
`edge-daemon mint-token` against the fake's auth_tokens endpoint, which hands
out single-use tokens; the daemon goes through a drop, a goAway, a lost
session and a restart, and never offers a spent token. The key is in no
environment, argument or log line of the daemon. And `ctl say`, with
detection off, gets a spoken answer."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from conftest import SECRET, DaemonProcess, write_config

from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.fake_gemini.tokens import TOKEN_CLOSE


def token_config(tmp_path: Path, fake: FakeGemini) -> Path:
    key_file = tmp_path / "mint-key"
    key_file.write_text(SECRET + "\n")
    key_file.chmod(0o600)
    command = (
        f"{sys.executable} -m edge_daemon.cli mint-token --base-url {fake.auth_url} "
        f"--api-key-file {key_file} --uses 1 --json"
    )
    return write_config(
        tmp_path / "device.toml",
        {
            "gemini": {
                "endpoint": fake.constrained_url,
                "auth": "ephemeral_token",
                "token_command": command,
            },
            "audio": {"backend": "null"},
            "state": {"dir": str(tmp_path / "state")},
            "control": {"socket": str(tmp_path / "ctl.sock"), "keyboard": False},
            "logging": {"level": "debug", "target": "stderr", "transcripts": True},
        },
    )


def device_env(daemon_env: dict[str, str]) -> dict[str, str]:
    env = dict(daemon_env)
    env.pop("GEMINI_API_KEY")  # the device has no key, anywhere
    return env


def proc_text(pid: int, what: str) -> str:
    return Path(f"/proc/{pid}/{what}").read_bytes().replace(b"\0", b" ").decode(errors="replace")


def spent_offered(fake: FakeGemini) -> list[Any]:
    """Connections the fake refused for their token."""
    return [
        c
        for c in fake.connections
        if c.close_code == TOKEN_CLOSE and "auth token" in (c.close_reason or "")
    ]


async def test_single_use_tokens_through_drop_go_away_lost_session_and_restart(
    tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    async with FakeGemini(api_key=SECRET, pace=4.0, use_speech=False) as fake:
        config = token_config(tmp_path, fake)
        env = device_env(daemon_env)
        daemon = DaemonProcess(config, tmp_path / "ctl.sock", tmp_path / "d1.log", env)
        try:
            await daemon.ready(60)
            await daemon.wait_state("idle", 60)
            first = fake.connections[-1]
            assert first.token is not None and first.resumed_from is None
            # Nothing of the key in the daemon's environment, arguments or log.
            for what in ("environ", "cmdline"):
                assert SECRET not in proc_text(daemon.proc.pid, what)
            # A drop: resumed with the same token (a resume spends no use).
            await fake.drop_connection()
            await fake.wait_for(
                lambda f: len(f.connections) >= 2 and f.connections[-1].setup_complete_sent, 60
            )
            assert fake.connections[-1].resumed_from and fake.connections[-1].token == first.token
            # goAway: switched, resumed, same token.
            await fake.go_away(time_left_s=30)
            await fake.wait_for(
                lambda f: len(f.connections) >= 3 and f.connections[-1].setup_complete_sent, 60
            )
            assert fake.connections[-1].resumed_from
            # The server forgets the session: a new one needs a fresh token.
            fake.sessions.clear()
            await fake.drop_connection()
            await fake.wait_for(
                lambda f: any(
                    c.setup_complete_sent and not c.resumed_from for c in f.connections[1:]
                ),
                60,
            )
            fresh = next(
                c for c in fake.connections[1:] if c.setup_complete_sent and not c.resumed_from
            )
            assert fresh.token != first.token
            # A typed turn on the way.
            assert (await daemon.ctl("say", text="hello there"))["ok"]
            await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 60)
            assert daemon.stop() == 0
            log1 = daemon.log()
        finally:
            daemon.stop()
        # A restart within the window resumes the same conversation, with a new token.
        before = len(fake.connections)
        daemon = DaemonProcess(config, tmp_path / "ctl.sock", tmp_path / "d2.log", env)
        try:
            await daemon.ready(60)
            await daemon.wait_state("idle", 60)
            resumed = fake.connections[before]
            assert resumed.resumed_from is not None
            assert resumed.session is fresh.session  # the same conversation
            assert (await daemon.ctl("status"))["connection"]["tokens"]["fetched"] == 1
            log2 = daemon.log()
        finally:
            daemon.stop()
    assert spent_offered(fake) == [], [(c.close_code, c.close_reason) for c in spent_offered(fake)]
    minted = list(fake.tokens.tokens.values())
    assert len(minted) == 3 and all(t.new_sessions <= 1 for t in minted)
    assert [t.new_sessions for t in minted] == [1, 1, 0]  # the third only resumed
    for log in (log1, log2):
        assert SECRET not in log
        assert not any(t.name in log for t in minted), "a token reached the log"


async def test_ctl_say_with_detection_off_gets_a_spoken_answer(
    tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    async with FakeGemini(api_key=SECRET, pace=4.0) as fake:
        out = tmp_path / "answers.wav"
        config = write_config(
            tmp_path / "c.toml",
            {
                "gemini": {"endpoint": fake.url},
                "audio": {"backend": "wav", "output_wav": str(out)},
                "control": {"socket": str(tmp_path / "ctl.sock"), "keyboard": False},
            },
        )
        daemon = DaemonProcess(config, tmp_path / "ctl.sock", tmp_path / "d.log", daemon_env)
        try:
            await daemon.ready(60)
            await daemon.wait_state("idle", 60)
            assert (await daemon.ctl("say", text="what time is it"))["ok"]
            await daemon.wait_state("speaking", 60)
            await daemon.wait_state("idle", 60)
            conn = fake.connections[-1]
            framed = [
                k
                for msg in conn.received
                for k in msg.get("realtimeInput", {})
                if k in ("activityStart", "text", "activityEnd")
            ]
            assert framed == ["activityStart", "text", "activityEnd"]
            assert conn.ignored_texts == []
            assert fake.turns[-1].reply_text == "You said: what time is it"
            assert (await daemon.ctl("status"))["counters"]["speaker"]["bytes_played"] > 0
        finally:
            assert daemon.stop() == 0
