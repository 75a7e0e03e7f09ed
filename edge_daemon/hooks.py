"""Hook commands: a program run on an event (a state change, the wake word,
mute, volume, an error, the link), as wyoming-satellite's ``--*-command``
options do, for LED rings, displays or home automation.

No shell: the configured line is split with shlex and run directly, as the
service user, with stdin closed and its output logged at debug level. Each
run is bounded by ``hooks.timeout_s`` and then killed. One run per event at
a time: events that come while their hook still runs are coalesced, and
only the newest runs after it (counted in ``coalesced``), so a slow hook
never piles up processes and still always hears the latest state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex

from .config import HooksConfig

log = logging.getLogger(__name__)

_MAX_OUTPUT = 64 * 1024
EVENTS = ("state", "wake", "mute", "volume", "error", "link")


class Hooks:
    def __init__(self, cfg: HooksConfig) -> None:
        self.timeout_s = cfg.timeout_s
        self.argv: dict[str, list[str]] = {
            event: shlex.split(getattr(cfg, event)) for event in EVENTS if getattr(cfg, event)
        }
        self.counters = {"runs": 0, "failures": 0, "timeouts": 0, "coalesced": 0}
        self._running: dict[str, asyncio.Task[None]] = {}
        self._pending: dict[str, tuple[list[str], dict[str, str]]] = {}

    def __bool__(self) -> bool:
        return bool(self.argv)

    def fire(self, event: str, detail: str = "", **env: str) -> None:
        """Run ``event``'s hook with ``detail`` as its last argument (in the
        background; returns at once)."""
        argv = self.argv.get(event)
        if argv is None:
            return
        extra = {"EDGE_EVENT": event, "EDGE_DETAIL": detail, **env}
        args = [*argv, detail] if detail else argv
        running = self._running.get(event)
        if running is not None and not running.done():
            if event in self._pending:
                self.counters["coalesced"] += 1  # the older pending one never runs
            self._pending[event] = (args, extra)
            return
        self._start(event, args, extra)

    def _start(self, event: str, args: list[str], extra: dict[str, str]) -> None:
        task = asyncio.get_running_loop().create_task(
            self._run(event, args, extra), name=f"hook-{event}"
        )
        self._running[event] = task
        task.add_done_callback(lambda _t: self._next(event))

    def _next(self, event: str) -> None:
        pending = self._pending.pop(event, None)
        if pending is not None:
            self._start(event, *pending)

    @property
    def busy(self) -> bool:
        """A hook is running or waiting to."""
        return bool(self._pending) or any(not t.done() for t in self._running.values())

    async def _run(self, event: str, argv: list[str], extra: dict[str, str]) -> None:
        self.counters["runs"] += 1
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, **extra},
                start_new_session=True,  # a hook's children die with it on a timeout
            )
        except OSError as exc:
            self.counters["failures"] += 1
            log.warning(
                "hook %s (%s) did not start: %s",
                event,
                argv[0],
                exc.strerror or exc,
                extra={"EDGE_EVENT": "hook_failed"},
            )
            return
        try:
            async with asyncio.timeout(self.timeout_s):
                assert proc.stdout is not None
                # Bounded: a hook that says more blocks on its pipe until the timeout.
                out = await proc.stdout.read(_MAX_OUTPUT)
                await proc.wait()
        except TimeoutError:
            self.counters["timeouts"] += 1
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            await proc.wait()
            log.warning(
                "hook %s (%s) killed after hooks.timeout_s = %g s",
                event,
                argv[0],
                self.timeout_s,
                extra={"EDGE_EVENT": "hook_failed"},
            )
            return
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, 9)
            raise
        if out:
            log.debug("hook %s said: %s", event, out[:2000].decode(errors="replace").strip())
        if proc.returncode:
            self.counters["failures"] += 1
            log.warning(
                "hook %s (%s) exited with status %d",
                event,
                argv[0],
                proc.returncode,
                extra={"EDGE_EVENT": "hook_failed"},
            )

    async def close(self) -> None:
        """Let running hooks finish within their timeout (on the way out);
        those still waiting to run do not."""
        self._pending.clear()
        tasks = [t for t in self._running.values() if not t.done()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s + 1)
