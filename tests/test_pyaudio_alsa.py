"""The real PortAudio/ALSA path, with no sound card: virtual devices, real callbacks.

Why PulseAudio and not only ALSA's ``file`` plugin over ``null``: ``null`` is
not clocked, so a daemon on it runs its callbacks flat out (a core spinning,
the output file growing by hundreds of MB a second, the input file swallowed
before anyone presses the button). A PulseAudio null sink is clocked like a
sound card. The mic is the monitor of one null sink, and the test "speaks"
into it with ``paplay`` exactly when the button is down; the speaker is ALSA's
``file`` plugin over another null sink, so every byte the daemon plays lands
in a raw file, at the pace of a real device. ``norewinds=1`` keeps the
monitor bit-exact (a rewind would otherwise re-render audio it already
captured), so the assertions can compare samples exactly.

The unclocked ``file``-over-``null`` recipe still has one use here: flooding
the microphone faster than anyone reads it, for real.

Each process gets its own HOME (``.asoundrc``) and XDG_RUNTIME_DIR (the
PulseAudio socket): PortAudio reads both once, when it initialises.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, have, make_speech, wav_frames

from edge_daemon.fake_gemini import FakeGemini

pytest.importorskip("pyaudio", reason="PyAudio is not installed (pip install pyaudio)")

PULSE_PLUGIN = "libasound_module_pcm_pulse.so"


def _pulse_plugin_installed() -> bool:
    return any(Path("/usr/lib").glob(f"**/alsa-lib/{PULSE_PLUGIN}"))


@dataclass
class VirtualAudio:
    """A private PulseAudio with a 16 kHz "room" (micsink) and a 24 kHz speaker (spksink)."""

    home: Path
    env: dict[str, str]

    def asoundrc(self, speaker_file: Path, extra: str = "") -> None:
        """ALSA devices for the next PortAudio process: ``edge_mic`` hears the room,
        ``edge_spk`` plays to spksink and records every byte into ``speaker_file``."""
        (self.home / ".asoundrc").write_text(
            f"""
