"""One daemon in this process, wired as service.py wires it (hardware on mock
pins, the MQTT bridge, remote tools), against a FakeGemini and a real broker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge_daemon import hardware_setup
from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import Config, Secret, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini
from edge_daemon.live.reconnect import LinkSettings
from edge_daemon.live.session import Credentials
from edge_daemon.mqtt import MqttBridge
from edge_daemon.mqtt_setup import attach_mqtt, stop_mqtt

KEY = "mqtt-rig-key"


@dataclass
class MqttRig:
    fake: FakeGemini
    daemon: Daemon
    bridge: MqttBridge
    pins: MockFactory

    async def until(self, cond: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> None:
        """A daemon-side condition, polled with a generous deadline."""
        deadline = time.monotonic() + timeout_s
        while not cond():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what or cond}: state={self.daemon.state.value} "
                    f"mqtt={self.bridge.status()}"
                )
            await asyncio.sleep(0.01)

    async def state(self, wanted: State, timeout_s: float = 15.0) -> None:
        assert await self.daemon.wait_state(wanted, timeout_s), (
            f"never reached {wanted}; history={list(self.daemon.history)}"
        )

    def press_button(self) -> None:
        """A finger on the physical button (the mock pin it is wired to)."""
        self.pins.pin(self.daemon.cfg.button.pin).drive_low()

    def release_button(self) -> None:
        self.pins.pin(self.daemon.cfg.button.pin).drive_high()


@contextlib.asynccontextmanager
async def mqtt_rig(
    port: int,
    *,
    node_id: str = "den",
    overrides: Mapping[str, Any] | None = None,
    password: Secret | None = None,
    wait_connected: bool = True,
    wrap_dispatch: Callable[[Daemon], None] | None = None,
) -> AsyncIterator[MqttRig]:
    fake = FakeGemini(api_key=KEY, pace=8.0, use_speech=False)
    await fake.start()
    cfg = with_overrides(
        Config(),
        {
            "audio.backend": "null",
            "mqtt.host": "127.0.0.1",
            "mqtt.port": port,
            "mqtt.node_id": node_id,
            "mqtt.backoff_initial_s": 0.1,
            "mqtt.backoff_max_s": 0.5,
            **(overrides or {}),
        },
    )
    daemon = Daemon(
        cfg,
        mic=NullMicrophone(chunk_ms=40),
        speaker=NullSpeaker(),
        link_settings=LinkSettings(
            url=fake.url,
            credentials=Credentials(KEY),
            connect_timeout_s=5,
            setup_timeout_s=5,
            backoff_initial_s=0.05,
            backoff_max_s=0.2,
            config_error_backoff_s=30,
        ),
    )
    if wrap_dispatch is not None:
        wrap_dispatch(daemon)
    pins = MockFactory(pin_class=MockPWMPin)
    real_factory = hardware_setup.make_pin_factory
    # A device as on a Pi: real (mock-pinned) GPIO, no --simulate shortcuts,
    # so ctl and MQTT never count as a finger on the button.
    hardware_setup.make_pin_factory = lambda _simulate: pins  # type: ignore[assignment]
    try:
        hardware_setup.attach_hardware(daemon, cfg, simulate=False)
    finally:
        hardware_setup.make_pin_factory = real_factory  # type: ignore[assignment]
    bridge = attach_mqtt(daemon, cfg, password)
    assert bridge is not None
    daemon_task = asyncio.create_task(daemon.run(), name="daemon")
    bridge_task = asyncio.create_task(bridge.run(), name="mqtt")
    rig = MqttRig(fake, daemon, bridge, pins)
    try:
        await rig.state(State.IDLE)
        if wait_connected:
            await rig.until(lambda: bridge.counters["published"] > 0, what="first publish")
        yield rig
    finally:
        daemon.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(daemon_task, 10)
        await stop_mqtt(bridge, bridge_task)
        await fake.stop()
        pins.reset()
