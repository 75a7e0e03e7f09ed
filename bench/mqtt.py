"""Latency through an MQTT broker, on loopback: a real Mosquitto, the daemon as
its own process (``edge-daemon run --simulate``, its GPIO on mock pins), the
fake Gemini in this process, and a client here that reads and drives the
broker the way Home Assistant does (every topic from the discovery configs).

Over ``--runs`` repetitions:

- command -> turn start: PRESS published on the talk button's command topic
  until the ``activityStart`` arrives at the fake Gemini (the turn is open on
  the wire), and until the state topic says ``listening`` (what a dashboard
  sees);
- tool call -> broker publish: the model's answer to that turn calls a remote
  tool ([[tools.mqtt]]); from the ``toolCall`` leaving the fake until the
  tool's message arrives at a subscriber here;
- switch -> state: ON published on a relay's command topic until its state
  topic says ON (the relay switched on the model's own path, and said so).

Time stamps are ``time.monotonic()`` (one clock for every process on the
machine), taken when a message is handed over or read. Loopback hides the
network: on a Pi over Wi-Fi to a broker elsewhere add a round trip or two.

    python -m bench.mqtt --runs 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from edge_daemon.fake_gemini import FakeConnection, FakeGemini

KEY = "bench-key-not-secret"
NODE = "bench"
TOOL_TOPIC = "bench/lamp/set"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(1, round(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 95) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
    }


class StampingFake(FakeGemini):
    """The fake, noting when each activityStart arrived and each toolCall left."""

    def __init__(self, **knobs: Any) -> None:
        super().__init__(**knobs)
        self.activity_at: list[float] = []
        self.tool_call_at: list[float] = []

    async def _activity_start(self, conn: FakeConnection) -> None:
        self.activity_at.append(time.monotonic())
        await super()._activity_start(conn)

    async def _send(
        self, conn: FakeConnection, msg: dict[str, Any], record: dict[str, Any] | None = None
    ) -> None:
        if "toolCall" in msg:
            self.tool_call_at.append(time.monotonic())
        await super()._send(conn, msg, record)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_broker(work: Path, nodelay: bool) -> tuple[subprocess.Popen[bytes], int]:
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    conf = work / "mosquitto.conf"
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        + ("set_tcp_nodelay true\n" if nodelay else "")
    )
    proc = subprocess.Popen(
        [mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 15
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return proc, port
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("mosquitto did not start (apt-get install mosquitto)")
        time.sleep(0.02)


def daemon_config(work: Path, fake_url: str, port: int) -> Path:
    config = work / "bench.toml"
    config.write_text(
        f"""
[gemini]
endpoint = "{fake_url}"
[control]
socket = "{work / "ctl.sock"}"
keyboard = false
[state]
dir = "{work / "state"}"
[logging]
level = "warning"
[mqtt]
host = "127.0.0.1"
port = {port}
node_id = "{NODE}"
listen_s = 0.3
[[tools.relay]]
name = "pump"
pin = 27
min_switch_interval_s = 0.0
[[tools.mqtt]]
name = "bench_lamp"
description = "A lamp on the broker."
topic = "{TOOL_TOPIC}"
payload = '{{"state": {{state}}}}'
max_calls_per_minute = 600
[[tools.mqtt.parameters]]
name = "state"
type = "STRING"
enum = ["ON", "OFF"]
description = "on or off"
"""
    )
    return config


class Dashboard:
    """A broker client that stamps every message it reads."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.seen: defaultdict[str, list[tuple[float, bytes]]] = defaultdict(list)
        self.changed = asyncio.Event()

    async def read(self) -> None:
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.seen[message.topic.value].append((time.monotonic(), payload))
            self.changed.set()

    async def until(self, cond: Any, timeout_s: float = 30.0) -> Any:
        async with asyncio.timeout(timeout_s):
            while not (result := cond()):
                self.changed.clear()
                await self.changed.wait()
            return result

    def first_after(self, topic: str, payload: bytes, t0: float) -> float | None:
        return next((t for t, p in self.seen[topic] if t >= t0 and p == payload), None)

    def configs(self) -> dict[tuple[str, str], dict[str, Any]]:
        out = {}
        for topic, values in self.seen.items():
            parts = topic.split("/")
            if len(parts) == 5 and parts[2] == NODE and parts[4] == "config" and values[-1][1]:
                out[(parts[1], parts[3])] = json.loads(values[-1][1])
        return out


