"""How long the link takes to heal, on loopback against the fake Gemini.

Two numbers, each over ``--runs`` repetitions:

- drop -> streaming: the user is talking, the TCP connection is cut with no
  close frame; the time until the first microphone chunk arrives on the next
  connection (backoff + connect + setup + replay);
- goAway -> new session: the daemon is idle, the server says goAway; the time
  until the next connection is set up, resumed with the handle.

The link uses the shipped defaults (first backoff 0.25 s, full jitter) except
``healthy_after_s = 0``: each drop then counts as the first after a healthy
spell, as on a device whose link drops now and then, instead of climbing the
backoff ladder run after run. Loopback hides network latency: on a Pi over
Wi-Fi add a TLS handshake and a round trip or two to Google.

    python -m bench.reconnect --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import time
from typing import Any

from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.live.reconnect import LinkSettings
from edge_daemon.live.session import Credentials

KEY = "bench-key-not-secret"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: with 20 runs, p95 is the 19th slowest, not an interpolation."""
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


async def wait_state(daemon: Daemon, state: State) -> None:
    if not await daemon.wait_state(state, 30):
        raise RuntimeError(f"daemon never reached {state}: {list(daemon.history)[-5:]}")


async def measure(runs: int) -> dict[str, Any]:
    fake = FakeGemini(api_key=KEY, pace=20.0, use_speech=False)
    await fake.start()
    daemon = Daemon(
        with_overrides(Config(), {"audio.backend": "null"}),
        mic=NullMicrophone(chunk_ms=40),
        speaker=NullSpeaker(speed=20.0),
        link_settings=LinkSettings(url=fake.url, credentials=Credentials(KEY), healthy_after_s=0),
    )
    task = asyncio.create_task(daemon.run())
    drops: list[float] = []
    go_aways: list[float] = []
    try:
        await wait_state(daemon, State.IDLE)
        for _ in range(runs):
            # drop -> streaming again
            daemon.press("bench")
            await fake.wait_for(lambda f: f.active is not None and f.audio_received_s(f.active) > 0)
            before = len(fake.connections)
            t0 = time.perf_counter()
            await fake.drop_connection()
            await fake.wait_for(
                lambda f, n=before: (
                    len(f.connections) > n and f.audio_received_s(f.connections[-1]) > 0
                ),
                30,
            )
            drops.append(time.perf_counter() - t0)
            daemon.release("bench")
            await fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 30)
            await wait_state(daemon, State.IDLE)

            # goAway -> next session, between turns
            before = len(fake.connections)
            t0 = time.perf_counter()
            await fake.go_away(30)
            await fake.wait_for(
                lambda f, n=before: (
                    len(f.connections) > n and f.connections[-1].setup_complete_sent
                ),
                30,
            )
            go_aways.append(time.perf_counter() - t0)
            if fake.connections[-1].resumed_from is None:
                raise RuntimeError("the goAway switch did not resume with the handle")
            await wait_state(daemon, State.IDLE)
        if fake.protocol_violations:
            raise RuntimeError(f"protocol violations: {fake.protocol_violations}")
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        await fake.stop()
    return {
        "bench": "reconnect",
        "runs": runs,
        "drop_to_streaming": summary(drops),
        "go_away_to_new_session": summary(go_aways),
        "resumes": daemon.link.resumption.resumes,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reconnect", description=__doc__)
    parser.add_argument("--runs", type=int, default=20, help="repetitions of each (default 20)")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logging.basicConfig(level=logging.ERROR)
    # The fake pins its websockets logger to INFO (it logs connections): quiet it.
    logging.getLogger("edge_daemon.fake_gemini.ws").setLevel(logging.ERROR)
    result = asyncio.run(measure(args.runs))
    for name in ("drop_to_streaming", "go_away_to_new_session"):
        s = result[name]
        print(
            f"{name:24s} p50 {s['p50_ms']:7.1f} ms   p95 {s['p95_ms']:7.1f} ms   "
            f"max {s['max_ms']:7.1f} ms   ({args.runs} runs)"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
