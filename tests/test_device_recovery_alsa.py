"""A microphone unplugged mid-stream, or missing at start, through the real
PortAudio/ALSA path, and one that never comes back.

The microphone and the speaker each live on a private PulseAudio server of
their own, reached through ALSA's pulse plugin (``server`` in the PCM), so
the microphone can be "unplugged" alone: killing its server ends its stream
as pulling a USB device does (PortAudio's stream goes inactive at once), and
while that server is down ALSA's ``edge_mic`` cannot be opened and PortAudio,
starting afresh, does not list it. Starting the server again is plugging it back.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import have, wav_frames
from test_device_recovery_daemon import events, status_until

from edge_daemon import exits
from edge_daemon.fake_gemini import FakeGemini

pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")


@dataclass
class SoundServers:
    """A PulseAudio for the microphone's room (micsink) and one for the speaker (spksink)."""

    home: Path
    env: dict[str, str]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def socket(self, name: str) -> Path:
        return self.home / f"{name}.sock"

    def start(self, name: str) -> None:
        sink = {
            "mic": "module-null-sink sink_name=micsink rate=16000 channels=1 norewinds=1",
            "spk": "module-null-sink sink_name=spksink rate=24000 channels=1 norewinds=1",
        }[name]
        runtime = self.home / f"{name}-run"
        runtime.mkdir(mode=0o700, exist_ok=True)
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - the server's own log
        self.procs[name] = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "--daemonize=no",
                "--use-pid-file=no",
                "--exit-idle-time=-1",
                "--disable-shm=yes",
                "-L",
                sink,
                "-L",
                f"module-native-protocol-unix socket={self.socket(name)}",
            ],
            env={**self.env, "XDG_RUNTIME_DIR": str(runtime)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 10
        while self._pactl(name, "info").returncode != 0:
            if self.procs[name].poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"PulseAudio did not start: {(self.home / f'{name}.log').read_text()}")
            time.sleep(0.05)  # readiness of an outside process: nothing to wait on but its socket

    def unplug(self, name: str) -> None:
        """Kill the server: its clients' streams end at once, with no goodbye."""
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.procs.clear()

    def _pactl(self, name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["pactl", f"--server=unix:{self.socket(name)}", *args],
            env=self.env,
            capture_output=True,
            timeout=10,
        )

    async def say(self, pcm16k: bytes, tmp: Path) -> None:
        """Play 16 kHz mono PCM into the microphone's room, in real time."""
        raw = tmp / f"say-{time.monotonic_ns()}.raw"
        raw.write_bytes(pcm16k)
        proc = await asyncio.create_subprocess_exec(
            "paplay",
            f"--server=unix:{self.socket('mic')}",
            "--raw",
            "--rate=16000",
            "--channels=1",
            "--format=s16le",
            "--device=micsink",
            str(raw),
            env=self.env,
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0


@pytest.fixture
def servers(tmp_path: Path, daemon_env: dict[str, str]) -> Iterator[SoundServers]:
    if not have("pulseaudio", "pactl", "paplay"):
        pytest.skip("needs PulseAudio (apt-get install pulseaudio pulseaudio-utils)")
    if not any(Path("/usr/lib").glob("**/alsa-lib/libasound_module_pcm_pulse.so")):
        pytest.skip("needs ALSA's pulse plugin (apt-get install libasound2-plugins)")
    home = tmp_path / "sound"
    home.mkdir()
    # A client that finds no server must not start one of its own.
    (home / "client.conf").write_text("autospawn = no\n")
    (home / ".asoundrc").write_text(
        f"""
pcm.edge_mic {{ type pulse; server "unix:{home / "mic.sock"}"; device "micsink.monitor" }}
pcm.edge_spk {{ type pulse; server "unix:{home / "spk.sock"}"; device "spksink" }}
"""
    )
    env = {k: v for k, v in daemon_env.items() if not k.startswith(("PULSE_", "PIPEWIRE_"))}
    env.update(HOME=str(home), PULSE_CLIENTCONFIG=str(home / "client.conf"))
    env.pop("XDG_RUNTIME_DIR", None)
    s = SoundServers(home, env)
    try:
        yield s
    finally:
        s.stop_all()


def sound_daemon(spawn_daemon: Any, fake: FakeGemini, servers: SoundServers, grace_s: float) -> Any:
    return spawn_daemon(
        {
            "gemini": {"endpoint": fake.url},
            "audio": {
                "backend": "pyaudio",
                "input_device": "edge_mic",
                "output_device": "edge_spk",
                "device_retry_max_s": 1.0,
                "device_grace_s": grace_s,
            },
            "logging": {"level": "debug", "target": "stderr"},
        },
        env=servers.env,
    )


def mic_state(status: dict[str, Any]) -> str:
    return str(status["device_health"]["microphone"]["state"])


async def spoken_turn(daemon: Any, fake: FakeGemini, servers: SoundServers, tmp: Path) -> bytes:
    """Press, say a real phrase into the room, release: what the server heard."""
    speech = wav_frames(make_phrase(tmp))[1]
    assert (await daemon.ctl("press"))["ok"]
    await daemon.wait_state("listening")
    await servers.say(speech, tmp)
    conn = fake.active
    assert conn is not None
    await fake.wait_for(lambda f: conn.capture and speech in bytes(conn.capture.heard_pcm), 20)
    assert (await daemon.ctl("release"))["ok"]
    await daemon.wait_state("idle", 30)
    return speech


def make_phrase(tmp: Path) -> Path:
    from conftest import make_speech

    path = tmp / "phrase.wav"
    return path if path.exists() else make_speech("Turn on the lamp.", path)


async def test_a_mic_unplugged_mid_stream_comes_back_and_hears_again(
    servers: SoundServers, fake: FakeGemini, spawn_daemon: Any, tmp_path: Path
) -> None:
    servers.start("spk")
    servers.start("mic")
    daemon = sound_daemon(spawn_daemon, fake, servers, grace_s=0)
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    status = await daemon.ctl("status")
    assert mic_state(status) == "up" and status["device_health"]["speaker"]["state"] == "up"

    servers.unplug("mic")
    # Down, and retried (and failing) while it is out.
    status = await status_until(daemon, lambda s: s["device_health"]["microphone"]["retries"] >= 1)
    mic = status["device_health"]["microphone"]
    assert mic["state"] == "down" and mic["losses"] == 1
    assert "edge_mic" in mic["reason"]
    assert status["device_health"]["speaker"]["state"] == "up"
    assert status["state"] == "idle", "the daemon's state is not the microphone's"

    servers.start("mic")
    status = await status_until(daemon, lambda s: mic_state(s) == "up")
    assert status["device_health"]["microphone"]["losses"] == 1
    await spoken_turn(daemon, fake, servers, tmp_path)
    assert daemon.stop() == 0
    log = daemon.log()
    (lost,) = events(log, "device_lost")
    assert "microphone lost: edge_mic: the stream stopped (unplugged?)" in lost
    (back,) = events(log, "device_back")
    assert "EDGE_DEVICE=microphone" in back
    assert "Traceback" not in log


async def test_a_mic_missing_at_start_is_found_once_plugged_in(
    servers: SoundServers, fake: FakeGemini, spawn_daemon: Any, tmp_path: Path
) -> None:
    # PortAudio starting without it does not list it; it is found only because
    # the speaker is closed too, so that PortAudio starts afresh.
    servers.start("spk")
    daemon = sound_daemon(spawn_daemon, fake, servers, grace_s=0)
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    status = await status_until(daemon, lambda s: s["device_health"]["microphone"]["retries"] >= 2)
    mic = status["device_health"]["microphone"]
    assert mic["state"] == "down" and "no input device matches 'edge_mic'" in mic["reason"]
    assert status["device_health"]["speaker"]["state"] == "up"

    servers.start("mic")
    await status_until(daemon, lambda s: mic_state(s) == "up")
    await spoken_turn(daemon, fake, servers, tmp_path)
    assert daemon.stop() == 0
    log = daemon.log()
    assert "microphone missing at start" in events(log, "device_lost")[0]
    assert len(events(log, "device_back")) == 1


async def test_a_mic_that_never_comes_back_ends_the_process_with_status_74(
    servers: SoundServers, fake: FakeGemini, spawn_daemon: Any
) -> None:
    servers.start("spk")
    daemon = sound_daemon(spawn_daemon, fake, servers, grace_s=3.0)
    await daemon.ready()
    status = await asyncio.to_thread(daemon.proc.wait, 60)
    assert status == exits.DEVICE_LOST
    log = daemon.log()
    (gone,) = events(log, "device_gone")
    assert "microphone missing for 3 s (audio.device_grace_s)" in gone
    assert "no input device matches 'edge_mic'" in gone
    assert "Traceback" not in log
    assert os.path.exists(servers.socket("spk")), "the speaker's server was never touched"


async def test_a_speaker_unplugged_comes_back_and_plays_again(
    servers: SoundServers, fake: FakeGemini, spawn_daemon: Any
) -> None:
    servers.start("spk")
    servers.start("mic")
    daemon = sound_daemon(spawn_daemon, fake, servers, grace_s=0)
    await daemon.ready()
    await daemon.wait_state("idle", 20)

    servers.unplug("spk")
    status = await status_until(daemon, lambda s: s["device_health"]["speaker"]["retries"] >= 1)
    assert status["device_health"]["speaker"]["state"] == "down"
    assert "edge_spk" in status["device_health"]["speaker"]["reason"]
    # A typed answer meanwhile is dropped and counted, and the turn still ends.
    assert (await daemon.ctl("say", text="hello"))["ok"]
    await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
    await daemon.wait_state("idle", 30)
    status = await daemon.ctl("status")
    assert status["counters"]["speaker"]["dropped_while_down"] > 0

    servers.start("spk")
    status = await status_until(daemon, lambda s: s["device_health"]["speaker"]["state"] == "up")
    played = status["counters"]["speaker"]["bytes_played"]
    assert (await daemon.ctl("say", text="hello again"))["ok"]
    await fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[-1].completed, 20)
    await daemon.wait_state("idle", 30)
    status = await daemon.ctl("status")
    assert status["counters"]["speaker"]["bytes_played"] >= played + len(fake.reply_audio_bytes)
    assert daemon.stop() == 0
    log = daemon.log()
    assert [line for line in events(log, "device_lost") if "EDGE_DEVICE=speaker" in line]
    assert "Traceback" not in log
