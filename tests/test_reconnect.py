"""The link layer on its own: Backoff, the close-code policy, Resumption, the
tool-result outbox, and Link redialling against the fake Gemini."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
from conftest import SECRET
from hypothesis import given
from hypothesis import strategies as st

from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.live import messages as m
from edge_daemon.live.reconnect import (
    Backoff,
    CloseAction,
    Link,
    LinkSettings,
    LinkState,
    OwedResult,
    Resumption,
    SessionEnd,
    ToolOutbox,
    classify_close,
)
from edge_daemon.live.session import (
    MALFORMED_WARNINGS,
    Credentials,
    LiveSession,
    SessionClosed,
    current_session_id,
)

# --------------------------------------------------------------------------- Backoff


@given(
    initial=st.floats(0.01, 5.0),
    cap=st.floats(0.01, 60.0),
    steps=st.integers(1, 40),
    seed=st.integers(0, 2**32),
)
def test_backoff_is_full_jitter_under_a_doubling_capped_ceiling(
    initial: float, cap: float, steps: int, seed: int
) -> None:
    b = Backoff(initial, cap, random.Random(seed))
    for k in range(steps):
        assert 0.0 <= b.next_delay() <= min(cap, initial * 2**k)
    b.reset()
    assert b.next_delay() <= min(cap, initial)


def test_backoff_spreads_over_the_whole_range_and_reaches_the_cap() -> None:
    b = Backoff(0.25, 30.0, random.Random(1))
    ceilings = []
    for _ in range(12):
        ceilings.append(min(30.0, 0.25 * 2**b.attempt))
        b.next_delay()
    assert ceilings[:4] == [0.25, 0.5, 1.0, 2.0] and ceilings[-1] == 30.0
    # Full jitter: draws cover [0, ceiling], not a band near the ceiling.
    b = Backoff(1.0, 1.0, random.Random(2))
    draws = [b.next_delay() for _ in range(400)]
    assert min(draws) < 0.1 and max(draws) > 0.9


# --------------------------------------------------------------------------- close codes


@pytest.mark.parametrize(
    ("code", "reason", "token_auth", "action", "advice"),
    [
        (1000, "", False, CloseAction.RESUME, "transient"),
        (1006, "", False, CloseAction.RESUME, "transient"),
        (None, "", False, CloseAction.RESUME, "transient"),
        (1011, "Internal error encountered.", False, CloseAction.SERVER, "server-side"),
        (1011, "The service is currently unavailable.", False, CloseAction.SERVER, "server-side"),
        (1011, "Deadline expired before operation could complete.", True, CloseAction.SERVER, ""),
        (1011, "Deadline exceeded.", False, CloseAction.SERVER, ""),
        # The field's words for quota: RESOURCE_EXHAUSTED, "quota exceeded".
        (1011, "RESOURCE_EXHAUSTED: quota exceeded", False, CloseAction.QUOTA, "quota"),
        (1011, "You exceeded your current quota", True, CloseAction.QUOTA, "quota"),
        (1008, "Resource has been exhausted (e.g. check quota).", False, CloseAction.QUOTA, ""),
        # A refused ephemeral token: only where a token is in use.
        (1008, "Unauthenticated: the auth token has expired", True, CloseAction.TOKEN, "token"),
        (1011, "Token usage limit reached", True, CloseAction.TOKEN, "token"),
        (1008, "session not found", True, CloseAction.FRESH, "resumption handle"),
        (1008, "API key not valid. Please pass a valid API key.", False, CloseAction.CONFIG, "key"),
        (1008, "Method doesn't allow unregistered callers", False, CloseAction.CONFIG, "API key"),
        (
            1008,
            "models/nope is not found for API version v1beta",
            False,
            CloseAction.CONFIG,
            "gemini.model",
        ),
        (1008, "Audio received while a function call is pending.", False, CloseAction.RESUME, ""),
        (1007, "Request contains an invalid argument.", False, CloseAction.CONFIG, "gemini.*"),
        (1007, "User location is not supported for the API use.", False, CloseAction.CONFIG, "re"),
    ],
)
def test_close_code_policy(
    code: int | None, reason: str, token_auth: bool, action: CloseAction, advice: str
) -> None:
    verdict = classify_close(code, reason, token_auth=token_auth)
    assert verdict.action is action
    assert advice in verdict.advice


# --------------------------------------------------------------------------- Resumption


def test_resumption_keeps_the_last_non_empty_handle_and_numbers_them() -> None:
    r = Resumption()
    assert r.handle is None and r.age_s is None and r.seq == 0
    assert r.update(m.ResumptionUpdate("h1", True))
    assert not r.update(m.ResumptionUpdate("", False))  # mid-turn: keep h1
    assert not r.update(m.ResumptionUpdate("", True))
    assert not r.update(m.ResumptionUpdate("h-not-resumable", False))
    assert r.handle == "h1" and r.seq == 1 and r.age_s is not None
    assert r.update(m.ResumptionUpdate("h2", True))
    assert r.handle == "h2" and r.seq == 2
    r.drop()
    assert r.handle is None and r.age_s is None
    assert r.seq == 2  # numbers never repeat, so an old call is never taken for a new one


# --------------------------------------------------------------------------- ToolOutbox


def result(call_id: str, output: dict | None = None, error: str | None = None) -> m.FunctionResult:
    return m.FunctionResult(call_id, f"tool_{call_id}", output or {"ok": True}, error)


def ids(owed: list[OwedResult]) -> list[str]:
    return [o.result.id for o in owed]


def test_outbox_sends_on_the_same_connection_or_a_resume_that_knows_the_call() -> None:
    box = ToolOutbox()
    box.add(result("a"), session_id="s1", seq=3)  # the server's latest handle was #3
    box.add(result("b"), session_id="s1", seq=3)
    assert "a" in box and len(box) == 2
    # Same connection: responses.
    d = box.take("s1", resumed_seq=None)
    assert ids(d.responses) == ["a", "b"] and not d.notes and not d.dropped
    assert len(box) == 0 and not box.take("s1", None)  # taken once, never again

    box.add(result("c"), session_id="s1", seq=3)
    # Resumed from handle #4, issued after the call: the server knows it.
    d = box.take("s2", resumed_seq=4)
    assert ids(d.responses) == ["c"]


def test_outbox_notes_what_a_resumed_session_forgot_and_drops_for_a_new_one() -> None:
    box = ToolOutbox()
    box.add(result("a", {"on": True}), session_id="s1", seq=3)
    box.add(result("b", error="relay busy"), session_id="s1", seq=3)
    # Resumed from handle #3: saved before the calls were made.
    d = box.take("s2", resumed_seq=3)
    assert ids(d.notes) == ["a", "b"] and not d.responses
    note = ToolOutbox.note_text(d.notes)
    assert 'tool_a (call a) returned {"on": true}' in note
    assert "tool_b (call b) failed: relay busy" in note
    assert "not the user" in note

    box.add(result("c"), session_id="s2", seq=5)
    d = box.take("s3", resumed_seq=None)  # a new session: nobody waits for it
    assert ids(d.dropped) == ["c"] and not d.responses and not d.notes


def test_outbox_cancel_put_back_and_bound() -> None:
    box = ToolOutbox(limit=3)
    for i in range(5):
        box.add(result(str(i)), "s1", 0)
    assert len(box) == 3 and box.overflowed == 2 and "0" not in box  # oldest go first
    assert box.cancel("3") and not box.cancel("3")
    d = box.take("s1", None)
    assert ids(d.responses) == ["2", "4"]
    box.put_back(d.responses)
    box.put_back(d.responses)  # idempotent: one entry per call id
    assert ids(box.take("s1", None).responses) == ["2", "4"]


# --------------------------------------------------------------------------- Link


@dataclass
class LinkRig:
    fake: FakeGemini
    link: Link
    task: asyncio.Task[None] | None = None
    states: list[tuple[LinkState, str]] = field(default_factory=list)
    sessions: list[LiveSession] = field(default_factory=list)
    events: list[m.ServerEvent] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)

    def poke(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def until(self, cond: Callable[[], object], timeout_s: float = 10.0) -> None:
        """Wait for a client-side condition, re-checked on every link state
        change and every event the handler reads."""
        async with asyncio.timeout(timeout_s):
            while not cond():
                await self._changed.wait()


# Connect and setup timeouts the fake never makes a healthy link reach, however
# slow the machine: the tests count connections and link states exactly. The
# tests about those timeouts shorten them on purpose.
LINK_TIMEOUT_S = 30.0


def link_settings(url: str, **overrides: float) -> LinkSettings:
    values: dict = {
        "connect_timeout_s": LINK_TIMEOUT_S,
        "setup_timeout_s": LINK_TIMEOUT_S,
        "backoff_initial_s": 0.02,
        "backoff_max_s": 0.1,
        "config_error_backoff_s": 30.0,
    }
    values.update(overrides)
    return LinkSettings(url=url, credentials=Credentials(SECRET), **values)


def setup_json(handle: str | None) -> str:
    return m.build_setup(m.SetupOptions(model="models/test", resumption_handle=handle))


@contextlib.asynccontextmanager
async def link_rig(
    handler: Callable | None = None, fake: FakeGemini | None = None, url: str = "", **overrides
) -> AsyncIterator[LinkRig]:
    own_fake = fake is None
    fake = fake or FakeGemini(api_key=SECRET, pace=0, use_speech=False)
    if own_fake:
        await fake.start()

    async def read_until_closed(session: LiveSession) -> SessionEnd:
        async for event in session.events():
            if isinstance(event, m.ResumptionUpdate):
                rig.link.resumption.update(event)
            rig.events.append(event)
            rig.poke()
        raise AssertionError("events() ends only by raising SessionClosed")

    async def recording(session: LiveSession) -> SessionEnd:
        rig.sessions.append(session)
        rig.poke()
        return await (handler or read_until_closed)(session)

    def on_state(state: LinkState, detail: str) -> None:
        rig.states.append((state, detail))
        rig.poke()

    link = Link(
        link_settings(url or fake.url, **overrides),
        setup_json,
        recording,
        on_state,
        rng=random.Random(7),
    )
    rig = LinkRig(fake, link)
    rig.task = asyncio.create_task(link.run())
    try:
        yield rig
    finally:
        link.stop()
        await asyncio.wait_for(rig.task, 10)
        if own_fake:
            await fake.stop()


async def test_link_resumes_with_the_handle_after_closing_the_old_socket() -> None:
    async with link_rig() as r:
        await r.until(lambda: r.link.resumption.handle is not None)
        handle, seq = r.link.resumption.handle, r.link.resumption.seq
        await r.fake.close_connection(1011, "Internal error encountered.")
        await r.until(lambda: len(r.sessions) == 2)
        assert r.fake.connections[1].resumed_from == handle
        assert r.sessions[1].resumed_seq == seq and r.sessions[0].resumed_seq is None
        assert r.sessions[0].id != r.sessions[1].id
        assert r.link.resumption.resumes == 1 and r.link.last_close_code == 1011
        assert r.fake.protocol_violations == []  # the old socket was closed before the resume
        assert [s for s, _ in r.states] == [
            LinkState.CONNECTED,
            LinkState.RECONNECTING,
            LinkState.CONNECTED,
        ]
    assert r.link.state is LinkState.CLOSED
    # stop() closed the open session with a normal close.
    assert r.fake.connections[1].close_code == 1000


async def test_stale_handle_drops_it_and_starts_fresh_at_once() -> None:
    async with link_rig() as r:
        await r.until(lambda: r.link.resumption.handle is not None)
        r.fake.sessions.clear()  # the server forgets every handle
        await r.fake.drop_connection()
        await r.until(lambda: len(r.sessions) == 2)
        stale, fresh = r.fake.connections[1], r.fake.connections[2]
        assert (stale.close_code, stale.close_reason) == (1008, "session not found")
        assert fresh.resumed_from is None and r.sessions[1].resumed_seq is None
        assert LinkState.CONFIG_ERROR not in [s for s, _ in r.states]
        assert r.link.last_delay_s == 0.0  # no backoff: the fix is known


async def test_config_error_backs_off_long_and_a_stop_cuts_the_wait() -> None:
    async with link_rig(config_error_backoff_s=600.0) as r:
        await r.until(lambda: r.sessions)
        await r.fake.close_connection(1007, "Request contains an invalid argument.")
        await r.until(lambda: r.link.state is LinkState.CONFIG_ERROR)
        assert 480.0 <= (r.link.last_delay_s or 0) <= 600.0
        assert "check gemini.*" in r.link.last_error and r.link.last_close_code == 1007
        assert len(r.fake.connections) == 1
        r.link.stop()
        # Stopping does not wait out the 10-minute backoff.
        await asyncio.wait_for(asyncio.shield(r.task), 10)
    assert r.link.state is LinkState.CLOSED


async def test_a_broken_handler_does_not_end_the_link(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def flaky(session: LiveSession) -> SessionEnd:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("bug in the handler")
        async for _ in session.events():
            pass
        return SessionEnd.STOP

    async with link_rig(handler=flaky) as r:
        await r.until(lambda: len(r.sessions) == 2)
        assert "bug in the handler" in r.link.last_error
        # The failed session's socket was hung up, not left open beside the new one.
        await r.fake.wait_for(lambda f: f.connections[0].ended)
        assert r.fake.protocol_violations == []
    assert any(rec.exc_info for rec in caplog.records if "handler failed" in rec.getMessage())


async def test_every_redial_leaves_one_reconnect_record_and_sessions_have_ids(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    seen_ids: list[str] = []

    async def handler(session: LiveSession) -> SessionEnd:
        seen_ids.append(current_session_id.get())
        async for _ in session.events():
            pass
        return SessionEnd.STOP

    async with link_rig(handler=handler) as r:
        for n in range(1, 4):
            await r.until(lambda n=n: len(r.sessions) == n)
            await r.fake.wait_for(lambda f: f.active is not None)
            await r.fake.drop_connection()
        await r.until(lambda: len(r.sessions) == 4)
    reconnects = [rec for rec in caplog.records if getattr(rec, "EDGE_EVENT", "") == "reconnect"]
    assert len(reconnects) == 3
    assert all(rec.EDGE_CLOSE_CODE == 1006 for rec in reconnects)
    # The handler runs with its connection's id, which logging adds as EDGE_SESSION.
    assert seen_ids == [s.id for s in r.sessions]
    assert len(set(seen_ids)) == 4 and all(len(i) == 6 for i in seen_ids)


async def test_connect_timeout_is_retried() -> None:
    # A TCP server that accepts and never answers: the WebSocket handshake hangs.
    accepted: asyncio.Queue[None] = asyncio.Queue()

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.put_nowait(None)
        await reader.read()
        writer.close()

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, link_rig(url=f"ws://127.0.0.1:{port}/", connect_timeout_s=0.1) as r:
        for _ in range(2):
            await asyncio.wait_for(accepted.get(), 5)
        assert "timed out after 0.1 s" in r.link.last_error
        assert r.link.state is LinkState.RECONNECTING and r.link.connects == 0


async def test_setup_timeout_hangs_up_and_retries() -> None:
    fake = FakeGemini(api_key=SECRET, send_setup_complete=False)
    async with fake, link_rig(fake=fake, setup_timeout_s=0.1) as r:
        await fake.wait_for(lambda f: len(f.connections) >= 3)
        assert "no setupComplete within 0.1 s" in r.link.last_error
        assert r.link.connects == 0 and r.sessions == []
        # Each timed-out attempt was hung up by us, not left open.
        await fake.wait_for(lambda f: f.connections[0].ended and f.connections[1].ended)
        # From the next attempt on, a slow setup is no timeout: the attempt in
        # flight may still time out, the one after it connects.
        r.link.settings.setup_timeout_s = LINK_TIMEOUT_S
        fake.send_setup_complete = True
        await r.until(lambda: r.sessions)
        assert r.link.state is LinkState.CONNECTED


async def test_malformed_frames_warn_a_few_times_then_go_quiet(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with link_rig() as r:
        await r.until(lambda: r.sessions)
        for i in range(40):
            await r.fake.send_raw(f"garbage {i}")
        await r.fake.send({"serverContent": {"turnComplete": True}})
        await r.until(lambda: any(isinstance(e, m.TurnComplete) for e in r.events))
        assert r.sessions[0].counters.malformed == 40
        assert r.link.connects == 1 and r.sessions[0].is_open
    warnings = [
        rec
        for rec in caplog.records
        if rec.levelno >= logging.WARNING and "malformed" in rec.getMessage()
    ]
    assert len(warnings) == MALFORMED_WARNINGS + 1  # the last one says the rest go to debug


async def test_events_sharing_the_setup_complete_frame_are_not_lost() -> None:
    async def handler(session: LiveSession) -> SessionEnd:
        async for event in session.events():
            rig.events.append(event)
            rig.poke()
        return SessionEnd.STOP

    fake = FakeGemini(api_key=SECRET, send_setup_complete=False)
    async with fake, link_rig(handler=handler, fake=fake) as rig:
        conn = await fake.wait_for(lambda f: f.connections and f.connections[0].setup)
        assert conn
        # setupComplete and a goAway in one frame: the goAway must reach the handler.
        fake.connections[0].setup_complete_sent = True
        await fake.connections[0].ws.send(b'{"setupComplete": {}, "goAway": {"timeLeft": "9s"}}')
        await rig.until(lambda: rig.events)
        assert rig.events == [m.GoAway(9.0)]


async def test_send_after_close_raises_session_closed() -> None:
    async with link_rig() as r:
        await r.until(lambda: r.sessions)
        session = r.sessions[0]
        await r.fake.drop_connection()
        await r.until(lambda: r.link.state is LinkState.RECONNECTING)
        with pytest.raises(SessionClosed):
            await session.send_text("anyone?")
