"""A room with an echo, made of a private PulseAudio (TEST-RECIPES.md):

- ``micsink``: a 16 kHz null sink; its monitor is the microphone
  (``edge_mic``): what is played into micsink is what the mic hears;
- ``spksink``: a 24 kHz null sink, the speaker (``edge_spk``);
- a loopback from ``spksink.monitor`` into ``micsink`` (``latency_ms``):
  whatever the speaker plays comes back into the mic, delayed, mixed with
  what is "said" into micsink. A real acoustic echo path, clocked like a
  sound card.

Used by the hands-free tests with real sound and by ``bench/voice.py``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ASOUNDRC = """
pcm.edge_mic { type pulse; device "micsink.monitor" }
pcm.edge_spk { type pulse; device "spksink" }
pcm.!default { type pulse }
ctl.!default { type pulse }
"""


class RoomUnavailable(RuntimeError):
    """PulseAudio or ALSA's pulse plugin is missing, or it did not start."""


@dataclass
class Room:
    home: Path
    env: dict[str, str]

    def say_command(self, raw: Path) -> list[str]:
        """paplay of 16 kHz mono s16le ``raw`` into the room, in real time."""
        return [
            "paplay",
            "--raw",
            "--rate=16000",
            "--channels=1",
            "--format=s16le",
            "--device=micsink",
            str(raw),
        ]

    def say(self, pcm16k: bytes) -> None:
        """Play into the room; return when it has played (blocking)."""
        raw = self.home / f"say-{time.monotonic_ns()}.raw"
        raw.write_bytes(pcm16k)
        subprocess.run(self.say_command(raw), env=self.env, check=True, timeout=120)
        raw.unlink()


def _pulse_plugin() -> bool:
    return any(Path("/usr/lib").glob("**/alsa-lib/libasound_module_pcm_pulse.so"))


@contextlib.contextmanager
def room(latency_ms: int = 30, echo: bool = True) -> Iterator[Room]:
    if not (shutil.which("pulseaudio") and shutil.which("pactl") and shutil.which("paplay")):
        raise RoomUnavailable("needs PulseAudio (apt-get install pulseaudio pulseaudio-utils)")
    if not _pulse_plugin():
        raise RoomUnavailable("needs ALSA's pulse plugin (apt-get install libasound2-plugins)")
    home = Path(tempfile.mkdtemp(prefix="edge-room-"))
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "PIPEWIRE_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    (home / ".asoundrc").write_text(ASOUNDRC)
    log = open(home / "pulseaudio.log", "wb")  # noqa: SIM115 - closed below
    modules = [
        "module-null-sink sink_name=micsink rate=16000 channels=1 norewinds=1",
        "module-null-sink sink_name=spksink rate=24000 channels=1 norewinds=1",
        "module-native-protocol-unix",
    ]
    argv = ["pulseaudio", "-n", "--daemonize=no", "--exit-idle-time=-1", "--disable-shm=yes"]
    for module in modules:
        argv += ["-L", module]
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                tail = (home / "pulseaudio.log").read_text(errors="replace")[-500:]
                raise RoomUnavailable(f"PulseAudio did not start: {tail}")
            time.sleep(0.05)  # an outside process's readiness: nothing to wait on but its socket
        if echo:
            subprocess.run(
                [
                    "pactl",
                    "load-module",
                    "module-loopback",
                    "source=spksink.monitor",
                    "sink=micsink",
                    f"latency_msec={latency_ms}",
                ],
                env=env,
                check=True,
                capture_output=True,
            )
        yield Room(home, env)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
