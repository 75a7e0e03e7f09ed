"""Tool calls through the daemon: mic audio held back during a blocking call,
cancellation reaching non-blocking calls, answers by id."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin
from test_daemon import rig

from edge_daemon.config import RelayToolConfig, ToolsConfig
from edge_daemon.tools.hardware import HardwareTools
from edge_daemon.tools.registry import Tool, ToolRegistry, function_declaration


async def test_mic_audio_waits_while_a_blocking_call_is_unanswered() -> None:
    release_tool = asyncio.Event()

    async def slow(_args: Mapping[str, Any]) -> Mapping[str, Any]:
        await release_tool.wait()
        return {"done": True}

    registry = ToolRegistry()
    registry.add(Tool("slow_thing", function_declaration("slow_thing", "Takes a while."), slow))
    async with rig(tools=registry) as r:
        (call_id,) = await r.fake.tool_call([("slow_thing", {})])
        await r.until(lambda: bool(r.daemon.tool_runner.blocking))
        r.daemon.press("test")
        start = r.daemon.counters.audio_in_chunks
        await r.until(lambda: r.daemon.counters.audio_in_chunks >= start + 10)
        # Talking, but nothing went up while the call was open.
        assert r.fake.audio_received_s() == 0
        release_tool.set()
        await r.fake.wait_for(lambda f: f.tool_responses)
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.4)
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        assert r.fake.tool_responses[0]["id"] == call_id
        assert not [v for v in r.fake.protocol_violations if "tool" in v]
        # activityStart, then the held audio, then activityEnd: in order, and
        # not one audio message before the answer that closed the call.
        received = r.fake.connections[0].received
        kinds = [k for m in received for k in m.get("realtimeInput", {})]
        assert kinds[0] == "activityStart" and kinds[-1] == "activityEnd"
        assert set(kinds[1:-1]) == {"audio"}
        answer = next(i for i, m in enumerate(received) if "toolResponse" in m)
        audio = [i for i, m in enumerate(received) if "audio" in m.get("realtimeInput", {})]
        assert answer < audio[0]


async def test_cancellation_reaches_a_non_blocking_relay_pulse() -> None:
    pins = MockFactory(pin_class=MockPWMPin)
    cfg = ToolsConfig(
        relay=(RelayToolConfig(name="pump", pin=27, min_switch_interval_s=0.0, active_high=True),),
        non_blocking=True,
    )
    hw = HardwareTools(cfg, pins, asyncio.get_running_loop())
    registry = ToolRegistry()
    hw.register(registry)
    try:
        async with rig(tools=registry) as r:
            (call_id,) = await r.fake.tool_call([("pump", {"on": True, "seconds": 30})])
            await r.until(lambda: pins.pin(27).state == 1)
            await r.fake.cancel_tool_calls([call_id])
            await r.until(lambda: pins.pin(27).state == 0)
            assert r.daemon.counters.tool_cancellations == 1
            # A cancelled call is never answered. The answer to a later call is
            # the witness: an answer to the cancelled one would have come first.
            (later,) = await r.fake.tool_call([("get_device_states", {})])
            await r.fake.wait_for(lambda f: any(t["id"] == later for t in f.tool_responses))
            assert [t["id"] for t in r.fake.tool_responses] == [later]
    finally:
        hw.close()
        pins.reset()
