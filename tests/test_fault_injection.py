"""The fault suite: hundreds of seeded runs of a daemon talking to the fake
Gemini through a proxy that drops, delays, truncates, duplicates and corrupts
frames and kills connections (tests/support/chaos.py says what each run must
show); the proxy's own contract; the bugs the suite found, pinned as
deterministic regressions; and proof that the suite fails a broken daemon.

Default: 200 seeds, about a minute and a half on 2 cores. Longer:
``EDGE_FAULT_SEEDS=2000 python -m pytest tests/test_fault_injection.py``
(``EDGE_FAULT_FIRST_SEED`` shifts the range). A failing seed prints its actions,
faults, history and last log lines; rerun it alone with
``EDGE_FAULT_FIRST_SEED=<seed> EDGE_FAULT_SEEDS=1``.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import random
from collections import Counter
from typing import Any

import pytest
from support.chaos import ChaosReport, run_seeds
from support.fault_proxy import Action, FaultPlan, corrupt, garble
from support.rig import daemon_rig

from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import tone_pcm
from edge_daemon.live import messages as m
from edge_daemon.live.reconnect import LinkState, SessionEnd
from edge_daemon.live.session import LiveSession

SEEDS = int(os.environ.get("EDGE_FAULT_SEEDS", "200"))
# The stall tests' response timeout: short, for quick tests, but not so short
# that a loaded machine's slow answer passes for a stall.
STALL_S = 2.0
FIRST_SEED = int(os.environ.get("EDGE_FAULT_FIRST_SEED", "0"))
# Seeds per test: small enough that one test stays well inside the timeout,
# large enough that the loop runs many daemons at once.
CHUNK = 50
WIDTH = 50


def _chunks() -> list[range]:
    stop = FIRST_SEED + SEEDS
    return [range(s, min(s + CHUNK, stop)) for s in range(FIRST_SEED, stop, CHUNK)]


def _explain(reports: list[ChaosReport]) -> str:
    bad = [r for r in reports if not r.ok]
    text = "\n".join(r.describe() for r in bad[:5])
    return f"{len(bad)} of {len(reports)} seeds failed:\n{text}"


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seeds", _chunks(), ids=lambda r: f"seeds{r.start}-{r.stop - 1}")
async def test_daemon_survives_seeded_faults(seeds: range) -> None:
    reports = await run_seeds(list(seeds), width=WIDTH, log_tail=120)
    assert all(r.ok for r in reports), _explain(reports)
    if len(seeds) >= 20:
        # The runs must have been hostile and busy, or passing would mean nothing.
        seen: Counter[str] = Counter()
        for r in reports:
            seen.update(r.faults)
        for kind in ("drop", "delay", "truncate", "duplicate", "corrupt", "kill"):
            assert seen[f"down:{kind}"] > 0, f"no down:{kind} fault in {len(seeds)} seeds"
        assert seen["up:corrupt"] + seen["up:kill"] > 0
        assert sum(r.tool_answers for r in reports) > len(seeds)  # tool traffic flowed
        assert sum(r.connections for r in reports) > 2 * len(seeds)  # links were rebuilt


# ---------------------------------------------------------------------------- the proxy


def test_fault_plan_decisions_are_reproducible_from_the_seed() -> None:
    plan = FaultPlan.random(random.Random(7))
    assert plan == FaultPlan.random(random.Random(7))
    a, b = random.Random(42), random.Random(42)
    seq_a = [plan.choose(a, downstream=i % 3 != 0) for i in range(2000)]
    seq_b = [plan.choose(b, downstream=i % 3 != 0) for i in range(2000)]
    assert seq_a == seq_b
    # Client frames are never silently dropped, truncated or duplicated (TCP would not).
    up = {plan.choose(a, downstream=False) for _ in range(5000)}
    assert up <= {Action.DELIVER, Action.DELAY, Action.CORRUPT, Action.KILL}


def test_corruption_always_changes_the_frame() -> None:
    rng = random.Random(3)
    frame = b'{\n  "serverContent": {\n    "turnComplete": true\n  }\n}'
    outputs = [corrupt(frame, rng) for _ in range(300)]
    assert all((o.encode() if isinstance(o, str) else o) != frame for o in outputs)
    # Some damage is still JSON of the wrong shape, some is not JSON at all.
    readable = 0
    for o in outputs:
        try:
            m.parse_server_message(o)
            readable += 1
        except m.MalformedMessage:
            pass
    assert 0 < readable < len(outputs)


def test_a_garbled_client_frame_never_reads_as_another_message() -> None:
    # Found by seed 87: a toolResponse "corrupted" into valid JSON with its one
    # entry doubled reached the fake as two answers the daemon never sent. A
    # client frame the network damages must be one the server can only refuse.
    rng = random.Random(5)
    result = m.FunctionResult("function-call-12", "fast_tool", {"ok": True}, None)
    frames = [
        m.build_setup(m.SetupOptions(model="models/test", resumption_handle="h1")),
        m.ACTIVITY_START,
        m.build_audio(bytes(range(256)) * 5),
        m.build_text("caf\u00e9 (call function-call-12) returned {}"),
        m.build_tool_response([result, dataclasses.replace(result, id="function-call-13")]),
        m.ACTIVITY_END,
    ]
    kinds: Counter[str] = Counter()
    for text in frames:
        frame = text.encode()
        for _ in range(500):
            out = garble(frame, rng)
            assert out != frame
            with pytest.raises(ValueError):  # JSONDecodeError or UnicodeDecodeError
                json.loads(out)
            kinds["cut" if frame.startswith(out) else "bad byte"] += 1
    assert kinds["cut"] > 1000 and kinds["bad byte"] > 1000


async def test_proxy_without_faults_is_transparent_and_mirrors_close_codes() -> None:
    async with daemon_rig(proxy_plan=FaultPlan()) as r:
        assert r.proxy is not None and r.proxy.connections
        await r.turn()
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        await r.state(State.IDLE)
        assert r.fake.protocol_violations == []
        # The fake's close code reaches the daemon unchanged through the proxy.
        await r.fake.close_connection(1007, "Request contains an invalid argument.")
        await r.until(lambda: r.daemon.link.state is LinkState.CONFIG_ERROR)
        assert r.daemon.link.last_close_code == 1007
        await r.until(lambda: r.daemon.link.state is LinkState.CONNECTED)


async def test_proxy_kill_looks_like_a_wifi_drop_and_the_session_resumes() -> None:
    async with daemon_rig(proxy_plan=FaultPlan()) as r:
        assert r.proxy is not None
        await r.until(lambda: r.daemon.link.resumption.handle is not None)
        r.proxy.kill_all()
        await r.fake.wait_for(lambda f: len(f.connections) == 2 and f.connections[1].setup)
        assert r.daemon.link.last_close_code == 1006
        assert r.fake.connections[1].resumed_from is not None
        await r.state(State.IDLE)


# ------------------------------------------------------- regressions the fault suite found


async def test_connection_lost_mid_answer_plays_out_and_settles_idle() -> None:
    # Found by seed 4: the answer died with the socket, no turnComplete could
    # come, and the daemon showed "speaking" until the next button press.
    async with daemon_rig(pace=1.0) as r:
        r.fake.script_turn(reply_pcm=tone_pcm(440.0, 5.0))
        await r.turn()
        await r.state(State.SPEAKING)
        await r.fake.wait_for(lambda f: f.turns[-1].audio_sent_bytes >= 9600)
        await r.fake.drop_connection()
        await r.fake.wait_for(lambda f: len(f.connections) == 2 and f.connections[1].setup)
        await r.state(State.IDLE)


async def test_answer_that_stops_without_turn_complete_is_a_stall() -> None:
    # A server that stops mid-answer (or a turnComplete lost in a bad frame)
    # used to leave the daemon "speaking" forever: the stall timer stopped at
    # the first audio chunk.
    async with daemon_rig(pace=1.0, overrides={"link.response_timeout_s": STALL_S}) as r:
        r.fake.script_turn(delay_s=60)  # the fake itself never answers this turn
        r.daemon.press("test")
        r.daemon.release("test")
        await r.state(State.THINKING)
        pcm = base64.b64encode(tone_pcm(440.0, 0.2)).decode()
        inline = {"mimeType": "audio/pcm;rate=24000", "data": pcm}
        await r.fake.send({"serverContent": {"modelTurn": {"parts": [{"inlineData": inline}]}}})
        await r.state(State.SPEAKING)
        assert r.daemon.counters.stalls == 0  # the stall to come is the answer's, not the turn's
        await r.until(lambda: r.daemon.counters.stalls == 1)
        await r.state(State.IDLE)


async def test_server_hung_after_the_transcript_is_a_stall() -> None:
    # Any server message used to stop the stall timer, so a server that sent
    # the input transcript and then hung left the daemon "thinking" forever.
    async with daemon_rig(overrides={"link.response_timeout_s": STALL_S}) as r:
        r.fake.script_turn(delay_s=60)
        await r.turn()
        await r.fake.wait_for(lambda f: f.count("inputTranscription", sent=True) == 1)
        await r.until(lambda: r.daemon.counters.stalls == 1)
        await r.state(State.IDLE)
        assert r.daemon.link.state is LinkState.CONNECTED


async def test_tool_cancelled_after_a_short_tap_still_ends_the_turn() -> None:
    # Found by seed 150: a tap released while a blocking call ran held back its
    # audio and activityEnd; the server's cancellation then cancelled the tool
    # task before it could send them, and the user's turn never ended.
    async with daemon_rig() as r:
        (call_id,) = await r.fake.tool_call([("slow_tool", {"token": "t1", "s": 30})])
        await r.until(lambda: r.executed["t1"] == 1)
        r.daemon.press("test")
        await r.fake.wait_for(lambda f: f.count("activityStart") == 1)
        r.daemon.release("test")
        await r.fake.cancel_tool_calls([call_id])
        await r.fake.wait_for(lambda f: f.count("activityEnd") == 1)
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        await r.state(State.IDLE)


# ------------------------------------------------------- the suite can fail


class TwiceAnsweringDaemon(Daemon):
    """Broken on purpose: runs every tool call, and sends its answer, twice."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        run_once = self.tool_runner._run

        async def run_twice(*call: Any) -> None:
            await run_once(*call)
            await run_once(*call)

        self.tool_runner._run = run_twice  # type: ignore[method-assign]


