"""The command line as an owner uses it: check-config, ctl errors, fake-server, keyboard."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SECRET

from edge_daemon.keyboard import keyboard_toggle


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {
        k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "EDGE_DAEMON_CONFIG")
    }
    return subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        cwd=ROOT,
        timeout=60,
    )


def test_check_config_prints_effective_config_with_key_redacted(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[audio]\nbackend = "wav"\n')
    result = run_cli("check-config", "--config", str(cfg), env={"GEMINI_API_KEY": SECRET})
    assert result.returncode == 0, result.stderr
    assert 'backend = "wav"' in result.stdout
    assert "[gemini]" in result.stdout and "[link]" in result.stdout
    assert "$GEMINI_API_KEY" in result.stdout
    assert SECRET not in result.stdout + result.stderr


def test_check_config_error_names_file_and_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[audio]\nchunk_ms = 400\n")
    result = run_cli("check-config", "--config", str(cfg))
    assert result.returncode == 78  # EX_CONFIG
    assert str(cfg) in result.stderr and "audio.chunk_ms" in result.stderr
    assert "Traceback" not in result.stderr


def test_run_with_broken_config_exits_cleanly(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[audio\n")
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 78
    assert str(cfg) in result.stderr and "Traceback" not in result.stderr


def test_run_without_key_says_how_to_add_one(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('[control]\nsocket = "%s"\n' % (tmp_path / "s.sock"))
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart-loop on it
    assert "GEMINI_API_KEY" in result.stderr and "--simulate" in result.stderr


def test_ctl_without_a_daemon_fails_with_a_clear_message(tmp_path: Path) -> None:
    result = run_cli("ctl", "--socket", str(tmp_path / "none.sock"), "status")
    assert result.returncode == 69  # EX_UNAVAILABLE
    assert "cannot reach the daemon" in result.stderr and "Traceback" not in result.stderr


async def test_fake_server_command_listens_and_stops_on_sigterm() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edge_daemon.cli",
        "fake-server",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert line.startswith(b"fake-gemini listening on ws://127.0.0.1:")
    proc.terminate()
    assert await asyncio.wait_for(proc.wait(), 30) == 0


async def test_keyboard_enter_and_space_toggle_in_a_terminal() -> None:
    master, slave = os.openpty()
    loop = asyncio.get_running_loop()
    toggled = asyncio.Queue[None]()
    try:
        with keyboard_toggle(loop, lambda: toggled.put_nowait(None), fd=slave) as active:
            assert active
            os.write(master, b" x\n")
            await asyncio.wait_for(toggled.get(), 5)
            await asyncio.wait_for(toggled.get(), 5)
            assert toggled.empty()
    finally:
        os.close(master)
        os.close(slave)


def test_keyboard_is_inactive_without_a_terminal(tmp_path: Path) -> None:
    with open(tmp_path / "f", "w+") as f:
        loop = asyncio.new_event_loop()
        try:
            with keyboard_toggle(loop, lambda: None, fd=f.fileno()) as active:
                assert active is False
        finally:
            loop.close()


@pytest.mark.parametrize("args", [["--version"], ["run", "--help"], ["ctl", "--help"]])
def test_help_and_version(args: list[str]) -> None:
    assert run_cli(*args).returncode == 0


def test_second_daemon_on_the_same_socket_exits_78_without_traceback(tmp_path: Path) -> None:
    sock = tmp_path / "taken.sock"
    import socket as sk

    holder = sk.socket(sk.AF_UNIX, sk.SOCK_STREAM)
    holder.bind(str(sock))
    holder.listen(1)
    try:
        cfg = tmp_path / "c.toml"
        cfg.write_text(f'[control]\nsocket = "{sock}"\nkeyboard = false\n')
        result = run_cli("run", "--simulate", "--config", str(cfg))
    finally:
        holder.close()
    assert result.returncode == 78
    assert "another edge-daemon is listening" in result.stderr
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr


def test_a_key_is_never_sent_in_clear_text_to_another_machine(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[gemini]\nendpoint = "ws://192.0.2.10:8765"\n'
        f'[control]\nsocket = "{tmp_path / "s.sock"}"\nkeyboard = false\n'
    )
    result = run_cli("run", "--config", str(cfg), env={"GEMINI_API_KEY": SECRET})
    assert result.returncode == 78
    assert "clear text" in result.stderr and SECRET not in result.stderr
    # To this machine it is allowed (the tests' fake servers listen there).
    from edge_daemon.config import cleartext_to_remote

    assert not cleartext_to_remote("ws://127.0.0.1:8765")
    assert not cleartext_to_remote("ws://localhost:8765/x")
    assert not cleartext_to_remote("ws://[::1]:8765")
    assert not cleartext_to_remote("wss://example.com")
    assert cleartext_to_remote("ws://example.com")


@pytest.mark.parametrize("argv", [["run"], ["ctl", "status"], ["check-config"]])
def test_commands_import_only_their_own_parts(argv: list[str]) -> None:
    # Every process pays for what the parser imports: `run` at each start,
    # `ctl` in every script that drives the daemon.
    code = (
        "import sys\n"
        "from edge_daemon import cli\n"
        f"cli.build_parser({argv!r})\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded = set(done.stdout.split())
    others = {"edge_daemon.doctor", "edge_daemon.mint_token", "edge_daemon.safe_state"}
    assert loaded & others == set()
    assert "edge_daemon.fake_gemini" not in loaded
