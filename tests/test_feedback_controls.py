"""Feedback sounds, mute (ctl and a GPIO switch, with its LED pattern), the
volume (ctl and buttons, kept across restarts) and hook commands."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from support.rig import daemon_rig

from edge_daemon import hardware_setup
from edge_daemon.audio.earcons import NOTES, earcon
from edge_daemon.config import Config, HooksConfig, with_overrides
from edge_daemon.daemon import State
from edge_daemon.hooks import Hooks
from edge_daemon.volume import FILE_NAME, Volume


def test_every_earcon_is_short_bounded_and_clickless() -> None:
    for name in NOTES:
        pcm = earcon(name, 0.5)
        samples = memoryview(pcm).cast("h")
        assert 0.05 <= len(samples) / 24000 <= 0.5, name
        assert max(abs(s) for s in samples) <= 0.5 * 32767 + 1
        # Fades: it starts and ends at (near) silence.
        assert abs(samples[0]) < 200 and abs(samples[-1]) < 200, name
    assert earcon("wake") != earcon("listen_end")


async def test_volume_is_set_applied_and_kept_across_restarts(tmp_path: Path) -> None:
    state = {"state.dir": str(tmp_path)}
    async with daemon_rig(overrides=state) as rig:
        reply = await rig.daemon.control({"cmd": "volume", "level": 40})
        assert reply == {"ok": True, "state": "idle", "volume": 40}
        assert rig.daemon.speaker.volume == pytest.approx(0.4)
        for bad in (101, -1, 50.5, "10", True, None):
            refused = await rig.daemon.control({"cmd": "volume", "level": bad})
            assert refused["ok"] is False and "0 to 100" in refused["error"], bad
        assert rig.daemon.volume.level == 40
        assert rig.daemon.status()["volume"] == 40
        assert rig.daemon.feedback.played == ["volume"]
    assert json.loads((tmp_path / FILE_NAME).read_text()) == {"level": 40}
    async with daemon_rig(overrides=state) as rig:
        assert rig.daemon.volume.level == 40
        assert rig.daemon.speaker.volume == pytest.approx(0.4)


def test_a_broken_volume_file_means_full_volume(tmp_path: Path) -> None:
    class Spk:
        volume = 1.5

    for text in ("{", '{"level": 300}', '{"level": true}', "[]"):
        (tmp_path / FILE_NAME).write_text(text)
        spk = Spk()
        assert Volume(spk, 1.5, tmp_path / FILE_NAME).level == 100  # type: ignore[arg-type]
        assert spk.volume == 1.5


async def test_mute_by_ctl_ends_a_turn_and_refuses_new_ones() -> None:
    async with daemon_rig() as rig:
        d = rig.daemon
        d.press("button")
        await rig.state(State.LISTENING)
        reply = await d.control({"cmd": "mute", "on": True})
        assert reply["ok"] and reply["muted"] is True and not d.talking
        d.press("button")
        assert not d.talking
        assert (await d.control({"cmd": "mute", "on": "yes"}))["ok"] is False
        await d.control({"cmd": "mute", "on": False})
        d.press("button")
        assert d.talking
        assert d.feedback.played == ["mute", "mute", "unmute"]
        assert d.status()["muted"] is False


@pytest.fixture
def mock_pins(monkeypatch: pytest.MonkeyPatch) -> MockFactory:
    factory = MockFactory(pin_class=MockPWMPin)
    monkeypatch.setattr(hardware_setup, "make_pin_factory", lambda _simulate: factory)
    yield factory
    factory.reset()


async def test_a_mute_switch_mutes_while_closed_and_the_led_says_so(mock_pins, tmp_path) -> None:
    overrides = {
        "mute.pin": 5,
        "volume.up_pin": 6,
        "volume.down_pin": 13,
        "status_led.kind": "led",
        "state.dir": str(tmp_path),
    }
    async with daemon_rig(overrides=overrides) as rig:
        d = rig.daemon
        hardware_setup.attach_hardware(d, d.cfg, simulate=True)
        assert d.status()["status_led"]["pattern"] == "beacon"
        mock_pins.pin(5).drive_low()  # the switch closes
        await rig.until(lambda: d.muted)
        assert d.status()["status_led"]["pattern"] == "muted"
        mock_pins.pin(5).drive_high()
        await rig.until(lambda: not d.muted)
        assert d.status()["status_led"]["pattern"] == "beacon"
        for pin, level in ((13, 90), (13, 80), (6, 90)):
            mock_pins.pin(pin).drive_low()
            mock_pins.pin(pin).drive_high()
            await rig.until(lambda level=level: d.volume.level == level)


def hook_script(tmp_path: Path, name: str, body: str = "") -> str:
    out = tmp_path / f"{name}.jsonl"
    script = tmp_path / f"{name}.py"
    script.write_text(
        "import json, os, sys\n"
        f"{body}\n"
        f"with open({str(out)!r}, 'a') as f:\n"
        "    f.write(json.dumps({'argv': sys.argv[1:], 'event': os.environ['EDGE_EVENT'],"
        " 'prev': os.environ.get('EDGE_PREV_STATE')}) + '\\n')\n"
    )
    return f"{sys.executable} {script}"


def lines(tmp_path: Path, name: str) -> list[dict]:
    path = tmp_path / f"{name}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


async def test_hooks_run_without_a_shell_with_the_event_as_argument(tmp_path: Path) -> None:
    overrides = {
        "hooks.state": hook_script(tmp_path, "state"),
        "hooks.mute": hook_script(tmp_path, "mute") + " 'two words'",
    }
    async with daemon_rig(overrides=overrides) as rig:
        d = rig.daemon
        await rig.turn()
        await rig.state(State.IDLE)
        await d.control({"cmd": "mute", "on": True})
        await rig.until(lambda: not d.hooks.busy, 20)
    assert lines(tmp_path, "mute") == [{"argv": ["two words", "on"], "event": "mute", "prev": None}]
    seen = [x["argv"] for x in lines(tmp_path, "state")]
    assert all(x["event"] == "state" for x in lines(tmp_path, "state"))
    # One run at a time, the newest waiting: a quick turn may coalesce some
    # states, but they come in order and the last one is always heard.
    first, *rest = lines(tmp_path, "state")
    assert first["argv"] == ["idle"] and first["prev"] == "starting"
    turn = ["listening", "thinking", "speaking", "idle"]
    assert [x["argv"][0] for x in rest] == [s for s in turn if [s] in seen[1:]]
    assert rest[-1]["argv"] == ["idle"]


async def test_a_hook_that_hangs_is_killed_and_one_that_is_missing_is_counted(tmp_path) -> None:
    cfg = with_overrides(
        Config(),
        {
            "hooks.wake": hook_script(tmp_path, "slow", "import time; time.sleep(60)"),
            "hooks.link": str(tmp_path / "no-such-program"),
            "hooks.timeout_s": 0.5,
        },
    )
    hooks = Hooks(cfg.hooks)
    hooks.fire("wake", "okay_nabu")
    hooks.fire("wake", "one")  # still running: waits ...
    hooks.fire("wake", "two")  # ... and is replaced by the newest
    hooks.fire("link", "down")
    await hooks.close()  # the one waiting is dropped on the way out
    assert hooks.counters == {"runs": 2, "failures": 1, "timeouts": 1, "coalesced": 1}
    assert lines(tmp_path, "slow") == []  # killed before it wrote
    assert Hooks(HooksConfig()).argv == {}
