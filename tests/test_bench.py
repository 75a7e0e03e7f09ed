"""The benchmark's own parts, quickly: the daemon's trace hook is off unless
asked for and then records what the bench reads; the bench's fake stamps and
its /proc readings are right; the raw client runs a short session against it.
The benchmark itself (``python -m bench``) is not a test: it takes minutes and
measures wall-clock performance, which a shared CI machine cannot promise.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT

sys.path.insert(0, str(ROOT))  # bench/ is a top-level package beside edge_daemon/

from bench.common import (
    REPLY_CHUNK,
    BenchFake,
    _proto3_json,
    cpu_seconds,
    latency_ms,
    make_jpeg,
    make_tls,
    percentile,
    reply_pcm,
    seq_of,
    status_kib,
    thread_cpu,
)
from edge_daemon import trace


def test_trace_is_off_by_default_and_records_when_asked(tmp_path: Path) -> None:
    assert "EDGE_DAEMON_TRACE" not in os.environ and trace.ON is False
    out = tmp_path / "trace.tsv"
    code = (
        "from edge_daemon import trace\n"
        "assert trace.ON\n"
        "trace.event('speaker_in', 7, 1.5)\n"
        "trace.event('press', 2.0)\n"
    )
    env = {**os.environ, "EDGE_DAEMON_TRACE": str(out)}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=ROOT)
    assert out.read_text().splitlines() == ["speaker_in\t7\t1.5", "press\t2.0\t0.0"]


def test_reply_audio_carries_a_sequence_number_per_chunk() -> None:
    pcm = reply_pcm(3, 0.2)
    chunks = [pcm[i : i + REPLY_CHUNK] for i in range(0, len(pcm), REPLY_CHUNK)]
    assert [seq_of(c) for c in chunks] == [300000 + k for k in range(len(chunks))]


def test_proc_readings_and_percentiles() -> None:
    t0 = cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:
        pass
    assert cpu_seconds(os.getpid()) - t0 >= 0.1
    assert status_kib(os.getpid(), "VmHWM") >= status_kib(os.getpid(), "VmRSS") > 0
    assert thread_cpu(os.getpid())["main"] > 0
    values = [i / 1000 for i in range(1, 101)]
    assert percentile(values, 99) == 0.099
    assert latency_ms(values) == {"n": 100, "p50": 50.5, "p99": 99.0, "max": 100.0}


def test_lenient_fake_reads_what_a_proto3_parser_reads() -> None:
    sdk = {"realtime_input": {"audio": {"data": "_-8=", "mime_type": "audio/pcm"}}}
    assert _proto3_json(sdk) == {
        "realtimeInput": {"audio": {"data": "/+8=", "mimeType": "audio/pcm"}}
    }


async def test_raw_client_session_against_the_bench_fake(tmp_path: Path) -> None:
    cert, key = make_tls(tmp_path)
    jpeg = make_jpeg(tmp_path / "frame.jpg")
    fake = BenchFake(cert, key, api_key="k", pace=8.0, use_speech=False)
    await fake.start()
    fake.script_turn(reply_pcm=reply_pcm(1, 0.4))
    result = tmp_path / "raw.json"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "bench" / "raw_client.py"),
        fake.url,
        str(jpeg),
        str(result),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "GEMINI_API_KEY": "k", "SSL_CERT_FILE": str(cert)},
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"READY\n"
        proc.stdin.write(b"press\n")
        await fake.wait_for(lambda f: f.audio_received_s() >= 0.2)
        proc.stdin.write(b"release\n")
        await fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        proc.stdin.write(b"quit\n")
        assert await asyncio.wait_for(proc.wait(), 30) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()
    got = json.loads(result.read_text())["audio"]
    assert [s for s, _ in got] == sorted(fake.audio_sent_at)  # every chunk, in order
    assert all(t >= fake.audio_sent_at[s] for s, t in got)  # one clock for both processes
    assert fake.setup_at and fake.activities == 1 and fake.connections[0].video_frames >= 1
    assert fake.protocol_violations == []


def _ci_report(talk_null: float, idle_quiet: float, raw_talk: float = 0.7) -> dict:
    return {
        "rows": {
            "talk-null": {"ratio": talk_null, "readings": {"raw": {"cpu_s_per_min": raw_talk}}},
            "idle": {
                "ratio": 500.0,  # against a raw client idling: shown, never held
                "ratio_streams": 2.0,
                "readings": {"daemon-null-idle": {"cpu_s_per_min": idle_quiet}},
            },
        }
    }


def test_the_ci_check_holds_ratios_to_their_record_within_a_quarter() -> None:
    from bench.footprint import ci_figures, ci_verdict

    baseline = {"talk-null.ratio": 1.4, "idle.ratio_streams": 2.0, "idle.null_share": 0.04}
    figures = ci_figures(_ci_report(1.4, 0.028))
    assert figures == {"talk-null.ratio": 1.4, "idle.ratio_streams": 2.0, "idle.null_share": 0.04}
    assert "idle.ratio" not in figures
    assert ci_verdict(_ci_report(1.74, 0.028), baseline) == []  # +24 %
    assert ci_verdict(_ci_report(1.76, 0.028), baseline) == ["talk-null.ratio"]  # +26 %
    # Idle on null audio: below 2 % of a talking client's cost is noise...
    assert ci_verdict(_ci_report(1.4, 0.028 + 0.7 * 0.019), baseline) == []
    # ...above it a regression, however the raw client idled.
    assert ci_verdict(_ci_report(1.4, 0.028 + 0.7 * 0.021), baseline) == ["idle.null_share"]


def test_the_recorded_ci_figures_are_the_held_ones() -> None:
    from bench.footprint import BASELINE, CI_KEYS

    recorded = json.loads(BASELINE.read_text())
    assert set(recorded) == set(CI_KEYS)
    assert all(isinstance(v, float) and v > 0 for v in recorded.values())