class GoAwayCrashingDaemon(Daemon):
    """Broken on purpose: a goAway escapes the event handler as an exception."""

    def _on_event(self, session: LiveSession, ev: m.ServerEvent) -> None:
        if isinstance(ev, m.GoAway):
            raise KeyError("timeLeft")
        super()._on_event(session, ev)


class StuckReconnectingDaemon(Daemon):
    """Broken on purpose: shows "reconnecting" until the next button press,
    though the link is back (a state machine that misses one transition)."""

    def _on_link_state(self, link: LinkState, detail: str) -> None:
        if link is LinkState.CONNECTED and self.state is State.RECONNECTING:
            return
        super()._on_link_state(link, detail)


class ForgetfulDaemon(Daemon):
    """Broken on purpose: forgets the tool results it owes when a connection
    drops, as the daemon did before it had an outbox."""

    async def _serve(self, session: LiveSession) -> SessionEnd:
        self.tool_runner.outbox.take(session.id, None)
        return await super()._serve(session)


# Each broken daemon with the symptom the suite must report, and seeds whose
# scripts exercise the breakage (a tool answer owed across a drop is rare:
# these seeds make one, found by running 100 seeds against ForgetfulDaemon).
BROKEN: dict[str, tuple[type[Daemon], tuple[str, ...], list[int]]] = {
    "answers-twice": (
        TwiceAnsweringDaemon,
        ("more than once", "executed 2 times"),
        list(range(100, 110)),
    ),
    "crashes-on-goaway": (GoAwayCrashingDaemon, ("raised", "unhandled"), list(range(110, 120))),
    "stuck-reconnecting": (StuckReconnectingDaemon, ("live session",), list(range(120, 130))),
    "forgets-owed-answers": (ForgetfulDaemon, ("never answered",), [18, 29, 48, 82, 83, 87]),
}


