"""Every subcommand, given bad arguments, missing files and no daemon, ends with
at most one line on stderr and the exit status exits.py gives it: never a
traceback. And `ctl` with no config and no --socket finds a `run --simulate`
started the same way (the README's quick start)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import ROOT, DaemonProcess

from edge_daemon import exits
from edge_daemon.cli import build_parser


@dataclass(frozen=True)
class Case:
    argv: tuple[str, ...]
    status: int
    says: str = ""  # a piece of the stderr line


def cli(argv: tuple[str, ...], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


@pytest.fixture
def user_env(tmp_path: Path) -> dict[str, str]:
    """A desktop user's environment: no config named, no key, a runtime dir of
    their own (where `run --simulate` puts its socket)."""
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("EDGE_DAEMON_CONFIG", "GEMINI_API_KEY", "NOTIFY_SOCKET", "WATCHDOG_USEC")
    }
    env["XDG_RUNTIME_DIR"] = str(runtime)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def assert_one_clean_line(case: Case, done: subprocess.CompletedProcess[str]) -> None:
    what = f"{' '.join(case.argv)!r}: status {done.returncode}, stderr {done.stderr!r}"
    assert "Traceback" not in done.stderr + done.stdout, what
    assert done.returncode == case.status, what
    if case.status == exits.USAGE and done.stderr.startswith("usage: edge-daemon"):
        # argparse: the usage, then one error line.
        assert done.stderr.strip().splitlines()[-1].startswith("edge-daemon"), what
    elif case.status != exits.OK:
        assert len(done.stderr.strip().splitlines()) == 1, what
    assert case.says in done.stderr, what


def test_every_subcommand_is_walked() -> None:
    """A new subcommand must join the walk below."""
    parser = build_parser(["fake-server"])
    sub = next(a for a in parser._actions if a.dest == "command")
    walked = {c.argv[0] for c in NO_DAEMON if c.argv}
    assert set(sub.choices) <= walked, set(sub.choices) - walked  # type: ignore[union-attr]


def _files(tmp: Path) -> dict[str, Path]:
    broken = tmp / "broken.toml"
    broken.write_text("[audio\n")
    wrong = tmp / "wrong.toml"
    wrong.write_text("[audio]\nchunk_ms = 400\n")
    nowake = tmp / "nowake.toml"
    (tmp / "key.txt").write_text("a-key-for-no-server\n")
    # Everything else fine (a key, an endpoint, no sound card needed): only
    # the wake word model is missing.
    nowake.write_text(
        '[gemini]\nendpoint = "ws://127.0.0.1:9/ws"\napi_key_file = "key.txt"\n'
        '[audio]\nbackend = "null"\n'
        f'[wake]\nmodel = "{tmp / "no-such-model.json"}"\n'
        '[control]\nkeyboard = false\n[logging]\nlevel = "error"\n'
    )
    return {
        "broken": broken,
        "wrong": wrong,
        "nowake": nowake,
        "missing": tmp / "missing.toml",
        "dir": tmp,
    }


NO_DAEMON: list[Case] = [
    Case((), exits.USAGE),
    Case(("frobnicate",), exits.USAGE, "invalid choice"),
    Case(("run", "--bogus"), exits.USAGE),
    Case(("run", "--config", "{missing}"), exits.CONFIG, "file not found"),
    Case(("run", "--config", "{broken}"), exits.CONFIG, "TOML syntax error"),
    Case(("run", "--config", "{wrong}"), exits.CONFIG, "audio.chunk_ms"),
    Case(("run", "--config", "{dir}"), exits.CONFIG, "cannot read"),
    Case(("run", "--config", "{nowake}"), exits.CONFIG, "no-such-model.json"),
    Case(("check-config", "--config", "{missing}"), exits.CONFIG, "file not found"),
    Case(("check-config", "--config", "{wrong}"), exits.CONFIG, "audio.chunk_ms"),
    Case(("check-config", "extra"), exits.USAGE),
    Case(("ctl",), exits.USAGE),
    Case(("ctl", "tap", "soon"), exits.USAGE, "invalid float"),
    Case(("ctl", "wait"), exits.USAGE),
    Case(("ctl", "mute"), exits.USAGE),
    Case(("ctl", "mute", "maybe"), exits.USAGE, "invalid choice"),
    Case(("ctl", "volume"), exits.USAGE),
    Case(("ctl", "volume", "loud"), exits.USAGE, "not a whole number"),
    Case(("ctl", "volume", "101"), exits.USAGE, "not from 0 to 100"),
    Case(("ctl", "mute", "on"), exits.UNAVAILABLE, "cannot reach the daemon"),
    Case(("ctl", "volume", "50"), exits.UNAVAILABLE, "cannot reach the daemon"),
    Case(("ctl", "status"), exits.UNAVAILABLE, "is it running?"),
    Case(("ctl", "press"), exits.UNAVAILABLE, "cannot reach the daemon"),
    Case(("ctl", "say", "hello"), exits.UNAVAILABLE, "cannot reach the daemon"),
    Case(("ctl", "wait", "idle"), exits.UNAVAILABLE, "cannot reach the daemon"),
    Case(("ctl", "--socket", "{missing}", "status"), exits.UNAVAILABLE, "is it running?"),
    # A path that is not a socket at all.
    Case(("ctl", "--socket", "{broken}", "status"), exits.UNAVAILABLE, "cannot reach"),
    Case(("ctl", "--config", "{missing}", "status"), exits.CONFIG, "file not found"),
    Case(("ctl", "--config", "{broken}", "status"), exits.CONFIG, "TOML syntax error"),
    Case(("devices", "--all"), exits.USAGE),
    Case(("doctor", "--bogus"), exits.USAGE),
    Case(("fake-server", "--port", "eighty"), exits.USAGE, "invalid int"),
    Case(("safe-state", "--config", "{missing}"), exits.CONFIG, "file not found"),
    Case(("safe-state", "--config", "{broken}"), exits.CONFIG, "TOML syntax error"),
    Case(("safe-state", "--bogus"), exits.USAGE),
    Case(("mint-token", "--expire", "soon"), exits.USAGE, "not a duration"),
    Case(("mint-token", "--expire", "30h"), exits.USAGE, "under 20 hours"),
    Case(("mint-token",), exits.CONFIG, "no API key"),
    Case(("mint-token", "--config", "{missing}"), exits.CONFIG, "file not found"),
    Case(("mint-token", "--api-key-file", "{missing}"), exits.CONFIG, "cannot read"),
    Case(("mint-token", "--uses", "-1", "--api-key-file", "{wrong}"), exits.USAGE, "--uses"),
    Case(
        ("mint-token", "--new-session", "2h", "--expire", "1h", "--api-key-file", "{wrong}"),
        exits.USAGE,
        "--new-session",
    ),
]


def _expand(case: Case, files: dict[str, Path]) -> Case:
    argv = tuple(a.format(**{k: str(v) for k, v in files.items()}) for a in case.argv)
    return Case(argv, case.status, case.says)


def test_bad_arguments_and_no_daemon_end_in_one_line(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    files = _files(tmp_path)
    for case in NO_DAEMON:
        case = _expand(case, files)
        assert_one_clean_line(case, cli(case.argv, user_env))


def test_doctor_with_a_missing_config_reports_instead_of_crashing(
    tmp_path: Path, user_env: dict[str, str]
) -> None:
    done = cli(("doctor", "--json", "--config", str(tmp_path / "missing.toml")), user_env)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode == exits.FAILED
    assert "file not found" in done.stdout


def test_fake_server_on_a_busy_port_says_so(user_env: dict[str, str]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = cli(("fake-server", "--port", str(port)), user_env)
    assert "Traceback" not in done.stderr + done.stdout
    assert done.returncode != exits.OK and "cannot listen" in done.stderr


@pytest.fixture
def simulated(tmp_path: Path, user_env: dict[str, str]) -> Iterator[DaemonProcess]:
    """`edge-daemon run --simulate`, no config, no --socket: the quick start."""
    sock = Path(user_env["XDG_RUNTIME_DIR"]) / "edge-daemon" / "control.sock"
    daemon = DaemonProcess(None, sock, tmp_path / "d.log", user_env, ("--simulate",))
    try:
        yield daemon
    finally:
        daemon.stop()


async def test_ctl_finds_a_simulated_daemon_without_config_or_socket(
    simulated: DaemonProcess, user_env: dict[str, str]
) -> None:
    await simulated.ready(60)
    assert simulated.socket.exists(), simulated.log()
    done = cli(("ctl", "status"), user_env)
    assert done.returncode == exits.OK, done.stderr + simulated.log()
    assert '"state"' in done.stdout
    # Bad requests a running daemon refuses: a clear "no", not a crash.
    for case in (
        Case(("ctl", "wait", "asleep", "--timeout", "5"), exits.FAILED),
        Case(("ctl", "tap", "-3"), exits.FAILED),
        Case(("ctl", "tap", "3600"), exits.FAILED),
        Case(("ctl", "say", "   "), exits.FAILED),
        Case(("ctl", "wait", "listening", "--timeout", "2"), exits.FAILED),
    ):
        done = cli(case.argv, user_env)
        assert "Traceback" not in done.stderr + done.stdout, done.stderr
        assert done.returncode == case.status, (case, done.stdout, done.stderr)
        assert '"ok": false' in done.stdout, (case, done.stdout)
    assert simulated.proc.poll() is None, simulated.log()


def test_ctl_with_an_unreadable_default_config_still_finds_the_user_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broken or unreadable /etc/edge-daemon/config.toml (the installed
    service's) must not stop `ctl` from trying: it falls back to the default
    service socket, then the user's."""
    from edge_daemon import cli as cli_module
    from edge_daemon import config

    broken = tmp_path / "etc-config.toml"
    broken.write_text("[control\n")
    monkeypatch.setattr(config, "DEFAULT_CONFIG_PATH", str(broken))
    monkeypatch.delenv("EDGE_DAEMON_CONFIG", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    status = cli_module.main(["ctl", "status"])
    err = capsys.readouterr().err
    assert status == exits.UNAVAILABLE, err
    assert str(tmp_path / "edge-daemon" / "control.sock") in err
    assert len(err.strip().splitlines()) == 1


def test_readme_lists_every_exit_status_as_exits_py_says() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Exit statuses", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", section, re.M))
    assert {int(k): v for k, v in rows.items()} == exits.MEANINGS
