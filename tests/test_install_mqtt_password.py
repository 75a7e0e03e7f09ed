"""systemd/install.sh --mqtt-password-file: the installer's own step, run as it
is written, in a scratch directory instead of /etc/edge-daemon. (The whole
installer runs in a booted container in test_boot.py.)"""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest

INSTALL = Path(__file__).resolve().parent.parent / "systemd" / "install.sh"
UNIT = INSTALL.with_name("edge-daemon.service")
PASSWORD = "pässword with spaces 1"


def step_script(tmp_path: Path) -> Path:
    """The function as install.sh has it, with the helpers it calls."""
    text = INSTALL.read_text()
    body = re.search(r"(?ms)^install_mqtt_password\(\) \{\n.*?^\}\n", text)
    assert body, "install.sh defines install_mqtt_password"
    helpers = "\n".join(
        # One-liners (say, step) and multi-line functions (die, cleanup).
        re.search(r"(?ms)^" + name + r"\(\) \{(?:[^\n]*\}$|\n.*?^\}$)", text)[0]  # type: ignore[index]
        for name in ("say", "step", "die", "cleanup")
    )
    script = tmp_path / "step.sh"
    script.write_text(
        "set -euo pipefail\n"
        'CONF_DIR=$1 MQTT_PASSWORD_FILE=$1/mqtt-password MQTT_SOURCE=$2 KEY_SOURCE=""\n'
        'KEY_TMP="" STAGE="" UNIT=$1/unit\n'
        f"{helpers}\ntrap cleanup EXIT\n{body[0]}\ninstall_mqtt_password\n"
    )
    return script


def run(tmp_path: Path, source: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    conf = tmp_path / "etc"
    conf.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(step_script(tmp_path)), str(conf), source],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def stored(tmp_path: Path) -> tuple[str, int, int]:
    path = tmp_path / "etc" / "mqtt-password"
    info = path.stat()
    return path.read_text(), stat.S_IMODE(info.st_mode), info.st_uid


@pytest.mark.skipif(os.geteuid() != 0, reason="the step chowns to root, as install.sh runs")
def test_the_password_is_stored_root_only_and_never_printed(tmp_path: Path) -> None:
    # None given, none there: an empty file, so the unit's LoadCredential= loads.
    first = run(tmp_path, "")
    assert first.returncode == 0, first.stderr
    assert stored(tmp_path) == ("", 0o600, 0)
    assert "created an empty one" in first.stdout
    # From a file.
    given = tmp_path / "pw"
    given.write_text(PASSWORD + "\n")
    second = run(tmp_path, str(given))
    assert second.returncode == 0, second.stderr
    assert stored(tmp_path) == (PASSWORD + "\n", 0o600, 0)
    assert PASSWORD not in second.stdout + second.stderr
    # Again without: kept.
    third = run(tmp_path, "")
    assert "kept the existing password" in third.stdout
    assert stored(tmp_path)[0] == PASSWORD + "\n"
    # From standard input.
    fourth = run(tmp_path, "-", stdin="from-a-pipe\n")
    assert fourth.returncode == 0, fourth.stderr
    assert stored(tmp_path)[0] == "from-a-pipe\n"
    assert not list((tmp_path / "etc").glob(".mqtt-password.*"))  # no temporary left


@pytest.mark.skipif(os.geteuid() != 0, reason="the step chowns to root, as install.sh runs")
@pytest.mark.parametrize(
    ("content", "words"),
    [("\n", "is empty"), ("one\ntwo\n", "on one line"), (None, "cannot read")],
)
def test_a_bad_password_file_is_refused_and_the_old_one_kept(
    tmp_path: Path, content: str | None, words: str
) -> None:
    given = tmp_path / "pw"
    given.write_text("old-password\n")
    assert run(tmp_path, str(given)).returncode == 0
    if content is None:
        given.unlink()
    else:
        given.write_text(content)
    result = run(tmp_path, str(given))
    assert result.returncode == 1 and words in result.stderr
    assert stored(tmp_path)[0] == "old-password\n"
    assert not list((tmp_path / "etc").glob(".mqtt-password.*"))


def test_the_installer_takes_the_option_and_the_unit_loads_the_credential(tmp_path: Path) -> None:
    help_text = subprocess.run(
        ["bash", str(INSTALL), "--help"], capture_output=True, text=True, timeout=30
    ).stdout
    assert "--mqtt-password-file PATH" in help_text
    both = subprocess.run(
        ["bash", str(INSTALL), "--api-key-file", "-", "--mqtt-password-file", "-"],
        input="x\n",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert both.returncode == 1 and "cannot both read a pipe" in both.stderr
    missing = subprocess.run(
        ["bash", str(INSTALL), "--mqtt-password-file"], capture_output=True, text=True, timeout=30
    )
    assert missing.returncode == 1 and "needs a path" in missing.stderr
    assert re.search(
        r"(?m)^LoadCredential=mqtt-password:/etc/edge-daemon/mqtt-password$", UNIT.read_text()
    )
