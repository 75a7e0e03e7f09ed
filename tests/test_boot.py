"""The installed service under a real systemd: a bare Debian bookworm booted in
systemd-nspawn, the checkout installed with systemd/install.sh (its apt step
included), the daemon talking to a fake Gemini on the host.

Runs as root where systemd-nspawn and debootstrap exist and the Debian mirror
and PyPI are reachable; skips with the reason otherwise (fails under CI=true),
or with EDGE_SKIP_BOOT_TEST=1. The first run builds the root file system
(about a minute and a half) into /var/cache/edge-daemon-test; later runs reuse
it. tests/test_boot_arm.py runs the same on arm64 and armhf.

The tests share one container and run in file order: install, start, talk,
crash, hang, stop, upgrade, break the unit, uninstall.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from boot_container import BootedContainer, host_arch, wait_until
from boot_service import (
    INSTALL_SH,
    RELAY,
    UNIT,
    VENV_BIN,
    Installed,
    apt_required,
    booted,
    check_killed_daemon_restarts,
    check_push_to_talk_turn,
    check_started_as_the_service_user,
    configure,
    install_for_test,
    installed_packages,
)
from conftest import SECRET

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def container(pi_roots_in_background: None) -> Iterator[BootedContainer]:
    with booted(host_arch()) as c:
        yield c


@pytest.fixture(scope="module")
def installed(container: BootedContainer, speech_wav: Path) -> Iterator[Installed]:
    yield from install_for_test(container, speech_wav)


# ---------------------------------------------------------------- install


def test_the_installer_installs_its_system_packages_with_apt(installed: Installed) -> None:
    """The root is bare: the installer's apt step ran for real and installed
    every package on its list (a wrong name there fails the install above)."""
    c = installed.c
    required = apt_required()
    missing_before = [p for p in required if p not in installed.preinstalled]
    assert {"python3-systemd", "python3-pyaudio"} <= set(missing_before)
    assert f"installing {' '.join(missing_before)}" in installed.install_log
    assert installed_packages(c, required) == set(required)
    # The optional Raspberry Pi OS packages are not in Debian: said, and skipped.
    assert "skipping python3-lgpio: not in this system's package archive" in (installed.install_log)


def test_a_wrong_package_name_fails_the_install(installed: Installed) -> None:
    """The same installer with one misspelt package stops at its apt step,
    before it changes anything: proof the apt step above could fail."""
    c = installed.c
    script = c.path(INSTALL_SH).read_text()
    broken = re.sub(
        r"^(readonly APT_REQUIRED=\([^)]*?)\bpython3-systemd\b",
        r"\1python3-systemdd",
        script,
        flags=re.M,
    )
    assert broken != script
    c.write("/root/app/systemd/install-misspelt.sh", broken, mode=0o755)
    done = c.run(
        ["/root/app/systemd/install-misspelt.sh", "--no-start"], check=False, timeout_s=300
    )
    assert done.returncode != 0, done.stdout
    assert "Unable to locate package python3-systemdd" in done.stderr, done.stderr
    assert "==> Service user" not in done.stdout  # it stopped at the packages


def test_installer_sets_up_user_files_and_unit(installed: Installed) -> None:
    c = installed.c
    assert SECRET not in installed.install_log
    assert "key taken from $GEMINI_API_KEY" in installed.install_log
    groups = c.run(["id", "-nG", "edge-daemon"]).stdout.split()
    assert {"edge-daemon", "audio", "video", "gpio"} <= set(groups)
    key = c.run(["stat", "-c", "%U:%G %a", "/etc/edge-daemon/gemini-api-key"]).stdout.strip()
    assert key == "root:root 600"
    assert c.path("/etc/edge-daemon/gemini-api-key").read_text().strip() == SECRET
    unit = c.path(f"/etc/systemd/system/{UNIT}.service").read_text()
    assert f"ExecStart={VENV_BIN}/edge-daemon run --config /etc/edge-daemon/config.toml" in unit
    assert c.path(f"{VENV_BIN}/edge-daemon").exists()
    assert c.run(["readlink", "/usr/local/bin/edge-daemon"]).stdout.strip() == (
        f"{VENV_BIN}/edge-daemon"
    )
    # The venv sees apt's python3-systemd (logging goes to journald with
    # fields), numpy and Pillow; soxr came from a wheel.
    where = c.run(
        [
            f"{VENV_BIN}/python",
            "-c",
            "import systemd.journal, numpy, PIL, soxr\n"
            "for m in (systemd.journal, numpy, PIL, soxr): print(m.__name__, m.__file__)",
        ]
    ).stdout
    files = dict(line.split(" ", 1) for line in where.splitlines())
    for apt_module in ("systemd.journal", "numpy", "PIL"):
        assert files[apt_module].startswith("/usr/lib/python3/dist-packages/"), files
    assert files["soxr"].startswith("/opt/edge-daemon/venv/"), files


# ---------------------------------------------------------------- running


def test_start_returns_active_running_as_the_service_user(installed: Installed) -> None:
    check_started_as_the_service_user(installed)


def test_key_arrives_from_the_credential_in_a_header(installed: Installed) -> None:
    installed.ensure_active()
    installed.wait_session()
    fake = installed.fake
    assert fake.read(lambda f: f.active and f.active.auth_method) == "header"
    assert fake.read(lambda f: SECRET not in f.active.request_path if f.active else False)
    pid = installed.main_pid()
    # It came through LoadCredential=, not the environment or the command line.
    environ = installed.c.path(f"/proc/{pid}/environ").read_bytes()
    assert SECRET.encode() not in environ
    assert b"CREDENTIALS_DIRECTORY=" in environ
    assert SECRET.encode() not in installed.c.path(f"/proc/{pid}/cmdline").read_bytes()


def test_push_to_talk_streams_speech_and_the_reply_lands_in_the_wav(
    installed: Installed,
) -> None:
    check_push_to_talk_turn(installed)


def test_journal_has_structured_fields_and_never_the_key(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    records = [json.loads(line) for line in c.journal("-u", UNIT, "-o", "json").splitlines()]
    ours = [r for r in records if r.get("SYSLOG_IDENTIFIER") == "edge-daemon"]
    assert ours, "no journal records from the daemon"
    assert any("EDGE_STATE" in r for r in ours)
    assert {"idle", "listening"} <= {r.get("EDGE_STATE") for r in ours}
    assert all(r.get("_SYSTEMD_UNIT") == f"{UNIT}.service" for r in ours)
    # The README's filter: the unit's records with one field value, and only those.
    idle = [
        json.loads(line)
        for line in c.journal("-u", UNIT, "EDGE_STATE=idle", "-o", "json").splitlines()
    ]
    assert idle and all(r.get("EDGE_STATE") == "idle" for r in idle)
    everything = c.journal("-o", "json")
    assert SECRET not in everything
    assert SECRET not in c.console_text()


def test_a_killed_daemon_is_restarted(installed: Installed) -> None:
    check_killed_daemon_restarts(installed)


def test_a_hung_daemon_is_restarted_by_the_watchdog(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    assert installed.props("WatchdogUSec")["WatchdogUSec"] == "3s"
    # The pings arrive: the watchdog timestamp moves on its own.
    first = installed.props("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
    wait_until(
        lambda: (
            installed.props("WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"] != first
        ),
        10,
        "a WATCHDOG=1 ping",
    )
    before = installed.props("NRestarts", "MainPID")
    installed.kill("STOP", int(before["MainPID"]))
    installed.wait_restarted(int(before["MainPID"]), int(before["NRestarts"]) + 1, 60)
    wait_until(
        lambda: "Watchdog timeout" in c.journal("-u", UNIT, "-o", "cat", "-n", "50"),
        10,
        "systemd's watchdog message in the journal",
        0.2,
    )


def test_stop_is_clean(installed: Installed) -> None:
    installed.ensure_active()
    c = installed.c
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    props = installed.props("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert props["ActiveState"] == "inactive"
    assert props["Result"] == "success"
    assert props["ExecMainStatus"] == "0"
    assert props["ExecMainCode"] == "1"  # CLD_EXITED: it exited, it was not killed


def test_a_relay_switched_on_is_off_after_a_stop(installed: Installed) -> None:
    """The model switches the relay on; `systemctl stop` switches it off. The
    journal holds that daemon's whole history of the pin, in order."""
    c = installed.c
    installed.ensure_active()
    installed.wait_session()
    pid = installed.main_pid()
    fake = installed.fake
    ids = fake.call(fake.fake.tool_call([(RELAY, {"on": True})]))
    fake.wait_for(lambda f: any(r.get("id") in ids for r in f.tool_responses), 30)
    assert installed.ctl("status")["devices"][RELAY]["on"] is True

    c.run(["systemctl", "stop", UNIT], timeout_s=60)

    def history() -> list[tuple[str, str]]:
        out = c.journal("-o", "json", f"_PID={pid}", f"EDGE_TOOL={RELAY}")
        records = [json.loads(line) for line in out.splitlines()]
        # The pin's changes (the tool call itself is logged under the name too).
        return [
            (r["EDGE_EVENT"], r.get("EDGE_CAUSE"))
            for r in records
            if r.get("EDGE_EVENT") in ("relay_on", "relay_off")
        ]

    want = [("relay_off", "startup"), ("relay_on", "tool"), ("relay_off", "shutdown")]
    # The last record can reach the journal a moment after the stop returned.
    wait_until(lambda: len(history()) >= len(want), 10, "the relay's records in the journal")
    assert history() == want
    # Then the unit's ExecStopPost drove it to its off level (low) again.
    out = c.journal("-o", "json", "EDGE_EVENT=safe_state", f"EDGE_TOOL={RELAY}")
    after_stop = [json.loads(line) for line in out.splitlines()]
    stops = [r for r in after_stop if r.get("EDGE_CAUSE", "").startswith("stop:success")]
    assert stops and stops[-1].get("EDGE_LEVEL") == "0", after_stop[-3:]