async def test_the_fault_suite_fails_a_broken_daemon() -> None:
    # All broken daemons at once: each kind of breakage must be caught, with
    # the symptom the suite promises to report.
    factories = {seed: cls for cls, _, seeds in BROKEN.values() for seed in seeds}
    # A short verdict deadline can only add failures, and a broken daemon that
    # never heals would otherwise hold the test for the full one.
    reports = await run_seeds(
        sorted(factories), width=len(factories), daemon_factory=factories, judge_s=10.0
    )
    for name, (cls, symptoms, seeds) in BROKEN.items():
        failures = [f for r in reports if r.seed in seeds for f in r.failures]
        assert any(s in f for f in failures for s in symptoms), (
            f"{name}: {cls.__name__} passed the fault suite; failures seen: {failures[:5]}"
        )


async def test_a_long_replay_is_not_mistaken_for_a_stall() -> None:
    # Found by seeds 5, 19, 30 once a backlog went out at 2x real time: a
    # message during the replay started the stall timer in "thinking", the
    # replay outlasted link.response_timeout_s, the daemon redialled and
    # replayed again, for ever. (The same with the shipped defaults and a
    # 60 s offline buffer: 30 s of replay against a 20 s timeout.)
    async with daemon_rig(overrides={"link.response_timeout_s": STALL_S}) as r:
        r.daemon.press("test")
        # 5 s of speech (the simulated mic runs at 4x): 2.5 s of replay at 2x,
        # longer than the response timeout.
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 5.0)
        await r.fake.drop_connection()
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 30)
        await r.state(State.IDLE)
        assert r.daemon.counters.stalls == 0
        assert r.fake.turns[-1].heard_s >= 5.0


async def test_the_close_of_an_interrupted_turn_is_not_the_answer() -> None:
    # Found by seed 161: with no model audio yet (the model was calling a tool),
    # the turnComplete closing the cut-off turn was taken for the answer to the
    # new one: "idle" too early, and a pending goAway switched mid-turn.
    async with daemon_rig() as r:
        r.fake.script_turn(tool_calls=[("slow_tool", {"token": "t1", "s": 5})])
        await r.turn()
        await r.until(lambda: r.executed["t1"] == 1)  # the model is busy with a tool
        first = len(r.daemon.history)
        r.daemon.press("test")  # barge in, and let go at once
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[1].completed)
        await r.state(State.IDLE)
        states = [s for _, s in list(r.daemon.history)[first:]]
        assert states == ["listening", "thinking", "speaking", "idle"]
