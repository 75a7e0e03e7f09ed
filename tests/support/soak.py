"""An accelerated long session: many push-to-talk turns, tool calls and goAway
switches against the fake Gemini, sampling the process's memory (tracemalloc
and RSS) and open file descriptors after each turn.

Shared by tests/test_soak.py (short, asserts flatness) and bench/soak.py
(long, prints the figure for the README). The fake keeps a record of every
message by design; it is trimmed after each turn so that what grows, if
anything, is the daemon.
"""

from __future__ import annotations

import array
import asyncio
import gc
import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini, tone_pcm

from .chaos import watching
from .rig import Rig, daemon_rig

REPLY = tone_pcm(440.0, 0.2)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@dataclass(frozen=True)
class Sample:
    turn: int
    traced: int  # bytes tracemalloc sees allocated (0 when not tracing)
    rss: int
    fds: int


_FIELDS = 4  # turn, traced, rss, fds


@dataclass
class SoakResult:
    turns: int = 0
    go_aways: int = 0
    tool_calls: int = 0
    connections: int = 0
    elapsed_s: float = 0.0
    crashes: list[str] = field(default_factory=list)
    # Samples live in one array allocated up front: a list of objects growing
    # by one per turn would itself look like a leak to tracemalloc.
    _raw: array.array[int] = field(default_factory=lambda: array.array("q"))
    _n: int = 0

    def reserve(self, n: int) -> None:
        self._raw = array.array("q", bytes(8 * _FIELDS * n))

    def record(self, turn: int, traced: int, rss: int, fds: int) -> None:
        i = self._n * _FIELDS
        self._raw[i : i + _FIELDS] = array.array("q", (turn, traced, rss, fds))
        self._n += 1

    @property
    def samples(self) -> list[Sample]:
        raw = self._raw
        return [Sample(*raw[i * _FIELDS : (i + 1) * _FIELDS]) for i in range(self._n)]

    def quarters(self, attr: str, warmup: int = 0) -> tuple[float, float]:
        """Mean of ``attr`` over the first and the last quarter of the samples
        after ``warmup`` turns (first-use caches and pools are not leaks)."""
        values = [getattr(s, attr) for s in self.samples if s.turn >= warmup]
        q = max(1, len(values) // 4)
        return statistics.fmean(values[:q]), statistics.fmean(values[-q:])

    def growth(self, attr: str, warmup: int = 0) -> float:
        first, last = self.quarters(attr, warmup)
        return last - first


def trim_fake(fake: FakeGemini) -> None:
    """Forget what the fake recorded about finished business (it records every
    message by design), keeping what the live connection and a resume need."""
    live = [c for c in fake.connections if c.open]
    fake.connections[:] = live
    for conn in live:
        conn.received.clear()
        conn.sent.clear()
    fake.received.clear()
    fake.tool_responses.clear()
    fake.turns.clear()
    fake.protocol_violations.clear()
    fake._issued_calls.clear()
    fake._answered_ids.clear()
    fake._cancelled_ids.clear()
    keep = {id(c.session) for c in live}
    for handle, session in list(fake.sessions.items()):
        if id(session) not in keep or handle != (session.handles or [None])[-1]:
            del fake.sessions[handle]
    for conn in live:
        if conn.session is not None:
            conn.session.handles[:] = conn.session.handles[-1:]
            conn.session.history.clear()


async def soak(
    turns: int = 100,
    *,
    go_away_every: int = 5,
    tool_every: int = 3,
    trace: bool = True,
    daemon_factory: Callable[..., Daemon] = Daemon,
    progress: Callable[[SoakResult], None] | None = None,
) -> SoakResult:
    """Run ``turns`` turns (a tool call every ``tool_every``, a goAway switch
    every ``go_away_every``) and sample after each."""
    result = SoakResult()
    result.reserve(turns)
    started = time.monotonic()
    if trace:
        tracemalloc.start()
    try:
        with watching() as dog:
            async with daemon_rig(
                pace=50.0,
                mic=NullMicrophone(chunk_ms=40, speed=8.0),
                speaker=NullSpeaker(speed=50.0),
                daemon_factory=daemon_factory,
                go_away_grace_s=0.05,
                keep_audio=False,
            ) as r:
                for i in range(turns):
                    await _one_turn(r, i, tool_every, result)
                    if go_away_every and i % go_away_every == go_away_every - 1:
                        await _go_away(r, result)
                    trim_fake(r.fake)
                    gc.collect()
                    traced = tracemalloc.get_traced_memory()[0] if trace else 0
                    result.record(i, traced, rss_bytes(), open_fds())
                    if progress is not None:
                        progress(result)
                result.connections = r.daemon.link.connects
            result.crashes = [c for crashes in dog.crashes.values() for c in crashes]
    finally:
        if trace:
            tracemalloc.stop()
        result.elapsed_s = time.monotonic() - started
    return result


async def _one_turn(r: Rig, i: int, tool_every: int, result: SoakResult) -> None:
    if tool_every and i % tool_every == 0:
        # One token for all: the test tool counts calls by token.
        r.fake.script_turn(tool_calls=[("fast_tool", {"token": "soak"})], reply_pcm=REPLY)
        result.tool_calls += 1
    else:
        r.fake.script_turn(reply_pcm=REPLY)
    await r.turn(0.04)
    await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 10)
    await r.state(State.IDLE)
    result.turns += 1


async def _go_away(r: Rig, result: SoakResult) -> None:
    before = r.daemon.link.connects
    await r.fake.go_away(0.05)
    await r.until(
        lambda: (
            r.daemon.link.connects > before
            and r.daemon.state is State.IDLE
            and r.daemon.link.session is not None
        ),
        10,
    )
    result.go_aways += 1


def run(turns: int, **kwargs: object) -> SoakResult:
    return asyncio.run(soak(turns, **kwargs))  # type: ignore[arg-type]