def test_security_exposure_is_at_most_3(installed: Installed) -> None:
    out = installed.c.run(["systemd-analyze", "security", "--no-pager", UNIT]).stdout
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out)
    assert m, out[-2000:]
    print(f"systemd-analyze security {UNIT}: {m[1]}")  # shown with -rP / -s
    assert float(m[1]) <= 3.0, out[-3000:]


def test_doctor_reports_the_installed_service(installed: Installed) -> None:
    installed.ensure_active()
    done = installed.c.run(
        [f"{VENV_BIN}/edge-daemon", "doctor", "--simulate", "--json", "--live"], check=False
    )
    checks = {c["name"]: c for c in json.loads(done.stdout)}
    assert SECRET not in done.stdout + done.stderr
    assert checks["service"]["status"] == "PASS", checks["service"]
    assert checks["service_user"]["status"] == "PASS", checks["service_user"]
    assert checks["api_key"]["status"] == "PASS", checks["api_key"]
    assert "gemini-api-key" in checks["api_key"]["detail"]
    assert checks["endpoint"]["status"] == "PASS", checks["endpoint"]
    assert checks["live"]["status"] == "PASS", checks["live"]
    assert checks["gpio"]["status"] == "SKIP"
    failed = [c for c in checks.values() if c["status"] == "FAIL"]
    assert not failed and done.returncode == 0, failed


