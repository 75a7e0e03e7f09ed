"""What the benchmark's parts share: the instrumented fake, the session's
audio and video, TLS for the loopback link, the clocked PulseAudio device, and
readings of another process from /proc.

Every time stamp is ``time.monotonic()``: CLOCK_MONOTONIC is one clock for the
whole machine, so the fake (in the runner) and a client (another process) can
be subtracted from each other.
"""

from __future__ import annotations

import array
import asyncio
import base64
import contextlib
import functools
import io
import json
import math
import os
import shutil
import signal
import ssl
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edge_daemon.fake_gemini import DEFAULT_PATH, OUTPUT_RATE, FakeConnection, FakeGemini

KEY = "bench-key-not-secret"
MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
CHUNK_MS = 40  # the daemon's default chunk: 1280 bytes of 16 kHz s16le
MIC_CHUNK = 16000 * 2 * CHUNK_MS // 1000
REPLY_CHUNK = OUTPUT_RATE * 2 * CHUNK_MS // 1000  # the fake's 40 ms reply chunks
CLK_TCK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------- the fake


class BenchFake(FakeGemini):
    """The fake, over TLS, stamping what latency needs: when each setup arrived,
    when each reply chunk (by the sequence number in its first four bytes) and
    each ``interrupted`` left, and when each microphone chunk arrived (by
    activity)."""

    def __init__(self, cert: Path, key: Path, *, lenient: bool = False, **knobs: Any) -> None:
        super().__init__(**knobs)
        # The SDK writes snake_case field names and URL-safe base64, which the
        # real API's proto3 JSON parser accepts and the fake (on purpose, to
        # catch our own client) does not: lenient translates before checking.
        self.lenient = lenient
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(cert, key)
        self.setup_at: list[float] = []
        self.audio_sent_at: dict[int, float] = {}
        self.interrupted_at: list[float] = []
        self.activities = 0
        self.mic_at: list[tuple[int, int, float]] = []  # (activity, connection, time)

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        from websockets.asyncio.server import serve

        from edge_daemon.fake_gemini.server import _ws_log

        self._server = await serve(
            self._handler,
            host,
            port,
            ssl=self._ssl,
            max_size=16 * 2**20,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            logger=_ws_log,
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]

    @property
    def url(self) -> str:
        return f"wss://{self.host}:{self.port}{DEFAULT_PATH}"

    async def _dispatch(self, conn: FakeConnection, msg: Any) -> None:
        await super()._dispatch(conn, _proto3_json(msg) if self.lenient else msg)

    async def _on_setup(self, conn: FakeConnection, setup: dict[str, Any]) -> None:
        self.setup_at.append(time.monotonic())
        await super()._on_setup(conn, setup)

    async def _activity_start(self, conn: FakeConnection) -> None:
        self.activities += 1
        await super()._activity_start(conn)

    async def _on_audio(self, conn: FakeConnection, blob: Any, what: str) -> None:
        self.mic_at.append((self.activities, conn.index, time.monotonic()))
        await super()._on_audio(conn, blob, what)

    async def _send(
        self, conn: FakeConnection, msg: dict[str, Any], record: dict[str, Any] | None = None
    ) -> None:
        # Stamped as it is handed to the socket: the client may read it before
        # this coroutine runs again.
        now = time.monotonic()
        await super()._send(conn, msg, record)
        content = msg.get("serverContent") or {}
        if content.get("interrupted"):
            self.interrupted_at.append(now)
        if record is not None and "modelTurn" in content:
            data = content["modelTurn"]["parts"][0]["inlineData"]["data"]
            self.audio_sent_at[int.from_bytes(base64.b64decode(data[:8])[:4], "little")] = now

    def audio_s_of(self, turn: int) -> float:
        """Seconds of reply audio sent so far in the latest turn."""
        return self.turns[turn].audio_sent_bytes / (2 * OUTPUT_RATE) if self.turns else 0.0


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def _proto3_json(node: Any, key: str = "") -> Any:
    """What a proto3 JSON parser makes of ``node``: either field-name spelling,
    either base64 alphabet."""
    if isinstance(node, dict):
        return {_camel(k): _proto3_json(v, k) for k, v in node.items()}
    if isinstance(node, list):
        return [_proto3_json(v) for v in node]
    if key == "data" and isinstance(node, str):
        return node.replace("-", "+").replace("_", "/")
    return node


@functools.lru_cache(maxsize=4)
def _tone(seconds: float) -> bytes:
    n = int(seconds * OUTPUT_RATE)
    return array.array(
        "h", (int(6000 * math.sin(2 * math.pi * 330 * i / OUTPUT_RATE)) for i in range(n))
    ).tobytes()


def reply_pcm(turn: int, seconds: float) -> bytes:
    """A tone whose every 40 ms chunk starts with its sequence number
    (turn * 100000 + index), so a client can say which chunk it got when."""
    pcm = bytearray(_tone(seconds))
    for k, start in enumerate(range(0, len(pcm), REPLY_CHUNK)):
        pcm[start : start + 4] = (turn * 100000 + k).to_bytes(4, "little")
    return bytes(pcm)


