"""`edge-daemon safe-state`: every configured output claimed at its off level
(from the first level the pin takes), one record per pin, and the unit runs
it before each start and after every kind of stop."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT
from gpiozero.pins.mock import MockFactory, MockPWMPin

from edge_daemon import safe_state
from edge_daemon.config import load_config

CONFIG = """
[status_led]
kind = "led"
pin = 25
active_high = false
[[tools.relay]]
name = "pump"
pin = 27
active_high = false
[[tools.relay]]
name = "heater"
pin = 22
active_high = true
[[tools.led]]
name = "lamp"
pin = 17
"""


class HistoryPin(MockPWMPin):
    def __init__(self, factory: Any, info: Any, **kwargs: Any) -> None:
        self.levels: list[float] = []
        super().__init__(factory, info, **kwargs)

    def _set_state(self, value: Any) -> None:
        super()._set_state(value)
        self.levels.append(float(self.state))


def test_each_output_is_claimed_at_its_off_level_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG)
    cfg = load_config(path, env={})
    factory = MockFactory(pin_class=HistoryPin)
    import edge_daemon.hardware.pins as pins

    monkeypatch.setattr(pins, "make_pin_factory", lambda simulate: factory)
    try:
        assert safe_state.drive_off(cfg, simulate=True) == 0
        # One level each, from the claim on: never "on" for an instant.
        assert {n: factory.pin(n).levels for n in (25, 27, 22, 17)} == {
            25: [1.0],  # active-low status LED: off is high
            27: [1.0],  # active-low relay module: off is high
            22: [0.0],
            17: [0.0],
        }
    finally:
        factory.reset()


def test_the_command_logs_one_record_per_pin_and_exits_0(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(CONFIG + '[logging]\ntarget = "stderr"\n')
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_daemon.cli",
            "safe-state",
            "--simulate",
            "--config",
            str(path),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    records = [ln for ln in done.stderr.splitlines() if "EDGE_EVENT=safe_state" in ln]
    assert len(records) == 4, done.stderr
    pump = next(r for r in records if "pump" in r)
    assert "GPIO27 off (pin high, active-low)" in pump and "EDGE_LEVEL=1" in pump
    assert "Traceback" not in done.stderr


def test_a_broken_config_is_exit_78_in_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[[tools.relay]]\nname = 'pump'\npin = 27\n")  # no polarity
    done = subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", "safe-state", "--config", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert done.returncode == 78
    assert len(done.stderr.strip().splitlines()) == 1 and "active_high" in done.stderr


def test_the_unit_runs_it_before_each_start_and_after_every_stop() -> None:
    unit = (ROOT / "systemd" / "edge-daemon.service").read_text().splitlines()
    command = (
        "/opt/edge-daemon/venv/bin/edge-daemon safe-state --config /etc/edge-daemon/config.toml"
    )
    assert f"ExecStartPre=-{command}" in unit
    assert f"ExecStopPost=-{command}" in unit
    for limit in ("LimitCORE=0", "MemoryHigh=160M", "MemoryMax=256M"):
        assert limit in unit


def test_it_says_whether_it_runs_before_a_start_or_after_which_kind_of_stop() -> None:
    assert safe_state.why_now({}) == "start"
    killed = {"SERVICE_RESULT": "signal", "EXIT_CODE": "killed", "EXIT_STATUS": "KILL"}
    assert safe_state.why_now(killed) == "stop:signal:killed:KILL"
