"""The clock is set by NTP: TLS certificates and tokens are checked against it."""

from __future__ import annotations

from pathlib import Path

from .machine import Runner, systemd_running, under
from .report import Check, fail, ok, warn


def check_clock(run: Runner, root: Path, *, tls_needed: bool = True) -> Check:
    """TLS certificates and tokens are checked against the clock, and a Pi has no
    battery-backed one: it must be set by NTP after every boot."""
    name = "clock"
    fix = (
        "sudo timedatectl set-ntp true, then watch `timedatectl timesync-status`; the device "
        "needs the network (UDP 123) to set its clock after boot"
    )
    if systemd_running(root):
        done = run(["timedatectl", "show", "-p", "NTPSynchronized"])
        answer = done.stdout.strip()
        if done.returncode == 0 and answer == "NTPSynchronized=yes":
            return ok(name, "synchronised (timedatectl: NTPSynchronized=yes)")
        if done.returncode == 0 and answer == "NTPSynchronized=no":
            detail = "not synchronised (timedatectl: NTPSynchronized=no)"
            if not tls_needed:
                return warn(name, detail + "; harmless for a ws:// endpoint, fatal for wss://")
            return fail(name, detail + "; TLS to Gemini fails once the date is off", fix)
    if under(root, "/run/systemd/timesync/synchronized").exists():
        return ok(name, "synchronised (/run/systemd/timesync/synchronized)")
    return warn(
        name,
        "cannot tell whether the clock is synchronised (no timedatectl answer, no "
        "/run/systemd/timesync/synchronized)",
        "make sure an NTP client runs (systemd-timesyncd or chrony)",
    )
