"""The benchmark: one push-to-talk session, the same for every client, against
the fake Gemini in real time; each client is its own process, measured from
outside through /proc.

The session: press, 3 s of 16 kHz audio in 40 ms chunks, release; the fake
answers with 4 s of 24 kHz audio at real-time pace (every third answer is
cut after 1.5 s by the server's ``interrupted``, as when the user barges in);
a 1 s pause; again, until ``--seconds`` are up. All along, a 640x480 JPEG goes
up once a second. The link is TLS on loopback (the SDK cannot dial plain
``ws://`` with an API key, see sdk_client.py), so every client pays the same
TLS as against Google.

Clients:
  daemon       ``edge-daemon run --simulate`` with ``audio.backend = "pyaudio"``
               through a clocked PulseAudio null sink/source (real PortAudio
               callbacks), ``camera.backend = "file"``, mock GPIO
  daemon-null  the same daemon on the simulated ``null`` audio backend: what
               the daemon costs without the sound-card path
  pyaudio      bench/pyaudio_client.py, the raw client plus PyAudio capture and
               playback as Google's Live API starter writes them, on the same
               clocked PulseAudio devices: the floor for a device that does audio
  raw          bench/raw_client.py, the seed guide's websockets+json+base64
  sdk          bench/sdk_client.py, google-genai's ``client.aio.live``

Measured: spawn -> setup at the fake; CPU (user+sys from /proc/PID/stat) per
minute of session; peak RSS (VmHWM); wire -> app latency of reply chunks (the
fake stamps each chunk's sequence number as it sends it; a client stamps it
when the chunk reaches its handler, for the daemon when it reaches the
speaker buffer, via EDGE_DAEMON_TRACE). Daemon only: mic -> wire (PortAudio
capture time -> arrival at the fake), ``interrupted`` -> silence (the fake
sends it -> the first PortAudio output callback after the flush), and
drop -> streaming again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_daemon.control import request

from .common import (
    KEY,
    BenchFake,
    ClientResult,
    Pulse,
    cpu_seconds,
    latency_ms,
    make_jpeg,
    make_tls,
    pulse,
    reply_pcm,
    status_kib,
    thread_cpu,
    wait_until,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
SDK_VENV = Path.home() / ".cache" / "edge-daemon-bench" / "sdk-venv"
TALK_S, REPLY_S, PAUSE_S, CUT_AT_S, CUT_EVERY = 3.0, 4.0, 1.0, 1.5, 3
CLIENTS = ("daemon", "pyaudio", "daemon-null", "raw", "sdk")
TARGETS = {"cpu_vs_raw": 1.2, "cpu_vs_sdk": 0.5, "barge_in_ms": 40.0, "rss_mib": 40.0}


class Client:
    """One client process: how to start it, drive its button, and read what it saw."""

    name = ""

    def __init__(self, work: Path, fake: BenchFake, cert: Path, jpeg: Path) -> None:
        self.work, self.fake, self.cert, self.jpeg = work, fake, cert, jpeg
        self.proc: asyncio.subprocess.Process | None = None
        self.log = work / f"{self.name}.log"

    def env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("NOTIFY_", "WATCHDOG_", "EDGE_DAEMON_"))
        }
        env.update(GEMINI_API_KEY=KEY, SSL_CERT_FILE=str(self.cert), PYTHONUNBUFFERED="1")
        return env

    async def spawn(self) -> asyncio.subprocess.Process:
        raise NotImplementedError

    async def ready(self) -> None:
        raise NotImplementedError

    async def press(self) -> None:
        raise NotImplementedError

    async def release(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    def app_audio(self) -> list[tuple[int, float]]:
        """(sequence number, time it reached the app) for every reply chunk."""
        raise NotImplementedError

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


class DaemonClient(Client):
    def __init__(
        self,
        *args: Any,
        audio: str,
        pulse: Pulse | None,
        name: str = "",
        idle: bool = False,
        preroll_ms: int = 0,
        extra_toml: str = "",
        trace: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name or ("daemon" if audio == "pyaudio" else "daemon-null")
        super().__init__(*args)
        self.audio, self.pulse = audio, pulse
        # idle: the camera as a device keeps it by default (frames only while
        # talking), so an idle daemon sends none, as the idle raw client.
        self.idle, self.preroll_ms, self.extra_toml = idle, preroll_ms, extra_toml
        self.extra_env = env or {}
        self.python_flags: tuple[str, ...] = ()  # e.g. ("-X", "importtime")
        # What runs `edge-daemon`: the CLI, or a bench shim around it.
        self.entry: tuple[str, ...] = ("-m", "edge_daemon.cli")
        self.socket = self.work / f"{self.name}.sock"
        self.trace = self.work / f"{self.name}.trace" if trace else None

    def config(self) -> Path:
        path = self.work / f"{self.name}.toml"
        path.write_text(
            f'[gemini]\nendpoint = "{self.fake.url}"\n'
            f'[audio]\nbackend = "{self.audio}"\nchunk_ms = 40\n'
            # No pre-roll by default: the first chunks of a turn would otherwise
            # be up to 0.5 s old on purpose, and read as mic -> wire latency.
            f"preroll_ms = {self.preroll_ms}\n"
            f'[camera]\nbackend = "file"\nfile = "{self.jpeg}"\n'
            f"interval_s = {2.0 if self.idle else 1.0}\n"
            f"only_while_talking = {'true' if self.idle else 'false'}\n"
            f'[control]\nsocket = "{self.socket}"\nkeyboard = false\n'
            # Each drop then counts as the first after a healthy spell (backoff
            # 0-0.25 s), as bench/reconnect.py does, not a climbing ladder.
            "[link]\nhealthy_after_s = 0\n"
            '[logging]\nlevel = "warning"\ntarget = "stderr"\n' + self.extra_toml
        )
        return path

    async def spawn(self) -> asyncio.subprocess.Process:
        env = self.env()
        if self.trace is not None:
            env["EDGE_DAEMON_TRACE"] = str(self.trace)
        env.update(self.extra_env)
        if self.pulse is not None:
            env.update(self.pulse.env())
        with open(self.log, "wb") as log:  # noqa: ASYNC230 - a local log file, opened once
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                *self.python_flags,
                *self.entry,
                "run",
                "--simulate",
                "--config",
                str(self.config()),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=ROOT,
            )
        return self.proc

    async def ctl(self, cmd: str, **fields: Any) -> dict[str, Any]:
        return await asyncio.to_thread(request, str(self.socket), {"cmd": cmd, **fields}, 40.0)

    async def ready(self) -> None:
        await wait_until(self.socket.exists, 30, "the daemon's control socket")
        reply = await self.ctl("wait", state="idle", timeout=30)
        if not reply.get("ok"):
            raise RuntimeError(f"daemon never idle: {reply}")
        # A daemon that fell back to silence would measure nothing real.
        status = await self.ctl("status")
        if self.audio == "pyaudio" and "device_underflows" not in status["counters"]["speaker"]:
            raise RuntimeError(f"the daemon is not on PyAudio: {status['counters']['speaker']}")

    async def press(self) -> None:
        await self.ctl("press")

    async def release(self) -> None:
        await self.ctl("release")

    async def stop(self) -> None:
        assert self.proc is not None
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 20)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def events(self) -> dict[str, list[tuple[float, float]]]:
        out: dict[str, list[tuple[float, float]]] = defaultdict(list)
        if self.trace is not None and self.trace.exists():
            for line in self.trace.read_text().splitlines():
                name, a, b = line.split("\t")
                out[name].append((float(a), float(b)))
        return out

    def app_audio(self) -> list[tuple[int, float]]:
        return [(int(seq), t) for seq, t in self.events()["speaker_in"]]


class PipeClient(Client):
    """A client script driven by lines on its stdin; prints READY once set up."""

    script = ""

    def __init__(
        self, *args: Any, name: str = "", flags: tuple[str, ...] = (), pulse: Pulse | None = None
    ) -> None:
        if name:
            self.name = name
        super().__init__(*args)
        self.flags, self.pulse = flags, pulse

    def python(self) -> str:
        return sys.executable

    def target(self) -> str:
        return self.fake.url

    async def spawn(self) -> asyncio.subprocess.Process:
        self.result = self.work / f"{self.name}.json"
        env = self.env()
        if self.pulse is not None:
            env.update(self.pulse.env())
        with open(self.log, "wb") as log:  # noqa: ASYNC230 - a local log file, opened once
            self.proc = await asyncio.create_subprocess_exec(
                self.python(),
                str(ROOT / "bench" / self.script),
                self.target(),
                str(self.jpeg),
                str(self.result),
                *self.flags,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log,
                env=env,
                cwd=ROOT,
            )
        return self.proc

    async def ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), 60)
        if line.strip() != b"READY":
            raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-2000:]}")

    async def _say(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def press(self) -> None:
        await self._say("press")

    async def release(self) -> None:
        await self._say("release")

    async def stop(self) -> None:
        assert self.proc is not None
        with contextlib.suppress(ConnectionError):
            await self._say("quit")
        try:
            await asyncio.wait_for(self.proc.wait(), 20)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()

    def app_audio(self) -> list[tuple[int, float]]:
        if not self.result.exists():
            return []
        return [(int(s), float(t)) for s, t in json.loads(self.result.read_text())["audio"]]


class RawClient(PipeClient):
    name, script = "raw", "raw_client.py"


class PyAudioClient(PipeClient):
    """The fair anchor: raw_client.py's loop with the Live API starter's PyAudio sound."""

    name, script = "pyaudio", "pyaudio_client.py"


class SdkClient(PipeClient):
    name, script = "sdk", "sdk_client.py"

    def __init__(self, *args: Any, python: str) -> None:
        super().__init__(*args)
        self._python = python

    def python(self) -> str:
        return self._python

    def target(self) -> str:
        return f"https://127.0.0.1:{self.fake.port}"  # the SDK makes it wss:// and adds the path


def sdk_python(explicit: str | None) -> tuple[str | None, str]:
    """An interpreter that can import google.genai, or None and why not."""
    candidates = [explicit] if explicit else [str(SDK_VENV / "bin" / "python"), sys.executable]
    for python in candidates:
        if python and Path(python).exists():
            ok = subprocess.run(
                [python, "-c", "import google.genai"], capture_output=True, check=False
            )
            if ok.returncode == 0:
                return python, ""
    return None, (
        "google-genai is not installed: python -m venv --system-site-packages "
        f"{SDK_VENV} && {SDK_VENV}/bin/pip install google-genai (kept apart from the "
        "project's environment), or pass --sdk-python"
    )


# ---------------------------------------------------------------- one session


async def session(
    client: Client, seconds: float, reconnects: int, barge_ins: int = 0
) -> ClientResult:
    fake, result = client.fake, ClientResult(client.name)
    for turn in range(1, 200):
        fake.script_turn(reply_pcm=reply_pcm(turn, REPLY_S), reply_text="bench reply")
    spawned = time.monotonic()
    proc = await client.spawn()
    try:
        await wait_until(lambda: bool(fake.setup_at), 60, f"{client.name}'s setup")
        result.start_s = round(fake.setup_at[0] - spawned, 3)
        result.start_cpu_s = round(cpu_seconds(proc.pid), 3)
        await client.ready()
        t0, cpu0, threads0 = time.monotonic(), cpu_seconds(proc.pid), thread_cpu(proc.pid)
        while time.monotonic() - t0 + TALK_S + REPLY_S + PAUSE_S <= seconds:
            await one_turn(client, fake, cut=(result.turns + 1) % CUT_EVERY == 0)
            result.turns += 1
        result.session_s = round(time.monotonic() - t0, 3)
        result.cpu_s = round(cpu_seconds(proc.pid) - cpu0, 3)
        threads1 = thread_cpu(proc.pid)
        result.threads_cpu_s = {k: round(threads1[k] - threads0.get(k, 0.0), 2) for k in threads1}
        result.peak_rss_mib = round(status_kib(proc.pid, "VmHWM") / 1024, 1)
        result.rss_anon_mib = round(status_kib(proc.pid, "RssAnon") / 1024, 1)
        session_turns = result.turns
        if isinstance(client, DaemonClient):
            # More cuts than the session's few, for the barge-in percentiles.
            for _ in range(barge_ins):
                await cut_turn(client, fake)
        if isinstance(client, DaemonClient) and reconnects:
            result.reconnect = latency_ms(
                [await reconnect(client, fake) for _ in range(reconnects)]
            )
    finally:
        await client.stop()
    result.video_frames = sum(c.video_frames for c in fake.connections)
    result.mic_chunks = len(fake.mic_at)
    result.reply_chunks = len(fake.audio_sent_at)
    app = client.app_audio()
    result.wire_to_app = latency_ms(
        [t - fake.audio_sent_at[s] for s, t in app if s in fake.audio_sent_at]
    )
    if isinstance(client, DaemonClient):
        daemon_latencies(client, fake, result, session_turns)
    result.extra["protocol_violations"] = fake.protocol_violations[:5]
    return result


async def one_turn(client: Client, fake: BenchFake, cut: bool) -> None:
    n = len(fake.turns)
    await client.press()
    await asyncio.sleep(TALK_S)  # the user talks: the schedule, not a synchronisation
    await client.release()
    await wait_until(lambda: len(fake.turns) > n, 10, "the fake to take the turn")
    turn = fake.turns[n]
    if cut:
        await wait_until(lambda: fake.audio_s_of(n) >= CUT_AT_S, 10, "the reply to get going")
        # What the fake does when a new activity cuts its answer: interrupted, turnComplete.
        await fake._barge_in(turn.connection)
    # A turn cut by a goAway switch is replayed on the next connection: a new
    # turn at the fake, answered there.
    await wait_until(
        lambda: any(t.completed or t.interrupted for t in fake.turns[n:]),
        REPLY_S + 10,
        "the reply",
    )
    await asyncio.sleep(PAUSE_S)


async def cut_turn(client: Client, fake: BenchFake) -> None:
    """A short turn whose answer the server cuts 0.5 s in."""
    n = len(fake.turns)
    await client.press()
    await asyncio.sleep(0.5)
    await client.release()
    await wait_until(lambda: len(fake.turns) > n, 10, "the fake to take the turn")
    turn = fake.turns[n]
    await wait_until(lambda: fake.audio_s_of(n) >= 0.5, 10, "the reply to get going")
    await fake._barge_in(turn.connection)
    await asyncio.sleep(0.3)


async def reconnect(client: DaemonClient, fake: BenchFake) -> float:
    """Talking, the link drops (no close frame): the time until audio flows again."""
    await client.ctl("wait", state="idle", timeout=30)
    await client.press()
    await wait_until(lambda: fake.active is not None and fake.active.audio_s > 0, 10, "audio")
    old = fake.active
    assert old is not None
    dropped = time.monotonic()
    await fake.drop_connection()
    await wait_until(lambda: any(c > old.index for _, c, _ in fake.mic_at), 30, "a new stream")
    back = next(t for _, c, t in fake.mic_at if c > old.index)
    await client.release()
    await wait_until(lambda: bool(fake.turns) and fake.turns[-1].completed, 30, "the answer")
    return back - dropped


def daemon_latencies(
    client: DaemonClient, fake: BenchFake, result: ClientResult, turns: int
) -> None:
    ev = client.events()
    # mic -> wire: the i-th chunk after the k-th press is the i-th the fake got in activity k.
    presses = [t for t, _ in ev["press"]]
    by_turn: dict[int, list[float]] = defaultdict(list)
    for captured, seen in ev["mic"]:
        k = sum(1 for p in presses if p <= seen)
        by_turn[k].append(captured)
    arrived: dict[int, list[float]] = defaultdict(list)
    for activity, _conn, t in fake.mic_at:
        arrived[activity].append(t)
    mic = []
    for k in range(1, turns + 1):
        mic += [a - c for c, a in zip(by_turn[k], arrived[k], strict=False) if c > 0]
    result.mic_to_wire = latency_ms(mic)
    cuts = fake.interrupted_at

    def after(events: list[tuple[float, float]], t: float) -> float | None:
        later = [e for e, _ in events if e >= t]
        return min(later) - t if later else None

    flush = [d for t in cuts if (d := after(ev["flush"], t)) is not None]
    silence = [d for t in cuts if (d := after(ev["silence"], t)) is not None]
    result.interrupted_to_flush = latency_ms(flush)
    result.interrupted_to_silence = latency_ms(silence)


# ---------------------------------------------------------------- profiling


def profile_summary(speedscope: Path, top: int = 12) -> dict[str, Any]:
    """Where the samples fell: the hottest functions by own time, and by file
    including callees (speedscope's sampled profiles, all threads)."""
    data = json.loads(speedscope.read_text())
    frames = data["shared"]["frames"]
    own: dict[str, float] = defaultdict(float)
    inclusive: dict[str, float] = defaultdict(float)
    total = 0.0
    for prof in data["profiles"]:
        for stack, weight in zip(prof["samples"], prof["weights"], strict=False):
            if not stack:
                continue
            total += weight
            leaf = frames[stack[-1]]
            own[f"{leaf['name']} ({Path(leaf.get('file') or '?').name})"] += weight
            for file in {_area(frames[i].get("file") or "?") for i in stack}:
                inclusive[file] += weight
    share = {k: round(100 * v / total, 1) for k, v in own.items()} if total else {}
    areas = {k: round(100 * v / total, 1) for k, v in inclusive.items()} if total else {}
    return {
        "samples": total,
        "own_percent": dict(sorted(share.items(), key=lambda kv: -kv[1])[:top]),
        "inclusive_percent_by_area": dict(sorted(areas.items(), key=lambda kv: -kv[1])[:top]),
    }


def _area(file: str) -> str:
    """A file's area: edge_daemon/live, websockets, stdlib/asyncio..."""
    parts = Path(file).parts
    if "edge_daemon" in parts:
        i = parts.index("edge_daemon")
        return "/".join(parts[i : min(len(parts) - 1, i + 2)]) or "edge_daemon"
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    if "python3.11" in parts:
        return "stdlib/" + (parts[parts.index("python3.11") + 1] if len(parts) > 1 else "?")
    return Path(file).name


async def profile_client(client: Client, seconds: float, out: Path) -> dict[str, Any]:
    """A separate session with py-spy attached (its sampling would skew the CPU figures)."""
    # The venv's own bin folder need not be on PATH.
    here = str(Path(sys.executable).parent)
    spy_exe = shutil.which("py-spy") or shutil.which("py-spy", path=here)
    if spy_exe is None:
        return {"skipped": "py-spy is not installed (pip install 'edge-daemon[bench]')"}
    fake = client.fake
    for turn in range(1, 200):
        fake.script_turn(reply_pcm=reply_pcm(turn, REPLY_S))
    proc = await client.spawn()
    try:
        await client.ready()
        spy = await asyncio.create_subprocess_exec(
            spy_exe,
            "record",
            "--pid",
            str(proc.pid),
            "--format",
            "speedscope",
            "--output",
            str(out),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--threads",
            "--nonblocking",
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t0 = time.monotonic()
        while time.monotonic() - t0 + TALK_S + REPLY_S + PAUSE_S <= seconds:
            await one_turn(client, fake, cut=False)
        await spy.wait()
    finally:
        await client.stop()
    return profile_summary(out) if out.exists() else {"skipped": "py-spy wrote nothing"}


# ---------------------------------------------------------------- the run


async def run_client(
    name: str, args: argparse.Namespace, work: Path, cert: Path, key: Path, jpeg: Path
) -> ClientResult:
    fake = BenchFake(
        cert,
        key,
        lenient=name == "sdk",
        api_key=KEY,
        pace=1.0,
        chunk_ms=40,
        use_speech=False,
        keep_audio=False,
    )
    await fake.start()
    try:
        if name == "sdk":
            python, why = sdk_python(args.sdk_python)
            if python is None:
                return ClientResult(name, ok=False, note=why)
            client: Client = SdkClient(work, fake, cert, jpeg, python=python)
        elif name == "raw":
            client = RawClient(work, fake, cert, jpeg)
        elif name == "pyaudio":
            client = PyAudioClient(work, fake, cert, jpeg, pulse=args.pulse)
        else:
            audio = "pyaudio" if name == "daemon" else "null"
            client = DaemonClient(work, fake, cert, jpeg, audio=audio, pulse=args.pulse)
        reconnects = args.reconnects if name == "daemon" else 0
        try:
            return await session(client, args.seconds, reconnects, args.barge_ins)
        except Exception as exc:
            log = client.log.read_text(errors="replace")[-1500:] if client.log.exists() else ""
            return ClientResult(name, ok=False, note=f"{type(exc).__name__}: {exc}\n{log}")
    finally:
        await fake.stop()


def machine() -> dict[str, Any]:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "kernel": platform.release(),
    }


def _lat(d: dict[str, float] | None) -> str:
    return f"{d['p50']:.1f} / {d['p99']:.1f}" if d else "n/a"


def table(results: list[ClientResult]) -> str:
    head = (
        f"{'client':12s} {'start s':>8s} {'CPU s/min':>10s} {'loop':>6s} {'peak RSS':>9s} "
        f"{'wire->app ms':>14s} {'mic->wire ms':>14s} {'interrupted->silence ms':>24s} "
        f"{'reconnect ms':>14s}"
    )
    rows = [head, "-" * len(head)]
    for r in results:
        if not r.ok:
            rows.append(f"{r.name:12s} not run: {r.note.splitlines()[0] if r.note else '?'}")
            continue
        cut = r.interrupted_to_silence or r.interrupted_to_flush
        loop = r.threads_cpu_s.get("main", 0.0) / r.session_s * 60 if r.session_s else 0.0
        rows.append(
            f"{r.name:12s} {r.start_s or 0:8.2f} {r.cpu_per_min or 0:10.2f} {loop:6.2f} "
            f"{(r.peak_rss_mib or 0):7.1f}MB {_lat(r.wire_to_app):>14s} {_lat(r.mic_to_wire):>14s} "
            f"{_lat(cut):>24s} {_lat(r.reconnect):>14s}"
        )
    return "\n".join(rows)


def verdicts(results: list[ClientResult]) -> dict[str, Any]:
    by = {r.name: r for r in results if r.ok}
    out: dict[str, Any] = {}
    d = by.get("daemon")
    if d and d.cpu_per_min:
        for other, key in (("raw", "cpu_vs_raw"), ("sdk", "cpu_vs_sdk")):
            o = by.get(other)
            if o and o.cpu_per_min:
                ratio = round(d.cpu_per_min / o.cpu_per_min, 2)
                out[key] = {"ratio": ratio, "target": TARGETS[key], "met": ratio <= TARGETS[key]}
        if d.interrupted_to_silence:
            p99 = d.interrupted_to_silence["p99"]
            out["barge_in_ms"] = {"p99": p99, "target": TARGETS["barge_in_ms"], "met": p99 <= 40}
        if d.peak_rss_mib:
            out["rss_mib"] = {
                "peak": d.peak_rss_mib,
                "target": TARGETS["rss_mib"],
                "met": d.peak_rss_mib <= TARGETS["rss_mib"],
            }
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    cert, key = make_tls(work)
    jpeg = make_jpeg(work / "frame.jpg")
    results: list[ClientResult] = []
    profiles: dict[str, Any] = {}
    sound = {"daemon", "pyaudio"} & set(args.clients + args.profile)
    with pulse() if sound else contextlib.nullcontext() as pa:
        args.pulse = pa
        for name in args.clients:
            print(f"... {name}: {args.seconds:g} s session", file=sys.stderr, flush=True)
            results.append(await run_client(name, args, work, cert, key, jpeg))
        for name in args.profile:
            print(f"... {name}: profiling with py-spy", file=sys.stderr, flush=True)
            fake = BenchFake(cert, key, api_key=KEY, pace=1.0, use_speech=False, keep_audio=False)
            await fake.start()
            try:
                client: Client
                if name == "raw":
                    client = RawClient(work, fake, cert, jpeg)
                else:
                    audio = "pyaudio" if name == "daemon" else "null"
                    client = DaemonClient(work, fake, cert, jpeg, audio=audio, pulse=pa)
                RESULTS.mkdir(parents=True, exist_ok=True)
                out = RESULTS / f"profile-{name}.speedscope.json"
                profiles[name] = await profile_client(client, args.profile_seconds, out)
                profiles[name]["speedscope"] = str(out.relative_to(ROOT))
            finally:
                await fake.stop()
    reconnect_bench: dict[str, Any] | None = None
    if args.reconnect_runs:
        try:
            from . import reconnect as reconnect_mod
        except ImportError:
            reconnect_mod = None  # type: ignore[assignment]
        if reconnect_mod is not None:
            print("... bench.reconnect", file=sys.stderr, flush=True)
            reconnect_bench = await reconnect_mod.measure(args.reconnect_runs)
    shutil.rmtree(work, ignore_errors=True)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "session": {
            "seconds": args.seconds,
            "talk_s": TALK_S,
            "reply_s": REPLY_S,
            "pause_s": PAUSE_S,
            "cut_every": CUT_EVERY,
            "video": "640x480 JPEG, 1 frame/s",
            "transport": "wss (TLS) on loopback",
        },
        "clients": [r.as_dict() for r in results],
        "verdicts": verdicts(results),
        "profiles": profiles,
        "reconnect_bench": reconnect_bench,
        "table": table(results),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="session length per client")
    parser.add_argument(
        "--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS), help="which to run"
    )
    parser.add_argument("--sdk-python", help=f"a Python with google-genai (default {SDK_VENV})")
    parser.add_argument(
        "--reconnects", type=int, default=3, help="drops after the daemon's session"
    )
    parser.add_argument(
        "--barge-ins", type=int, default=10, help="extra cut answers after the daemon's session"
    )
    parser.add_argument(
        "--reconnect-runs", type=int, default=10, help="runs of bench.reconnect (0: skip)"
    )
    parser.add_argument(
        "--profile",
        nargs="*",
        choices=("daemon", "daemon-null", "raw"),
        default=[],
        help="also profile these with py-spy (a separate session each)",
    )
    parser.add_argument("--profile-seconds", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    if args.seconds < TALK_S + REPLY_S + PAUSE_S:
        parser.error(f"--seconds must be at least {TALK_S + REPLY_S + PAUSE_S:g}")
    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("edge_daemon.fake_gemini.ws").setLevel(logging.ERROR)
    report = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(report["table"])
    for name, v in report["verdicts"].items():
        shown = {k: val for k, val in v.items() if k != "met"}
        print(f"{name:12s} {'met' if v['met'] else 'MISSED'} {shown}")
    for r in report["clients"]:
        if r["extra"].get("protocol_violations"):
            print(
                f"{r['name']}: protocol violations at the fake: {r['extra']['protocol_violations']}"
            )
    print(f"wrote {args.out}")
    return 0
