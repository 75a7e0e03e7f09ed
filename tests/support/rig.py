"""An in-process daemon on fast simulated audio, against a FakeGemini, optionally
through a FaultProxy: the small rig the fault, fuzz and soak tests share."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from edge_daemon.audio.base import Microphone, Speaker
from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini

from .chaos import KEY, chaos_tools, link_settings, until
from .fault_proxy import FaultPlan, FaultProxy


@dataclass
class Rig:
    fake: FakeGemini
    daemon: Daemon
    task: asyncio.Task[None]
    proxy: FaultProxy | None = None
    executed: Counter[str] = field(default_factory=Counter)

    async def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        if not await until(cond, self.fake, self.daemon, timeout_s):
            raise AssertionError(
                f"condition not met within {timeout_s} s: state={self.daemon.state.value} "
                f"link={self.daemon.link.state.value} history="
                f"{[s for _, s in self.daemon.history]}"
            )

    async def state(self, wanted: State, timeout_s: float = 10.0) -> None:
        await self.until(lambda: self.daemon.state is wanted, timeout_s)

    async def turn(self, seconds_of_audio: float = 0.1) -> None:
        """Press, wait until the server heard ``seconds_of_audio``, release."""
        before = self.fake.audio_received_s()
        self.daemon.press("test")
        await self.fake.wait_for(lambda f: f.audio_received_s() >= before + seconds_of_audio)
        self.daemon.release("test")


@contextlib.asynccontextmanager
async def daemon_rig(
    *,
    pace: float = 25.0,
    overrides: Mapping[str, Any] | None = None,
    mic: Microphone | None = None,
    speaker: Speaker | None = None,
    proxy_plan: FaultPlan | None = None,
    proxy_seed: int = 0,
    daemon_factory: Callable[..., Daemon] = Daemon,
    **fake_knobs: Any,
) -> AsyncIterator[Rig]:
    """A live rig, yielded once the daemon is idle on a connected link.

    With ``proxy_plan`` the daemon dials a FaultProxy (faults off until the
    test sets ``rig.proxy.faults``). Audio runs 4x (mic) and 20x (speaker)
    faster than real time, so turns take milliseconds.
    """
    fake_knobs.setdefault("use_speech", False)
    fake = FakeGemini(api_key=KEY, pace=pace, **fake_knobs)
    await fake.start()
    proxy = None
    url = fake.url
    if proxy_plan is not None:
        proxy = FaultProxy(url, rng=random.Random(proxy_seed), plan=proxy_plan, faults=False)
        await proxy.start()
        url = proxy.url
    executed: Counter[str] = Counter()
    cfg = with_overrides(
        Config(), {"audio.backend": "null", "audio.preroll_ms": 0, **(overrides or {})}
    )
    daemon = daemon_factory(
        cfg,
        mic=mic or NullMicrophone(chunk_ms=cfg.audio.chunk_ms, speed=4.0),
        speaker=speaker or NullSpeaker(speed=20.0),
        link_settings=link_settings(url),
        tools=chaos_tools(executed),
    )
    task = asyncio.create_task(daemon.run(), name="daemon")
    rig = Rig(fake, daemon, task, proxy, executed)
    try:
        await rig.state(State.IDLE)
        yield rig
    finally:
        daemon.stop()
        try:
            await asyncio.wait_for(asyncio.shield(task), 10)
        finally:
            if proxy is not None:
                await proxy.stop()
            await fake.stop()