# ---------------------------------------------------------------- upgrade


def _sha(c: BootedContainer, inside: str) -> str:
    return hashlib.sha256(c.path(inside).read_bytes()).hexdigest()


def test_second_install_upgrades_keeps_config_and_key_restarts_the_service(
    installed: Installed,
) -> None:
    installed.ensure_active()
    c = installed.c
    config, key, pid = (
        _sha(c, "/etc/edge-daemon/config.toml"),
        _sha(c, "/etc/edge-daemon/gemini-api-key"),
        installed.main_pid(),
    )
    out = c.run([INSTALL_SH], timeout_s=600).stdout
    assert "kept your /etc/edge-daemon/config.toml" in out
    assert "kept the existing key" in out
    assert _sha(c, "/etc/edge-daemon/config.toml") == config
    assert _sha(c, "/etc/edge-daemon/gemini-api-key") == key
    assert installed.active()
    assert installed.main_pid() != pid


def test_an_upgrade_keeps_the_config_folders_mode_and_a_failed_pip_keeps_the_old_program(
    installed: Installed,
) -> None:
    installed.ensure_active()
    c = installed.c
    # The owner closes the folder to all but the service's group.
    c.run(["chown", "root:edge-daemon", "/etc/edge-daemon"])
    c.run(["chmod", "0750", "/etc/edge-daemon"])
    try:
        c.run([INSTALL_SH, "--no-apt"], timeout_s=600)
        assert oct(c.path("/etc/edge-daemon").stat().st_mode & 0o777) == "0o750"
    finally:
        c.run(["chown", "root:root", "/etc/edge-daemon"])
        c.run(["chmod", "0755", "/etc/edge-daemon"])
    # A pip run that cannot succeed (a version that does not exist):
    constraints = c.path("/root/app/systemd/constraints.txt")
    pinned = constraints.read_text()
    constraints.write_text(pinned + "websockets==0.0.0.404\n")
    try:
        done = c.run([INSTALL_SH, "--no-apt"], check=False, timeout_s=600)
    finally:
        constraints.write_text(pinned)
    assert done.returncode != 0
    assert "the version installed before is back in place" in done.stderr
    version = c.run([f"{VENV_BIN}/edge-daemon", "--version"]).stdout
    assert version.startswith("edge-daemon ")
    assert not c.path("/opt/edge-daemon/venv.previous").exists()
    installed.ensure_active()


