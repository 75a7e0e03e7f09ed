"""The scale curve: how the daemon's cost grows with session length, camera
frame size and the number of declared tools. Growth that is not flat or
linear is a finding.

Rows (each the bench.footprint session: 3 s press, 4 s answer, every third
cut, 1 s pause, a frame a second, against the fake over TLS):
  length  the daemon on PortAudio (clocked PulseAudio null devices) talking
          for --minutes (default 60) in real time, the fake sending goAway
          every 10 minutes as the service ends its connections (the daemon
          resumes the session); CPU per minute over each stretch and RSS/PSS
          at each minute
  frames  the daemon on null audio beside the raw client, one --seconds
          session per frame size: 320x240 to 1920x1080 (above
          camera.max_side = 1024 the daemon scales each frame down and
          re-encodes it)
  tools   the daemon on null audio with 1, 10 and 50 declared tools
          (bench/tools_daemon.py), a call of one of them every third turn:
          CPU per minute, PSS, and the setup message's size

    python -m bench.scale --rows length --minutes 60
    python -m bench.scale --rows frames tools --seconds 40
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import make_jpeg, make_tls, pulse, reply_pcm
from .footprint import RESULTS, Row
from .run import REPLY_S, ROOT, PyAudioClient, RawClient

GO_AWAY_EVERY_S = 600.0
FRAME_SIZES = ((320, 240), (640, 480), (1024, 768), (1280, 960), (1920, 1080))
TOOL_COUNTS = (1, 10, 50)


def _mib(kib: int) -> float:
    return round(kib / 1024, 1)


async def length(
    work: Path, cert: Path, key: Path, jpeg: Path, pa: Any, minutes: float, go_away_s: float
) -> dict:
    row = Row(work, cert, key, jpeg, pa)
    row.forgiving = True
    await row.daemon("daemon", "pyaudio", talk=True, go_away_after_s=go_away_s)
    # The PyAudio anchor talks beside it on a link of its own that is never
    # ended: the load of the machine, which drifts over an hour, falls on
    # both, so each stretch is also a ratio.
    await row.pipe(PyAudioClient, "pyaudio", talk=True, idle=False)
    seconds = minutes * 60
    samples = await row.run(seconds, [60.0 * m for m in range(1, int(minutes))])
    fake = row.slots[0].fake
    assert fake is not None
    readings = samples["daemon"]
    anchor = {round(a.seconds): a.cpu_s for a in samples.get("pyaudio", [])}
    points = []
    for r in readings:
        points.append(
            {
                "minute": round(r.seconds / 60, 2),
                "cpu_s": r.cpu_s,
                "anchor_cpu_s": anchor.get(round(r.seconds)),
                "rss_mib": _mib(r.memory_kib["rss"]),
                "pss_mib": _mib(r.memory_kib["pss"]),
                "private_mib": _mib(r.memory_kib["private"]),
                "threads": r.thread_count,
            }
        )

    def stretch(a: float, b: float, key: str = "cpu_s") -> float | None:
        """CPU per minute between minute a and minute b."""
        at = {round(p["minute"]): p[key] for p in points}
        if b not in at or (a and a not in at) or at[b] is None or (a and at[a] is None):
            return None
        return round((at[b] - (at[a] if a else 0.0)) / (b - a), 3)

    def ratio(a: float, b: float) -> float | None:
        mine, theirs = stretch(a, b), stretch(a, b, "anchor_cpu_s")
        return round(mine / theirs, 3) if mine and theirs else None

    marks = sorted({m for m in (1, 10, 60) if m <= minutes} | {round(minutes)})
    return {
        "minutes": minutes,
        "turns": readings[-1].turns,
        "failed_turns": row.failed_turns,
        "connections": len(fake.connections),
        "resumed": sum(1 for c in fake.connections if c.resumed_from),
        "cpu_s_per_min": {
            f"{a}-{b}": stretch(a, b) for a, b in zip([0, *marks[:-1]], marks, strict=True)
        },
        "vs_pyaudio": {
            f"{a}-{b}": ratio(a, b) for a, b in zip([0, *marks[:-1]], marks, strict=True)
        },
        "memory_at": {
            str(m): next((p for p in points if round(p["minute"]) == m), None) for m in marks
        },
        "points": points,
    }


async def frames(work: Path, cert: Path, key: Path, pa: Any, seconds: float) -> list[dict]:
    out = []
    for w, h in FRAME_SIZES:
        jpeg = make_jpeg(work / f"frame-{w}x{h}.jpg", w, h)
        sub = work / f"frames-{w}x{h}"
        sub.mkdir()
        row = Row(sub, cert, key, jpeg, pa)
        await row.daemon("daemon-null", "null", talk=True, jpeg=jpeg)
        await row.pipe(RawClient, "raw", talk=True, idle=False, jpeg=jpeg)
        r = {k: v[-1] for k, v in (await row.run(seconds)).items()}
        fake = row.slots[0].fake
        assert fake is not None
        out.append(
            {
                "frame": f"{w}x{h}",
                "jpeg_kib": round(jpeg.stat().st_size / 1024, 1),
                "daemon_cpu_s_per_min": round(r["daemon-null"].cpu_per_min, 3),
                "raw_cpu_s_per_min": round(r["raw"].cpu_per_min, 3),
                "ratio": round(r["daemon-null"].cpu_s / r["raw"].cpu_s, 3),
                "frames_sent": sum(c.video_frames for c in fake.connections),
            }
        )
        print(f"... frames {w}x{h}: {out[-1]}", file=sys.stderr, flush=True)
    return out


async def tools(
    work: Path, cert: Path, key: Path, jpeg: Path, pa: Any, seconds: float
) -> list[dict]:
    out = []
    for n in TOOL_COUNTS:
        sub = work / f"tools-{n}"
        sub.mkdir()
        row = Row(sub, cert, key, jpeg, pa)

        def script(fake: Any, turn: int, n: int = n) -> None:
            calls = [(f"switch_{turn % n}", {"on": True})] if turn % 3 == 0 else None
            fake.script_turn(
                tool_calls=calls, reply_pcm=reply_pcm(turn, REPLY_S), reply_text="bench reply"
            )

        row.script = script
        client = await row.daemon("daemon-null", "null", talk=True)
        client.entry = (str(ROOT / "bench" / "tools_daemon.py"), str(n))
        r = (await row.run(seconds))["daemon-null"][-1]
        fake = row.slots[0].fake
        assert fake is not None
        setup = next((m for m in fake.received if "setup" in m), {})
        out.append(
            {
                "tools": n,
                "cpu_s_per_min": round(r.cpu_per_min, 3),
                "pss_mib": _mib(r.memory_kib["pss"]),
                "setup_bytes": len(json.dumps(setup, separators=(",", ":"))),
                "tool_calls_answered": len(fake.tool_responses),
                "turns": r.turns,
            }
        )
        print(f"... tools {n}: {out[-1]}", file=sys.stderr, flush=True)
    return out


async def main_async(args: argparse.Namespace) -> dict:
    work = Path(tempfile.mkdtemp(prefix="edge-scale-"))
    cert, key = make_tls(work)
    jpeg = make_jpeg(work / "frame.jpg")
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d")}
    with pulse() as pa:
        for name in args.rows:
            print(f"... {name}", file=sys.stderr, flush=True)
            sub = work / name
            sub.mkdir()
            if name == "length":
                report["length"] = await length(
                    sub, cert, key, jpeg, pa, args.minutes, args.go_away_s
                )
            elif name == "frames":
                report["frames"] = await frames(sub, cert, key, pa, args.seconds)
            elif name == "tools":
                report["tools"] = await tools(sub, cert, key, jpeg, pa, args.seconds)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scale",
        description=__doc__,
        formatter_class=argparse.RawTextHelpFormatter,
    )
    parser.add_argument("--rows", nargs="+", choices=("length", "frames", "tools"), required=True)
    parser.add_argument("--minutes", type=float, default=60.0, help="length: minutes talking")
    parser.add_argument("--seconds", type=float, default=40.0, help="frames, tools: each session")
    parser.add_argument(
        "--go-away-s", type=float, default=GO_AWAY_EVERY_S, help="length: goAway every"
    )
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("edge_daemon.fake_gemini.ws").setLevel(logging.ERROR)
    report = asyncio.run(main_async(args))
    out = args.out or RESULTS / f"scale-{'-'.join(args.rows)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    shown = {k: v for k, v in report.items() if k != "length"}
    if "length" in report:
        shown["length"] = {k: v for k, v in report["length"].items() if k != "points"}
    print(json.dumps(shown, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
