"""Soak: an accelerated long session (100 turns, a tool call every third, a
goAway switch every fifth) must leave memory and file descriptors flat.

Flatness is judged between the first and the last quarter of the run, after a
warm-up, with bounds far above the noise and far below a real leak: a few KB
per turn, or one socket per switch, trips them. bench/soak.py runs the same
session for thousands of turns and prints the figure in the README.
"""

from __future__ import annotations

from typing import Any

from support.soak import SoakResult, soak

from edge_daemon.daemon import Daemon
from edge_daemon.live import messages as m
from edge_daemon.live.session import LiveSession

WARMUP = 10  # turns: first-use caches, pools and the log's seen-once sets fill up here
MAX_TRACED_GROWTH = 256 * 1024
MAX_RSS_GROWTH = 8 * 1024 * 1024


def _flat(result: SoakResult) -> list[str]:
    problems = []
    traced = result.growth("traced", WARMUP)
    if traced > MAX_TRACED_GROWTH:
        problems.append(f"traced memory grew {traced / 1024:.0f} KiB")
    rss = result.growth("rss", WARMUP)
    if rss > MAX_RSS_GROWTH:
        problems.append(f"RSS grew {rss / 2**20:.1f} MiB")
    first, last = result.quarters("fds", WARMUP)
    if last > first + 0.5:
        problems.append(f"open fds went from {first:.1f} to {last:.1f}")
    return problems


async def test_long_session_memory_and_fds_stay_flat() -> None:
    result = await soak(100, go_away_every=5, tool_every=3)
    assert result.crashes == []
    assert (result.turns, result.go_aways, result.tool_calls) == (100, 20, 34)
    assert result.connections >= 21  # every goAway was a real switch
    assert _flat(result) == [], (
        f"{_flat(result)}; traced (first, last quarter) = {result.quarters('traced', WARMUP)}"
    )


class LeakyDaemon(Daemon):
    """Broken on purpose: keeps 16 KiB for every turn it hears end."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kept: list[bytes] = []

    def _on_event(self, session: LiveSession, ev: m.ServerEvent) -> None:
        if isinstance(ev, m.TurnComplete):
            self.kept.append(bytes(16384))
        super()._on_event(session, ev)


async def test_the_soak_catches_a_leak() -> None:
    result = await soak(60, go_away_every=0, tool_every=0, daemon_factory=LeakyDaemon)
    # 16 KiB a turn: about what a leaked audio chunk or two would cost.
    assert any("traced memory grew" in p for p in _flat(result)), result.quarters("traced", WARMUP)
