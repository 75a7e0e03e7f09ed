"""A fault-injecting WebSocket proxy: the daemon dials it, it dials the fake Gemini.

Every incoming connection gets its own upstream connection (same path, same
auth header), and frames are relayed both ways. While ``faults`` is on, a
seeded ``random.Random`` decides, frame by frame, to deliver, drop, delay,
truncate, duplicate or corrupt it, or to kill the whole connection. The same
seed gives the same sequence of decisions (the timing of a live run still
varies), so a failing seed is a lead, not a coin toss.

Server -> client frames take most of the abuse: that is what a buggy server or
a mangling middlebox does to the daemon. Client -> server frames are only
delayed or, rarely, garbled past reading, which the fake answers with a 1007
close like the real server: TCP never silently loses or repeats a client frame
on a live connection, so dropping one would test the fake, not the daemon; and
no network (TLS least of all) turns a client frame into a different message
that still reads, so a garbled one never parses (see ``garble``).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake

log = logging.getLogger("tests.fault_proxy")
_ws_log = log.getChild("ws")
_ws_log.setLevel(logging.WARNING)

# Close codes a peer may put in a close frame (RFC 6455 7.4); anything else
# (1005, 1006, an aborted socket) is mirrored by aborting the other side.
_SENDABLE = {1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, *range(3000, 5000)}
# Codes the proxy closes a killed connection with: transient ones, plus a rare
# 1007 (the daemon's config-error path) and 1008 "session not found" (stale handle).
_KILL_CLOSES: list[tuple[int | None, str]] = [
    (None, ""),  # abort: the client sees 1006, as after a Wi-Fi drop
    (None, ""),
    (None, ""),
    (1011, "Internal error encountered."),
    (1011, "The service is currently unavailable."),
    (1000, ""),
    (1001, "going away"),
    (1008, "session not found"),
    (1007, "Request contains an invalid argument."),
]
# Replacement values for semantic corruption: each breaks a different assumption.
_JUNK: list[Any] = [
    None,
    "",
    "yes",
    0,
    -1,
    2**63,
    1e308,
    -0.0,
    True,
    [],
    {},
    [None, {"a": []}],
    {"nested": {"deeper": [1, "x", {"z": None}]}},
    "not base64!!",
    "QUJD=",  # padding in the wrong place
    "QUI",  # missing padding
    "AAA=",  # odd number of PCM bytes
    "\u202e\U0001f600\x00",
    "x" * 5000,
]


class Action(enum.Enum):
    DELIVER = "deliver"
    DROP = "drop"
    DELAY = "delay"
    TRUNCATE = "truncate"
    DUPLICATE = "duplicate"
    CORRUPT = "corrupt"
    KILL = "kill"


@dataclass(frozen=True)
class FaultPlan:
    """Per-frame probabilities. ``kill`` applies to frames both ways."""

    drop: float = 0.03
    delay: float = 0.05
    max_delay_s: float = 0.05
    truncate: float = 0.02
    duplicate: float = 0.03
    corrupt: float = 0.03
    up_delay: float = 0.02
    up_corrupt: float = 0.003
    kill: float = 0.01

    @classmethod
    def random(cls, rng: random.Random) -> FaultPlan:
        """A plan of random intensity: some seeds are gentle, some brutal."""
        scale = rng.choice([0.3, 1.0, 1.0, 2.0, 4.0])
        return cls(
            drop=0.03 * scale * rng.random() * 2,
            delay=0.05 * scale * rng.random() * 2,
            max_delay_s=rng.choice([0.005, 0.02, 0.08]),
            truncate=0.02 * scale * rng.random() * 2,
            duplicate=0.03 * scale * rng.random() * 2,
            corrupt=0.03 * scale * rng.random() * 2,
            up_delay=0.02 * scale * rng.random() * 2,
            up_corrupt=0.003 * scale * rng.random() * 2,
            kill=0.01 * scale * rng.random() * 2,
        )

    def choose(self, rng: random.Random, downstream: bool) -> Action:
        x = rng.random()
        table = (
            (
                (Action.KILL, self.kill),
                (Action.DROP, self.drop),
                (Action.DELAY, self.delay),
                (Action.TRUNCATE, self.truncate),
                (Action.DUPLICATE, self.duplicate),
                (Action.CORRUPT, self.corrupt),
            )
            if downstream
            else (
                (Action.KILL, self.kill),
                (Action.DELAY, self.up_delay),
                (Action.CORRUPT, self.up_corrupt),
            )
        )
        for action, p in table:
            if x < p:
                return action
            x -= p
        return Action.DELIVER


@dataclass(eq=False)
class ProxiedConnection:
    index: int
    down: ServerConnection = field(repr=False)
    up: ClientConnection | None = field(default=None, repr=False)
    killed_with: int | None = None  # close code used by a kill (None: abort), if killed
    killed: bool = False
    kill_task: asyncio.Task[None] | None = field(default=None, repr=False)
    frames_down: int = 0
    frames_up: int = 0


def corrupt(frame: bytes, rng: random.Random) -> bytes | str:
    """A damaged copy of ``frame``: flipped bytes, junk, or valid JSON of the wrong shape."""
    how = rng.randrange(6)
    if how == 0 and frame:  # a few bit flips: usually invalid JSON or UTF-8
        data = bytearray(frame)
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(data))
            data[i] ^= 1 << rng.randrange(8)
        if data == frame:  # two flips of the same bit cancelled out
            data[0] ^= 0x20
        return bytes(data)
    if how == 1:  # junk bytes
        return rng.randbytes(rng.randint(0, 64))
    if how == 2:  # the text with trailing junk, as a text frame
        return frame.decode("utf-8", "replace") + rng.choice(["}", "\x00", ",", "]", "x"])
    try:
        msg = json.loads(frame)
    except ValueError:
        return frame[::-1]
    for _ in range(rng.randint(1, 3)):
        msg = _mutate(msg, rng)
    out = json.dumps(msg, ensure_ascii=rng.random() < 0.5)
    return out.encode() if rng.random() < 0.8 else out


def garble(frame: bytes, rng: random.Random) -> bytes:
    """A client frame damaged past reading: cut short before its closing brace,
    or with a byte that never occurs in UTF-8. A server can only refuse it (the
    fake closes with 1007, as the real service does).

    Never a different message that still reads, as ``corrupt`` may make: the
    server would then act on something the client never sent. (It did: a
    toolResponse whose one entry ``corrupt`` doubled reached the fake as two
    answers to one call, which the daemon had sent once.)
    """
    end = frame.rfind(b"}")
    if end > 0 and rng.random() < 0.5:
        # A client message is one JSON object: without its last "}" it never parses.
        return frame[: rng.randrange(1, end + 1)]
    i = rng.randrange(len(frame) + 1)
    return frame[:i] + b"\xff" + frame[i:]


def _mutate(node: Any, rng: random.Random, depth: int = 0) -> Any:
    """Replace, delete or wrap one value somewhere in a JSON tree."""
    if isinstance(node, dict) and node and depth < 8 and rng.random() < 0.8:
        key = rng.choice(list(node))
        roll = rng.random()
        out = dict(node)
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out[key + rng.choice(["", "X", "_"])] = rng.choice(_JUNK)
        else:
            out[key] = _mutate(node[key], rng, depth + 1)
        return out
    if isinstance(node, list) and node and depth < 8 and rng.random() < 0.8:
        out_list = list(node)
        i = rng.randrange(len(out_list))
        roll = rng.random()
        if roll < 0.15:
            del out_list[i]
        elif roll < 0.25:
            out_list.append(out_list[i])
        else:
            out_list[i] = _mutate(out_list[i], rng, depth + 1)
        return out_list
    if rng.random() < 0.1:
        return [node]
    return rng.choice(_JUNK)


def _tool_call_ids(frame: bytes | str) -> list[str]:
    """The ids of the function calls a server frame carries (none if it is not one)."""
    raw = frame.encode() if isinstance(frame, str) else frame
    if b'"toolCall"' not in raw:
        return []
    try:
        calls = json.loads(raw)["toolCall"]["functionCalls"]
        return [c["id"] for c in calls if isinstance(c, dict) and isinstance(c.get("id"), str)]
    except (ValueError, KeyError, TypeError):
        return []


class FaultProxy:
    """See the module docstring. ``faults`` switches injection on and off at any time."""

    def __init__(
        self,
        upstream_url: str,
        *,
        rng: random.Random,
        plan: FaultPlan | None = None,
        faults: bool = True,
    ) -> None:
        parts = urlsplit(upstream_url)
        self._upstream_base = f"{parts.scheme}://{parts.netloc}"
        self._path = parts.path + (f"?{parts.query}" if parts.query else "")
        self.rng = rng
        self.plan = plan or FaultPlan()
        self.faults = faults
        self.port = 0
        self.connections: list[ProxiedConnection] = []
        self.counts: Counter[str] = Counter()  # "down:drop", "up:corrupt", ...
        # Function-call ids whose toolCall frame reached the daemon's socket intact.
        self.tool_calls_delivered: Counter[str] = Counter()
        self._server: Server | None = None

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{self._path}"

    async def start(self) -> None:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            compression=None,
            max_size=None,
            ping_interval=None,
            close_timeout=1,
            logger=_ws_log,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.faults = False
        for conn in self.connections:
            _abort(conn.down)
            if conn.up is not None:
                _abort(conn.up)
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(3):
                    await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    def kill_all(self) -> None:
        """Drop every open connection now, with no close frame (a Wi-Fi drop)."""
        for conn in self.connections:
            self._kill(conn, None, "")

    # ---- relaying --------------------------------------------------------------------

    async def _handler(self, down: ServerConnection) -> None:
        request = down.request
        assert request is not None
        conn = ProxiedConnection(len(self.connections), down)
        self.connections.append(conn)
        headers = [
            (k, v)
            for k, v in request.headers.raw_items()
            if k.lower() in ("x-goog-api-key", "authorization")
        ]
        try:
            conn.up = await connect(
                self._upstream_base + request.path,
                additional_headers=headers,
                compression=None,
                max_size=None,
                ping_interval=None,
                open_timeout=5,
                close_timeout=1,
                proxy=None,
                logger=_ws_log,
            )
        except (OSError, InvalidHandshake, TimeoutError) as exc:
            log.info("proxy conn %d: upstream unreachable: %r", conn.index, exc)
            await down.close(1011, "upstream unreachable")
            return
        up = conn.up
        pumps = {
            asyncio.create_task(self._pump(conn, up, down, downstream=True)),
            asyncio.create_task(self._pump(conn, down, up, downstream=False)),
        }
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.wait(pumps)
            _abort(up)
            # Returning would let the server close the daemon's side with 1000 first.
            if conn.kill_task is not None:
                await asyncio.wait([conn.kill_task])

    async def _pump(
        self,
        conn: ProxiedConnection,
        src: ServerConnection | ClientConnection,
        dst: ServerConnection | ClientConnection,
        *,
        downstream: bool,
    ) -> None:
        """Relay ``src`` -> ``dst`` until ``src`` closes, then close ``dst`` the same way."""
        side = "down" if downstream else "up"
        try:
            while True:
                frame = await src.recv()
                if downstream:
                    conn.frames_down += 1
                else:
                    conn.frames_up += 1
                action = self.plan.choose(self.rng, downstream) if self.faults else Action.DELIVER
                self.counts[f"{side}:{action.value}"] += 1
                await self._apply(conn, dst, frame, action, downstream)
        except ConnectionClosed:
            pass
        if conn.killed:
            return
        # Mirror the close: the daemon must see the code the fake (or it) chose.
        code, reason = src.close_code, src.close_reason or ""
        if code in _SENDABLE:
            with contextlib.suppress(ConnectionClosed):
                await dst.close(code, reason)
        _abort(dst)

    async def _apply(
        self,
        conn: ProxiedConnection,
        dst: ServerConnection | ClientConnection,
        frame: bytes | str,
        action: Action,
        downstream: bool,
    ) -> None:
        raw = frame.encode() if isinstance(frame, str) else frame
        if action is Action.DROP:
            return
        if action is Action.KILL:
            code, reason = self.rng.choice(_KILL_CLOSES)
            self._kill(conn, code, reason)
            return
        if action is Action.DELAY:
            await asyncio.sleep(self.rng.uniform(0, self.plan.max_delay_s))
        if action is Action.TRUNCATE:
            frame = raw[: self.rng.randrange(max(1, len(raw)))]
        elif action is Action.CORRUPT:
            frame = corrupt(raw, self.rng) if downstream else garble(raw, self.rng)
        await dst.send(frame)
        copies = 1
        if action is Action.DUPLICATE:
            await dst.send(frame)
            copies = 2
        if downstream and action in (Action.DELIVER, Action.DELAY, Action.DUPLICATE):
            for call_id in _tool_call_ids(frame):
                self.tool_calls_delivered[call_id] += copies

    def _kill(self, conn: ProxiedConnection, code: int | None, reason: str) -> None:
        if conn.killed:
            return
        conn.killed, conn.killed_with = True, code
        conn.kill_task = asyncio.get_running_loop().create_task(
            self._close_both(conn, code, reason)
        )

    async def _close_both(self, conn: ProxiedConnection, code: int | None, reason: str) -> None:
        if conn.up is not None:
            _abort(conn.up)  # the fake sees the client vanish
        if code is None:
            _abort(conn.down)
            return
        with contextlib.suppress(ConnectionClosed, TimeoutError):
            async with asyncio.timeout(1):
                await conn.down.close(code, reason)
        _abort(conn.down)


def _abort(ws: ServerConnection | ClientConnection) -> None:
    transport = ws.transport
    if transport is not None and not transport.is_closing():
        transport.abort()
