"""A protocol-faithful local Gemini Live server, for tests, demos and benchmarks.

It speaks the wire protocol of the project's PROTOCOL.md (``setup`` ->
``setupComplete``, push-to-talk turns, tool calls, barge-in, goAway, session
resumption) and enforces the rules the real server enforces, with the same
close codes. It parses client JSON on its own, never through ``edge_daemon.live``,
so it is an independent check of our client rather than a mirror of its bugs.

Everything it sees and sends is recorded, and ``wait_for`` lets a test wait on
any condition without sleeping. Reply audio is espeak-ng speech (or a tone) so
a demo through a real speaker sounds like something.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import base64
import binascii
import contextlib
import functools
import hmac
import inspect
import json
import logging
import math
import os
import re
import secrets
import shutil
import signal
import struct
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection
from websockets.asyncio.server import serve as ws_serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

log = logging.getLogger("edge_daemon.fake_gemini")
# websockets logs request headers at debug level, and clients send their key in
# one: the fake may be pointed at by a real device, so it never logs them.
_ws_log = log.getChild("ws")
_ws_log.setLevel(logging.INFO)

DEFAULT_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
INVALID_ARGUMENT = "Request contains an invalid argument."
BAD_API_KEY = "API key not valid. Please pass a valid API key."
SESSION_NOT_FOUND = "session not found"
OUTPUT_RATE = 24000
INPUT_RATE = 16000
CLIENT_KEYS = ("setup", "clientContent", "realtimeInput", "toolResponse")
REALTIME_FIELDS = (
    "audio",
    "video",
    "text",
    "activityStart",
    "activityEnd",
    "audioStreamEnd",
    "mediaChunks",
)
# BidiGenerateContentSetup's fields in the v1beta proto. camelCase only: our client
# must send camelCase (PROTOCOL.md), so accepting snake_case here would hide a bug.
SETUP_FIELDS = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "sessionResumption",
        "contextWindowCompression",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "proactivity",
    }
)
VAD_SILENCE_S = 0.5  # automatic-VAD mode: this much quiet after speech ends a turn
VAD_PEAK = 1000  # s16 peak above which a chunk counts as speech
MIN_VIDEO_GAP_S = 0.75  # well under the 1 frame/s limit, so timer jitter is not flagged
MAX_VIDEO_SIDE = 1024


class _Reject(Exception):
    """Raised while handling a client message: close the connection like the real server."""

    def __init__(self, detail: str, code: int = 1007, reason: str = INVALID_ARGUMENT) -> None:
        super().__init__(detail)
        self.code, self.reason, self.detail = code, reason, detail


@dataclass
class ScriptedTurn:
    input_text: str | None = None
    reply_text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None
    reply_pcm: bytes | None = None
    delay_s: float = 0.0


@dataclass(eq=False)
class SessionState:
    """Server-side state a resumption handle points at; outlives connections."""

    index: int
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    handles: list[str] = field(default_factory=list)
    connection: FakeConnection | None = field(default=None, repr=False)


@dataclass(eq=False)
class Turn:
    """One user turn and the model's answer to it."""

    source: str  # "activity" | "vad" | "text" | "clientContent"
    connection: FakeConnection = field(repr=False)
    index: int = -1
    input_text: str | None = None
    heard_s: float = 0.0
    heard_pcm: bytearray = field(default_factory=bytearray, repr=False)
    reply_text: str = ""
    reply_pcm: bytes = field(default=b"", repr=False)
    audio_kind: str = ""  # "speech" | "tone" | "scripted" | "" (text modality)
    audio_sent_bytes: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    completed: bool = False