def test_a_checkout_inside_the_install_prefix_is_refused(installed: Installed) -> None:
    c = installed.c
    c.run(["cp", "-a", "/root/app", "/opt/edge-daemon/src"])
    try:
        done = c.run(["/opt/edge-daemon/src/systemd/install.sh", "--no-apt"], check=False)
    finally:
        c.run(["rm", "-rf", "/opt/edge-daemon/src"])
    assert done.returncode != 0
    assert "lies inside /opt/edge-daemon" in done.stderr
    assert "==> " not in done.stdout  # it stopped before any step


def test_a_broken_config_leaves_the_unit_failed_with_78_and_no_restarts(
    installed: Installed,
) -> None:
    c = installed.c
    config = c.path("/etc/edge-daemon/config.toml")
    good = config.read_text()
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    c.run(["systemctl", "reset-failed", UNIT], check=False)
    config.write_text(good + "\n[audio\n")
    try:
        c.run(["systemctl", "start", UNIT], check=False, timeout_s=90)
        wait_until(
            lambda: installed.props("ActiveState")["ActiveState"] == "failed",
            30,
            "the unit to fail",
        )
        props = installed.props("ExecMainStatus", "NRestarts", "Result")
        assert props["ExecMainStatus"] == "78", props
        assert props["NRestarts"] == "0", props
    finally:
        config.write_text(good)
        c.run(["systemctl", "reset-failed", UNIT], check=False)
    installed.ensure_active()


def test_the_unit_limits_are_in_force(installed: Installed) -> None:
    installed.ensure_active()
    props = installed.props("LimitCORE", "MemoryHigh", "MemoryMax")
    assert props["LimitCORE"] == "0", props
    assert props["MemoryHigh"] == str(160 * 1024 * 1024), props
    assert props["MemoryMax"] == str(256 * 1024 * 1024), props


# ---------------------------------------------------------------- a broken unit fails


@contextlib.contextmanager
def _broken_unit(c: BootedContainer, old: str, new: str) -> Iterator[None]:
    """The installed unit with one line replaced, restored afterwards."""
    path = c.path(f"/etc/systemd/system/{UNIT}.service")
    original = path.read_text()
    assert old in original, f"{old!r} is not in the unit"
    path.write_text(original.replace(old, new))
    c.run(["systemctl", "daemon-reload"])
    try:
        yield
    finally:
        c.run(["systemctl", "stop", UNIT], check=False)  # ends a pending auto-restart
        path.write_text(original)
        c.run(["systemctl", "daemon-reload"])
        c.run(["systemctl", "reset-failed", UNIT], check=False)


