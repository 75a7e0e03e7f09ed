"""The README's quick start, run as a newcomer runs it: its own command blocks,
read from README.md, in a fresh copy of the checkout, a second terminal
included. If the README changes, this test follows it.

Every ``sh`` block of the README is accounted for here: run by this test, run
by the boot test (the Raspberry Pi install, in a booted container), or named in
NOT_RUN_HERE with the reason it cannot run on this machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tarfile
import textwrap
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from boot_container import checkout_files
from conftest import ROOT, have

README = ROOT / "README.md"

# The first line of a block -> why it does not run on this machine.
NOT_RUN_HERE = {
    "journalctl -u edge-daemon": "reads a device's journal: the boot test checks these records",
    "GEMINI_API_KEY=... edge-daemon mint-token": "needs a real key and Google's endpoint; "
    "tests/test_mint_token.py runs the same command against the fake's auth_tokens endpoint",
}


@dataclass(frozen=True)
class Block:
    lang: str
    text: str
    line: int  # where it starts in README.md

    @property
    def lines(self) -> list[str]:
        return [ln for ln in self.text.splitlines() if ln.strip()]


def readme_blocks(text: str) -> list[tuple[str, Block]]:
    """(section, block) for every fenced block; a section starts at its
    ``<!-- section: NAME -->`` marker and ends at the next ``## `` heading
    that is not its own."""
    found: list[tuple[str, Block]] = []
    section, own_heading = "", False
    fence: tuple[str, int, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if fence is not None:
            if stripped == "```":
                lang, start, body = fence
                found.append((section, Block(lang, textwrap.dedent("\n".join(body)), start)))
                fence = None
            else:
                fence[2].append(line)
            continue
        if marker := re.match(r"<!-- section: ([\w-]+) -->", stripped):
            section, own_heading = marker[1], True
        elif line.startswith("## "):
            if own_heading:
                own_heading = False
            else:
                section = ""
        elif stripped.startswith("```"):
            fence = (stripped[3:].strip(), number, [])
    return found


def section_blocks(name: str) -> list[Block]:
    return [b for s, b in readme_blocks(README.read_text()) if s == name]


def test_every_readme_command_block_is_run_or_says_why_not() -> None:
    boot_readme_test = (ROOT / "tests" / "test_boot_readme.py").read_text()
    for section, block in readme_blocks(README.read_text()):
        if block.lang != "sh":
            continue
        first = block.lines[0]
        if section == "quick-start":
            continue  # test_quick_start_as_written
        if section == "install-on-pi":
            assert "install-on-pi" in boot_readme_test, "the boot test runs the Pi install block"
            continue
        if "check-config" in first:
            continue  # test_check_config_block_as_written
        reason = next((why for cmd, why in NOT_RUN_HERE.items() if first.startswith(cmd)), None)
        assert reason, f"README.md:{block.line}: {first!r} is run by no test; run it or say why"


def test_the_readme_test_command_is_the_one_ci_runs() -> None:
    blocks = section_blocks("quick-start")
    test_cmd = next(b for b in blocks if "pytest" in b.text).text.strip()
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines(), f"{test_cmd!r} is not what .ci/run runs"


# ---------------------------------------------------------------- the quick start


@dataclass
class Newcomer:
    """A fresh copy of the checkout and the environment of a desktop user:
    no config, no key, a runtime dir of their own, and `sudo` meaning "as
    root" where they are root already (the README: as root, drop the sudo)."""

    home: Path
    env: dict[str, str]

    def sh(self, script: str, timeout_s: float = 900) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=timeout_s,
        )
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        return done

    def background(self, command: str, log: Path) -> subprocess.Popen[bytes]:
        out = open(log, "wb")  # noqa: SIM115 - handed to the child, closed with it
        try:
            return subprocess.Popen(
                ["bash", "-c", f"exec {command}"],
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()

    def ctl_status(self) -> dict[str, object] | None:
        done = subprocess.run(
            [str(self.home / ".venv/bin/edge-daemon"), "ctl", "status"],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return json.loads(done.stdout) if done.returncode == 0 else None


def _copy_checkout(dest: Path) -> None:
    archive = dest.parent / "checkout.tar"
    with tarfile.open(archive, "w") as tar:
        for name in checkout_files(ROOT):
            tar.add(ROOT / name, arcname=str(name))
    with tarfile.open(archive) as tar:
        tar.extractall(dest, filter="tar")
    archive.unlink()


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Newcomer]:
    if Path("/etc/edge-daemon/config.toml").exists():
        pytest.skip("this machine has an installed service config: not a newcomer's desktop")
    base = tmp_path_factory.mktemp("newcomer")
    home = base / "edge-daemon"
    _copy_checkout(home)
    runtime = base / "runtime"
    runtime.mkdir(mode=0o700)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EDGE_", "GEMINI_", "NOTIFY_", "WATCHDOG_", "VIRTUAL_ENV"))
    }
    env.update(XDG_RUNTIME_DIR=str(runtime), PYTHONUNBUFFERED="1")
    if os.geteuid() == 0 and not shutil.which("sudo"):
        # "As root, drop the sudo": a sudo that runs the command as it is.
        shims = base / "shims"
        shims.mkdir()
        (shims / "sudo").write_text('#!/bin/sh\nexec "$@"\n')
        (shims / "sudo").chmod(0o755)
        env["PATH"] = f"{shims}:{env['PATH']}"
    yield Newcomer(home, env)


