"""The hands-free figures, on real PortAudio in the echo room (bench/room.py)
and against the fake Gemini; never a timed test.

- idle: the daemon's CPU-s per minute, idle, with the button only, with
  the wake word listening, and with echo cancellation on too; as a ratio
  to the wake-word engine alone on the same length of audio (bench/wake.py);
- wake: "okay nabu, what time is it" said into the room: from the wake
  word's detection (the daemon's log) to the first audio at the server,
  and how long after the phrase the detector fires (offline, on the same
  speech);
- echo: ERLE on the loopback path (bench/echo.py);
- end of speech -> answer with each method (bench/end_of_speech.py);
- false and missed wakes (bench/wake.py).

    python -m bench.voice [--idle-s 60] [--false-minutes 60] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_daemon.control import request
from edge_daemon.fake_gemini import FakeGemini

from . import end_of_speech, wake
from .common import cpu_seconds
from .room import Room, room

KEY = "bench-voice-key"
ROOT = Path(__file__).resolve().parent.parent


class StampingFake(FakeGemini):
    """The fake, noting when each client message arrived (time.time())."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self.arrivals: list[tuple[float, str]] = []

    def _record_received(self, conn, msg):  # type: ignore[no-untyped-def]
        realtime = msg.get("realtimeInput")
        if isinstance(realtime, dict):
            self.arrivals.append((time.time(), next(iter(realtime), "")))
        super()._record_received(conn, msg)


@contextlib.asynccontextmanager
async def daemon(r: Room, url: str, extra: dict[str, dict[str, Any]], tmp: Path):  # type: ignore[no-untyped-def]
    """``edge-daemon run`` in the room (the fake runs on this process's loop:
    nothing here may block it)."""
    sections: dict[str, dict[str, Any]] = {
        "gemini": {"endpoint": url},
        "audio": {"backend": "pyaudio", "input_device": "edge_mic", "output_device": "edge_spk"},
        "control": {"socket": str(tmp / "ctl.sock"), "keyboard": False},
        "state": {"dir": str(tmp / "state")},
        "logging": {"level": "info", "target": "stderr"},
    }
    for name, table in extra.items():
        sections.setdefault(name, {}).update(table)
    cfg = tmp / "config.toml"
    cfg.write_text(
        "\n".join(
            f"[{name}]\n" + "\n".join(f"{k} = {json.dumps(v)}" for k, v in table.items())
            for name, table in sections.items()
        )
        + "\n"
    )
    # A local file and a fork: instant, not worth a thread.
    log = open(tmp / "daemon.log", "wb")  # noqa: SIM115, ASYNC230 - closed below
    env = {**r.env, "GEMINI_API_KEY": KEY, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(  # noqa: ASYNC220
        [sys.executable, "-m", "edge_daemon.cli", "run", "--config", str(cfg)],
        env=env,
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp / "ctl.sock").exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError((tmp / "daemon.log").read_text()[-2000:])
            await asyncio.sleep(0.05)  # an outside process's socket: nothing else to wait on
        reply = await asyncio.to_thread(
            request, str(tmp / "ctl.sock"), {"cmd": "wait", "state": "idle", "timeout": 30}, 35
        )
        if not reply.get("ok"):
            raise RuntimeError((tmp / "daemon.log").read_text()[-2000:])
        yield proc
    finally:
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)
        log.close()


async def idle_cpu(r: Room, seconds: float, rounds: int = 2) -> dict[str, float]:
    """Each case ``rounds`` times, alternating (other load on the machine
    then lands on all of them alike); the median of each."""
    cases = {
        "button_only": {},
        "wake_word": {"wake": {"model": "okay_nabu"}},
        "wake_word_echo_cancel": {"wake": {"model": "okay_nabu"}, "audio": {"echo_cancel": True}},
    }
    seen: dict[str, list[float]] = {name: [] for name in cases}
    async with StampingFake(api_key=KEY) as fake:
        for _ in range(rounds):
            for name, extra in cases.items():
                with tempfile.TemporaryDirectory() as tmp:
                    async with daemon(r, fake.url, extra, Path(tmp)) as p:
                        await asyncio.sleep(2.0)  # past start-up (imports, model load)
                        before = cpu_seconds(p.pid)
                        await asyncio.sleep(seconds)  # a benchmark's measuring window
                        seen[name].append((cpu_seconds(p.pid) - before) / (seconds / 60))
    return {name: round(statistics.median(v), 3) for name, v in seen.items()}


_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .*wake word \S+ heard", re.M)


async def wake_latency(r: Room, trials: int) -> dict[str, Any]:
    phrase = wake.espeak("okay nabu, what time is it")
    pcm = wake.as_pcm(np.concatenate([np.zeros(8000, np.float32), phrase]))
    results = []
    async with StampingFake(api_key=KEY, use_speech=False) as fake:
        with tempfile.TemporaryDirectory() as tmp:
            extra = {"wake": {"model": "okay_nabu"}, "audio": {"echo_cancel": True}}
            async with daemon(r, fake.url, extra, Path(tmp)):
                for _ in range(trials):
                    fake.arrivals.clear()
                    await asyncio.to_thread(r.say, pcm + bytes(64000))
                    await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 30)
                    sock = str(Path(tmp) / "ctl.sock")
                    await asyncio.to_thread(
                        request, sock, {"cmd": "wait", "state": "idle", "timeout": 30}, 35
                    )
                    log = (Path(tmp) / "daemon.log").read_text()
                    stamps = _STAMP.findall(log)
                    day, ms = stamps[-1]
                    woke = time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) + int(ms) / 1000
                    first = next(t for t, kind in fake.arrivals if kind == "audio")
                    results.append((first - woke) * 1000)
    # Offline: how long after the phrase's end the detector fires.
    loud = np.flatnonzero(np.abs(phrase) > 300)
    said = wake.as_pcm(np.concatenate([np.zeros(8000, np.float32), phrase, np.zeros(16000)]))
    fired = wake.detections("okay_nabu", said)
    words = wake.espeak("okay nabu,")
    wake_end = (8000 + np.flatnonzero(np.abs(words) > 300)[-1]) / wake.RATE
    return {
        "wake_to_first_audio_sent_ms": {
            "median": round(statistics.median(results)),
            "max": round(max(results)),
            "trials": len(results),
        },
        "phrase_end_to_detection_ms": round((fired[0] - wake_end) * 1000) if fired else None,
        "phrase_s": round(len(loud) and loud[-1] / wake.RATE, 2),
    }


def erle(r: Room) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "bench.echo"],
        env=r.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode:
        raise RuntimeError(done.stderr[-2000:])
    return json.loads(done.stdout.strip().splitlines()[-1])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"floor_cpu_s_per_min": round(wake.floor(), 3)}
    with room(latency_ms=30) as r:
        result["echo"] = erle(r)
        result["idle_cpu_s_per_min"] = await idle_cpu(r, args.idle_s, args.rounds)
        result["wake"] = await wake_latency(r, args.trials)
    floor = result["floor_cpu_s_per_min"]
    result["idle_ratio_to_floor"] = {
        k: round(v / floor, 2) for k, v in result["idle_cpu_s_per_min"].items()
    }
    result["end_of_speech"] = await end_of_speech.measure(args.runs)
    rng = np.random.default_rng(3)
    result["missed"] = wake.missed(rng)
    result["false"] = wake.false_wakes(args.false_minutes, rng)
    result["machine"] = {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]}
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.voice", description=__doc__)
    parser.add_argument("--idle-s", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--false-minutes", type=float, default=60.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    result = asyncio.run(run(args))
    print(json.dumps(result, indent=None if args.json else 2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