pcm.edge_mic {{ type pulse; device "micsink.monitor" }}
pcm.edge_spk_pulse {{ type pulse; device "spksink" }}
pcm.edge_spk {{ type file; slave.pcm "edge_spk_pulse"; file "{speaker_file}"; format "raw" }}
pcm.!default {{ type pulse }}
ctl.!default {{ type pulse }}
{extra}
"""
        )

    async def say(self, pcm16k: bytes, tmp: Path) -> None:
        """Play 16 kHz mono PCM into the room, in real time; return when it has all played."""
        raw = tmp / f"say-{time.monotonic_ns()}.raw"
        raw.write_bytes(pcm16k)
        proc = await asyncio.create_subprocess_exec(
            "paplay",
            "--raw",
            "--rate=16000",
            "--channels=1",
            "--format=s16le",
            "--device=micsink",
            str(raw),
            env=self.env,
        )
        assert await asyncio.wait_for(proc.wait(), 30) == 0


@pytest.fixture(scope="module")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    if not have("pulseaudio", "pactl", "paplay"):
        pytest.skip("needs PulseAudio (apt-get install pulseaudio pulseaudio-utils)")
    if not _pulse_plugin_installed():
        pytest.skip("needs ALSA's pulse plugin (apt-get install libasound2-plugins)")
    home = tmp_path_factory.mktemp("pulse-home")
    runtime = home / "run"
    runtime.mkdir(mode=0o700)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "PIPEWIRE_"))}
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    log = open(home / "pulseaudio.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            "pulseaudio",
            "-n",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disable-shm=yes",
            "-L",
            "module-null-sink sink_name=micsink rate=16000 channels=1 norewinds=1",
            "-L",
            "module-null-sink sink_name=spksink rate=24000 channels=1 norewinds=1",
            "-L",
            "module-native-protocol-unix",
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 10
        while subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode != 0:
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.skip(
                    "PulseAudio did not start: "
                    + (home / "pulseaudio.log").read_text(errors="replace")[-500:]
                )
            time.sleep(0.05)  # readiness of an outside process: nothing to wait on but its socket
        yield VirtualAudio(home, env)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def pcm_of(wav: Path) -> bytes:
    return wav_frames(wav)[1]


def best_match(x: np.ndarray, ref: np.ndarray) -> float:
    """Peak normalised cross-correlation of ``ref`` inside ``x`` (1.0: identical shape)."""
    x, ref = x.astype(np.float64), ref.astype(np.float64)
    n = len(x) + len(ref)
    size = 1 << (n - 1).bit_length()
    corr = np.fft.irfft(np.fft.rfft(x, size) * np.conj(np.fft.rfft(ref, size)), size)
    k = int(np.argmax(corr[: len(x) - len(ref) + 1]))
    window = x[k : k + len(ref)]
    return float(corr[k] / (np.linalg.norm(window) * np.linalg.norm(ref) + 1e-9))


def run_script(code: str, env: dict[str, str], *args: str) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


# -- the whole daemon ---------------------------------------------------------------


async def test_speech_reaches_gemini_and_the_reply_the_speaker_through_portaudio(
    virtual_audio: VirtualAudio,
    fake: FakeGemini,
    spawn_daemon,
    daemon_env: dict[str, str],
    speech_wav: Path,
    tmp_path: Path,
) -> None:
    played = tmp_path / "speaker.raw"
    virtual_audio.asoundrc(played)
    reply = pcm_of(make_speech("The lamp is on.", tmp_path / "reply.wav", rate=24000))
    fake.script_turn(reply_text="The lamp is on.", reply_pcm=reply)
    daemon = spawn_daemon(
        {
            "gemini": {"endpoint": fake.url},
            "audio": {
                "backend": "pyaudio",
                "input_device": "edge_mic",
                "output_device": "edge_spk",
                "chunk_ms": 40,
            },
            "logging": {"level": "debug", "target": "stderr"},
        },
        env={**daemon_env, **virtual_audio.env},
    )
    await daemon.ready()
    await daemon.wait_state("idle", 20)
    speech = pcm_of(speech_wav)

    assert (await daemon.ctl("press"))["ok"]
    await daemon.wait_state("listening")
    await virtual_audio.say(speech, tmp_path)
    # Everything said reaches the server, sample for sample, before the release.
    conn = fake.active
    assert conn is not None
    await fake.wait_for(lambda f: conn.capture and speech in bytes(conn.capture.heard_pcm), 15)
    assert (await daemon.ctl("release"))["ok"]
    await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
    await daemon.wait_state("idle", 20)  # after the speaker has played the reply out

    audio = fake.messages_of("audio")
    assert all(m["realtimeInput"]["audio"]["mimeType"] == "audio/pcm;rate=16000" for m in audio)
    assert len(fake.turns[-1].heard_pcm) % 1280 == 0  # 40 ms chunks of 16 kHz s16le
    status = await daemon.ctl("status")
    speaker, mic = status["counters"]["speaker"], status["counters"]["mic"]
    assert speaker["bytes_played"] == len(reply) and speaker["flushes"] == 0
    assert mic["chunks"] > 0 and mic["stalls"] == 0
    assert daemon.stop() == 0  # closing the stream flushes ALSA's file plugin
    # The reply reached the device byte for byte, between stretches of silence.
    out = played.read_bytes()
    assert reply in out
    assert not any(out.replace(reply, b"", 1))
    log = daemon.log()
    assert "microphone: edge_mic" in log and "at 16000 Hz x1" in log
    assert "speaker: edge_spk" in log and "at 24000 Hz x1" in log
    assert "ALSA lib" not in log, "PortAudio's device probing must not spam the journal"


# -- a device that only runs at 48 kHz stereo ------------------------------------------

RESAMPLING = r"""
import asyncio, json, subprocess, sys
import pyaudio

real = pyaudio.PyAudio.is_format_supported