def _wait_ready(user: Newcomer, proc: subprocess.Popen[bytes], log: Path) -> dict[str, object]:
    """Until `ctl status` answers with a live link, as a user would retry."""
    for _ in range(600):
        if proc.poll() is not None:
            pytest.fail(f"the daemon exited with {proc.returncode}:\n{log.read_text()}")
        status = user.ctl_status()
        if status is not None and status.get("state") == "idle":
            return status
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(0.1)  # a pause between tries that ends early if it dies
    pytest.fail(f"the daemon never became idle:\n{log.read_text()}")


def _json_values(text: str) -> list[dict[str, object]]:
    """The JSON replies `ctl` printed, one after another."""
    decoder, values, at = json.JSONDecoder(), [], 0
    while (at := text.find("{", at)) != -1:
        value, at = decoder.raw_decode(text, at)
        values.append(value)
    return values


def _ctrl_c(proc: subprocess.Popen[bytes], log: Path) -> None:
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0, log.read_text()
    assert "Traceback" not in log.read_text()


def test_quick_start_as_written(newcomer: Newcomer) -> None:
    blocks = section_blocks("quick-start")
    sh = [b for b in blocks if b.lang == "sh"]
    install, test_cmd, run, second_terminal = sh[:4]
    assert "pip install" in install.text and "pytest" in test_cmd.text
    assert run.text.strip().endswith("run --simulate")

    done = newcomer.sh(install.text)
    assert done.returncode == 0, done.stderr[-3000:]
    # The test command is the suite this test is part of: not run again here.

    log = newcomer.home / "terminal-1.log"
    daemon = newcomer.background(run.text.strip(), log)
    try:
        _wait_ready(newcomer, daemon, log)
        done = newcomer.sh("set -x\n" + second_terminal.text, timeout_s=300)
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{log.read_text()}"
        replies = _json_values(done.stdout)
        assert all(r["ok"] for r in replies), replies
        status = next(r for r in replies if "counters" in r)
        # The tap and the typed turn before the status: both answered.
        assert status["counters"]["turns"] >= 1, status
        states = [h["state"] for h in status["history"]]
        assert states.count("speaking") >= 2, states
        assert newcomer.ctl_status()["counters"]["turns"] >= 2  # the press/release
    finally:
        _ctrl_c(daemon, log)


def test_the_demo_with_wav_files_as_written(newcomer: Newcomer) -> None:
    if not have("espeak-ng", "sox"):
        pytest.skip("the demo needs espeak-ng and sox (apt-get install espeak-ng sox)")
    blocks = section_blocks("quick-start")
    toml = next(b for b in blocks if b.lang == "toml")
    name = toml.lines[0].removeprefix("#").strip()
    assert name == "demo.toml"
    if not (newcomer.home / ".venv/bin/edge-daemon").exists():
        assert newcomer.sh(section_blocks("quick-start")[0].text).returncode == 0
    (newcomer.home / name).write_text(toml.text + "\n")
    demo = next(b for b in blocks if b.lang == "sh" and "demo.toml" in b.text)
    runs = [ln for ln in demo.lines if " run " in ln]
    assert len(runs) == 1, demo.lines
    for line in demo.lines:
        if line not in runs:
            assert newcomer.sh(line).returncode == 0, line
    log = newcomer.home / "terminal-demo.log"
    daemon = newcomer.background(runs[0], log)
    try:
        _wait_ready(newcomer, daemon, log)
        done = newcomer.sh(".venv/bin/edge-daemon ctl tap 1 && .venv/bin/edge-daemon ctl wait idle")
        assert done.returncode == 0, done.stdout + done.stderr + log.read_text()
    finally:
        _ctrl_c(daemon, log)
    with wave.open(str(newcomer.home / "answers.wav"), "rb") as answers:
        assert answers.getframerate() == 24000
        assert answers.getnframes() > 24000 // 2, "less than half a second of answer"


def test_check_config_block_as_written(newcomer: Newcomer) -> None:
    block = next(
        b
        for s, b in readme_blocks(README.read_text())
        if b.lang == "sh" and "check-config" in b.text
    )
    if not (newcomer.home / ".venv/bin/edge-daemon").exists():
        assert newcomer.sh(section_blocks("quick-start")[0].text).returncode == 0
    done = newcomer.sh(block.text)
    assert done.returncode == 0, done.stderr
    assert "[gemini]" in done.stdout
