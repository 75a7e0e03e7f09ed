"""The one command dispatch: ``{"cmd": ...}`` in, a reply out. The control
socket (control.py) uses it, and anything else that drives the daemon from
outside goes through the same door, so every way in behaves alike.

Commands: press, release, tap, say, status, wait, mute, volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
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

# Announcements go through the model (there is no other voice): it is asked to
# say the text as it is. At most this long, so a runaway payload costs little.
ANNOUNCE_MAX_CHARS = 1000


def announcement(text: str) -> str:
    """What the model is sent for an announcement. The text is quoted as JSON,
    so it reads as something to say, not as more instructions."""
    quoted = json.dumps(text.strip(), ensure_ascii=False)
    return (
        "Announce this to the people in the room, word for word, in the language it is "
        f"written in, and say nothing else: {quoted}"
    )


class VirtualButton(Protocol):
    """A button the control socket can press, e.g. a simulated GPIO pin, so
    `ctl press` takes the same path as a finger on the real button."""

    def sim_press(self) -> None: ...

    def sim_release(self) -> None: ...


class Devices(Protocol):
    """The LEDs and relays, switched from outside (``{"cmd": "device"}``) on the
    same path as the model's calls: the same checks, bounds, budgets and safe
    states, with ``cause`` naming who asked in the journal record."""

    def states(self) -> Mapping[str, Mapping[str, Any]]: ...

    async def switch(self, name: str, args: Mapping[str, Any], cause: str) -> Mapping[str, Any]: ...

    def subscribe(self, listener: Callable[[str], None]) -> None: ...


class Commands:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    async def dispatch(self, request: Mapping[str, Any], source: str = "ctl") -> Mapping[str, Any]:
        """``source`` says who asks ("ctl", "mqtt"): it is what the journal
        records as the cause of a turn or a switched device."""
        d = self.daemon
        cmd = request.get("cmd")
        if cmd == "press":
            await self._press(source)
        elif cmd == "release":
            await self._release(source)
        elif cmd == "tap":
            seconds = request.get("seconds", 1.0)
            if not isinstance(seconds, int | float) or not 0 < seconds <= 60:
                return {"ok": False, "error": "seconds must be a number in (0, 60]"}
            if d.talking:
                # Someone holds the button: this tap must not end their turn.
                return {"ok": False, "error": "a turn is already open"}
            await self._press(source)
            spawn(self._release_after(float(seconds), source, d.turn), "tap")
        elif cmd == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "say needs a non-empty text"}
            refused = await d.say(text)
            if refused:
                return {"ok": False, "error": refused}
        # announce {text}: the model says the text (the only voice there is).
        # device {name, args}: switch an LED or relay as the model would.
        elif cmd == "announce":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "announce needs a non-empty text"}
            if len(text) > ANNOUNCE_MAX_CHARS:
                return {"ok": False, "error": f"announce takes at most {ANNOUNCE_MAX_CHARS} chars"}
            refused = await d.say(announcement(text))
            if refused:
                return {"ok": False, "error": refused}
        elif cmd == "device":
            return await self._device(request, source)
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
        elif cmd == "mute":
            on = request.get("on")
            if not isinstance(on, bool):
                return {"ok": False, "error": "mute needs on: true or false"}
            d.set_muted(on, source)
            return {"ok": True, "state": d.state.value, "muted": d.muted}
        elif cmd == "volume":
            level = request.get("level")
            if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= 100:
                return {"ok": False, "error": "volume needs level: an integer from 0 to 100"}
            return {"ok": True, "state": d.state.value, "volume": d.set_volume(level, source)}
        else:
            return {
                "ok": False,
                "error": f"unknown command {cmd!r}; try press, release, tap, say, status, wait, "
                "mute, volume",
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
        hands_free = d.hands_free
        return {
            "state": d.state.value,
            "talking": d.talking,
            "muted": d.muted,
            "volume": d.volume.level,
            "voice": {
                "listening_for": d.voice.listen.value,
                "echo_cancel": d.voice.echo_cancelled,
                "half_duplex": d.voice.half_duplex,
                "wake_word": d.voice.d.wake.name if d.voice.d.wake is not None else None,
                "follow_up_open": bool(hands_free and hands_free.follow_up_open),
                **d.voice.stats,
                **(hands_free.counters if hands_free is not None else {}),
                "earcons": list(d.feedback.played),
                "hooks": dict(d.hooks.counters),
            },
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
    # same path as a finger on the button. Other sources (MQTT) are no finger:
    # they open the turn directly, as on a device.
    async def _press(self, source: str = "ctl") -> None:
        """Press, and reply once the turn is open: a simulated pin counts as
        a press only after the button's debounce and minimum press, and a
        script's next command (`ctl wait idle`, `ctl say`) must see the turn."""
        d = self.daemon
        if d.virtual_button is None or source != "ctl":
            d.press(source)
            return
        d.virtual_button.sim_press()
        await self._until(lambda: d.talking)

    async def _release(self, source: str = "ctl") -> None:
        d = self.daemon
        if d.virtual_button is None or source != "ctl":
            d.release(source)
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

    async def _device(self, request: Mapping[str, Any], source: str) -> Mapping[str, Any]:
        devices = self.daemon.devices
        name, args = request.get("name"), request.get("args", {})
        if devices is None:
            return {"ok": False, "error": "this daemon has no LEDs or relays (GPIO unavailable?)"}
        if not isinstance(name, str) or name not in devices.states():
            known = ", ".join(sorted(devices.states())) or "none"
            return {"ok": False, "error": f"device needs the name of one of: {known}"}
        if not isinstance(args, Mapping):
            return {"ok": False, "error": "device args must be an object"}
        try:
            state = await devices.switch(name, args, source)
        except ValueError as exc:  # refused: the reason is the device's own words
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "state": self.daemon.state.value, "device": dict(state)}

    async def _release_after(self, seconds: float, source: str, turn: object) -> None:
        await asyncio.sleep(seconds)
        if self.daemon.turn is turn:  # not a turn someone else opened since
            await self._release(source)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
