"""The service user and its groups exist, and the unit runs without restarts."""

from __future__ import annotations

import grp
import pwd
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from .machine import INSTALL, SERVICE, SERVICE_GROUPS, SERVICE_USER, Runner, systemd_running
from .report import Check, fail, ok, skip, warn


def _member(user: pwd.struct_passwd, group: grp.struct_group) -> bool:
    return user.pw_gid == group.gr_gid or user.pw_name in group.gr_mem


def check_service_user(
    *,
    user: str = SERVICE_USER,
    groups: Sequence[str] = SERVICE_GROUPS,
    getpwnam: Callable[[str], pwd.struct_passwd] = pwd.getpwnam,
    getgrnam: Callable[[str], grp.struct_group] = grp.getgrnam,
    installed: bool = True,
) -> Check:
    name = "service_user"
    found: dict[str, grp.struct_group] = {}
    missing: list[str] = []
    for group in groups:
        try:
            found[group] = getgrnam(group)
        except KeyError:
            missing.append(group)
    try:
        account = getpwnam(user)
    except KeyError:
        if not installed:
            return skip(name, f"the service is not installed here (no user {user})")
        return fail(name, f"no user {user}", f"{INSTALL} (it creates the user and its groups)")
    if missing:
        adds = " && ".join(f"sudo groupadd --system {g}" for g in missing)
        return fail(
            name,
            f"group(s) {', '.join(missing)} do not exist: the unit's SupplementaryGroups= "
            "makes the start fail",
            f"{adds} && sudo usermod -aG {','.join(groups)} {user}",
        )
    outside = [g for g in groups if not _member(account, found[g])]
    if outside:
        return warn(
            name,
            f"{user} is not in {', '.join(outside)} (the unit adds them at start, but "
            f"`sudo -u {user}` tests would lack them)",
            f"sudo usermod -aG {','.join(outside)} {user}",
        )
    return ok(name, f"{user} exists, in {', '.join(groups)}")


def _exit_fix(props: Mapping[str, str]) -> str:
    status = props.get("ExecMainStatus", "")
    result = props.get("Result", "")
    restart = f"sudo systemctl restart {SERVICE}"
    if status == "78":
        return (
            "a config or key problem (the last error says which): fix it, run "
            f"`sudo edge-daemon doctor` again, then {restart}"
        )
    if status in ("216", "217"):
        return f"the unit's User=/SupplementaryGroups= do not exist: {INSTALL}"
    if status == "243":
        return (
            f"the key credential cannot be loaded (LoadCredential=): {INSTALL} --api-key-file PATH"
        )
    if result == "watchdog":
        return f"the daemon hung, the watchdog killed it: journalctl -u {SERVICE} -b; {restart}"
    if result == "start-limit-hit":
        return (
            f"it failed too often: journalctl -u {SERVICE} -b; then "
            f"sudo systemctl reset-failed {SERVICE} && {restart}"
        )
    return f"journalctl -u {SERVICE} -b -n 50 shows why; then {restart}"


def check_service(run: Runner, *, root: Path, installed: bool = True) -> Check:
    name = "service"
    if not systemd_running(root):
        return skip(name, "systemd is not running here (not PID 1): there is no service to ask")
    done = run(
        [
            "systemctl",
            "show",
            SERVICE,
            "-p",
            "LoadState,ActiveState,SubState,NRestarts,Result,ExecMainStatus",
        ]
    )
    if done.returncode != 0:
        return warn(name, f"systemctl show failed: {done.stderr.strip()}")
    props = dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    if props.get("LoadState") == "not-found":
        if not installed:
            return skip(name, f"{SERVICE}.service is not installed here")
        return fail(name, f"{SERVICE}.service is not installed", INSTALL)
    journal = run(["journalctl", "-u", SERVICE, "-p", "err", "-n", "1", "-o", "cat", "--no-pager"])
    last = journal.stdout.strip().splitlines()[-1] if journal.stdout.strip() else ""
    last_error = f"; last error: {last}" if last else ""
    active, sub = props.get("ActiveState", "?"), props.get("SubState", "?")
    try:
        restarts = int(props.get("NRestarts", "0"))
    except ValueError:
        restarts = 0
    state = f"{active} ({sub})"
    if active == "active":
        if restarts:
            return warn(
                name,
                f"{state}, but restarted {restarts} time(s) since it was started{last_error}",
                f"journalctl -u {SERVICE} -b -p warning shows what went wrong",
            )
        return ok(name, f"{state}, no restarts")
    exited = f", result {props.get('Result', '?')}, exit status {props.get('ExecMainStatus', '?')}"
    if active == "failed" or props.get("Result", "success") != "success":
        return fail(name, f"{state}{exited}{last_error}", _exit_fix(props))
    if active == "inactive":
        return warn(name, f"{state}: not running", f"sudo systemctl enable --now {SERVICE}")
    return warn(
        name,
        f"{state}{last_error}",
        f"wait a few seconds and run the doctor again; journalctl -u {SERVICE} -f",
    )


def service_active(run: Runner, root: Path) -> bool:
    return (
        systemd_running(root)
        and run(["systemctl", "is-active", "--quiet", SERVICE]).returncode == 0
    )