def only_48k_stereo(self, rate, **kw):
    # What a codec such as the WM8960 on hw: says: 48 kHz, two channels, nothing else.
    channels = kw.get("input_channels") or kw.get("output_channels")
    if int(rate) != 48000 or channels != 2:
        raise ValueError("Invalid sample rate", pyaudio.paInvalidSampleRate)
    return real(self, rate, **kw)


pyaudio.PyAudio.is_format_supported = only_48k_stereo

from edge_daemon.audio.pyaudio_backend import open_pyaudio

speech_raw, reply_raw, heard_raw = sys.argv[1:4]


async def main():
    mic, speaker = open_pyaudio(input_device="edge_mic", output_device="edge_spk", chunk_ms=20)
    await mic.start()
    await speaker.start()
    say = await asyncio.create_subprocess_exec(
        "paplay", "--raw", "--rate=16000", "--channels=1", "--format=s16le",
        "--device=micsink", speech_raw)
    heard, sizes = bytearray(), set()
    waiting = asyncio.ensure_future(say.wait())
    extra = 0
    while extra < 25:  # until 0.5 s after the speech has played
        chunk = await mic.read()
        heard += chunk
        sizes.add(len(chunk))
        extra += waiting.done()
    open(heard_raw, "wb").write(heard)
    reply = open(reply_raw, "rb").read()
    for i in range(0, len(reply), 3840):
        speaker.play(reply[i : i + 3840])
    await speaker.wait_idle()
    await mic.close()
    await speaker.close()
    print(json.dumps({
        "mic": [mic.device_rate, mic.device_channels], "sizes": sorted(sizes),
        "speaker": [speaker.device_rate, speaker.device_channels],
        "played": speaker.counters["bytes_played"], "reply": len(reply),
        "overflows": mic.counters["overflows"],
    }))


asyncio.run(main())
"""


def test_a_48k_stereo_only_device_is_resampled_both_ways(
    virtual_audio: VirtualAudio, speech_wav: Path, tmp_path: Path
) -> None:
    soxr = pytest.importorskip("soxr")
    played = tmp_path / "speaker48.raw"
    virtual_audio.asoundrc(played)
    speech = pcm_of(speech_wav)
    reply = pcm_of(make_speech("The lamp is on.", tmp_path / "reply.wav", rate=24000))
    files = {name: tmp_path / f"{name}.raw" for name in ("speech", "reply", "heard")}
    files["speech"].write_bytes(speech)
    files["reply"].write_bytes(reply)
    result = run_script(RESAMPLING, virtual_audio.env, *(str(f) for f in files.values()))

    assert result["mic"] == [48000, 2] and result["speaker"] == [48000, 2]
    assert result["sizes"] == [640], "16 kHz 20 ms chunks, whatever the device runs at"
    assert result["played"] == len(reply) and result["overflows"] == 0
    # What the daemon heard is the speech (through two resamplers, so close, not exact).
    heard = np.frombuffer(files["heard"].read_bytes(), "<i2")
    assert best_match(heard, np.frombuffer(speech, "<i2")) > 0.95
    # The device got 48 kHz stereo: the reply, upsampled, on both channels.
    out = np.frombuffer(played.read_bytes(), "<i2").reshape(-1, 2)
    assert (out[:, 0] == out[:, 1]).all()
    expected = soxr.resample(np.frombuffer(reply, "<i2"), 24000, 48000, quality="HQ")
    assert best_match(out[:, 0], expected) > 0.99


# -- choosing real devices ----------------------------------------------------------

CHOOSING = r"""
import asyncio, json
from edge_daemon.audio import AudioConfigError
from edge_daemon.audio.devices import list_devices
from edge_daemon.audio.pyaudio_backend import open_pyaudio

devices = list_devices()
index = next(d["index"] for d in devices if d["name"] == "edge_mic")
mic, speaker = open_pyaudio(input_device=str(index), output_device="EDGE_SPK")
chosen = [mic.device["name"], speaker.device["name"]]
asyncio.run(mic.close())
asyncio.run(speaker.close())
try:
    open_pyaudio(input_device="ReSpeaker")
except AudioConfigError as exc:
    error = str(exc)
