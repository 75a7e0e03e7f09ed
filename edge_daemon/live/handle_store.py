"""The resumption handle on disk, so a restarted daemon (an upgrade, a crash,
the watchdog) resumes the same conversation instead of starting a new one.

The service keeps a session resumable for about two hours after its last
handle. A saved handle older than that, from a different setup (another
model, other tools: the service would refuse or misread it), or from the
future (a Pi without a clock that booted before NTP) is dropped and the
daemon starts clean. The file is the daemon's alone: mode 0600 in the state
directory, written atomically (a temporary file renamed over it), and at
most every few seconds, so an SD card is not worn by a write per turn.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

# The service's window, less a margin for the time the redial takes.
VALID_S = 2 * 3600 - 600
# Writes closer together than this wait for the next update or the flush.
MIN_WRITE_INTERVAL_S = 5.0
FILE_NAME = "resumption.json"


class HandleStore:
    def __init__(
        self,
        path: Path,
        fingerprint: str,
        *,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.fingerprint = fingerprint
        self._wall = wall
        self._mono = mono
        self._last_write = -MIN_WRITE_INTERVAL_S
        self._pending: tuple[str, float] | None = None

    def load(self) -> tuple[str, float] | None:
        """(handle, age in seconds) if a usable one is saved; else None."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the saved resumption handle: %s", exc)
            self.clear()
            return None
        handle, saved_at = data.get("handle"), data.get("saved_at")
        if not isinstance(handle, str) or not isinstance(saved_at, int | float) or not handle:
            self.clear()
            return None
        age = self._wall() - saved_at
        if data.get("setup") != self.fingerprint:
            why = "the setup changed since (model, tools or instructions)"
        elif age < 0:
            why = "it is dated in the future (the clock moved back)"
        elif age > VALID_S:
            why = f"it is {age / 3600:.1f} h old, past the service's window"
        else:
            return handle, age
        log.info("starting a new conversation: the saved handle is not usable, %s", why)
        self.clear()
        return None

    def save(self, handle: str) -> None:
        self._pending = (handle, self._wall())
        if self._mono() - self._last_write >= MIN_WRITE_INTERVAL_S:
            self.flush()

    def flush(self) -> None:
        if self._pending is None:
            return
        handle, saved_at = self._pending
        body = json.dumps({"handle": handle, "saved_at": saved_at, "setup": self.fingerprint})
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(body)
            os.replace(tmp, self.path)
        except OSError as exc:
            # A read-only or full disk costs the next restart its conversation, nothing more.
            log.warning("cannot save the resumption handle in %s: %s", self.path.parent, exc)
            return
        self._pending = None
        self._last_write = self._mono()

    def clear(self) -> None:
        self._pending = None
        with contextlib.suppress(OSError):
            self.path.unlink()
