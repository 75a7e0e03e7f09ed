"""A long accelerated session: thousands of push-to-talk turns, a tool call
every third, a goAway switch every fifth, against the fake Gemini, with the
process's memory (tracemalloc and RSS) and open file descriptors sampled after
every turn. The same session as tests/test_soak.py, only longer.

    python -m bench.soak --turns 2000

Prints the first-quarter and last-quarter means (after a warm-up) and writes
bench/results/soak.json. The fake runs in the same process and its records
are trimmed after each turn, so growth, if any, is the daemon's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # the soak harness lives with the tests

from support.soak import SoakResult, soak  # noqa: E402

WARMUP = 10


def report(result: SoakResult, trace: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "turns": result.turns,
        "go_aways": result.go_aways,
        "tool_calls": result.tool_calls,
        "connections": result.connections,
        "elapsed_s": round(result.elapsed_s, 1),
        "crashes": len(result.crashes),
    }
    per_k = 1000 / max(1, (result.turns - WARMUP) * 3 // 4)  # quarter means are 3/4 run apart
    for attr, unit, scale in (("rss", "MiB", 2**20), ("fds", "", 1), ("traced", "KiB", 1024)):
        if attr == "traced" and not trace:
            continue
        first, last = result.quarters(attr, WARMUP)
        out[attr] = {
            "first_quarter": round(first / scale, 2),
            "last_quarter": round(last / scale, 2),
            f"growth_per_1000_turns{'_' + unit if unit else ''}": round(
                (last - first) / scale * per_k, 2
            ),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__)
    parser.add_argument("--turns", type=int, default=2000)
    parser.add_argument("--go-away-every", type=int, default=5)
    parser.add_argument("--tool-every", type=int, default=3)
    parser.add_argument(
        "--no-trace", action="store_true", help="RSS and fds only (tracemalloc halves the speed)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "soak.json")
    args = parser.parse_args(argv)
    if args.turns < 4 * WARMUP:
        parser.error(f"--turns must be at least {4 * WARMUP}")
    logging.basicConfig(level=logging.ERROR)

    def progress(r: SoakResult) -> None:
        if r.turns % 250 == 0:
            print(f"... {r.turns} turns, {r.go_aways} goAways", file=sys.stderr, flush=True)

    result = asyncio.run(
        soak(
            args.turns,
            go_away_every=args.go_away_every,
            tool_every=args.tool_every,
            trace=not args.no_trace,
            progress=progress,
        )
    )
    out = report(result, not args.no_trace)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps(out, indent=2))
    return 1 if result.crashes else 0


if __name__ == "__main__":
    sys.exit(main())
