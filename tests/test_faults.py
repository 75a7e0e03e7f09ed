"""Faults against the fake Gemini, with the whole daemon in-process.

After each fault the daemon must be back in ``idle`` on a live session, must
have resumed with the handle wherever it was valid, and must have lost nothing
it owed: the user's speech (every microphone chunk, in order, exactly once in
the turn the server answered) and tool results (delivered exactly once).

The microphone here numbers its chunks, so what the fake heard can be read
back as a sequence and checked for gaps, repeats and reordering.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from conftest import SECRET

from edge_daemon.audio.base import PacedMicrophone
from edge_daemon.audio.null import NullSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import BAD_API_KEY, FakeConnection, FakeGemini, tone_pcm
from edge_daemon.live.reconnect import LinkSettings, LinkState
from edge_daemon.live.session import Credentials
from edge_daemon.systemd import RecordFields
from edge_daemon.tools.registry import Tool, ToolRegistry

CHUNK_MS = 40
CHUNK_BYTES = 16000 * 2 * CHUNK_MS // 1000
# The daemon's setup and response timeouts. The fake answers at once, so only
# a test that withholds an answer on purpose should ever reach them: at a
# fraction of a second a loaded machine's slow answer would pass for a hung
# server, and cost a connection the test counts. The tests about those
# timeouts shorten them, and assert only what holds however slow the machine.
LINK_TIMEOUT_S = 30.0
SHORT_SETUP_S = 0.3  # for tests whose server withholds setupComplete
# For the test whose server hangs mid-turn. It stays in force once the server
# is back (the daemon reads it once), while the replayed turn is answered: no
# shorter, or a loaded machine's slow answer could pass for a second hang.
STALL_S = 2.0


class NumberedMicrophone(PacedMicrophone):
    """Chunk n holds the 16-bit number n in every sample (n starts at 1)."""

    def __init__(self) -> None:
        super().__init__(chunk_ms=CHUNK_MS)
        self.n = 0

    def _next_chunk(self) -> bytes:
        self.n += 1
        return struct.pack("<H", self.n & 0xFFFF) * (self.chunk_bytes // 2)


def chunk_numbers(pcm: bytes | bytearray) -> list[int]:
    assert len(pcm) % CHUNK_BYTES == 0, "a torn chunk reached the server"
    return [struct.unpack_from("<H", pcm, i)[0] for i in range(0, len(pcm), CHUNK_BYTES)]


class Lamp:
    """A tool whose run can be held open, to drop the link while it runs."""

    declaration: Mapping[str, Any] = {
        "name": "set_lamp",
        "description": "Switch the lamp on or off.",
        "parameters": {
            "type": "OBJECT",
            "properties": {"on": {"type": "BOOLEAN"}},
            "required": ["on"],
        },
    }

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def run(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        self.runs.append(dict(args))
        await self.gate.wait()
        return {"lamp": "on" if args.get("on") else "off"}


@dataclass
class FaultRig:
    fake: FakeGemini
    daemon: Daemon
    mic: NumberedMicrophone
    lamp: Lamp
    task: asyncio.Task[None] | None = None
    talk_chunks: list[int] = field(default_factory=list)  # the numbers of the last turn's chunks
    _first: int = 0  # the first chunk of the turn being spoken

    async def until(self, cond: Callable[[], object], timeout_s: float = 10.0) -> None:
        """Wait for a condition, re-checked whenever the daemon's state or the
        fake changes (and every 50 ms for daemon-internal counters)."""
        async with asyncio.timeout(timeout_s):
            while not cond():
                waits = {
                    asyncio.ensure_future(self.daemon._state_changed.wait()),
                    asyncio.ensure_future(self.fake._changed.wait()),
                }
                try:
                    await asyncio.wait(waits, timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for w in waits:
                        w.cancel()

    async def state(self, wanted: State, timeout_s: float = 10.0) -> None:
        assert await self.daemon.wait_state(wanted, timeout_s), (
            f"never reached {wanted}; history={list(self.daemon.history)}"
        )

    def press(self) -> None:
        self.daemon.press("test")
        self._first = self.mic.n + 1

    def release(self) -> None:
        self.daemon.release("test")
        self.talk_chunks = list(range(self._first, self.mic.n + 1))

    async def talk(self, seconds: float = 0.2) -> None:
        """A whole push-to-talk turn, while the link is up."""
        before = self.fake.audio_received_s()
        self.press()
        await self.fake.wait_for(lambda f: f.audio_received_s() >= before + seconds)
        self.release()

    async def answered(self) -> None:
        """The last turn was answered in full and the daemon is idle again."""
        await self.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        await self.state(State.IDLE)

    async def connected(self, n: int) -> FakeConnection:
        """Wait for the n-th connection to be set up; return it."""
        await self.fake.wait_for(
            lambda f: len(f.connections) >= n and f.connections[n - 1].setup_complete_sent
        )
        return self.fake.connections[n - 1]

    def conn(self, i: int) -> FakeConnection:
        return self.fake.connections[i]

    def last_handle_sent(self, conn: FakeConnection) -> str:
        handles = [
            msg["sessionResumptionUpdate"]["newHandle"]
            for msg in conn.sent
            if msg.get("sessionResumptionUpdate", {}).get("newHandle")
        ]
        return handles[-1]

    async def healthy(self) -> None:
        """Idle on a live session, no protocol broken, and a new turn still works."""
        await self.state(State.IDLE)
        session = self.daemon.link.session
        assert session is not None and session.is_open
        assert self.daemon.link.state is LinkState.CONNECTED
        turns = len(self.fake.turns)
        await self.talk()
        await self.fake.wait_for(lambda f: len(f.turns) > turns and f.turns[-1].completed)
        await self.state(State.IDLE)
        assert self.fake.protocol_violations == []
        for conn in self.fake.connections:
            if conn.setup is not None:  # every setup asks for handles and compression
                assert "sessionResumption" in conn.setup
                assert conn.setup["contextWindowCompression"] == {"slidingWindow": {}}


def fault_settings(url: str, **overrides: float) -> LinkSettings:
    values: dict[str, Any] = {
        "connect_timeout_s": LINK_TIMEOUT_S,
        "setup_timeout_s": LINK_TIMEOUT_S,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "config_error_backoff_s": 0.4,
    }
    values.update(overrides)
    return LinkSettings(url=url, credentials=Credentials(SECRET), **values)


@contextlib.asynccontextmanager
async def fault_rig(
    *, link: Mapping[str, float] | None = None, cfg: Mapping[str, Any] | None = None, **fake_knobs
) -> AsyncIterator[FaultRig]:
    fake_knobs.setdefault("pace", 8.0)
    fake = FakeGemini(api_key=SECRET, use_speech=False, **fake_knobs)
    await fake.start()
    config = with_overrides(
        Config(),
        {
            "audio.backend": "null",
            "audio.chunk_ms": CHUNK_MS,
            "link.response_timeout_s": LINK_TIMEOUT_S,
            **(cfg or {}),
        },
    )
    lamp = Lamp()
    tools = ToolRegistry()
    tools.add(Tool("set_lamp", lamp.declaration, lamp.run))
    mic = NumberedMicrophone()
    daemon = Daemon(
        config,
        mic=mic,
        speaker=NullSpeaker(speed=8.0),
        link_settings=fault_settings(fake.url, **(link or {})),
        tools=tools,
    )
    r = FaultRig(fake, daemon, mic, lamp)
    r.task = asyncio.create_task(daemon.run())
    try:
        await r.state(State.IDLE)
        await r.until(lambda: daemon.link.resumption.handle is not None)
        yield r
    finally:
        lamp.gate.set()
        daemon.stop()
        await asyncio.wait_for(r.task, 10)
        await fake.stop()


def states(r: FaultRig) -> list[str]:
    return [s for _, s in r.daemon.history]


# --------------------------------------------------------------------------- drops


async def test_drop_while_talking_buffers_and_replays_every_chunk_in_order() -> None:
    async with fault_rig(link={"setup_timeout_s": SHORT_SETUP_S}) as r:
        handle = r.daemon.link.resumption.handle
        r.press()
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.2)
        # The next connections fail setup for a while: speech piles up offline.
        r.fake.send_setup_complete = False
        await r.fake.drop_connection()
        await r.fake.wait_for(lambda f: len(f.connections) >= 3 and f.connections[2].ended)
        assert r.daemon.state is State.LISTENING  # the user is still talking
        r.fake.send_setup_complete = True
        # The connection the speech goes out on (a slow machine may time out
        # one more setup first): audio on it means both ends finished setup.
        resumed = await r.fake.wait_for(
            lambda f: next((c for c in f.connections[1:] if f.audio_received_s(c) >= 0.1), None)
        )
        assert all(c.resumed_from == handle for c in r.fake.connections[1:])
        r.release()
        await r.answered()
        (turn,) = r.fake.turns
        assert turn.connection is resumed
        # Every chunk of the turn, including those said while offline, once and in order.
        assert chunk_numbers(turn.heard_pcm) == r.talk_chunks
        assert r.daemon.counters.unacked_turns_resent == 1
        assert r.daemon.counters.chunks_dropped == 0
        await r.healthy()


async def test_offline_speech_is_bounded_by_offline_buffer_s() -> None:
    short = {"setup_timeout_s": SHORT_SETUP_S}
    async with fault_rig(cfg={"link.offline_buffer_s": 0.4}, link=short) as r:
        r.fake.send_setup_complete = False
        await r.fake.drop_connection()
        await r.state(State.RECONNECTING)
        r.press()
        await r.until(lambda: r.mic.n - r._first >= 25)  # a second of speech, offline
        r.release()
        await r.state(State.RECONNECTING)  # released offline: the LED says why nothing happens
        r.fake.send_setup_complete = True
        await r.answered()
        heard = chunk_numbers(r.fake.turns[-1].heard_pcm)
        # The newest 0.4 s (10 chunks) survive; the rest was dropped and counted.
        assert heard == r.talk_chunks[-10:]
        assert r.daemon.counters.chunks_dropped == len(r.talk_chunks) - 10
        await r.healthy()


async def test_offline_backlog_is_replayed_paced_not_as_one_burst() -> None:
    async with fault_rig(link={"setup_timeout_s": SHORT_SETUP_S}) as r:
        loop = asyncio.get_running_loop()
        r.fake.send_setup_complete = False
        await r.fake.drop_connection()
        await r.state(State.RECONNECTING)
        r.press()
        await r.until(lambda: r.mic.n - r._first >= 50)  # 2 s of speech, offline
        r.fake.send_setup_complete = True
        await r.fake.wait_for(lambda f: f.active and f.active.setup_complete_sent)
        t0 = loop.time()
        # On whichever connection carries it (a slow machine may time out one
        # more setup first, which only makes the replay start later).
        await r.fake.wait_for(
            lambda f: any(f.audio_received_s(c) >= 2.0 for c in f.connections[1:])
        )
        took = loop.time() - t0
        # A pre-roll's worth may go at once; the rest at twice real time:
        # (50 - 14) chunks x 20 ms = 0.72 s. A burst would take milliseconds.
        assert took >= 0.5, f"backlog of 2 s went out in {took:.3f} s: a burst"
        r.release()
        await r.answered()
        assert chunk_numbers(r.fake.turns[-1].heard_pcm) == r.talk_chunks
        await r.healthy()


async def test_drop_after_the_turn_before_any_answer_replays_it() -> None:
    async with fault_rig() as r:
        handle = r.daemon.link.resumption.handle
        r.fake.stall(True)  # the server takes the turn in and says nothing
        r.press()
        await r.until(lambda: r.mic.n - r._first >= 5)
        r.release()
        await r.fake.wait_for(lambda f: f.count("activityEnd") == 1)
        await r.fake.drop_connection()
        r.fake.stall(False)
        await r.answered()
        turn = r.fake.turns[-1]
        assert turn.connection.resumed_from == handle
        assert chunk_numbers(turn.heard_pcm) == r.talk_chunks
        assert "reconnecting" in states(r)
        assert states(r)[-3:] == ["thinking", "speaking", "idle"]
        await r.healthy()


async def test_drop_while_speaking_plays_out_and_settles_idle() -> None:
    async with fault_rig(pace=2.0) as r:
        r.fake.script_turn(reply_pcm=tone_pcm(440.0, 4.0))
        await r.talk()
        await r.state(State.SPEAKING)
        await r.fake.wait_for(lambda f: f.turns[-1].audio_sent_bytes >= 24000)
        await r.fake.drop_connection()
        await r.connected(2)
        await r.state(State.IDLE)
        assert not r.fake.turns[0].completed  # the answer was cut by the drop
        assert r.daemon.speaker.counters["bytes_played"] == r.fake.turns[0].audio_sent_bytes
        await r.healthy()


async def test_close_1011_retries_fast_with_the_handle() -> None:
    async with fault_rig() as r:
        handle = r.daemon.link.resumption.handle
        await r.fake.close_connection(1011, "Internal error encountered.")
        await r.connected(2)
        assert r.conn(1).resumed_from == handle
        assert r.daemon.link.last_close_code == 1011
        assert 0.0 <= (r.daemon.link.last_delay_s or 0.0) <= 0.1  # the short backoff
        await r.healthy()


async def test_context_window_compression_can_be_turned_off() -> None:
    async with fault_rig(cfg={"gemini.context_window_compression": False}) as r:
        await r.fake.drop_connection()
        new = await r.connected(2)
        assert new.setup is not None and "contextWindowCompression" not in new.setup
        assert new.setup["sessionResumption"] == {"handle": new.resumed_from}


# --------------------------------------------------------------------------- config errors


async def test_quota_exhausted_waits_long_and_grows_then_recovers() -> None:
    """1011 RESOURCE_EXHAUSTED is not a blip: the wait starts at
    link.quota_backoff_s and doubles, instead of the short transient backoff."""
    async with fault_rig(link={"quota_backoff_s": 0.5, "config_error_backoff_s": 4.0}) as r:
        await r.fake.close_connection(1011, "RESOURCE_EXHAUSTED: quota exceeded")
        await r.until(lambda: r.daemon.link.problem == "quota")
        first = r.daemon.link.last_delay_s or 0.0
        assert 0.4 <= first <= 0.5, first
        assert "quota" in r.daemon.status()["connection"]["last_error"]
        assert r.daemon.status()["connection"]["problem"] == "quota"
        await r.until(lambda: len(r.fake.connections) == 2, 10)
        await r.state(State.IDLE)
        await r.fake.close_connection(1011, "RESOURCE_EXHAUSTED: quota exceeded")
        await r.until(lambda: (r.daemon.link.last_delay_s or 0) > 0.5, 10)
        assert 0.8 <= (r.daemon.link.last_delay_s or 0.0) <= 1.0  # doubled
        await r.until(lambda: len(r.fake.connections) == 3, 10)
        await r.state(State.IDLE)
        assert r.daemon.link.problem == ""
        await r.healthy()


async def test_close_1007_shows_error_backs_off_long_then_recovers() -> None:
    async with fault_rig(link={"config_error_backoff_s": 0.5}) as r:
        handle = r.daemon.link.resumption.handle
        await r.fake.close_connection(1007, "Request contains an invalid argument.")
        await r.state(State.ERROR)
        assert "check gemini.*" in r.daemon.link.last_error
        assert 0.4 <= (r.daemon.link.last_delay_s or 0.0) <= 0.5
        assert len(r.fake.connections) == 1  # no retry yet: it waits the long backoff
        await r.state(State.IDLE)  # the server takes the next attempt
        assert len(r.fake.connections) == 2 and r.conn(1).resumed_from == handle
        assert states(r)[-2:] == ["error", "idle"]
        await r.healthy()


async def test_rejected_key_does_not_hammer_and_recovers_when_accepted_again() -> None:
    backoff = 0.3
    async with fault_rig(link={"config_error_backoff_s": backoff}) as r:
        handle = r.daemon.link.resumption.handle
        r.fake.api_key = "a key the daemon does not have"
        await r.fake.close_connection(1008, BAD_API_KEY)
        t0 = time.monotonic()
        await r.state(State.ERROR)
        await r.fake.wait_for(lambda f: len(f.connections) == 4)  # three refused retries
        elapsed = time.monotonic() - t0
        # Each retry waited at least 80% of the long backoff (a lower bound:
        # sleeps never end early), where a transient close would retry in < 0.1 s.
        assert elapsed >= 3 * 0.8 * backoff
        assert all(c.close_code == 1008 for c in r.fake.connections[1:4])
        assert r.daemon.state is State.ERROR
        assert "API key was rejected" in r.daemon.link.last_error
        assert "reconnecting" not in states(r)[-2:]
        r.fake.api_key = SECRET
        await r.state(State.IDLE)
        assert r.fake.connections[-1].resumed_from == handle  # the handle outlived the error
        await r.healthy()


async def test_stale_handle_is_dropped_and_a_fresh_session_started() -> None:
    async with fault_rig() as r:
        r.fake.sessions.clear()  # every handle the daemon holds is now unknown
        await r.fake.drop_connection()
        await r.connected(3)
        assert (r.conn(1).close_code, r.conn(1).close_reason) == (1008, "session not found")
        assert r.conn(2).resumed_from is None
        assert "error" not in states(r)
        await r.healthy()


# --------------------------------------------------------------------------- goAway


async def test_go_away_between_turns_switches_at_once_and_keeps_the_context() -> None:
    async with fault_rig() as r:
        r.fake.script_turn(input_text="remember the number seven")
        await r.talk()
        await r.answered()
        await r.fake.go_away(30)
        await r.connected(2)
        old, new = r.conn(0), r.conn(1)
        assert new.resumed_from == r.last_handle_sent(old)
        # The old socket was closed by us with 1000 long before the server's cut.
        assert (old.close_code, old.closed_by) == (1000, "client")
        assert new.session is old.session
        assert ("user", "remember the number seven") in new.session.history
        assert r.daemon.counters.go_aways == 1
        await r.healthy()


async def test_go_away_waits_for_the_handle_that_includes_the_last_turn() -> None:
    async with fault_rig() as r:
        old = r.conn(0)
        assert old.session is not None
        # A turn just ended; the server has not yet sent the handle saved after it.
        await r.fake.send({"serverContent": {"turnComplete": True}})
        await r.fake.go_away(20)
        await r.until(lambda: r.daemon.counters.go_aways == 1)
        assert r.daemon.state is State.IDLE and len(r.fake.connections) == 1
        r.fake.sessions["after-the-turn"] = old.session
        await r.fake.send(
            {"sessionResumptionUpdate": {"newHandle": "after-the-turn", "resumable": True}}
        )
        new = await r.connected(2)
        # Switching at once would have resumed from the handle before the turn.
        assert new.resumed_from == "after-the-turn"
        await r.healthy()


@pytest.mark.parametrize("when", ["listening", "speaking"])
async def test_go_away_mid_turn_switches_after_the_turn_losing_nothing(when: str) -> None:
    async with fault_rig(pace=4.0) as r:
        reply = tone_pcm(440.0, 2.0)
        r.fake.script_turn(reply_pcm=reply)
        r.press()
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.1)
        if when == "listening":
            await r.fake.go_away(20)
            await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.3)
            r.release()
        else:
            r.release()
            await r.state(State.SPEAKING)
            await r.fake.go_away(20)
        await r.connected(2)
        old, new = r.conn(0), r.conn(1)
        turn = r.fake.turns[0]
        # The whole turn happened on the old connection: all speech heard, the
        # whole answer sent and played, and only then the switch.
        assert turn.connection is old and turn.completed and not turn.interrupted
        assert chunk_numbers(turn.heard_pcm) == r.talk_chunks
        assert r.daemon.speaker.counters["bytes_played"] == len(reply)
        assert new.resumed_from == r.last_handle_sent(old)  # the handle from after the turn
        assert (old.close_code, old.closed_by) == (1000, "client")
        await r.healthy()


# --------------------------------------------------------------------------- server hangs


async def test_setup_complete_never_arriving_is_timed_out_and_retried() -> None:
    async with fault_rig(link={"setup_timeout_s": SHORT_SETUP_S}) as r:
        handle = r.daemon.link.resumption.handle
        r.fake.send_setup_complete = False
        await r.fake.drop_connection()
        await r.fake.wait_for(lambda f: len(f.connections) >= 4)
        await r.fake.wait_for(lambda f: all(c.ended for c in f.connections[1:3]))
        assert "no setupComplete" in r.daemon.link.last_error
        assert r.daemon.state is State.RECONNECTING
        # Every attempt offered the handle, and every timed-out one was hung up.
        assert all(c.resumed_from == handle for c in r.fake.connections[1:3])
        assert all(c.closed_by == "client" for c in r.fake.connections[1:3])
        r.fake.send_setup_complete = True
        await r.state(State.IDLE)
        assert r.fake.active is not None and r.fake.active.resumed_from == handle
        await r.healthy()


async def test_server_stall_is_noticed_by_the_response_timeout() -> None:
    short = {"setup_timeout_s": SHORT_SETUP_S}
    async with fault_rig(cfg={"link.response_timeout_s": STALL_S}, link=short) as r:
        handle = r.daemon.link.resumption.handle
        r.fake.stall(True)  # no data, no close: the socket stays open
        r.press()
        await r.until(lambda: r.mic.n - r._first >= 5)
        r.release()
        await r.until(lambda: r.daemon.counters.stalls == 1)
        await r.state(State.RECONNECTING)
        await r.fake.wait_for(lambda f: f.connections[0].ended)  # we hung up on it
        r.fake.stall(False)
        await r.answered()
        turn = r.fake.turns[-1]
        assert turn.connection.resumed_from == handle
        assert chunk_numbers(turn.heard_pcm) == r.talk_chunks
        await r.healthy()


async def test_a_flood_of_garbage_frames_does_not_break_the_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    garbage: list[bytes | str] = [
        b"\xff\xfe\x00 not utf-8",
        "{ not json",
        "[1, 2, 3]",
        '"a string"',
        '{"serverContent": {"modelTurn": {"parts": "nope"}}}',
        '{"serverContent": {"modelTurn": {"parts": [{"inlineData": '
        '{"mimeType": "audio/pcm;rate=24000", "data": "!!!not base64"}}]}}}',
        '{"toolCall": {"functionCalls": {"id": 1}}}',
        '{"sessionResumptionUpdate": []}',
    ]
    async with fault_rig() as r:
        for i in range(200):
            await r.fake.send_raw(garbage[i % len(garbage)])
        await r.talk()
        await r.answered()
        session = r.daemon.link.session
        assert session is not None and session.counters.malformed == 200
        assert len(r.fake.connections) == 1
        await r.healthy()
    loud = [
        rec
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and "malformed" in rec.getMessage()
    ]
    assert len(loud) <= 6  # a handful of warnings, not two hundred


# --------------------------------------------------------------------------- tool results


async def test_tool_result_of_a_call_that_outlived_its_connection_is_delivered_once() -> None:
    async with fault_rig() as r:
        r.lamp.gate.clear()  # the lamp takes its time
        r.fake.script_turn(tool_calls=[("set_lamp", {"on": True})])
        await r.talk()
        await r.until(lambda: r.lamp.runs)
        (call_id,) = r.fake.connections[0].pending_tool_ids
        await r.fake.drop_connection()
        await r.connected(2)
        # The resumed state predates the call (handles stop while a tool runs):
        # the server would not act on a toolResponse, so the outcome goes as text.
        r.fake.script_turn(tool_calls=[], reply_text="The lamp is on.")
        r.lamp.gate.set()
        await r.answered()
        notes = [
            msg["realtimeInput"]["text"]
            for msg in r.fake.messages_of("text")
            if call_id in msg["realtimeInput"]["text"]
        ]
        assert len(notes) == 1 and '{"lamp": "on"}' in notes[0]
        assert r.fake.tool_responses == []
        assert r.lamp.runs == [{"on": True}]  # the relay switched once
        assert r.fake.turns[-1].reply_text == "The lamp is on."
        await r.healthy()


async def test_tool_result_goes_as_a_response_when_the_resumed_session_knows_the_call() -> None:
    async with fault_rig() as r:
        r.lamp.gate.clear()
        r.fake.script_turn(tool_calls=[("set_lamp", {"on": False})])
        await r.talk()
        await r.until(lambda: r.lamp.runs)
        old = r.fake.connections[0]
        (call_id,) = old.pending_tool_ids
        # A server that saves state while the call is open (as with NON_BLOCKING
        # calls): a handle issued after the call.
        assert old.session is not None
        r.fake.sessions["after-the-call"] = old.session
        await r.fake.send(
            {"sessionResumptionUpdate": {"newHandle": "after-the-call", "resumable": True}}
        )
        await r.until(lambda: r.daemon.link.resumption.handle == "after-the-call")
        await r.fake.drop_connection()
        await r.connected(2)
        new = r.conn(1)
        assert new.resumed_from == "after-the-call"
        new.pending_tool_ids.add(call_id)  # ... and that state still holds the open call
        r.lamp.gate.set()
        await r.fake.wait_for(lambda f: f.tool_responses)
        (response,) = r.fake.tool_responses
        assert response["id"] == call_id and response["response"] == {"output": {"lamp": "off"}}
        assert r.fake.count("toolResponse", conn=new) == 1
        assert not [m for m in r.fake.messages_of("text") if call_id in m["realtimeInput"]["text"]]
        await r.fake.send({"serverContent": {"turnComplete": True}})
        await r.healthy()


async def test_tool_result_sent_before_a_drop_is_not_sent_again() -> None:
    async with fault_rig() as r:
        r.fake.script_turn(tool_calls=[("set_lamp", {"on": True})])
        await r.talk()
        await r.answered()
        assert len(r.fake.tool_responses) == 1
        await r.fake.drop_connection()
        await r.connected(2)
        await r.healthy()
        assert len(r.fake.tool_responses) == 1
        assert r.fake.count("text") == 0
        assert r.lamp.runs == [{"on": True}]


async def test_tool_result_for_a_new_session_is_dropped_with_a_record(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with fault_rig() as r:
        r.lamp.gate.clear()
        r.fake.script_turn(tool_calls=[("set_lamp", {"on": True})])
        await r.talk()
        await r.until(lambda: r.lamp.runs)
        r.fake.sessions.clear()  # the next connection cannot resume
        await r.fake.drop_connection()
        await r.connected(3)
        r.lamp.gate.set()
        await r.until(lambda: not r.daemon.tool_runner.blocking)
        await r.healthy()
        assert r.fake.tool_responses == [] and r.fake.count("text") == 0
    dropped = [r for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "tool_result_dropped"]
    assert len(dropped) == 1 and dropped[0].EDGE_TOOL == "set_lamp"


# --------------------------------------------------------------------------- records


@pytest.fixture
def journal_ready(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """caplog whose records went through the filter the real handlers have.
    (pytest reuses its capture handler across tests: the filter must come off.)"""
    fields = RecordFields()
    caplog.handler.addFilter(fields)
    caplog.set_level(logging.INFO)
    try:
        yield caplog
    finally:
        caplog.handler.removeFilter(fields)


async def test_session_records_carry_the_connection_id(
    journal_ready: pytest.LogCaptureFixture,
) -> None:
    caplog = journal_ready
    async with fault_rig() as r:
        first = r.daemon.link.session
        assert first is not None
        r.fake.script_turn(tool_calls=[("set_lamp", {"on": True})])
        await r.talk()
        await r.answered()
        await r.fake.drop_connection()
        await r.connected(2)
        await r.state(State.IDLE)
        second = r.daemon.link.session
        assert second is not None and second.id != first.id

    def events(name: str) -> list[logging.LogRecord]:
        return [rec for rec in caplog.records if getattr(rec, "EDGE_EVENT", "") == name]

    (tool,) = events("tool_call")
    assert first.id == tool.EDGE_SESSION
    assert tool.EDGE_TOOL == "set_lamp"
    assert tool.EDGE_CALL_ID.startswith("function-call-")
    assert [rec.EDGE_SESSION for rec in events("session_open")] == [first.id, second.id]
    (closed,) = events("session_closed")
    assert first.id == closed.EDGE_SESSION
    assert closed.EDGE_CLOSE_CODE == "1006"
    (reconnect,) = events("reconnect")
    assert reconnect.EDGE_CLOSE_CODE == "1006"
    transcripts = events("transcript")
    assert transcripts and all(rec.levelno == logging.INFO for rec in transcripts)
    assert {rec.EDGE_SESSION for rec in transcripts} == {first.id}
    for rec in caplog.records:
        assert all(isinstance(v, str) for k, v in vars(rec).items() if k.startswith("EDGE_"))
