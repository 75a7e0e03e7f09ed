"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and logging
to journald with structured ``EDGE_*`` fields.

Everything degrades quietly off systemd: no NOTIFY_SOCKET means notify() is a
no-op, no journal means stderr.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "edge-daemon"
_STD_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# --------------------------------------------------------------------------- sd_notify


def notify(state: str, env: dict[str, str] | None = None) -> bool:
    """Send one sd_notify datagram. False when not under a notify-aware manager.

    Written against the protocol (one datagram to $NOTIFY_SOCKET) rather than
    through systemd-python so it also works where that extension is absent.
    """
    path = (env or os.environ).get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # abstract namespace
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(state.encode())
    except OSError as exc:
        log.debug("sd_notify failed: %s", exc)
        return False
    return True


def watchdog_interval_s(env: dict[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC, as systemd recommends; None if no watchdog is set
    or it is meant for another process ($WATCHDOG_PID)."""
    env = env if env is not None else dict(os.environ)
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


async def watchdog_loop(interval_s: float) -> None:
    """Ping from the event loop itself: if the loop hangs, the pings stop and
    systemd restarts the service. A thread would keep pinging a dead loop."""
    while True:
        notify("WATCHDOG=1")
        await asyncio.sleep(interval_s)


# --------------------------------------------------------------------------- logging


class FieldsFormatter(logging.Formatter):
    """stderr lines that still carry the structured fields: `msg  EDGE_X=y`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in vars(record).items() if k.startswith("EDGE_") and v != ""]
        return f"{line}  {' '.join(fields)}" if fields else line


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    return JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)


def use_journal(target: str, env: dict[str, str] | None = None) -> bool:
    env = env if env is not None else dict(os.environ)
    if target == "journal":
        return True
    if target == "stderr":
        return False
    # "auto": systemd sets JOURNAL_STREAM when stderr is connected to journald.
    return bool(env.get("JOURNAL_STREAM"))


def configure_logging(level: str = "info", target: str = "auto") -> str:
    """Set up the root logger; return where logs go ("journal" or "stderr")."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    where = "stderr"
    handler: logging.Handler | None = None
    if use_journal(target):
        handler = _journal_handler()
        if handler is not None:
            where = "journal"
        elif target == "journal":
            print(
                "edge-daemon: logging.target is 'journal' but systemd-python is not "
                "installed; logging to stderr",
                file=sys.stderr,
            )
    if handler is None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    # Library chatter (frames, pings) never above debug, and never the
    # handshake headers, which carry the API key.
    for noisy in ("websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.INFO))
    return where


def edge_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields on a record (used by tests and the formatter)."""
    return {k: v for k, v in vars(record).items() if k not in _STD_RECORD_KEYS}