@pytest.mark.parametrize(
    ("old", "new", "symptom", "logged"),
    [
        pytest.param(
            "SupplementaryGroups=gpio audio video",
            "SupplementaryGroups=gpio audio video nosuchgroup",
            "status=216/GROUP",
            "Failed to determine supplementary groups",
            id="missing-group",
        ),
        pytest.param(
            "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
            "RestrictAddressFamilies=AF_INET AF_INET6",
            # No AF_UNIX, no control socket: a configuration error, not retried.
            "status=78",
            "Address family not supported by protocol",
            id="no-AF_UNIX",
        ),
    ],
)
def test_a_broken_unit_fails_to_start(
    installed: Installed, old: str, new: str, symptom: str, logged: str
) -> None:
    """The same start that passes above fails once the unit is wrong: proof the
    checks above see what systemd really does with the unit."""
    c = installed.c
    c.run(["systemctl", "stop", UNIT], timeout_s=60)
    c.run(["systemctl", "reset-failed", UNIT], check=False)
    with _broken_unit(c, old, new):
        failed = c.run(["systemctl", "start", UNIT], timeout_s=90, check=False)
        status = c.run(["systemctl", "status", "--no-pager", UNIT], check=False).stdout
        assert failed.returncode != 0, status
        # Restart=on-failure may already be waiting to try again: anything but up.
        assert installed.props("ActiveState")["ActiveState"] != "active", status
        assert symptom in status, status
        # The failing child's own message can reach the journal after systemd's.
        wait_until(
            lambda: logged in c.journal("-u", UNIT, "-o", "cat", "-n", "60"),
            10,
            f"{logged!r} in the journal",
            0.2,
        )


# ---------------------------------------------------------------- removal


def test_uninstall_keeps_config_and_key_purge_removes_everything(installed: Installed) -> None:
    c = installed.c
    c.run([INSTALL_SH, "--uninstall"])
    assert not c.path(f"/etc/systemd/system/{UNIT}.service").exists()
    assert not c.path("/opt/edge-daemon").exists()
    assert not c.path("/usr/local/bin/edge-daemon").is_symlink()
    assert c.path("/etc/edge-daemon/config.toml").exists()
    assert c.path("/etc/edge-daemon/gemini-api-key").exists()
    assert c.show(UNIT, "LoadState")["LoadState"] == "not-found"

    c.run([INSTALL_SH, "--purge"])
    assert not c.path("/etc/edge-daemon").exists()
    assert not c.path("/var/lib/edge-daemon").exists()
    assert c.run(["getent", "passwd", "edge-daemon"], check=False).returncode == 2
    assert c.run(["getent", "group", "edge-daemon"], check=False).returncode == 2
    assert c.run(["getent", "group", "gpio"], check=False).returncode == 0


def test_without_a_key_the_service_waits_for_one(installed: Installed) -> None:
    """No key at install: an empty credential file lets the unit load, the daemon
    exits 78 and is not restarted in a loop; giving the key later starts it."""
    c = installed.c
    if c.path("/etc/edge-daemon").exists():
        c.run([INSTALL_SH, "--purge"])
    # Traced with -x: the trace must not show the key either (below).
    out = c.run(["bash", "-x", INSTALL_SH], timeout_s=600)
    assert "no key given" in out.stdout and "enabled, not started" in out.stdout
    stat = c.run(["stat", "-c", "%U:%G %a %s", "/etc/edge-daemon/gemini-api-key"]).stdout
    assert stat.split() == ["root:root", "600", "0"]
    assert not installed.active()

    configure(c, installed.fake, installed.speech)
    assert c.run(["systemctl", "start", UNIT], check=False, timeout_s=90).returncode != 0
    props = installed.props("ActiveState", "ExecMainStatus", "NRestarts")
    assert props == {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}
    wait_until(
        lambda: "no Gemini API key" in c.journal("-u", UNIT, "-o", "cat", "-n", "20"),
        10,
        "the daemon's reason in the journal",
        0.2,
    )

    connections = installed.fake.read(lambda f: len(f.connections))
    done = c.run(
        ["bash", "-x", INSTALL_SH, "--api-key-file", "-"],
        stdin=SECRET + "\n",
        timeout_s=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout + c.journal("-u", UNIT, "-o", "cat", "-n", "40")
    assert SECRET not in done.stdout + done.stderr + out.stdout + out.stderr
    assert installed.active()
    installed.fake.wait_for(
        lambda f: len(f.connections) > connections and f.connections[-1].auth_method == "header",
        30,
    )
