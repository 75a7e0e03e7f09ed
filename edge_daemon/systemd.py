"""systemd integration: sd_notify (READY, STATUS, WATCHDOG, STOPPING) and logging
to journald with structured ``EDGE_*`` fields.

Everything degrades quietly off systemd: no NOTIFY_SOCKET means notify() is a
no-op, no journal means stderr.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import enum
import logging
import logging.handlers
import os
import queue
import re
import socket
import sys
import typing
from collections.abc import Mapping
from typing import Any

from .live.session import current_session_id

log = logging.getLogger(__name__)

SYSLOG_IDENTIFIER = "edge-daemon"
_STD_RECORD_KEYS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


# --------------------------------------------------------------------------- sd_notify


def notify(state: str, env: Mapping[str, str] | None = None) -> bool:
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


def notify_status(text: str) -> bool:
    """STATUS= for `systemctl status`. One line: a newline would start another
    assignment, and the text can carry a server's close reason."""
    return notify("STATUS=" + " ".join(text.split()))


def watchdog_interval_s(env: Mapping[str, str] | None = None) -> float | None:
    """Half of $WATCHDOG_USEC, as systemd recommends; None if no watchdog is set
    or it is meant for another process ($WATCHDOG_PID)."""
    env = env if env is not None else os.environ
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

REDACTED = "[redacted]"
# Values no record may carry (the API key). Nothing is meant to log them; this
# is the net under that promise, for a library or a future change that slips.
_secrets: set[str] = set()


# Things that look like credentials wherever they come from (a server's
# close reason, a command's output): an API key, a token's name, a key= query.
_CREDENTIAL = re.compile(
    r"AIza[0-9A-Za-z_\-]{8,}|auth_tokens/[0-9A-Za-z_\-]+|([?&](key|access_token)=)[^&\s]+"
)
MAX_SHOWN = 200


def scrub(text: str, limit: int = MAX_SHOWN) -> str:
    """Text from outside (a close reason, an error) fit to show in `ctl status`,
    STATUS= and a log line: one line, printable, bounded, no secret."""
    line = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    for secret in _secrets:
        line = line.replace(secret, REDACTED)
    line = _CREDENTIAL.sub(lambda m: (m.group(1) or "") + REDACTED, line)
    return line if len(line) <= limit else line[: limit - 3] + "..."


def redact(secret: str) -> None:
    """Scrub ``secret`` from every record that passes the handlers set up here.

    Values shorter than 8 characters are ignored: scrubbing them would mangle
    ordinary words, and no real key is that short.
    """
    if len(secret) >= 8:
        _secrets.add(secret)


def field_text(value: Any) -> str | None:
    """A structured field as journald should get it: text, or None to omit it.

    JournalHandler sends str(value), so an enum would arrive as its repr, True
    as "True" and None as "None"; an empty field only clutters
    `journalctl -o verbose`.
    """
    if value is None or value == "":
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


class RecordFields(logging.Filter):
    """Makes every record journal-ready, on whatever handler it is attached to:

    - EDGE_SESSION from the connection the logging task serves, where the
      call did not name one;
    - every EDGE_* value as text (empty ones removed);
    - registered secrets scrubbed from the message, its arguments, the
      traceback and the fields, since JournalHandler forwards all of them
      (CODE_ARGS, EXCEPTION_INFO, EXCEPTION_TEXT, every record attribute).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = vars(record)
        if "EDGE_SESSION" not in fields:
            session = current_session_id.get()
            if session:
                fields["EDGE_SESSION"] = session
        for key in [k for k in fields if k.startswith("EDGE_")]:
            text = field_text(fields[key])
            if text is None:
                del fields[key]
            else:
                fields[key] = text
        if _secrets:
            _scrub(record)
        return True


def _scrub(record: logging.LogRecord) -> None:
    def clean(text: str) -> str:
        for secret in _secrets:
            text = text.replace(secret, REDACTED)
        return text

    try:
        message = record.getMessage()
    except Exception:  # a bad format string: logging reports it; still scrub the parts
        message = f"{record.msg} {record.args!r}"
    if clean(message) != message or clean(repr(record.args)) != repr(record.args):
        record.msg, record.args = clean(message), None
    if record.exc_info and not record.exc_text:
        record.exc_text = logging.Formatter().formatException(record.exc_info)
    if record.exc_text and clean(record.exc_text) != record.exc_text:
        # The exception object itself would go out as EXCEPTION_INFO: only
        # the scrubbed text is kept.
        record.exc_text, record.exc_info = clean(record.exc_text), None
    if record.stack_info:
        record.stack_info = clean(record.stack_info)
    for key, value in vars(record).items():
        if key.startswith("EDGE_") and isinstance(value, str):
            setattr(record, key, clean(value))


class FieldsFormatter(logging.Formatter):
    """stderr lines that still carry the structured fields: `msg  EDGE_X=y`."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = [f"{k}={v}" for k, v in vars(record).items() if k.startswith("EDGE_") and v != ""]
        return f"{line}  {' '.join(fields)}" if fields else line


