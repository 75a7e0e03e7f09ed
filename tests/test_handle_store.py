"""The resumption handle across restarts: kept for the service's window, for
the same setup, written atomically, mode 0600, not once per turn."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from edge_daemon.live import messages as m
from edge_daemon.live.handle_store import MIN_WRITE_INTERVAL_S, VALID_S, HandleStore
from edge_daemon.live.reconnect import Resumption


class Clocks:
    def __init__(self) -> None:
        self.wall = 1_800_000_000.0
        self.mono = 50.0


def store(path: Path, clocks: Clocks, fingerprint: str = "setup-a") -> HandleStore:
    return HandleStore(path, fingerprint, wall=lambda: clocks.wall, mono=lambda: clocks.mono)


def test_a_restart_within_the_window_resumes_the_same_conversation(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "state" / "resumption.json"
    first = Resumption(store(path, clocks))
    assert first.handle is None and not first.restored
    first.update(m.ResumptionUpdate("h-1", True))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    clocks.wall += 3600
    second = Resumption(store(path, clocks))
    assert second.handle == "h-1" and second.restored
    assert 3599 < (second.age_s or 0) < 3601


def test_a_handle_past_the_window_or_from_another_setup_or_the_future_is_dropped(
    tmp_path: Path,
) -> None:
    for shift, fingerprint in ((VALID_S + 1, "setup-a"), (10, "setup-b"), (-30, "setup-a")):
        clocks = Clocks()
        path = tmp_path / f"r{shift}{fingerprint}.json"
        store(path, clocks).save("h-old")
        clocks.wall += shift
        assert Resumption(store(path, clocks, fingerprint)).handle is None
        assert not path.exists()


def test_writes_are_spaced_and_the_last_handle_is_flushed_at_the_end(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "resumption.json"
    s = store(path, clocks)
    r = Resumption(s)
    r.update(m.ResumptionUpdate("h-1", True))
    clocks.mono += 1
    r.update(m.ResumptionUpdate("h-2", True))  # too soon after the last write
    assert json.loads(path.read_text())["handle"] == "h-1"
    clocks.mono += MIN_WRITE_INTERVAL_S
    r.update(m.ResumptionUpdate("h-3", True))
    assert json.loads(path.read_text())["handle"] == "h-3"
    clocks.mono += 1
    r.update(m.ResumptionUpdate("h-4", True))
    s.flush()
    assert json.loads(path.read_text())["handle"] == "h-4"
    assert [p.name for p in tmp_path.iterdir()] == ["resumption.json"]  # no temp file left


def test_a_stale_handle_dropped_by_the_link_is_gone_from_disk(tmp_path: Path) -> None:
    clocks = Clocks()
    path = tmp_path / "resumption.json"
    r = Resumption(store(path, clocks))
    r.update(m.ResumptionUpdate("h-1", True))
    r.drop()
    assert not path.exists()
    assert Resumption(store(path, clocks)).handle is None


def test_a_broken_file_starts_clean(tmp_path: Path) -> None:
    path = tmp_path / "resumption.json"
    path.write_text("{broken")
    assert Resumption(store(path, Clocks())).handle is None
    assert not path.exists()


def test_an_unwritable_directory_costs_only_the_restart(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    r = Resumption(store(blocker / "resumption.json", Clocks()))
    assert r.update(m.ResumptionUpdate("h-1", True))
    assert r.handle == "h-1"
