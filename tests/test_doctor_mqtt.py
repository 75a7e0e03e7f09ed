"""``edge-daemon doctor``'s broker check, against a real Mosquitto: off, a
round trip, a refused login, a broker that is not there, and a doctor that
never knocks the running daemon off the broker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.broker import Broker, free_port, running_broker
from support.mqtt_rig import mqtt_rig

from edge_daemon import doctor
from edge_daemon.config import Config, MqttConfig


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    yield from running_broker(tmp_path)


def check(cfg: Config, tmp_path: Path, env: dict[str, str] | None = None) -> doctor.Check:
    return doctor.check_mqtt(cfg, env or {}, password_file=tmp_path / "no-such-file")


def test_off_without_a_broker(tmp_path: Path) -> None:
    result = check(Config(), tmp_path)
    assert (result.status, result.detail) == ("SKIP", "off ([mqtt] host is empty)")


def test_a_round_trip_through_the_broker(broker: Broker, tmp_path: Path) -> None:
    result = check(Config(mqtt=MqttConfig(host="127.0.0.1", port=broker.port)), tmp_path)
    assert result.status == "PASS", result
    assert "anonymously" in result.detail and "round trip in" in result.detail


def test_logins(tmp_path: Path) -> None:
    b = Broker(tmp_path, users={"den": "right-password-1"})
    b.start()
    try:
        m = MqttConfig(host="127.0.0.1", port=b.port, username="den", password_file="pw")
        (tmp_path / "pw").write_text("right-password-1\n")
        right = check(Config(mqtt=m, source=str(tmp_path / "c.toml")), tmp_path)
        assert right.status == "PASS" and "as den" in right.detail
        (tmp_path / "pw").write_text("wrong-password-1\n")
        wrong = check(Config(mqtt=m, source=str(tmp_path / "c.toml")), tmp_path)
        assert wrong.status == "FAIL" and "refused the login as den" in wrong.detail
        assert "--mqtt-password-file" in wrong.fix
        assert "wrong-password" not in wrong.detail + wrong.fix
        # No password_file: the credential the installer stored for the service.
        stored = tmp_path / "mqtt-password"
        stored.write_text("right-password-1\n")
        m = MqttConfig(host="127.0.0.1", port=b.port, username="den")
        installed = doctor.check_mqtt(Config(mqtt=m), {}, password_file=stored)
        assert installed.status == "PASS", installed
    finally:
        b.stop()


def test_a_broker_that_is_not_there(tmp_path: Path) -> None:
    port = free_port()
    result = check(Config(mqtt=MqttConfig(host="127.0.0.1", port=port)), tmp_path)
    assert result.status == "FAIL" and "refused" in result.detail.lower()
    assert f"nc -vz 127.0.0.1 {port}" in result.fix


async def test_the_doctor_leaves_the_running_daemon_connected(
    broker: Broker, tmp_path: Path
) -> None:
    async with mqtt_rig(broker.port) as r:
        cfg = r.daemon.cfg
        result = await asyncio.to_thread(check, cfg, tmp_path)
        assert result.status == "PASS", result
        assert r.bridge.status()["connected"] and r.bridge.link.connects == 1
        assert r.bridge.link.failures == 0


def test_the_report_names_the_check(broker: Broker, tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\n')
    machine = doctor.Machine(root=tmp_path, run=lambda argv: doctor.Completed(127), env={})
    checks = {
        c.name: c
        for c in doctor.run_checks(doctor.Options(config=str(cfg), simulate=True), machine)
    }
    assert checks["mqtt"].status == "PASS", checks["mqtt"]
