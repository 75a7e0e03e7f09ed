"""A message on a command topic, in Home Assistant's payload formats, into a
request for the command dispatch (the one ``ctl`` uses), or a rejection that
says why. Nothing here acts: it only reads.

Retained commands are refused: a broker would hand them out again at every
reconnect, and a relay would switch at every start.
"""

from __future__ import annotations

import json
import math
from typing import Any

from .discovery import BLINK, Capabilities
from .topics import Topics

MAX_COMMAND_BYTES = 4096
_LIGHT_KEYS = frozenset({"state", "brightness", "effect"})


class Rejected(ValueError):
    """A command that changes nothing, and why (for the log line)."""


def parse(
    t: Topics,
    caps: Capabilities,
    topic: str,
    payload: bytes,
    *,
    retain: bool,
    listen_s: float,
) -> dict[str, Any]:
    """The dispatch request for a command, or Rejected."""
    if retain:
        raise Rejected("a retained command is ignored (it would run again at every reconnect)")
    if len(payload) > MAX_COMMAND_BYTES:
        raise Rejected(f"{len(payload)} bytes is more than a command takes ({MAX_COMMAND_BYTES})")
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise Rejected("not UTF-8 text") from None
    if topic == t.listen:
        return {"cmd": "tap", "seconds": _listen_seconds(text, listen_s)}
    if topic == t.say:
        if not text.strip():
            raise Rejected("an announcement needs some text")
        return {"cmd": "announce", "text": text}
    if topic == t.command("mute") and caps.mute:
        return {"cmd": "mute", "on": _on_off(text)}
    if topic == t.command("volume") and caps.volume:
        return {"cmd": "volume", "level": _percent(text)}
    rest = topic.removeprefix(t.base + "/").split("/")
    if len(rest) == 3 and rest[2] == "set":
        kind, name = rest[0], rest[1]
        if kind == "relay" and name in caps.relays:
            return {"cmd": "device", "name": name, "args": {"on": _on_off(text)}}
        if kind == "led" and name in dict(caps.leds):
            return {"cmd": "device", "name": name, "args": _light(text)}
    raise Rejected("no such entity on this device")


def _on_off(text: str) -> bool:
    word = text.strip()
    if word not in ("ON", "OFF"):
        raise Rejected(f"expected ON or OFF, got {_show(word)}")
    return word == "ON"


def _number(text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise Rejected(f"expected a number, got {_show(text.strip())}") from None
    if not math.isfinite(value):
        raise Rejected(f"expected a number, got {_show(text.strip())}")
    return value


def _listen_seconds(text: str, default: float) -> float:
    word = text.strip()
    if word in ("", "PRESS"):
        return default
    seconds = _number(word)
    if not 0 < seconds <= 60:
        raise Rejected(f"a listening turn lasts more than 0 and at most 60 s, not {seconds:g}")
    return seconds


def _percent(text: str) -> int:
    value = _number(text)
    if not 0 <= value <= 100:
        raise Rejected(f"expected 0 to 100, got {value:g}")
    return round(value)


def _light(text: str) -> dict[str, Any]:
    """Home Assistant's JSON light schema (plain ON / OFF is taken too) into
    an LED tool's arguments. Ranges are the LED tool's own check."""
    word = text.strip()
    if word in ("ON", "OFF"):
        return {"action": "on" if word == "ON" else "off"}
    try:
        body = json.loads(word)
    except (ValueError, RecursionError):
        raise Rejected('expected JSON such as {"state": "ON"}, or ON / OFF') from None
    if not isinstance(body, dict):
        raise Rejected('expected a JSON object such as {"state": "ON"}')
    unknown = set(body) - _LIGHT_KEYS
    if unknown:
        raise Rejected(
            f"unknown keys {sorted(unknown)[:5]}; this light takes {sorted(_LIGHT_KEYS)}"
        )
    state = body.get("state")
    if state not in ("ON", "OFF"):
        raise Rejected(f'"state" must be "ON" or "OFF", got {_show(state)}')
    if state == "OFF":
        if len(body) > 1:
            raise Rejected('"state": "OFF" takes nothing else')
        return {"action": "off"}
    effect = body.get("effect")
    if effect is not None:
        if effect != BLINK:
            raise Rejected(f'"effect" must be "{BLINK}", got {_show(effect)}')
        if "brightness" in body:
            raise Rejected('"effect" and "brightness" do not go together')
        return {"action": "blink"}
    if "brightness" in body:
        level = body["brightness"]
        if isinstance(level, bool) or not isinstance(level, int | float):
            raise Rejected(f'"brightness" must be a number, got {_show(level)}')
        return {"action": "on", "brightness": level}
    return {"action": "on"}


def _show(value: object) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
