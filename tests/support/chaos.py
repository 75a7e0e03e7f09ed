"""The chaos harness: one in-process daemon, talking through a FaultProxy to a
FakeGemini, driven by a seeded script of presses, tool calls, barge-ins,
goAways and drops; then the faults stop and the run is judged.

What a run must show (``ChaosReport.failures`` lists every breach):

- the daemon's ``run()`` never raises, and nothing it spawns dies with an
  unhandled exception (the loop's exception handler and error logs with a
  traceback are both watched);
- once the faults stop it heals by itself: ``idle`` on a connected link, and a
  clean push-to-talk turn is answered;
- tool calls keep the tool outbox's promises: no call runs twice, the server
  never gets two answers for one call (a toolResponse, or a text note after a
  resume from an older handle), and a call the daemon ran is answered unless
  the next connection was a new session.

Everything runs on the caller's event loop, so many seeds can run at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import random
import re
import traceback
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed

from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeConnection, FakeGemini, tone_pcm
from edge_daemon.live.reconnect import LinkSettings, LinkState
from edge_daemon.live.session import Credentials, LiveSession, SessionClosed
from edge_daemon.tools.registry import Tool, ToolRegistry

from .fault_proxy import FaultPlan, FaultProxy

KEY = "chaos-test-key"
# The seed whose run is executing in this task tree: lets a shared log handler
# and the loop's exception handler blame the right run.
current_seed: contextvars.ContextVar[int | None] = contextvars.ContextVar(
    "current_seed", default=None
)

# The daemon's and the fake's own timeouts (setup, response, tool answer): hit
# only when a fault made them necessary, never because fifty daemons on one
# loop answer slowly. With every core busy elsewhere that loop has been seen to
# lag 1.3 s; at 1 s, runs never got a session up again.
TIMEOUT_S = 5.0
# Deadlines for judging a run (it came up, it healed, it stopped): a healing
# run may first wait out a response timeout and a setup timeout.
JUDGE_S = 30.0

SHORT_REPLY = tone_pcm(440.0, 0.3)
LONG_REPLY = tone_pcm(330.0, 1.5)


@dataclass
class ChaosReport:
    seed: int
    plan: FaultPlan
    actions: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    faults: Counter[str] = field(default_factory=Counter)
    tool_calls: int = 0
    tool_answers: int = 0
    tool_cancelled: int = 0
    tool_lost_in_flight: int = 0
    tool_dropped_for_new_session: int = 0
    tool_resent_after_failed_send: int = 0
    connections: int = 0
    history: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0
    log_tail: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        faults = ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()) if "deliver" not in k)
        return (
            f"seed {self.seed}: {'; '.join(self.failures) or 'ok'}\n"
            f"  actions: {' '.join(self.actions)}\n"
            f"  faults: {faults}\n"
            f"  connections={self.connections} tool_calls={self.tool_calls} "
            f"answered={self.tool_answers} cancelled={self.tool_cancelled} "
            f"lost_in_flight={self.tool_lost_in_flight} "
            f"dropped_for_new_session={self.tool_dropped_for_new_session}\n"
            f"  daemon history: {' '.join(self.history[-20:])}"
            + "".join(f"\n    {line}" for line in self.log_tail)
        )


class Watchdog(logging.Handler):
    """Collects, per seed, error records that carry a traceback and loop-level
    unhandled exceptions: a daemon that 'carries on' after a crash in a
    background task still fails the run."""

    def __init__(self, tail: int = 0) -> None:
        super().__init__(logging.INFO if tail else logging.ERROR)
        self.crashes: dict[int | None, list[str]] = {}
        # With ``tail``, the last records of each seed, to explain a failure.
        self.tail = tail
        self.tails: dict[int | None, deque[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        if self.tail:
            seed = current_seed.get()
            if seed not in self.tails:
                self.tails[seed] = deque(maxlen=self.tail)
            self.tails[seed].append(
                f"{record.relativeCreated / 1000:8.3f} {record.name} {record.getMessage()}"
            )
        if record.levelno < logging.ERROR:
            return
        if record.exc_info and record.name.startswith("edge_daemon"):
            if record.name.startswith("edge_daemon.fake_gemini"):
                return  # the fake's own troubles are not the daemon's
            self._add(f"{record.name}: {record.getMessage()}\n{self.format(record)}")

    def loop_handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        text = context.get("message", "")
        if exc is not None:
            text += "\n" + "".join(traceback.format_exception(exc))
        self._add(f"loop: {text}")

    def _add(self, text: str) -> None:
        self.crashes.setdefault(current_seed.get(), []).append(text)


@contextlib.contextmanager
def watching(tail: int = 0) -> Iterator[Watchdog]:
    """Install a Watchdog on the running loop and the edge_daemon loggers.

    Below error level the daemon's records are silenced (hundreds of seeds
    would pile them into pytest's captured log), unless ``tail`` asks for the
    last records of each seed.
    """
    loop = asyncio.get_running_loop()
    dog = Watchdog(tail)
    root = logging.getLogger("edge_daemon")
    old_level, old_handler = root.level, loop.get_exception_handler()
    root.addHandler(dog)
    root.setLevel(logging.INFO if tail else logging.ERROR)
    # The fake's websockets logger is pinned to INFO on its own: quiet it too.
    ws_log = logging.getLogger("edge_daemon.fake_gemini.ws")
    old_ws_level = ws_log.level
    ws_log.setLevel(logging.WARNING)
    loop.set_exception_handler(dog.loop_handler)
    try:
        yield dog
    finally:
        loop.set_exception_handler(old_handler)
        root.removeHandler(dog)
        root.setLevel(old_level)
        ws_log.setLevel(old_ws_level)


_NOTE_CALL = re.compile(r"\(call ([^)\s]+)\)")


class SentAnswers:
    """Per seed, the call ids of every tool answer a daemon handed to its socket:
    a toolResponse, or a text note naming ``(call ID)`` (bare text, or a typed
    turn framed by activity signals).

    Observed at the LiveSession boundary because an answer can vanish after
    that (a connection dying with the frame in flight), which neither the proxy
    nor the fake can tell apart from an answer never sent. A send that fails on
    a socket that was open may still have put the frame on the wire (websockets
    writes, then fails while draining): such sends are counted apart, as
    ``maybe`` sent.
    """

    def __init__(self) -> None:
        self.by_seed: dict[int | None, Counter[str]] = {}
        self.maybe_by_seed: dict[int | None, Counter[str]] = {}

    def add(self, ids: list[str], maybe: bool = False) -> None:
        table = self.maybe_by_seed if maybe else self.by_seed
        table.setdefault(current_seed.get(), Counter()).update(ids)

    @contextlib.contextmanager
    def installed(self) -> Iterator[SentAnswers]:
        orig_response, orig_text = LiveSession.send_tool_response, LiveSession.send_text
        orig_typed = LiveSession.send_typed_turn

        async def observed(session: LiveSession, send: Any, ids: list[str]) -> None:
            was_open = session.is_open
            try:
                await send
            except SessionClosed:
                if was_open:
                    self.add(ids, maybe=True)
                raise
            self.add(ids)

        async def send_tool_response(session: LiveSession, results: list[Any]) -> None:
            ids = [r.id for r in results]
            await observed(session, orig_response(session, results), ids)

        async def send_text(session: LiveSession, text: str) -> None:
            await observed(session, orig_text(session, text), _NOTE_CALL.findall(text))

        async def send_typed_turn(session: LiveSession, text: str, **kwargs: Any) -> None:
            send = orig_typed(session, text, **kwargs)
            await observed(session, send, _NOTE_CALL.findall(text))

        LiveSession.send_tool_response = send_tool_response  # type: ignore[method-assign]
        LiveSession.send_text = send_text  # type: ignore[method-assign]
        LiveSession.send_typed_turn = send_typed_turn  # type: ignore[method-assign]
        try:
            yield self
        finally:
            LiveSession.send_tool_response = orig_response  # type: ignore[method-assign]
            LiveSession.send_text = orig_text  # type: ignore[method-assign]
            LiveSession.send_typed_turn = orig_typed  # type: ignore[method-assign]


def chaos_tools(executed: Counter[str]) -> ToolRegistry:
    """A fast and a slow tool; both count each execution by the call's token."""

    def declaration(name: str) -> Mapping[str, Any]:
        return {
            "name": name,
            "description": f"test tool {name}",
            "parameters": {
                "type": "OBJECT",
                "properties": {"token": {"type": "STRING"}, "s": {"type": "NUMBER"}},
            },
        }

    async def fast(args: Mapping[str, Any]) -> Mapping[str, Any]:
        executed[str(args.get("token"))] += 1
        return {"ok": True}

    async def slow(args: Mapping[str, Any]) -> Mapping[str, Any]:
        executed[str(args.get("token"))] += 1
        seconds = args.get("s", 0.05)
        await asyncio.sleep(seconds if isinstance(seconds, int | float) else 0.05)
        return {"ok": True}

    registry = ToolRegistry()
    registry.add(Tool("fast_tool", declaration("fast_tool"), fast, timeout_s=2.0))
    registry.add(Tool("slow_tool", declaration("slow_tool"), slow, timeout_s=2.0))
    return registry


