"""The machine the checks look at: where the service lives, a command runner,
and paths under a filesystem root (tests use a fake tree)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

SERVICE = "edge-daemon"
SERVICE_USER = "edge-daemon"
SERVICE_GROUPS = ("audio", "video", "gpio")
# Where systemd/install.sh keeps the key the unit loads as a credential.
KEY_FILE = "/etc/edge-daemon/gemini-api-key"
UNIT_PATHS = ("/etc/systemd/system/edge-daemon.service", "/lib/systemd/system/edge-daemon.service")
INSTALL = "sudo systemd/install.sh"  # run from the checkout


@dataclass(frozen=True)
class Completed:
    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Completed]


def run_command(argv: Sequence[str], timeout_s: float = 10.0) -> Completed:
    """Run a command for its output; a missing program is exit 127, a hang 124."""
    env = {**os.environ, "LC_ALL": "C", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}
    try:
        done = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout_s, env=env, check=False
        )
    except FileNotFoundError:
        return Completed(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        return Completed(124, "", f"{argv[0]}: no answer within {timeout_s:g} s")
    return Completed(done.returncode, done.stdout, done.stderr)


def under(root: Path, path: str) -> Path:
    """``path`` inside the filesystem rooted at ``root`` (tests use a fake tree)."""
    return root / path.lstrip("/")


def systemd_running(root: Path) -> bool:
    # sd_booted(3): systemd is PID 1 exactly when this directory exists.
    return under(root, "/run/systemd/system").is_dir()


def unit_installed(root: Path) -> bool:
    return any(under(root, p).exists() for p in UNIT_PATHS)