async def measure(runs: int, broker_nodelay: bool) -> dict[str, Any]:
    import aiomqtt

    work = Path(tempfile.mkdtemp(prefix="edge-bench-mqtt-"))
    broker, port = start_broker(work, broker_nodelay)
    fake = StampingFake(api_key=KEY, pace=20.0, use_speech=False)
    await fake.start()
    env = {**os.environ, "GEMINI_API_KEY": KEY, "XDG_STATE_HOME": str(work / "xdg")}
    env.pop("NOTIFY_SOCKET", None)
    daemon = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_daemon.cli",
        "run",
        "--simulate",
        "--config",
        str(daemon_config(work, fake.url, port)),
        env=env,
        stdin=subprocess.DEVNULL,
    )
    turn, tool, switch = [], [], []
    turn_state: list[float] = []
    try:
        # Nagle off here as in the daemon: else a PUBACK this client just sent
        # holds its next command back until the broker's delayed ACK (40 ms).
        nodelay = ((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),)
        async with aiomqtt.Client("127.0.0.1", port, socket_options=nodelay) as client:
            dash = Dashboard(client)
            reader = asyncio.create_task(dash.read())
            await client.subscribe("#", qos=1)
            await dash.until(lambda: len(dash.configs()) >= 8)
            found = dash.configs()
            talk = found[("button", "talk")]["command_topic"]
            state = found[("sensor", "state")]["state_topic"]
            relay = found[("switch", "relay_pump")]
            await dash.until(lambda: dash.seen[state] and dash.seen[state][-1][1] == b"idle")
            for _ in range(runs):
                # command -> turn start (wire), and -> "listening" on the state
                # topic; the model's answer to the turn calls the remote tool.
                fake.script_turn(tool_calls=[("bench_lamp", {"state": "ON"})])
                starts, calls = len(fake.activity_at), len(fake.tool_call_at)
                t0 = time.monotonic()
                await client.publish(talk, b"PRESS", qos=1)
                await dash.until(lambda n=starts: len(fake.activity_at) > n)
                turn.append(fake.activity_at[starts] - t0)
                seen = await dash.until(lambda t=t0: dash.first_after(state, b"listening", t))
                turn_state.append(seen - t0)

                # tool call -> the remote tool's publish on the broker
                arrived = await dash.until(
                    lambda t=t0: dash.first_after(TOOL_TOPIC, b'{"state": "ON"}', t)
                )
                tool.append(arrived - fake.tool_call_at[calls])
                await dash.until(lambda t=arrived: dash.first_after(state, b"idle", t))

                # switch -> state, and back off
                for word in (b"ON", b"OFF"):
                    t0 = time.monotonic()
                    await client.publish(relay["command_topic"], word, qos=1)
                    seen = await dash.until(
                        lambda t=t0, w=word: dash.first_after(relay["state_topic"], w, t)
                    )
                    if word == b"ON":
                        switch.append(seen - t0)
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await reader
    finally:
        if daemon.returncode is None:
            daemon.send_signal(signal.SIGTERM)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(daemon.wait(), 15)
            if daemon.returncode is None:
                daemon.kill()
                await daemon.wait()
        await fake.stop()
        broker.terminate()
        broker.wait(10)
        shutil.rmtree(work, ignore_errors=True)
    if fake.protocol_violations:
        raise RuntimeError(f"protocol violations: {fake.protocol_violations}")
    return {
        "bench": "mqtt",
        "runs": runs,
        "broker_tcp_nodelay": broker_nodelay,
        "command_to_activity_start": summary(turn),
        "command_to_state_listening": summary(turn_state),
        "tool_call_to_broker_publish": summary(tool),
        "switch_command_to_state": summary(switch),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt", description=__doc__)
    parser.add_argument("--runs", type=int, default=30, help="repetitions of each (default 30)")
    parser.add_argument(
        "--broker-nodelay",
        action="store_true",
        help="mosquitto with set_tcp_nodelay true (its default leaves Nagle on)",
    )
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("edge_daemon.fake_gemini.ws").setLevel(logging.ERROR)
    result = asyncio.run(measure(args.runs, args.broker_nodelay))
    for name in (
        "command_to_activity_start",
        "command_to_state_listening",
        "tool_call_to_broker_publish",
        "switch_command_to_state",
    ):
        s = result[name]
        print(
            f"{name:28s} p50 {s['p50_ms']:7.1f} ms   p95 {s['p95_ms']:7.1f} ms   "
            f"max {s['max_ms']:7.1f} ms   ({args.runs} runs)"
        )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