def link_settings(url: str) -> LinkSettings:
    return LinkSettings(
        url=url,
        credentials=Credentials(KEY),
        connect_timeout_s=TIMEOUT_S,
        setup_timeout_s=TIMEOUT_S,
        backoff_initial_s=0.02,
        backoff_max_s=0.2,
        # A corrupted client frame earns a 1007 close, the config-error path:
        # keep its long backoff short, or a run would wait for minutes.
        config_error_backoff_s=0.3,
        healthy_after_s=0.5,
    )


async def until(
    cond: Callable[[], bool], fake: FakeGemini, daemon: Daemon, timeout_s: float
) -> bool:
    """Wait for ``cond``; woken by the fake's messages and the daemon's state
    changes (and every 50 ms for what neither announces, like the link state)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not cond():
        remaining = deadline - loop.time()
        if remaining <= 0:
            return False
        waits = [
            asyncio.ensure_future(fake._changed.wait()),
            asyncio.ensure_future(daemon._state_changed.wait()),
        ]
        try:
            await asyncio.wait(waits, timeout=min(remaining, 0.05), return_when="FIRST_COMPLETED")
        finally:
            for w in waits:
                w.cancel()
    return True


class ChaosRun:
    """One seed's daemon + proxy + fake, and the script that drives them."""

    def __init__(
        self,
        seed: int,
        *,
        actions: int,
        plan: FaultPlan | None,
        daemon_factory: Callable[..., Daemon] = Daemon,
        judge_s: float = JUDGE_S,
    ) -> None:
        self.seed = seed
        self.judge_s = judge_s
        self.rng = random.Random(seed)
        self.n_actions = actions
        self.plan = plan or FaultPlan.random(self.rng)
        self.daemon_factory = daemon_factory
        self.report = ChaosReport(seed, self.plan)
        self.executed: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()  # filled by SentAnswers
        self.maybe_sent: Counter[str] = Counter()
        self._quiet_from = 1 << 30  # the first connection opened after the faults stopped
        self._token = 0

    def token(self) -> str:
        self._token += 1
        return f"s{self.seed}-t{self._token}"

    def calls(self, n: int) -> list[tuple[str, dict[str, Any]]]:
        out: list[tuple[str, dict[str, Any]]] = []
        for _ in range(n):
            if self.rng.random() < 0.5:
                out.append(("fast_tool", {"token": self.token()}))
            else:
                out.append(("slow_tool", {"token": self.token(), "s": self.rng.uniform(0, 0.15)}))
        return out

    async def run(self) -> ChaosReport:
        current_seed.set(self.seed)
        started = asyncio.get_running_loop().time()
        go_away = self.rng.choice([None, None, None, 0.6, 1.2])
        self.fake = FakeGemini(
            api_key=KEY,
            pace=25.0,
            use_speech=False,
            tool_timeout_s=TIMEOUT_S,
            go_away_after_s=go_away,
            go_away_grace_s=0.3,
        )
        await self.fake.start()
        self.proxy = FaultProxy(
            self.fake.url, rng=random.Random(self.seed ^ 0x5EED), plan=self.plan, faults=False
        )
        await self.proxy.start()
        cfg = with_overrides(
            Config(),
            {
                "audio.backend": "null",
                "link.response_timeout_s": TIMEOUT_S,
                "audio.preroll_ms": 0,
            },
        )
        self.daemon = self.daemon_factory(
            cfg,
            mic=NullMicrophone(chunk_ms=40, speed=4.0),
            speaker=NullSpeaker(speed=20.0),
            link_settings=link_settings(self.proxy.url),
            tools=chaos_tools(self.executed),
        )
        task = asyncio.create_task(self.daemon.run(), name=f"daemon-{self.seed}")
        try:
            if not await self.until(self.live, self.judge_s):
                self.fail("never came up before the faults started")
            else:
                self.proxy.faults = True
                for _ in range(self.n_actions):
                    if task.done():
                        break
                    await self.step()
                self.proxy.faults = False
                self.daemon.release("chaos")
                await self.settle()
            self.judge_tools(self.sent, self.maybe_sent)
        finally:
            self.daemon.stop()
            try:
                await asyncio.wait_for(asyncio.shield(task), self.judge_s)
            except TimeoutError:
                self.fail(f"run() did not return within {self.judge_s:g} s of stop()")
                task.cancel()
            except Exception as exc:
                self.fail(f"run() raised {exc!r}")
            await self.proxy.stop()
            await self.fake.stop()
        if task.done() and not task.cancelled() and task.exception() is not None:
            self.fail(f"run() raised {task.exception()!r}")
        self.report.faults = self.proxy.counts
        self.report.connections = len(self.fake.connections)
        self.report.history = [s for _, s in self.daemon.history]
        self.report.elapsed_s = asyncio.get_running_loop().time() - started
        return self.report

    def fail(self, text: str) -> None:
        self.report.failures.append(text)

    def live(self) -> bool:
        d = self.daemon
        return d.state is State.IDLE and d.link.state is LinkState.CONNECTED

    async def until(self, cond: Callable[[], bool], timeout_s: float) -> bool:
        return await until(cond, self.fake, self.daemon, timeout_s)

    # ---- the script ------------------------------------------------------------------

    # The actions' own waits (0.5 to 1 s) only pace the script: one that runs
    # out moves on to the next action, as a user would, and judges nothing.

    async def step(self) -> None:
        actions: list[tuple[str, Callable[[], Awaitable[None]], int]] = [
            ("talk", self.talk, 5),
            ("tool-turn", self.tool_turn, 4),
            ("tool", self.direct_tool_call, 3),
            ("cancel", self.cancelled_tool_call, 2),
            ("barge-in", self.barge_in, 2),
            ("say", self.say, 2),
            ("goaway", self.go_away, 1),
            ("drop", self.drop, 1),
            ("kill", self.kill, 1),
        ]
        name, action, _ = self.rng.choices(actions, weights=[w for *_, w in actions])[0]
        self.report.actions.append(name)
        # The fake's controls need an open connection; in chaos there may be none.
        with contextlib.suppress(RuntimeError, ConnectionClosed):
            await action()

    async def talk(self, hold_s: float = 0.08) -> None:
        before = self.fake.audio_received_s()
        self.daemon.press("chaos")
        try:
            await self.until(lambda: self.fake.audio_received_s() >= before + hold_s, 1.0)
        finally:
            self.daemon.release("chaos")
        await self.until(lambda: self.daemon.state is State.IDLE, 1.0)

    async def tool_turn(self) -> None:
        self.fake.script_turn(tool_calls=self.calls(self.rng.randint(1, 2)), reply_pcm=SHORT_REPLY)
        await self.talk()

    def set_up(self) -> bool:
        """The fake's connection has sent setupComplete: a client ignores what
        comes before it, so a tool call issued earlier is not one it owes."""
        conn = self.fake.active
        return conn is not None and any("setupComplete" in msg for msg in conn.sent)

    async def direct_tool_call(self) -> None:
        if not self.set_up():
            return
        ids = await self.fake.tool_call(self.calls(self.rng.randint(1, 3)))
        answered = Counter(r.get("id") for r in self.fake.tool_responses)
        await self.until(lambda: all(answered[i] for i in ids) or not self.fake.active, 0.5)

    async def cancelled_tool_call(self) -> None:
        if not self.set_up():
            return
        ids = await self.fake.tool_call(
            [("slow_tool", {"token": self.token(), "s": self.rng.uniform(0.05, 0.3)})]
        )
        if self.rng.random() < 0.5:
            await asyncio.sleep(0)  # sometimes the call has started, sometimes not
        await self.fake.cancel_tool_calls(ids)

    async def barge_in(self) -> None:
        self.fake.script_turn(reply_pcm=LONG_REPLY)
        await self.talk()
        await self.until(lambda: self.daemon.state is State.SPEAKING, 0.5)
        await self.talk()

    async def say(self) -> None:
        await self.daemon.say("hello there")
        await self.until(lambda: self.daemon.state is State.IDLE, 1.0)

    async def go_away(self) -> None:
        await self.fake.go_away(self.rng.uniform(0.05, 0.6))

    async def drop(self) -> None:
        await self.fake.drop_connection()

    async def kill(self) -> None:
        self.proxy.kill_all()

    # ---- judging ---------------------------------------------------------------------

    def quiet_connection(self) -> bool:
        """Live, on a connection with no goAway or close pending: a turn on it
        can only be cut by a daemon fault, not by the server's schedule."""
        conn = self.fake.active
        return (
            self.live()
            and conn is not None
            and (conn.index >= self._quiet_from or all(t.done() for t in conn.tasks))
        )

    async def settle(self) -> None:
        """Faults off: the daemon must heal by itself, then answer a clean turn."""
        # New connections get no goAway; the schedule of one already open (fixed
        # as it opened) runs its course, and the daemon then switches to a new one.
        self.fake.go_away_after_s = None
        self._quiet_from = len(self.fake.connections)
        if not await self.until(self.quiet_connection, self.judge_s):
            conn = self.fake.active
            pending = len([t for t in conn.tasks if not t.done()]) if conn else 0
            self.fail(
                f"did not return to a live session after the faults stopped: state="
                f"{self.daemon.state.value} link={self.daemon.link.state.value} "
                f"connection={conn.index if conn else None} (quiet from {self._quiet_from}, "
                f"{pending} server tasks pending)"
            )
            return
        turns = len(self.fake.turns)
        before = self.fake.audio_received_s()
        self.daemon.press("final")
        heard = await self.until(lambda: self.fake.audio_received_s() >= before + 0.1, self.judge_s)
        self.daemon.release("final")
        if not heard:
            self.fail("the final, fault-free turn's audio never reached the server")
            return
        # Any new turn, not the last: a turn opened on an older connection can
        # be recorded after the final one and never complete (its socket is gone).
        answered = await self.until(
            lambda: any(t.completed for t in self.fake.turns[turns:]) and self.live(),
            self.judge_s,
        )
        if not answered:
            self.fail(
                f"the final, fault-free turn was not answered: state={self.daemon.state.value}"
                f" link={self.daemon.link.state.value} turns={len(self.fake.turns)}"
            )

    def judge_tools(self, sent: Counter[str], maybe: Counter[str]) -> None:
        """The tool outbox's promises (see ToolOutbox): each call runs at most
        once; the daemon hands its result to a socket at most once, as a
        toolResponse or, after a resume from an older handle, as a text note
        naming the call; it does so for every call it ran unless the next
        connection was a new session (the conversation is gone). An answer in
        flight when its connection dies is lost: delivery is at most once."""
        fake, report = self.fake, self.report
        issued: dict[str, tuple[FakeConnection, str]] = fake._issued_calls
        cancelled: set[str] = fake._cancelled_ids
        received = Counter(str(r.get("id")) for r in fake.tool_responses)
        tokens: dict[str, str] = {}
        for conn in fake.connections:
            for msg in conn.received:
                realtime = msg.get("realtimeInput")
                text = realtime.get("text") if isinstance(realtime, dict) else None
                if isinstance(text, str):
                    received.update(_NOTE_CALL.findall(text))
            for msg in conn.sent:
                for call in (msg.get("toolCall") or {}).get("functionCalls") or []:
                    tokens[call["id"]] = str(call.get("args", {}).get("token"))
        report.tool_calls = len(issued)
        report.tool_answers = sum(1 for i in issued if received[i])
        report.tool_cancelled = len(cancelled)
        for token, n in self.executed.items():
            # A corrupted frame can carry a mangled token: only ours count.
            if n > 1 and token.startswith(f"s{self.seed}-t"):
                self.fail(f"tool call {token} executed {n} times")
        for call_id, (conn, _name) in issued.items():
            # At most once, except that an answer whose send failed mid-write
            # is owed again (at least once beats a model left waiting): the
            # server may then get it twice.
            if sent[call_id] > 1 or received[call_id] > 1 + maybe[call_id]:
                self.fail(
                    f"{call_id} answered more than once: sent {sent[call_id]} "
                    f"(+{maybe[call_id]} failed mid-send), the server got {received[call_id]}"
                )
            elif received[call_id] > 1:
                report.tool_resent_after_failed_send += 1
            if call_id in cancelled:
                continue
            if sent[call_id] and not received[call_id]:
                report.tool_lost_in_flight += 1
                continue
            if received[call_id]:
                continue
            if conn.open and self.proxy.tool_calls_delivered[call_id]:
                self.fail(f"{call_id} reached the daemon on a live connection, never answered")
            elif (
                self.executed[tokens.get(call_id, "")] and self.proxy.tool_calls_delivered[call_id]
            ):
                # It ran from an intact frame (a mangled id ran it under another name).
                fresh_after = any(
                    c.index > conn.index and c.setup is not None and c.resumed_from is None
                    for c in fake.connections
                )
                if fresh_after:
                    report.tool_dropped_for_new_session += 1
                else:
                    self.fail(f"{call_id} ran, its session was resumed, but it was never answered")


