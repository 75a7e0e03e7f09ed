"""The one command dispatch: ``{"cmd": ...}`` in, a reply out. The control
socket (control.py) uses it, and anything else that drives the daemon from
outside goes through the same door, so every way in behaves alike.

Commands: press, release, tap, say, status, wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .background import spawn
from .state_machine import State
from .systemd import scrub

if TYPE_CHECKING:
    from .daemon import Daemon

# An extra section for `ctl status` (devices, pins, LED pattern).
StatusProvider = Callable[[], Mapping[str, Any]]


class VirtualButton(Protocol):
    """A button the control socket can press, e.g. a simulated GPIO pin, so
    `ctl press` takes the same path as a finger on the real button."""

    def sim_press(self) -> None: ...

    def sim_release(self) -> None: ...


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def dispatch(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        d = self.daemon
        cmd = request.get("cmd")
        if cmd == "press":
            await self._press()
        elif cmd == "release":
            await self._release()
        elif cmd == "tap":
            seconds = request.get("seconds", 1.0)
            if not isinstance(seconds, int | float) or not 0 < seconds <= 60:
                return {"ok": False, "error": "seconds must be a number in (0, 60]"}
            await self._press()
            spawn(self._release_after(float(seconds)), "tap")
        elif cmd == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "say needs a non-empty text"}
            refused = await d.say(text)
            if refused:
                return {"ok": False, "error": refused}
        elif cmd == "status":
            return {"ok": True, **self.status()}
        elif cmd == "wait":
            wanted, timeout = request.get("state"), request.get("timeout", 30.0)
            if wanted not in State.__members__.values():
                return {"ok": False, "error": f"state must be one of {[s.value for s in State]}"}
            if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
                return {"ok": False, "error": "timeout must be a number of seconds in (0, 3600]"}
            reached = await d.wait_state(State(wanted), float(timeout))
            return {"ok": reached, "state": d.state.value}
        else:
            return {
                "ok": False,
                "error": f"unknown command {cmd!r}; try press, release, tap, say, status, wait",
            }
        return {"ok": True, "state": d.state.value}

    def status(self) -> dict[str, Any]:
        """State, link, counters and history, plus each attached device's section."""
        d = self.daemon
        link = d.link
        session = link.session
        extras: dict[str, Any] = {}
        for name, provider in d.status_providers.items():
            try:
                extras[name] = provider()
            except Exception as exc:  # status must answer even if a device misbehaves
                extras[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "state": d.state.value,
            "talking": d.talking,
            "connection": {
                "state": link.state.value,
                "url": link.settings.url,
                "connects": link.connects,
                "resumes": link.resumption.resumes,
                "has_handle": link.resumption.handle is not None,
                "handle_age_s": _round(link.resumption.age_s),
                "open_for_s": _round(session.open_for_s) if session else None,
                "last_error": scrub(link.last_error),
                "last_close_code": link.last_close_code,
                # What kind of trouble: "", network, server, quota, token,
                # config, stale_handle, stalled.
                "problem": link.problem,
                **(
                    {"tokens": link.settings.tokens.status()}
                    if link.settings.tokens is not None
                    else {}
                ),
            },
            "model": d.outcomes.status(),
            "counters": {
                **vars(d.counters),
                "mic": dict(d.mic.counters),
                "speaker": dict(d.speaker.counters),
                "session": vars(session.counters) if session else {},
                **(
                    {"camera": {**d.ticker.counters, **getattr(d.camera, "counters", {})}}
                    if d.ticker is not None
                    else {}
                ),
            },
            "history": [{"t": t, "state": s} for t, s in d.history],
            # Each device: up, down (being reopened) or off, since when, why, retries.
            "device_health": d.device_health.status(),
            "uptime_s": _round(time.monotonic() - d.started_at),
            **extras,
        }

    # `ctl press` under --simulate drives the mock button pin, so it takes the
    # same path as a finger on the button.
    async def _press(self) -> None:
        """Press, and reply once the turn is open: a simulated pin counts as
        a press only after the button's debounce and minimum press, and a
        script's next command (`ctl wait idle`, `ctl say`) must see the turn."""
        d = self.daemon
        if d.virtual_button is None:
            d.press("ctl")
            return
        d.virtual_button.sim_press()
        await self._until(lambda: d.talking)

    async def _release(self) -> None:
        d = self.daemon
        if d.virtual_button is None:
            d.release("ctl")
            return
        d.virtual_button.sim_release()
        await self._until(lambda: not d.talking)

    async def _until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait for a state change that makes ``condition`` true (bounded: a
        button that never reports the press must not hang the control socket)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not condition():
                    await self.daemon.wait_changed()

    async def _release_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._release()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