class _JournalOrStderr(logging.Handler):
    """The journal's native protocol (structured fields), and stderr when it
    cannot be reached (a unit without AF_UNIX, journald restarting): under
    systemd stderr is the journal's stream too, so the message still lands,
    as text."""

    def __init__(self, journal: logging.Handler) -> None:
        super().__init__()
        self._journal = journal
        self._stderr = logging.StreamHandler(sys.stderr)
        self._stderr.setFormatter(FieldsFormatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._journal.emit(record)
        except Exception:
            self._stderr.emit(record)


def _journal_handler() -> logging.Handler | None:
    try:
        from systemd.journal import JournalHandler
    except ImportError:
        return None
    journal = JournalHandler(SYSLOG_IDENTIFIER=SYSLOG_IDENTIFIER)
    journal.handleError = _reraise  # type: ignore[method-assign]  # let the wrapper fall back
    return _JournalOrStderr(journal)


def _reraise(record: logging.LogRecord) -> None:
    raise  # called from inside JournalHandler.emit's except block: the error goes on up


def stderr_is_journal(env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    """True if ``fd`` is the journal stream systemd connected: $JOURNAL_STREAM
    names its device and inode. The variable alone is not enough: it is
    inherited, e.g. by shells in a terminal started from a systemd user unit,
    whose stderr is a tty."""
    value = (env if env is not None else os.environ).get("JOURNAL_STREAM", "")
    try:
        dev, ino = (int(part) for part in value.split(":"))
        st = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == (dev, ino)


def use_journal(target: str, env: Mapping[str, str] | None = None, fd: int = 2) -> bool:
    if target == "journal":
        return True
    if target == "stderr":
        return False
    return stderr_is_journal(env, fd)  # "auto"


# Records waiting for the writer thread. A wedged journald must never block
# the event loop (a blocked loop also stops the watchdog pings): past this
# many, the oldest is dropped and counted.
LOG_QUEUE_SIZE = 1000


class DroppingQueueHandler(logging.handlers.QueueHandler):
    """Hands records to the writer thread without ever waiting for it."""

    def __init__(self, q: queue.Queue[logging.LogRecord]) -> None:
        super().__init__(q)
        self.dropped = 0

    def enqueue(self, record: logging.LogRecord) -> None:
        q = typing.cast("queue.Queue[logging.LogRecord]", self.queue)
        while True:
            try:
                q.put_nowait(record)
                return
            except queue.Full:
                with contextlib.suppress(queue.Empty):
                    q.get_nowait()
                self.dropped += 1
                if self.dropped == 1:
                    print(
                        "edge-daemon: the log is not keeping up; dropping the oldest records",
                        file=sys.stderr,
                    )


class _Writer(logging.handlers.QueueListener):
    """The writer thread; stopping it waits a bounded time, so a wedged
    journald cannot hold up the exit either."""

    def enqueue_sentinel(self) -> None:
        with contextlib.suppress(queue.Full):
            self.queue.put(self._sentinel, timeout=2.0)  # type: ignore[attr-defined]

    def stop(self) -> None:
        thread = self._thread  # type: ignore[has-type]
        if thread is not None:
            self.enqueue_sentinel()
            thread.join(2.0)
            self._thread = None


_listener: _Writer | None = None
_target = "stderr"  # where configure_logging sent the records


def log_target() -> str:
    """"journal" or "stderr": where records go since configure_logging."""
    return _target


def stop_logging() -> None:
    """Write out what is queued (at exit, or before logging is set up again)."""
    global _listener
    if _listener is not None:
        _listener.stop()
        _listener = None


def configure_logging(level: str = "info", target: str = "auto") -> str:
    """Set up the root logger; return where logs go ("journal" or "stderr").

    Records are prepared (fields, session id, secrets scrubbed) in the thread
    that logs them, then written by a thread of their own."""
    global _listener, _target
    stop_logging()
    # A journal that cannot be written to (no AF_UNIX in a sandbox, journald
    # gone) must not print tracebacks: the record is lost, the daemon goes on.
    logging.raiseExceptions = False
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
    front = DroppingQueueHandler(queue.Queue(LOG_QUEUE_SIZE))
    front.setFormatter(_PassThrough())
    front.addFilter(RecordFields())
    root.addHandler(front)
    _listener = _Writer(front.queue, handler)  # type: ignore[arg-type]
    _listener.start()
    atexit.register(stop_logging)
    _target = where
    # Library chatter (frames, pings) never above debug, and never the
    # handshake headers, which carry the API key.
    for noisy in ("websockets", "asyncio"):
        logging.getLogger(noisy).setLevel(max(root.level, logging.INFO))
    return where


class _PassThrough(logging.Formatter):
    """QueueHandler.prepare() formats the record and drops exc_info: the
    message keeps the traceback text, and the writer's own formatter adds
    the time, level and fields."""

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            message = f"{message}\n{record.exc_text}"
        if record.stack_info:
            message = f"{message}\n{self.formatStack(record.stack_info)}"
        return message


def edge_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields on a record (used by tests and the formatter)."""
    return {k: v for k, v in vars(record).items() if k not in _STD_RECORD_KEYS}
