"""The camera in the daemon: frames while talking, compression forced on, take_photo."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from io import BytesIO
from pathlib import Path

from PIL import Image
from test_daemon import Rig, rig, turn

from edge_daemon.camera.files import FileCamera
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.tools.photo import take_photo_tool
from edge_daemon.tools.registry import ToolRegistry


def jpeg_file(path: Path, size: tuple[int, int]) -> Path:
    Image.new("RGB", size, (200, 80, 20)).save(path, "JPEG", quality=80)
    return path


@contextlib.asynccontextmanager
async def camera_rig(image: Path, overrides: dict) -> AsyncIterator[Rig]:
    cfg = with_overrides(Config(), {"camera.backend": "file", **overrides})
    camera = FileCamera(str(image), max_side=cfg.camera.max_side, jpeg_quality=75)
    tools = ToolRegistry()
    daemons: list[Daemon] = []

    async def send_frame(jpeg: bytes) -> None:  # declared before setup, run after
        await daemons[0].send_frame(jpeg)

    tools.add(take_photo_tool(camera, send_frame))
    async with rig(camera=camera, tools=tools, pace=1.0, overrides=overrides) as r:
        daemons.append(r.daemon)
        yield r


def sizes_of_frames(fake: FakeGemini) -> list[tuple[int, int]]:
    out = []
    for msg in fake.messages_of("video"):
        data = base64.b64decode(msg["realtimeInput"]["video"]["data"])
        out.append(Image.open(BytesIO(data)).size)
    return out


async def test_frames_flow_only_while_talking_and_compression_is_forced_on(tmp_path: Path) -> None:
    image = jpeg_file(tmp_path / "big.jpg", (3000, 2000))
    overrides = {
        "gemini.context_window_compression": False,
        "camera.backend": "file",
        "camera.interval_s": 1.0,
    }
    async with camera_rig(image, overrides) as r:
        setup = r.fake.connections[0].setup
        assert setup["contextWindowCompression"] == {"slidingWindow": {}}
        ticker = r.daemon.ticker
        assert ticker is not None
        # Idle: the ticker ticks, and each tick is skipped; no frame goes up.
        await r.until(lambda: ticker.counters["skipped"] >= 1)
        assert r.fake.count("video") == 0
        await turn(r, seconds_of_audio=1.2)  # press kicks a frame at once, then 1/s
        await r.fake.wait_for(lambda f: f.count("video") >= 2, 10)
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed, 20)
        await r.state(State.IDLE)
        # After the turn the frames stop. Ticks run one after another, so once
        # one is skipped, the frame of any tick before it has gone up: from
        # there, two more skipped ticks (two seconds) must add no frame.
        idle_from = ticker.counters["skipped"]
        await r.until(lambda: ticker.counters["skipped"] >= idle_from + 1)
        frames, sent = r.fake.count("video"), ticker.counters["frames_sent"]
        await r.until(lambda: ticker.counters["skipped"] >= idle_from + 3, 10)
        assert r.fake.count("video") == frames and ticker.counters["frames_sent"] == sent
    # Every frame went up inside the turn: none before its activityStart.
    kinds = [k for msg in r.fake.connections[0].received for k in msg.get("realtimeInput", {})]
    assert "video" not in kinds[: kinds.index("activityStart")]
    assert frames == kinds.count("video") >= 2
    sizes = sizes_of_frames(r.fake)
    assert sizes and all(max(s) <= 1024 for s in sizes)
    assert sizes[0] == (1024, 683)
    assert not [v for v in r.fake.protocol_violations if "video" in v]


async def test_take_photo_sends_one_fresh_frame_and_answers(tmp_path: Path) -> None:
    image = jpeg_file(tmp_path / "small.jpg", (640, 480))
    async with camera_rig(image, {"camera.backend": "file"}) as r:
        declared = [
            d["name"]
            for t in r.fake.connections[0].setup.get("tools", [])
            for d in t["functionDeclarations"]
        ]
        assert "take_photo" in declared
        (call_id,) = await r.fake.tool_call([("take_photo", {})])
        await r.fake.wait_for(lambda f: f.tool_responses, 10)
        (resp,) = r.fake.tool_responses
        assert resp["id"] == call_id
        assert resp["response"]["output"] == {"sent": True, "width": 640, "height": 480}
        # The frame went up before the answer that says it was sent, and alone.
        order = [
            "video" if "video" in m.get("realtimeInput", {}) else next(iter(m))
            for m in r.fake.connections[0].received
            if "video" in m.get("realtimeInput", {}) or "toolResponse" in m
        ]
        assert order == ["video", "toolResponse"]