def seq_of(pcm: bytes) -> int:
    return int.from_bytes(pcm[:4], "little")


def make_jpeg(path: Path, width: int = 640, height: int = 480) -> Path:
    """A camera-like frame (gradients and noise, so it compresses like a photo)."""
    from PIL import Image

    rng = __import__("random").Random(7)
    img = Image.new("RGB", (width, height))
    img.putdata(
        [
            ((x * 255 // width + rng.randrange(40)) % 256, (y * 255 // height) % 256, (x ^ y) % 256)
            for y in range(height)
            for x in range(width)
        ]
    )
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=75)
    path.write_bytes(out.getvalue())
    return path


# ---------------------------------------------------------------- TLS


def make_tls(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1: every client trusts it through
    SSL_CERT_FILE, the way each of them (Python's default context, the SDK's
    certifi fallback) looks for extra roots."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


# ---------------------------------------------------------------- PulseAudio


@dataclass
class Pulse:
    """A private PulseAudio with a null sink and source (clocked like a sound
    card), reached through ALSA's pulse plugin: TEST-RECIPES.md."""

    runtime: Path
    home: Path
    pid: int

    def env(self) -> dict[str, str]:
        return {"XDG_RUNTIME_DIR": str(self.runtime), "HOME": str(self.home)}


@contextlib.contextmanager
def pulse() -> Iterator[Pulse]:
    if not shutil.which("pulseaudio"):
        raise RuntimeError("pulseaudio is not installed (apt-get install pulseaudio)")
    runtime = Path(tempfile.mkdtemp(prefix="bench-pulse-run-"))
    home = Path(tempfile.mkdtemp(prefix="bench-pulse-home-"))
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(home)}
    (home / ".asoundrc").write_text("pcm.!default { type pulse }\nctl.!default { type pulse }\n")
    subprocess.run(
        [
            "pulseaudio",
            "-n",
            "--daemonize=yes",
            "--exit-idle-time=-1",
            "--disable-shm=yes",
            "-L",
            "module-null-sink sink_name=spk",
            "-L",
            "module-null-source source_name=mic",
            "-L",
            "module-native-protocol-unix",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    pid_file = runtime / "pulse" / "pid"
    deadline = time.monotonic() + 10
    while not pid_file.exists():  # daemonize returns before the child writes it
        if time.monotonic() > deadline:
            raise RuntimeError("pulseaudio did not start")
        time.sleep(0.05)
    pid = int(pid_file.read_text().split()[0])
    try:
        yield Pulse(runtime, home, pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        shutil.rmtree(runtime, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)


# ---------------------------------------------------------------- /proc


def cpu_seconds(pid: int) -> float:
    """User + system CPU of ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far by thread: the main thread (the event loop, for every
    client here), PulseAudio's client threads (named threaded-ml), the rest
    (PortAudio's callback threads, gpiozero's, asyncio's executor)."""
    out = {"main": 0.0, "pulse": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                head, tail = f.read().rsplit(")", 1)
        except OSError:
            continue  # the thread ended meanwhile
        fields = tail.split()
        cpu = (int(fields[11]) + int(fields[12])) / CLK_TCK
        comm = head.split("(", 1)[1]
        key = "main" if int(tid) == pid else "pulse" if comm == "threaded-ml" else "other"
        out[key] += cpu
    return out


@dataclass(frozen=True)
class ProcSample:
    """A process's CPU and wakeups so far, precise to the nanosecond: the sum
    of its live threads' schedstat run time (clock ticks, 10 ms, are too
    coarse for an idle minute) and context switches (each one a thread going
    to sleep or being pushed off: about one per wakeup). Threads that ended
    before the sample are not in it; ``tids`` says which were counted."""

    cpu_ns: int
    wakeups: int
    tids: frozenset[int]
    by_thread: dict[str, float]  # CPU seconds by kind, as thread_cpu names them
    names: dict[int, str] = field(default_factory=dict)  # thread id -> name

    def minus(self, earlier: ProcSample) -> tuple[float, int]:
        """CPU seconds and wakeups between ``earlier`` and this sample."""
        return (self.cpu_ns - earlier.cpu_ns) / 1e9, self.wakeups - earlier.wakeups


def proc_sample(pid: int) -> ProcSample:
    cpu = wakeups = 0
    tids: set[int] = set()
    names: dict[int, str] = {}
    by_thread = {"main": 0.0, "pulse": 0.0, "other": 0.0}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                ns = int(f.read().split()[0])
            with open(f"/proc/{pid}/task/{tid}/status") as f:
                status = f.read()
        except (OSError, ValueError):
            continue  # the thread ended meanwhile
        n = 0
        name = ""
        for line in status.splitlines():
            if line.startswith(("voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:")):
                n += int(line.split()[1])
            elif line.startswith("Name:"):
                name = line[5:].strip()
        cpu += ns
        wakeups += n
        tids.add(int(tid))
        names[int(tid)] = name
        key = "main" if int(tid) == pid else "pulse" if name == "threaded-ml" else "other"
        by_thread[key] += ns / 1e9
    return ProcSample(cpu, wakeups, frozenset(tids), by_thread, names)


def memory_kib(pid: int) -> dict[str, int]:
    """RSS and PSS now (smaps_rollup: PSS shares each shared page among the
    processes that map it, which is what a device with one such process
    pays), private memory, and the peak RSS (VmHWM)."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Rss", "Pss", "Private_Clean", "Private_Dirty", "Swap"):
                out[key.lower()] = int(rest.split()[0])
    out["private"] = out.pop("private_clean", 0) + out.pop("private_dirty", 0)
    out["peak_rss"] = status_kib(pid, "VmHWM")
    return out


# What a mapping's PSS is for, by the file it maps (the first that matches).
_PSS_KINDS = (
    ("python heap and arenas", ("[heap]", "[anon]", "[stack]")),
    ("libpython", ("libpython",)),
    (
        "sound (ALSA, its plugins, what they load)",
        (
            "libasound",
            "libportaudio",
            "_portaudio",
            "libpulse",
            "alsa-lib",
            "libavcodec",
            "libavutil",
            "libswresample",
            "libx26",
            "librav1e",
            "libaom",
            "libSvtAv1",
            "libdav1d",
            "librsvg",
            "libvorbis",
            "libzvbi",
            "libjack",
            "libspeex",
            "libsamplerate",
            "libcodec2",
            "libgsm",
            "libmp3lame",
            "libopus",
            "libtheora",
            "libvpx",
            "libwebp",
            "libxml2",
            "libicu",
            "libcairo",
            "libpango",
            "libgdk",
            "libgio",
            "libglib",
            "libgobject",
            "libpixman",
            "libharfbuzz",
            "libfreetype",
            "libfontconfig",
            "libdb-",
            "libsndfile",
            "libFLAC",
            "libogg",
            "libshine",
            "libsnappy",
            "libsoxr",
            "libva",
            "libvdpau",
            "libdrm",
            "libOpenCL",
            "libzmq",
            "libnuma",
            "libmfx",
            "libchromaprint",
            "libbluray",
            "libgme",
            "libopenmpt",
            "libssh",
            "librabbitmq",
            "libsrt",
            "libudfread",
            "libudev",
        ),
    ),
    ("TLS (libssl, libcrypto)", ("libssl", "libcrypto")),
    ("Python extension modules", (".cpython-", ".abi3.so")),
)


def pss_by_kind(pid: int) -> dict[str, int]:
    """The process's PSS in KiB by what it is for (see _PSS_KINDS); the rest
    (libc, libstdc++, ...) as "other libraries"."""
    out: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            head = line.split(None, 5)
            if "-" in head[0] and len(head) >= 5 and not head[0].endswith(":"):
                name = head[5].strip() if len(head) > 5 else "[anon]"
                continue
            if head[0] == "Pss:":
                kind = next(
                    (k for k, marks in _PSS_KINDS if any(m in name for m in marks)),
                    "other libraries",
                )
                out[kind] = out.get(kind, 0) + int(head[1])
    return out


def status_kib(pid: int, key: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- numbers


def percentile(values: list[float], q: float) -> float:
    """Nearest rank: with 100 values p99 is the 99th smallest, not an interpolation."""
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def latency_ms(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "n": len(values),
        "p50": round(statistics.median(values) * 1000, 1),
        "p99": round(percentile(values, 99) * 1000, 1),
        "max": round(max(values) * 1000, 1),
    }


@dataclass
class ClientResult:
    """What the runner measured of one client over one session."""

    name: str
    ok: bool = True
    note: str = ""
    start_s: float | None = None  # process spawn -> setup at the fake
    start_cpu_s: float | None = None  # CPU spent getting there
    session_s: float = 0.0
    cpu_s: float = 0.0  # user + sys over the session
    peak_rss_mib: float | None = None
    rss_anon_mib: float | None = None  # private memory at the end (the rest is shared files)
    threads_cpu_s: dict[str, float] = field(default_factory=dict)  # over the session
    turns: int = 0
    video_frames: int = 0
    mic_chunks: int = 0
    reply_chunks: int = 0
    wire_to_app: dict[str, float] | None = None
    mic_to_wire: dict[str, float] | None = None
    interrupted_to_silence: dict[str, float] | None = None
    interrupted_to_flush: dict[str, float] | None = None
    reconnect: dict[str, float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def cpu_per_min(self) -> float | None:
        return self.cpu_s / self.session_s * 60 if self.session_s else None

    def as_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["cpu_s_per_session_min"] = (
            None if self.cpu_per_min is None else round(self.cpu_per_min, 3)
        )
        return out


def read_json_lines(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


async def wait_until(cond: Any, timeout_s: float, what: str) -> None:
    """Poll ``cond`` (another process's progress has no event to wait on)."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(0.01)
