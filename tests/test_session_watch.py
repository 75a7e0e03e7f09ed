"""The session watch (session_watch.py) wakes only when something it decides
on can have changed: a state change, a switch request, a poke, a deadline."""

from __future__ import annotations

import asyncio
import time

from edge_daemon.counters import Counters
from edge_daemon.live import messages as m
from edge_daemon.live.reconnect import Resumption, SessionEnd
from edge_daemon.session_watch import SessionWatch


class Looks:
    """The watch's view of the daemon, counting how often it looks."""

    def __init__(self) -> None:
        self.changed = asyncio.Event()
        self.between_turns = False
        self.since: float | None = None
        self.count = 0

    def awaiting_reply_since(self) -> float | None:
        self.count += 1
        return self.since


async def spin(turns: int = 200) -> None:
    """Let the loop run ``turns`` times: a watch that busy-waits looks each time."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def test_an_idle_link_costs_the_watch_nothing() -> None:
    looks = Looks()
    watch = SessionWatch(Resumption(), Counters(), 20.0)
    task = asyncio.create_task(
        watch.run(lambda: looks.changed, lambda: looks.between_turns, looks.awaiting_reply_since)
    )
    await spin()
    assert looks.count <= 2 and not task.done()
    task.cancel()


async def test_a_go_away_mid_turn_waits_without_spinning_then_switches_on_the_handle() -> None:
    looks = Looks()
    resumption = Resumption()
    watch = SessionWatch(resumption, Counters(), 20.0)
    task = asyncio.create_task(
        watch.run(lambda: looks.changed, lambda: looks.between_turns, looks.awaiting_reply_since)
    )
    await spin()
    before = looks.count
    watch.go_away(m.GoAway(60.0))  # a turn is going on: the switch waits for its end
    await spin()
    assert looks.count <= before + 4, "the watch busy-waited on a pending goAway"
    assert not task.done()
    looks.between_turns = True  # the turn ended ...
    looks.changed.set()
    looks.changed = asyncio.Event()
    await spin()
    assert not task.done()  # ... but no handle from after it has come yet
    resumption.update(m.ResumptionUpdate("after-the-turn", True))
    watch.poke()
    assert await asyncio.wait_for(task, 10) is SessionEnd.GO_AWAY


async def test_an_owed_answer_starts_the_stall_clock_when_poked() -> None:
    looks = Looks()
    counters = Counters()
    watch = SessionWatch(Resumption(), counters, 0.2)
    task = asyncio.create_task(
        watch.run(lambda: looks.changed, lambda: looks.between_turns, looks.awaiting_reply_since)
    )
    await spin()
    looks.since = time.monotonic()
    watch.reply_owed()
    assert await asyncio.wait_for(task, 10) is SessionEnd.STALLED
    assert counters.stalls == 1


async def test_an_answer_streaming_in_does_not_wake_the_watch_per_message() -> None:
    looks = Looks()
    watch = SessionWatch(Resumption(), Counters(), 20.0)
    looks.since = time.monotonic()
    task = asyncio.create_task(
        watch.run(lambda: looks.changed, lambda: looks.between_turns, looks.awaiting_reply_since)
    )
    await spin()
    before = looks.count
    for _ in range(50):  # each audio message refreshes the clock (daemon._read)
        looks.since = None
        looks.since = time.monotonic()
        watch.reply_owed()
        await spin(4)
    assert looks.count <= before + 2, "the watch woke for every message"
    assert not task.done()
    task.cancel()