print(json.dumps({"names": [d["name"] for d in devices], "chosen": chosen, "error": error}))
"""


def test_real_devices_by_index_and_name_and_a_helpful_error(
    virtual_audio: VirtualAudio, tmp_path: Path
) -> None:
    virtual_audio.asoundrc(tmp_path / "unused.raw")
    result = run_script(CHOOSING, virtual_audio.env)
    assert {"edge_mic", "edge_spk", "default"} <= set(result["names"])  # type: ignore[arg-type]
    assert result["chosen"] == ["edge_mic", "edge_spk"]
    error = str(result["error"])
    assert "no input device matches 'ReSpeaker'" in error
    assert ": edge_mic" in error and ": default" in error

    listing = subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", "devices"],
        capture_output=True,
        text=True,
        env=virtual_audio.env,
        cwd=ROOT,
        timeout=60,
    )
    assert listing.returncode == 0, listing.stderr
    assert "edge_mic" in listing.stdout and "(default in+out)" in listing.stdout
    assert "ALSA lib" not in listing.stderr + listing.stdout


# -- flooding the mic: ALSA's unclocked file plugin ------------------------------------------

FLOOD = r"""
import asyncio, json, sys
from edge_daemon.audio.pyaudio_backend import open_pyaudio


async def main():
    mic, speaker = open_pyaudio(input_device="flood_mic", output_device="edge_spk")
    await mic.start()
    chunks = []
    loop = asyncio.get_running_loop()
    for _ in range(int(sys.argv[1])):
        chunks.append(await mic.read())
        if len(chunks) == 10:
            # A busy loop: stop reading until the unclocked device has overrun
            # the queue during the stall, however slow the machine (PortAudio's
            # thread counts the blocks it drops; some may have gone before the
            # first read, as the device ran ahead of the reader from the start).
            before, deadline = mic._dropped, loop.time() + 30
            while mic._dropped == before and loop.time() < deadline:
                await asyncio.sleep(0.01)
    await mic.close()
    await speaker.close()
    open(sys.argv[2], "wb").write(b"".join(chunks))
    print(json.dumps(mic.counters))


asyncio.run(main())
"""


def label(k: int) -> bytes:
    """40 ms of 16 kHz audio that says which chunk of the recording it is (never silent)."""
    return (k + 1).to_bytes(4, "little") * 320


def test_an_unread_mic_drops_the_oldest_audio_on_a_real_device(
    virtual_audio: VirtualAudio, tmp_path: Path
) -> None:
    # null is not clocked: PortAudio reads this "recording" as fast as the CPU
    # allows, far faster than the reader takes it, and the bounded queue must
    # shed the oldest chunks (whole ones, counted) without ever blocking it.
    source = tmp_path / "labelled.raw"
    total = 8000  # 320 s, 10 MB: more than a fast machine's PortAudio reads in the test
    source.write_bytes(b"".join(label(k) for k in range(total)))
    virtual_audio.asoundrc(
        tmp_path / "unused.raw",
        extra=f'pcm.flood_mic {{ type file; slave.pcm "null"; file "/dev/null"; '
        f'infile "{source}"; format "raw" }}',
    )
    got = tmp_path / "got.raw"
    counters = run_script(FLOOD, virtual_audio.env, "20", str(got))
    data = got.read_bytes()
    assert len(data) == 20 * 1280
    seen = []
    for i in range(0, len(data), 1280):
        piece = data[i : i + 1280]
        k = int.from_bytes(piece[:4], "little") - 1
        assert piece == label(k), f"chunk {i // 1280} is torn or misaligned"
        if k >= total - 3:
            break  # at its end the file plugin repeats its last periods: nothing to learn there
        seen.append(k)
    assert len(seen) > 10, f"the recording ran out too soon: {seen}"
    assert seen == sorted(set(seen)), "chunks arrive in order, none twice"
    assert seen[-1] - seen[0] + 1 > len(seen), "the stall cost chunks: older ones, in between"
    assert counters["overflows"] > 0  # type: ignore[operator]