@dataclass(eq=False)
class FakeConnection:
    index: int
    ws: ServerConnection = field(repr=False)
    request_path: str
    request_headers: Headers = field(repr=False)
    auth_method: str | None = None  # "header" | "query" | "token-header" | "token-query"
    received: list[dict[str, Any]] = field(default_factory=list, repr=False)
    sent: list[dict[str, Any]] = field(default_factory=list, repr=False)
    setup: dict[str, Any] | None = field(default=None, repr=False)
    setup_complete_sent: bool = False
    session: SessionState | None = field(default=None, repr=False)
    resumed_from: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    close_detail: str | None = None  # the fake's own explanation of a close
    closed_by: str | None = None  # "server" | "client" | "drop"
    ended: bool = False
    audio_s: float = 0.0
    video_frames: int = 0
    capture: Turn | None = field(default=None, repr=False)  # user turn being heard
    pending_tool_ids: set[str] = field(default_factory=set)
    reply_task: asyncio.Task[None] | None = field(default=None, repr=False)
    reply_turn: Turn | None = field(default=None, repr=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    _flags: set[str] = field(default_factory=set, repr=False)  # violations reported once
    _silence_s: float = 0.0
    _last_video_at: float | None = None

    @property
    def open(self) -> bool:
        return not self.ended and self.close_code is None and self.ws.state is State.OPEN

    @property
    def model(self) -> str:
        return str((self.setup or {}).get("model", ""))

    def _setup_get(self, *path: str) -> Any:
        node: Any = self.setup or {}
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    @property
    def vad_disabled(self) -> bool:
        return (
            self._setup_get("realtimeInputConfig", "automaticActivityDetection", "disabled") is True
        )

    @property
    def interrupts(self) -> bool:
        return self._setup_get("realtimeInputConfig", "activityHandling") != "NO_INTERRUPTION"

    @property
    def text_modality(self) -> bool:
        return self._setup_get("generationConfig", "responseModalities") == ["TEXT"]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task


def message_kinds(msg: dict[str, Any]) -> list[str]:
    """Top-level keys plus the fields of realtimeInput/serverContent: what count() matches."""
    kinds: list[str] = []
    for key, value in msg.items():
        kinds.append(key)
        if key in ("realtimeInput", "serverContent") and isinstance(value, dict):
            kinds.extend(value)
    return kinds


@functools.lru_cache(maxsize=64)
def synthesize_speech(text: str) -> bytes | None:
    """espeak-ng speech as 24 kHz mono s16le, or None when espeak-ng/sox are missing or fail."""
    espeak, sox = shutil.which("espeak-ng"), shutil.which("sox")
    if not espeak or not sox or not text.strip():
        return None
    try:
        # --stdin rather than argv: a reply starting with "-" must not become an option.
        wav = subprocess.run(
            [espeak, "--stdout", "--stdin"],
            input=text.encode(),
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        raw = subprocess.run(
            [
                sox,
                "-t",
                "wav",
                "-",
                "-r",
                str(OUTPUT_RATE),
                "-c",
                "1",
                "-b",
                "16",
                "-e",
                "signed-integer",
                "-L",
                "-t",
                "raw",
                "-",
            ],
            input=wav,
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("espeak-ng/sox failed (%s); replying with a tone", exc)
        return None
    return raw[: len(raw) - len(raw) % 2] or None


@functools.lru_cache(maxsize=4)
def tone_pcm(freq: float = 440.0, seconds: float = 1.5, rate: int = OUTPUT_RATE) -> bytes:
    """A sine tone as mono s16le, with short fades so playback does not click."""
    n, fade = int(seconds * rate), int(0.01 * rate)
    samples = array.array(
        "h",
        (
            int(9000 * min(1.0, i / fade, (n - i) / fade) * math.sin(2 * math.pi * freq * i / rate))
            for i in range(n)
        ),
    )
    if sys.byteorder == "big":
        samples.byteswap()
    return samples.tobytes()


def _duration(seconds: float) -> str:
    """protobuf Duration JSON: "50s", "0.5s"."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Reject(f"{what}.data must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Reject(f"{what}.data is not valid base64: {exc}") from None


def _image_size(data: bytes, png: bool) -> tuple[int, int] | None:
    """Width and height from a PNG IHDR or a JPEG SOF segment, without decoding."""
    if png:
        return struct.unpack(">II", data[16:24]) if len(data) >= 24 else None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def _default_args(decl: dict[str, Any]) -> dict[str, Any]:
    """Plausible arguments for a declared function: enough to exercise a client's dispatch."""
    schema = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
    props = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or []:
        prop = props.get(name) or {}
        kind = str(prop.get("type", "")).upper()
        if kind == "BOOLEAN":
            args[name] = True
        elif kind in ("NUMBER", "INTEGER"):
            value = prop.get("minimum", 1)
            args[name] = int(value) if kind == "INTEGER" else value
        elif kind == "STRING":
            args[name] = (prop.get("enum") or ["on"])[0]
        elif kind == "ARRAY":
            args[name] = []
        elif kind == "OBJECT":
            args[name] = {}
    return args


def _word_groups(text: str, size: int = 3) -> list[str]:
    """Transcript pieces as the server streams them: later pieces carry their leading space."""
    words = text.split()
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [g if i == 0 else " " + g for i, g in enumerate(groups)]


class FakeGemini:
    """A local Gemini Live server. See the module docstring and ``script_turn``."""

    def __init__(
        self,
        *,
        api_key: str | None = None,
        pace: float = 1.0,
        chunk_ms: int = 40,
        reply_text: str | None = None,
        use_speech: bool = True,
        setup_complete_delay_s: float = 0.0,
        send_setup_complete: bool = True,
        go_away_after_s: float | None = None,
        go_away_grace_s: float = 5.0,
        resumption: bool = True,
        strict_tool_audio: bool = False,
        tool_timeout_s: float = 30.0,
        keep_audio: bool = True,
    ) -> None:
        self.api_key = api_key
        self.pace = pace
        self.chunk_ms = chunk_ms
        self.reply_text = reply_text
        self.use_speech = use_speech
        self.setup_complete_delay_s = setup_complete_delay_s
        self.send_setup_complete = send_setup_complete
        self.go_away_after_s = go_away_after_s
        self.go_away_grace_s = go_away_grace_s
        self.resumption = resumption
        self.strict_tool_audio = strict_tool_audio
        self.tool_timeout_s = tool_timeout_s
        # False drops received audio payloads (keeping their length): a long-running
        # demo server must not grow by 43 kB of base64 per second of speech.
        self.keep_audio = keep_audio
        self.host = "127.0.0.1"
        self.port = 0
        self.connections: list[FakeConnection] = []
        self.received: list[dict[str, Any]] = []
        self.tool_responses: list[dict[str, Any]] = []
        self.protocol_violations: list[str] = []
        self.sessions: dict[str, SessionState] = {}
        self.turns: list[Turn] = []
        self._scripts: deque[ScriptedTurn] = deque()
        self._server: Server | None = None
        self._changed = asyncio.Event()
        self._unstalled = asyncio.Event()
        self._unstalled.set()
        self._call_seq = 0
        self._session_seq = 0
        self._issued_calls: dict[str, tuple[FakeConnection, str]] = {}  # id -> (conn, name)
        self._answered_ids: set[str] = set()
        self._cancelled_ids: set[str] = set()

    # ---- lifecycle -------------------------------------------------------------------

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = await ws_serve(
            self._handler,
            host,
            port,
            max_size=16 * 2**20,
            compression=None,
            ping_interval=None,
            close_timeout=2,
            logger=_ws_log,
        )
        self.host = host
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("fake-gemini listening on %s", self.url)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._unstalled.set()  # let blocked sends run into the closing sockets and finish
        for conn in self.connections:
            if conn.open:
                conn.close_code, conn.close_reason = 1001, ""
                conn.close_detail, conn.closed_by = "server stopped", "server"
        self._server.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                await self._server.wait_closed()
        for conn in self.connections:
            await self._cancel_tasks(conn)
        self._server = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"ws://{host}:{self.port}{DEFAULT_PATH}"

    @property
    def active(self) -> FakeConnection | None:
        return next((c for c in reversed(self.connections) if c.open), None)

    # ---- observation -----------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_for(
        self,
        predicate: Callable[[FakeGemini], Any],
        timeout: float = 10.0,  # noqa: ASYNC109 - a test-facing deadline, like wait_for's
    ) -> Any:
        """Wait until ``predicate(self)`` is truthy and return its value; re-checked on every
        message, connection and close, so tests never poll or sleep."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not (result := predicate(self)):
            changed = self._changed
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(self._timeout_message(predicate, timeout))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await changed.wait()
        return result

    def _timeout_message(self, predicate: Callable[..., Any], timeout: float) -> str:
        try:
            what = inspect.getsource(predicate).strip()
        except (OSError, TypeError):
            what = repr(predicate)
        lines = [f"FakeGemini.wait_for timed out after {timeout}s waiting for: {what}"]
        for c in self.connections[-3:]:
            got = [message_kinds(m)[-1] for m in c.received[-8:]]
            out = [message_kinds(m)[-1] for m in c.sent[-8:]]
            lines.append(
                f"  conn {c.index} open={c.open} close={c.close_code} "
                f"{c.close_reason!r} ({c.close_detail}) last received={got} "
                f"last sent={out}"
            )
        lines.append(f"  turns={len(self.turns)} violations={self.protocol_violations[-5:]}")
        return "\n".join(lines)

    def messages_of(
        self, kind: str, *, sent: bool = False, conn: FakeConnection | None = None
    ) -> list[dict[str, Any]]:
        """Received (or, with sent=True, sent) messages whose kinds include ``kind``,
        e.g. "activityStart", "audio", "toolResponse", "turnComplete", "goAway"."""
        conns = [conn] if conn else self.connections
        return [
            m for c in conns for m in (c.sent if sent else c.received) if kind in message_kinds(m)
        ]

    def count(self, kind: str, *, sent: bool = False, conn: FakeConnection | None = None) -> int:
        return len(self.messages_of(kind, sent=sent, conn=conn))

    def audio_received_s(self, conn: FakeConnection | None = None) -> float:
        return sum(c.audio_s for c in ([conn] if conn else self.connections))

    @property
    def reply_audio_bytes(self) -> bytes:
        return next((t.reply_pcm for t in reversed(self.turns) if t.reply_pcm), b"")

    def _violation(self, conn: FakeConnection, text: str, once: str | None = None) -> None:
        if once is not None:
            if once in conn._flags:
                return
            conn._flags.add(once)
        self.protocol_violations.append(f"conn {conn.index}: {text}")
        log.warning("protocol violation on conn %d: %s", conn.index, text)
        self._notify()

    # ---- test controls ---------------------------------------------------------------

    def script_turn(
        self,
        *,
        input_text: str | None = None,
        reply_text: str | None = None,
        tool_calls: list[tuple[str, dict[str, Any]]] | None = None,
        reply_pcm: bytes | None = None,
        delay_s: float = 0.0,
    ) -> None:
        """Queue how the next turn goes (FIFO): what was "heard", tool calls to make first,
        what to say (and its exact audio), and a thinking delay before speaking."""
        self._scripts.append(ScriptedTurn(input_text, reply_text, tool_calls, reply_pcm, delay_s))

    def _require_active(self) -> FakeConnection:
        conn = self.active
        if conn is None:
            raise RuntimeError("FakeGemini has no open connection")
        return conn

    async def send(self, msg: dict[str, Any]) -> None:
        await self._send(self._require_active(), msg)

    async def send_raw(self, data: bytes | str) -> None:
        conn = self._require_active()
        await self._unstalled.wait()
        await conn.ws.send(data)
        conn.sent.append({"raw": data if isinstance(data, str) else data.hex()})
        self._notify()

    async def tool_call(self, calls: list[tuple[str, dict[str, Any]]]) -> list[str]:
        return await self._issue_tool_calls(self._require_active(), calls)

    async def cancel_tool_calls(self, ids: list[str]) -> None:
        conn = self._require_active()
        conn.pending_tool_ids.difference_update(ids)
        self._cancelled_ids.update(ids)
        await self._send(conn, {"toolCallCancellation": {"ids": list(ids)}})

    async def go_away(self, time_left_s: float = 50) -> None:
        """Send goAway now and close 1000 once ``time_left_s`` has passed."""
        conn = self._require_active()
        await self._send(conn, {"goAway": {"timeLeft": _duration(time_left_s)}})
        conn.spawn(self._close_later(conn, time_left_s))

    async def close_connection(self, code: int, reason: str = "") -> None:
        await self._close(self._require_active(), code, reason, "closed by the test")

    async def drop_connection(self) -> None:
        """Abort the TCP connection with no close frame: the client sees 1006."""
        conn = self._require_active()
        conn.close_code, conn.closed_by, conn.close_detail = 1006, "drop", "dropped by the test"
        conn.ws.transport.abort()
        self._notify()

    def stall(self, on: bool) -> None:
        """Hang: send nothing and ignore input (still recorded) until stall(False). The socket
        stays open and websockets still answers pings, as a hung backend behind a proxy does."""
        if on:
            self._unstalled.clear()
        else:
            self._unstalled.set()
        self._notify()

    @property
    def stalled(self) -> bool:
        return not self._unstalled.is_set()

    # ---- connection handling ---------------------------------------------------------

    async def _handler(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None  # the handshake is done before the handler runs
        conn = FakeConnection(
            index=len(self.connections),
            ws=ws,
            request_path=request.path,
            request_headers=request.headers,
        )
        conn.auth_method = self._authenticate(conn)
        self.connections.append(conn)
        # Never log the query string: it may hold the key.
        log.info(
            "conn %d open from %s path=%s auth=%s",
            conn.index,
            ws.remote_address,
            urlsplit(request.path).path,
            conn.auth_method,
        )
        self._notify()
        try:
            if self.api_key is not None and conn.auth_method is None:
                await self._close(conn, 1008, BAD_API_KEY, "missing or wrong API key")
                return
            if self.go_away_after_s is not None:
                conn.spawn(self._go_away_later(conn))
            await self._read_loop(conn)
        finally:
            await self._cancel_tasks(conn)
            if conn.close_code is None:
                conn.close_code, conn.close_reason = ws.close_code, ws.close_reason
                conn.closed_by = "client"
            if conn.session is not None and conn.session.connection is conn:
                conn.session.connection = None
            conn.ended = True
            log.info(
                "conn %d closed by %s: %s %r",
                conn.index,
                conn.closed_by,
                conn.close_code,
                conn.close_reason,
            )
            self._notify()

    def _authenticate(self, conn: FakeConnection) -> str | None:
        """How the client presented the expected key; with no key configured, whatever it sent."""
        url = urlsplit(conn.request_path)
        query = parse_qs(url.query)
        headers = conn.request_headers
        offered = [
            ("header", headers.get("x-goog-api-key")),
            ("query", (query.get("key") or [None])[0]),
        ]
        if "Constrained" in url.path:  # ephemeral tokens only work on the v1alpha endpoint
            authz = headers.get("authorization") or ""
            offered += [
                ("token-header", authz[6:] if authz.startswith("Token ") else None),
                ("token-query", (query.get("access_token") or [None])[0]),
            ]
        for method, value in offered:
            if value is not None and (
                self.api_key is None or hmac.compare_digest(value, self.api_key)
            ):
                return method
        return None

    async def _cancel_tasks(self, conn: FakeConnection) -> None:
        tasks = [t for t in (*conn.tasks, conn.reply_task) if t is not None and not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    async def _read_loop(self, conn: FakeConnection) -> None:
        while True:
            try:
                raw = await conn.ws.recv()
            except ConnectionClosed:
                return
            try:
                msg = json.loads(raw)
            except (UnicodeDecodeError, ValueError) as exc:
                if not self.stalled:
                    await self._close(conn, 1007, INVALID_ARGUMENT, f"malformed JSON: {exc}")
                    return
                continue
            if isinstance(msg, dict):
                self._record_received(conn, msg)
            if self.stalled:
                continue
            try:
                await self._dispatch(conn, msg)
            except _Reject as rej:
                await self._close(conn, rej.code, rej.reason, rej.detail)
                return
            except ConnectionClosed:
                return
            except (AttributeError, TypeError, KeyError, ValueError) as exc:
                # A field of the wrong shape deep inside a message: the real server's proto
                # parser answers 1007. Logged with the traceback in case the bug is ours.
                log.warning("conn %d: cannot handle %.200r", conn.index, msg, exc_info=True)
                await self._close(conn, 1007, INVALID_ARGUMENT, f"malformed message: {exc!r}")
                return

    def _record_received(self, conn: FakeConnection, msg: dict[str, Any]) -> None:
        record = msg
        realtime = msg.get("realtimeInput")
        audio = realtime.get("audio") if isinstance(realtime, dict) else None
        if not self.keep_audio and isinstance(audio, dict) and isinstance(audio.get("data"), str):
            record = {"realtimeInput": {"audio": {**audio, "data": len(audio["data"]) * 3 // 4}}}
        conn.received.append(record)
        self.received.append(record)
        self._notify()

    async def _send(
        self, conn: FakeConnection, msg: dict[str, Any], record: dict[str, Any] | None = None
    ) -> None:
        """Every server frame is binary UTF-8 JSON; non-audio messages are pretty-printed
        like the real server's, so a client that splits on lines breaks here too."""
        await self._unstalled.wait()
        text = json.dumps(msg) if record is not None else json.dumps(msg, indent=2)
        await conn.ws.send(text.encode())
        conn.sent.append(record if record is not None else msg)
        self._notify()

    async def _close(self, conn: FakeConnection, code: int, reason: str, detail: str) -> None:
        if conn.close_code is None:
            conn.close_code, conn.close_reason = code, reason
            conn.close_detail, conn.closed_by = detail, "server"
        log.info("conn %d: closing %d %r (%s)", conn.index, code, reason, detail)
        self._notify()
        await conn.ws.close(code, reason)

    async def _close_later(self, conn: FakeConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._unstalled.wait()
        await self._close(conn, 1000, "", "goAway time elapsed")

    async def _go_away_later(self, conn: FakeConnection) -> None:
        assert self.go_away_after_s is not None
        await asyncio.sleep(self.go_away_after_s)
        with contextlib.suppress(ConnectionClosed):
            await self._send(conn, {"goAway": {"timeLeft": _duration(self.go_away_grace_s)}})
            await self._close_later(conn, self.go_away_grace_s)

    # ---- client messages -------------------------------------------------------------

    async def _dispatch(self, conn: FakeConnection, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise _Reject("a client message must be a JSON object")
        keys = list(msg)
        if conn.setup is None and keys != ["setup"]:
            raise _Reject(f"the first message must be {{'setup': ...}}, got keys {keys}")
        if len(keys) != 1 or keys[0] not in CLIENT_KEYS:
            raise _Reject(f"a message needs exactly one of {CLIENT_KEYS}, got keys {keys}")
        key = keys[0]
        body = msg[key]
        if not isinstance(body, dict):
            raise _Reject(f"{key} must be an object")
        if key == "setup":
            if conn.setup is not None:
                raise _Reject("a second setup message")
            await self._on_setup(conn, body)
            return
        if not conn.setup_complete_sent:
            raise _Reject(f"{key} sent before setupComplete")
        if key == "realtimeInput":
            await self._on_realtime(conn, body)
        elif key == "toolResponse":
            self._on_tool_response(conn, body)
        else:
            await self._on_client_content(conn, body)

    async def _on_setup(self, conn: FakeConnection, setup: dict[str, Any]) -> None:
        unknown = sorted(set(setup) - SETUP_FIELDS)
        if unknown:
            raise _Reject(f"unknown setup fields {unknown}")
        model = setup.get("model")
        if not isinstance(model, str) or not model:
            raise _Reject("setup.model is required")
        if not model.startswith("models/"):
            found = re.search(r"\.(v1\w*)\.", conn.request_path)
            version = found.group(1) if found else "v1beta"
            raise _Reject(
                f"bad model name {model!r}", 1008, f"{model} is not found for API version {version}"
            )
        modalities = (setup.get("generationConfig") or {}).get("responseModalities")
        if modalities is not None and modalities not in (["AUDIO"], ["TEXT"]):
            raise _Reject(f"responseModalities must be ['AUDIO'] or ['TEXT'], got {modalities}")
        for tool in setup.get("tools") or []:
            for decl in (tool or {}).get("functionDeclarations") or []:
                if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                    raise _Reject(f"a function declaration needs a name: {decl!r}")
        resumption = setup.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if handle:
            session = self.sessions.get(handle) if self.resumption else None
            if session is None:
                raise _Reject(f"unknown resumption handle {handle[:8]}...", 1008, SESSION_NOT_FOUND)
            if session.connection is not None and session.connection.open:
                self._violation(
                    conn,
                    f"resumed session {session.index} while conn "
                    f"{session.connection.index} still holds it open "
                    "(the real server has answered 1011)",
                )
            conn.resumed_from = handle
        else:
            self._session_seq += 1
            session = SessionState(index=self._session_seq)
        session.connection = conn
        conn.session, conn.setup = session, setup
        log.info("conn %d setup model=%s resumed=%s", conn.index, model, bool(handle))
        self._notify()
        if not self.send_setup_complete:
            return
        if self.setup_complete_delay_s > 0:
            conn.spawn(self._complete_setup(conn, self.setup_complete_delay_s))
        else:
            await self._complete_setup(conn, 0.0)

    async def _complete_setup(self, conn: FakeConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._unstalled.wait()
        # Flag first: the client may answer setupComplete before our send() returns.
        conn.setup_complete_sent = True
        with contextlib.suppress(ConnectionClosed):
            await self._send(conn, {"setupComplete": {}})
            await self._resumption_update(conn)

    async def _resumption_update(self, conn: FakeConnection, resumable: bool = True) -> None:
        if (
            not self.resumption
            or conn.session is None
            or not isinstance((conn.setup or {}).get("sessionResumption"), dict)
        ):
            return
        handle = ""
        if resumable:
            handle = secrets.token_urlsafe(24)
            self.sessions[handle] = conn.session
            conn.session.handles.append(handle)
        await self._send(
            conn, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": resumable}}
        )

    async def _on_realtime(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        if len(body) != 1 or next(iter(body)) not in REALTIME_FIELDS:
            raise _Reject(f"realtimeInput needs exactly one of {REALTIME_FIELDS}, got {list(body)}")
        key, value = next(iter(body.items()))
        if key in ("activityStart", "activityEnd"):
            if not isinstance(value, dict):
                raise _Reject(f"{key} must be an object")
            if not conn.vad_disabled:
                raise _Reject(
                    f"{key} needs realtimeInputConfig.automaticActivityDetection.disabled = true"
                )
            await (
                self._activity_start(conn) if key == "activityStart" else self._activity_end(conn)
            )
        elif key == "audio":
            await self._on_audio(conn, value, "audio")
        elif key == "video":
            self._on_video(conn, value, "video")
        elif key == "text":
            if not isinstance(value, str):
                raise _Reject("realtimeInput.text must be a string")
            await self._barge_in(conn)
            await self._begin_reply(conn, Turn("text", conn, input_text=value))
        elif key == "audioStreamEnd":
            if conn.capture is not None and not conn.vad_disabled:
                await self._end_capture(conn)
        else:  # mediaChunks
            self._violation(
                conn, "realtimeInput.mediaChunks is deprecated: use audio/video", once="mediaChunks"
            )
            if not isinstance(value, list):
                raise _Reject("mediaChunks must be a list")
            for chunk in value:
                mime = str((chunk or {}).get("mimeType", ""))
                if mime.startswith("image/"):
                    self._on_video(conn, chunk, "mediaChunks[]")
                else:
                    await self._on_audio(conn, chunk, "mediaChunks[]")

    async def _on_audio(self, conn: FakeConnection, blob: Any, what: str) -> None:
        if not isinstance(blob, dict):
            raise _Reject(f"{what} must be an object")
        mime = str(blob.get("mimeType", ""))
        if not mime.startswith("audio/pcm"):
            raise _Reject(f"{what}.mimeType must be audio/pcm;rate=16000, got {mime!r}")
        pcm = _b64(blob.get("data"), what)
        if len(pcm) % 2:
            raise _Reject(f"{what} holds {len(pcm)} bytes: not whole 16-bit samples")
        rate_match = re.search(r"rate=(\d+)", mime)
        rate = int(rate_match.group(1)) if rate_match else INPUT_RATE
        if rate != INPUT_RATE or not rate_match:
            self._violation(conn, f"audio mimeType {mime!r}: expected rate=16000", once="rate")
        seconds = len(pcm) / 2 / max(rate, 1)
        conn.audio_s += seconds
        if conn.pending_tool_ids:
            detail = (
                f"mic audio while tool call(s) {sorted(conn.pending_tool_ids)} are "
                "unanswered (the real server has closed 1008 for this)"
            )
            if self.strict_tool_audio:
                raise _Reject(detail, 1008, "Audio received while a function call is pending.")
            self._violation(conn, detail, once=f"tool-audio:{sorted(conn.pending_tool_ids)}")
        if not conn.vad_disabled:
            await self._vad(conn, pcm, seconds)
        elif conn.capture is None:
            self._violation(
                conn,
                "audio outside activityStart/activityEnd (the server ignores it)",
                once="stray-audio",
            )
        else:
            self._hear(conn.capture, pcm, seconds)

    def _hear(self, turn: Turn, pcm: bytes, seconds: float) -> None:
        turn.heard_s += seconds
        if self.keep_audio:
            turn.heard_pcm += pcm

    async def _vad(self, conn: FakeConnection, pcm: bytes, seconds: float) -> None:
        """Automatic activity detection, crudely: a loud chunk starts a turn, quiet ends it."""
        samples = array.array("h", pcm)
        if sys.byteorder == "big":
            samples.byteswap()
        loud = bool(samples) and max(-min(samples), max(samples)) > VAD_PEAK
        if conn.capture is None:
            if not loud:
                return
            await self._barge_in(conn)
            conn.capture = Turn("vad", conn)
        self._hear(conn.capture, pcm, seconds)
        conn._silence_s = 0.0 if loud else conn._silence_s + seconds
        if conn._silence_s >= VAD_SILENCE_S:
            await self._end_capture(conn)

    def _on_video(self, conn: FakeConnection, blob: Any, what: str) -> None:
        if not isinstance(blob, dict):
            raise _Reject(f"{what} must be an object")
        mime = blob.get("mimeType")
        if mime not in ("image/jpeg", "image/png"):
            raise _Reject(f"{what}.mimeType must be image/jpeg or image/png, got {mime!r}")
        data = _b64(blob.get("data"), what)
        png = mime == "image/png"
        if not data.startswith(b"\x89PNG\r\n\x1a\n" if png else b"\xff\xd8"):
            raise _Reject(f"{what}: the data is not a {mime} image")
        conn.video_frames += 1
        size = _image_size(data, png)
        if size and max(size) > MAX_VIDEO_SIDE:
            self._violation(
                conn,
                f"video frame {size[0]}x{size[1]}: longest side over {MAX_VIDEO_SIDE}",
                once="video-size",
            )
        now = asyncio.get_running_loop().time()
        if conn._last_video_at is not None and now - conn._last_video_at < MIN_VIDEO_GAP_S:
            self._violation(
                conn,
                f"video frames {now - conn._last_video_at:.2f}s apart (at most 1 frame/s)",
                once="video-rate",
            )
        conn._last_video_at = now

    async def _on_client_content(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        if "gemini-3" in conn.model:
            raise _Reject("clientContent mid-session is rejected by gemini-3 live models")
        assert conn.session is not None
        last_user = None
        for content in body.get("turns") or []:
            text = " ".join(
                str(p.get("text", ""))
                for p in content.get("parts") or []
                if isinstance(p, dict) and "text" in p
            )
            role = content.get("role", "user")
            conn.session.history.append((role, text))
            last_user = text if role == "user" else last_user
        if body.get("turnComplete"):
            await self._barge_in(conn)
            await self._begin_reply(conn, Turn("clientContent", conn, input_text=last_user))

    def _on_tool_response(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        responses = body.get("functionResponses")
        if not isinstance(responses, list):
            raise _Reject("toolResponse.functionResponses must be a list")
        for fr in responses:
            if not isinstance(fr, dict):
                raise _Reject("a functionResponse must be an object")
            self.tool_responses.append(fr)
            call_id = fr.get("id")
            issued = self._issued_calls.get(call_id) if isinstance(call_id, str) else None
            if not isinstance(fr.get("response"), dict):
                self._violation(conn, f"functionResponse {call_id!r} has no response object")
            if not call_id:
                self._violation(conn, f"functionResponse without an id: {fr!r}")
            elif call_id in conn.pending_tool_ids:
                conn.pending_tool_ids.discard(call_id)
                self._answered_ids.add(call_id)
                if fr.get("name") not in (None, issued[1] if issued else None):
                    self._violation(
                        conn,
                        f"functionResponse {call_id} names {fr.get('name')!r}"
                        f", the call was {issued[1] if issued else None!r}",
                    )
            elif call_id in self._answered_ids:
                self._violation(conn, f"duplicated toolResponse for {call_id}")
            elif call_id in self._cancelled_ids:
                pass  # crossed our cancellation on the wire: legitimate, and ignored
            elif issued is not None:
                self._violation(
                    conn,
                    f"toolResponse for {call_id}, issued on conn {issued[0].index}, not this one",
                )
            else:
                self._violation(conn, f"toolResponse for unknown id {call_id!r}")
        self._notify()

    # ---- turns -----------------------------------------------------------------------

    async def _activity_start(self, conn: FakeConnection) -> None:
        if conn.capture is not None:
            self._violation(conn, "activityStart while an activity is already open")
            return
        conn._flags.discard("stray-audio")
        await self._barge_in(conn)
        conn.capture = Turn("activity", conn)

    async def _activity_end(self, conn: FakeConnection) -> None:
        if conn.capture is None:
            self._violation(conn, "activityEnd without activityStart")
            return
        await self._end_capture(conn)

    async def _end_capture(self, conn: FakeConnection) -> None:
        turn, conn.capture, conn._silence_s = conn.capture, None, 0.0
        assert turn is not None
        await self._begin_reply(conn, turn)

    async def _barge_in(self, conn: FakeConnection) -> None:
        """New user input while the model is answering: stop at once, like the real server
        with START_OF_ACTIVITY_INTERRUPTS (the default)."""
        task, turn = conn.reply_task, conn.reply_turn
        if task is None or task.done() or turn is None or not conn.interrupts:
            return
        if turn.completed:  # only the trailing resumption update is left: let it go out
            await asyncio.wait([task])
            return
        task.cancel()
        await asyncio.wait([task])
        turn.interrupted = True
        pending = [c["id"] for c in turn.tool_calls if c["id"] in conn.pending_tool_ids]
        if pending:
            conn.pending_tool_ids.difference_update(pending)
            self._cancelled_ids.update(pending)
            await self._send(conn, {"toolCallCancellation": {"ids": pending}})
        await self._send(conn, {"serverContent": {"interrupted": True}})
        await self._send(conn, {"serverContent": {"turnComplete": True}})
        log.info(
            "conn %d turn %d interrupted after %d audio bytes",
            conn.index,
            turn.index,
            turn.audio_sent_bytes,
        )
        await self._resumption_update(conn)

    async def _begin_reply(self, conn: FakeConnection, turn: Turn) -> None:
        turn.index = len(self.turns)
        self.turns.append(turn)
        script = self._scripts.popleft() if self._scripts else None
        # With NO_INTERRUPTION the previous answer is still running: queue behind it.
        previous = conn.reply_task if conn.reply_task and not conn.reply_task.done() else None
        conn.reply_turn = turn
        conn.reply_task = asyncio.create_task(self._run_turn(conn, turn, script, previous))
        self._notify()

    async def _run_turn(
        self,
        conn: FakeConnection,
        turn: Turn,
        script: ScriptedTurn | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._answer(conn, turn, script)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("conn %d turn %d failed", conn.index, turn.index)
            self._violation(conn, f"fake server error in turn {turn.index} (see log)")

    async def _answer(self, conn: FakeConnection, turn: Turn, script: ScriptedTurn | None) -> None:
        assert conn.session is not None
        history = conn.session.history
        scripted_input = script.input_text if script else None
        if turn.source in ("activity", "vad"):
            turn.input_text = scripted_input or f"({turn.heard_s:.1f} seconds of audio)"
            if "inputAudioTranscription" in (conn.setup or {}):
                await self._send(
                    conn, {"serverContent": {"inputTranscription": {"text": turn.input_text}}}
                )
        elif scripted_input:
            turn.input_text = scripted_input
        if turn.source != "clientContent":
            history.append(("user", turn.input_text or ""))
        log.info(
            "conn %d turn %d (%s) heard %.1fs: %r",
            conn.index,
            turn.index,
            turn.source,
            turn.heard_s,
            turn.input_text,
        )
        if script is not None and script.tool_calls is not None:
            calls = script.tool_calls
        elif turn.source in ("text", "clientContent") or scripted_input:
            calls = self._auto_tool_calls(conn, turn.input_text or "")
        else:
            calls = []
        if calls:
            ids = set(await self._issue_tool_calls(conn, calls, turn))
            try:
                await self.wait_for(lambda _: not ids & conn.pending_tool_ids, self.tool_timeout_s)
            except TimeoutError:
                self._violation(
                    conn, f"no toolResponse for {sorted(ids)} within {self.tool_timeout_s}s"
                )
                conn.pending_tool_ids.difference_update(ids)
        if script is not None and script.delay_s > 0:
            await asyncio.sleep(script.delay_s)
        turn.reply_text = (
            (script.reply_text if script else None)
            or self.reply_text
            or ("Done." if calls else self._default_reply(turn))
        )
        if not conn.text_modality:
            if script is not None and script.reply_pcm is not None:
                turn.reply_pcm, turn.audio_kind = script.reply_pcm, "scripted"
            else:
                turn.reply_pcm, turn.audio_kind = await self._reply_audio(turn.reply_text)
        await self._stream_reply(conn, turn)
        await self._send(conn, {"serverContent": {"generationComplete": True}})
        turn.completed = True
        prompt = 10 + int(32 * turn.heard_s) + 2 * sum(len(t.split()) for _, t in history)
        response = max(
            1, int(32 * len(turn.reply_pcm) / (2 * OUTPUT_RATE)) or 2 * len(turn.reply_text.split())
        )
        await self._send(
            conn,
            {
                "serverContent": {"turnComplete": True},
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "responseTokenCount": response,
                    "totalTokenCount": prompt + response,
                },
            },
        )
        history.append(("model", turn.reply_text))
        log.info(
            "conn %d turn %d answered %r (%.1fs of %s audio)",
            conn.index,
            turn.index,
            turn.reply_text,
            len(turn.reply_pcm) / (2 * OUTPUT_RATE),
            turn.audio_kind,
        )
        await self._resumption_update(conn)

    @staticmethod
    def _default_reply(turn: Turn) -> str:
        if turn.input_text and not turn.input_text.startswith("("):
            return f"You said: {turn.input_text}"
        return f"I heard {turn.heard_s:.1f} seconds of audio."

    async def _reply_audio(self, text: str) -> tuple[bytes, str]:
        if self.use_speech:
            # A thread, so the loop keeps serving other connections (and barge-in) meanwhile.
            pcm = await asyncio.to_thread(synthesize_speech, text)
            if pcm:
                return pcm, "speech"
        return tone_pcm(), "tone"

    def _auto_tool_calls(self, conn: FakeConnection, text: str) -> list[tuple[str, dict[str, Any]]]:
        """A demo nicety: saying a declared function's name calls it."""
        lowered = text.lower()
        calls = []
        for tool in (conn.setup or {}).get("tools") or []:
            for decl in (tool or {}).get("functionDeclarations") or []:
                name = decl["name"].lower()
                if name in lowered or name.replace("_", " ") in lowered:
                    calls.append((decl["name"], _default_args(decl)))
        return calls

    async def _issue_tool_calls(
        self,
        conn: FakeConnection,
        calls: list[tuple[str, dict[str, Any]]],
        turn: Turn | None = None,
    ) -> list[str]:
        function_calls = []
        for name, args in calls:
            self._call_seq += 1
            call = {"id": f"function-call-{self._call_seq}", "name": name, "args": args}
            function_calls.append(call)
            self._issued_calls[call["id"]] = (conn, name)
            conn.pending_tool_ids.add(call["id"])
        if turn is not None:
            turn.tool_calls.extend(function_calls)
        await self._send(conn, {"toolCall": {"functionCalls": function_calls}})
        # While a tool runs the session is not resumable; the client must keep its last handle.
        await self._resumption_update(conn, resumable=False)
        log.info("conn %d tool call %s", conn.index, [(c["id"], c["name"]) for c in function_calls])
        return [c["id"] for c in function_calls]

    async def _stream_reply(self, conn: FakeConnection, turn: Turn) -> None:
        pieces = _word_groups(turn.reply_text)
        if conn.text_modality:
            for piece in pieces:
                await self._send(
                    conn, {"serverContent": {"modelTurn": {"parts": [{"text": piece}]}}}
                )
            return
        if "outputAudioTranscription" not in (conn.setup or {}):
            pieces = []
        size = max(2, OUTPUT_RATE * 2 * self.chunk_ms // 1000 // 2 * 2)
        pcm = turn.reply_pcm
        chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        played = 0.0  # seconds of audio sent so far
        next_piece = 0
        mime = f"audio/pcm;rate={OUTPUT_RATE}"
        for k, chunk in enumerate(chunks):
            # Spread the transcript over the audio, a word group at its share of the way.
            while next_piece < len(pieces) and next_piece * len(chunks) <= k * len(pieces):
                await self._send(
                    conn, {"serverContent": {"outputTranscription": {"text": pieces[next_piece]}}}
                )
                next_piece += 1
            if self.pace > 0:
                delay = start + played / self.pace - loop.time()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)  # still let barge-in and other connections in
            inline = {"mimeType": mime, "data": base64.b64encode(chunk).decode()}
            await self._send(
                conn,
                {"serverContent": {"modelTurn": {"parts": [{"inlineData": inline}]}}},
                record={
                    "serverContent": {
                        "modelTurn": {
                            "parts": [{"inlineData": {"mimeType": mime, "data": len(chunk)}}]
                        }
                    }
                },
            )
            turn.audio_sent_bytes += len(chunk)
            played += len(chunk) / (2 * OUTPUT_RATE)
        for piece in pieces[next_piece:]:
            await self._send(conn, {"serverContent": {"outputTranscription": {"text": piece}}})


# ---- command line --------------------------------------------------------------------------


async def serve(host: str = "127.0.0.1", port: int = 8765, **knobs: Any) -> None:
    """Run a FakeGemini until cancelled. Received audio is not kept unless asked for."""
    knobs.setdefault("keep_audio", False)
    fake = FakeGemini(**knobs)
    await fake.start(host, port)
    print(f"fake-gemini listening on {fake.url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="reply audio speed: 1 = real time, 10 = ten times faster, 0 = unpaced",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require the API key held in this environment variable "
        "(a name, so the key never shows in the process list)",
    )
    parser.add_argument(
        "--go-away-after",
        type=float,
        metavar="SECONDS",
        default=None,
        help="send goAway this long into every connection, then close it",
    )
    parser.add_argument("--reply-text", default=None, help="say this instead of an echo")
    parser.add_argument(
        "--no-speech", action="store_true", help="reply with a tone instead of espeak-ng speech"
    )


def run_from_args(args: argparse.Namespace) -> int:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"fake-gemini: environment variable {args.api_key_env} is not set or empty",
                file=sys.stderr,
            )
            return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        task = asyncio.create_task(
            serve(
                args.host,
                args.port,
                api_key=api_key,
                pace=args.pace,
                go_away_after_s=args.go_away_after,
                reply_text=args.reply_text,
                use_speech=not args.no_speech,
            )
        )
        # SIGTERM (systemd, CI) should stop as cleanly as Ctrl-C.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"fake-gemini: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
