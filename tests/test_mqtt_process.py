"""Whole daemons (``edge-daemon run --simulate``) on a real Mosquitto: a fleet
on one broker, a ``kill -9`` seen through the last will, a clean stop, and the
password handed over as a systemd credential."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import DaemonProcess
from support.broker import Broker, home_assistant, running_broker

RELAY = ("switch", "relay_pump")
TALK = ("button", "talk")
STATE = ("sensor", "state")
ENTITIES = 8  # state, link, talk, announce, the relay, three diagnostics


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def spawn(
    tmp_path: Path, env: dict[str, str], node: str, port: int, extra: str = ""
) -> DaemonProcess:
    sock = tmp_path / f"{node}.sock"
    config = tmp_path / f"{node}.toml"
    config.write_text(
        f"""
[control]
socket = "{sock}"
keyboard = false
[state]
dir = "{tmp_path / node}"
[mqtt]
host = "127.0.0.1"
port = {port}
node_id = "{node}"
listen_s = 0.5
backoff_initial_s = 0.1
backoff_max_s = 0.5
{extra}
[[tools.relay]]
name = "pump"
pin = 27
active_high = true
min_switch_interval_s = 0.0
"""
    )
    return DaemonProcess(config, sock, tmp_path / f"{node}.log", env, ("--simulate",))


async def test_two_daemons_on_one_broker_stay_apart(
    broker: Broker, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    kitchen = spawn(tmp_path, daemon_env, "kitchen", broker.port)
    hall = spawn(tmp_path, daemon_env, "hall", broker.port)
    try:
        await kitchen.ready()
        await hall.ready()
        async with home_assistant(broker.port) as ha:
            k = await ha.found("kitchen", ENTITIES)
            h = await ha.found("hall", ENTITIES)
            assert not {c["unique_id"] for c in k.values()} & {c["unique_id"] for c in h.values()}
            assert k[STATE]["device"]["identifiers"] != h[STATE]["device"]["identifiers"]
            for node in (k, h):
                await ha.value(node[STATE]["availability_topic"], "online")
                await ha.value(node[STATE]["state_topic"], "idle")
                await ha.value(node[RELAY]["state_topic"], "OFF")

            # The kitchen's relay, switched from Home Assistant; the hall's talk button.
            await ha.send(k[RELAY]["command_topic"], k[RELAY]["payload_on"])
            await ha.value(k[RELAY]["state_topic"], "ON")
            await ha.send(h[TALK]["command_topic"], h[TALK]["payload_press"])
            await ha.value(h[STATE]["state_topic"], "listening")
            await ha.value(h[STATE]["state_topic"], "idle", timeout_s=30)

            k_status, h_status = await kitchen.ctl("status"), await hall.ctl("status")
            assert k_status["devices"]["pump"]["on"] is True
            assert h_status["devices"]["pump"]["on"] is False
            assert [c["topic"] for c in k_status["mqtt"]["recent_commands"]] == [
                k[RELAY]["command_topic"]
            ]
            assert [c["topic"] for c in h_status["mqtt"]["recent_commands"]] == [
                h[TALK]["command_topic"]
            ]
            # Each heard only its own: the other's topics never moved.
            assert ha.history[h[RELAY]["state_topic"]] == [b"OFF"]
            assert ha.history[k[STATE]["state_topic"]] == [b"idle"]
            assert "listening" not in [s["state"] for s in k_status["history"]]
    finally:
        kitchen.stop()
        hall.stop()
    assert "mqtt: device from edge-daemon/kitchen/relay/pump/set" in kitchen.log()
    assert "mqtt: tap from edge-daemon/hall/listen" in hall.log()


async def test_kill_9_shows_offline_through_the_last_will(
    broker: Broker, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    daemon = spawn(tmp_path, daemon_env, "den", broker.port)
    try:
        await daemon.ready()
        async with home_assistant(broker.port) as ha:
            found = await ha.found("den", ENTITIES)
            availability = found[STATE]["availability_topic"]
            await ha.value(availability, "online")
            daemon.proc.kill()  # SIGKILL: no goodbye of its own
            daemon.proc.wait(10)
            await ha.value(availability, "offline")
            assert ha.history[availability] == [b"online", b"offline"]
        # Retained: a dashboard that opens later sees it too.
        async with home_assistant(broker.port) as later:
            await later.value(availability, "offline")
    finally:
        daemon.stop()


async def test_a_clean_stop_publishes_the_safe_state_then_offline(
    broker: Broker, tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    daemon = spawn(tmp_path, daemon_env, "den", broker.port)
    try:
        await daemon.ready()
        async with home_assistant(broker.port) as ha:
            found = await ha.found("den", ENTITIES)
            availability = found[STATE]["availability_topic"]
            await ha.value(availability, "online")
            await ha.send(found[RELAY]["command_topic"], "ON")
            await ha.value(found[RELAY]["state_topic"], "ON")
            assert daemon.stop() == 0  # SIGTERM
            await ha.value(availability, "offline")
            # The relay went off at shutdown, and the dashboard heard it first.
            assert ha.history[found[RELAY]["state_topic"]] == [b"OFF", b"ON", b"OFF"]
    finally:
        daemon.stop()


async def test_the_password_comes_from_the_systemd_credential(
    tmp_path: Path, daemon_env: dict[str, str]
) -> None:
    password = "s3cret-from-systemd"
    b = Broker(tmp_path, users={"den": password, "ha": "ha-password-1"})
    b.start()
    creds = tmp_path / "credentials"
    creds.mkdir()
    (creds / "mqtt-password").write_text(password + "\n")
    env = {**daemon_env, "CREDENTIALS_DIRECTORY": str(creds)}
    daemon = spawn(tmp_path, env, "den", b.port, extra='username = "den"')
    try:
        await daemon.ready()
        async with home_assistant(b.port, username="ha", password="ha-password-1") as ha:
            found = await ha.found("den", ENTITIES)
            await ha.value(found[STATE]["availability_topic"], "online")
        status = await daemon.ctl("status")
        assert status["mqtt"]["connected"] is True and status["mqtt"]["failures"] == 0
    finally:
        daemon.stop()
        b.stop()
    assert password not in daemon.log()