async def run_seeds(
    seeds: list[int],
    *,
    actions: int = 8,
    width: int = 8,
    daemon_factory: Callable[..., Daemon] | Mapping[int, Callable[..., Daemon]] = Daemon,
    log_tail: int = 0,
    judge_s: float = JUDGE_S,
) -> list[ChaosReport]:
    """Run ``seeds``, ``width`` at a time on this loop; unhandled crashes are
    charged to the seed whose task tree raised them. ``daemon_factory`` may map
    seeds to factories, to run different daemons side by side. ``judge_s``
    bounds each wait a verdict rests on: a shorter one can only add failures."""
    sem = asyncio.Semaphore(width)
    reports: list[ChaosReport] = []

    async def one(seed: int) -> None:
        async with sem:
            factory = (
                daemon_factory.get(seed, Daemon)
                if isinstance(daemon_factory, Mapping)
                else daemon_factory
            )
            run = ChaosRun(
                seed, actions=actions, plan=None, daemon_factory=factory, judge_s=judge_s
            )
            run.sent = answers.by_seed.setdefault(seed, Counter())
            run.maybe_sent = answers.maybe_by_seed.setdefault(seed, Counter())
            try:
                reports.append(await run.run())
            except Exception as exc:
                run.fail(f"harness error: {''.join(traceback.format_exception(exc))}")
                reports.append(run.report)

    answers = SentAnswers()
    with watching(log_tail) as dog, answers.installed():
        await asyncio.gather(*(one(s) for s in seeds))
        # Let the last callbacks of closed sockets and finished tasks run before judging.
        await asyncio.sleep(0)
    by_seed = {r.seed: r for r in reports}
    for seed, lines in dog.tails.items():
        if seed in by_seed:
            by_seed[seed].log_tail = list(lines)
    for seed, crashes in dog.crashes.items():
        target = by_seed.get(seed) if seed is not None else None
        for text in crashes:
            if target is not None:
                target.failures.append(f"unhandled: {text}")
            else:
                reports[0].failures.append(f"unhandled (seed unknown): {text}")
    return sorted(reports, key=lambda r: r.seed)
