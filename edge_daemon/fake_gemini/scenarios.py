"""How the fake model behaves when a test does not say: a scripted turn
(``FakeGemini.script_turn``) when one is queued, else an echo of what it
heard, and a call of any declared function the user names."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .records import Turn


@dataclass
class ScriptedTurn:
    """How one turn goes, queued by ``FakeGemini.script_turn``."""

    input_text: str | None = None
    reply_text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any]]] | None = None
    reply_pcm: bytes | None = None
    delay_s: float = 0.0


def default_reply(turn: Turn) -> str:
    if turn.input_text and not turn.input_text.startswith("("):
        return f"You said: {turn.input_text}"
    return f"I heard {turn.heard_s:.1f} seconds of audio."


def auto_tool_calls(setup: dict[str, Any] | None, text: str) -> list[tuple[str, dict[str, Any]]]:
    """A demo nicety: saying a declared function's name calls it."""
    lowered = text.lower()
    calls = []
    for tool in (setup or {}).get("tools") or []:
        for decl in (tool or {}).get("functionDeclarations") or []:
            name = decl["name"].lower()
            if name in lowered or name.replace("_", " ") in lowered:
                calls.append((decl["name"], default_args(decl)))
    return calls


def default_args(decl: dict[str, Any]) -> dict[str, Any]:
    """Plausible arguments for a declared function: enough to exercise a client's dispatch."""
    schema = decl.get("parameters") or decl.get("parametersJsonSchema") or {}
    props = schema.get("properties") or {}
    args: dict[str, Any] = {}
    for name in schema.get("required") or []:
        prop = props.get(name) or {}
        kind = str(prop.get("type", "")).upper()
        if kind == "BOOLEAN":
            args[name] = True
        elif kind in ("NUMBER", "INTEGER"):
            value = prop.get("minimum", 1)
            args[name] = int(value) if kind == "INTEGER" else value
        elif kind == "STRING":
            args[name] = (prop.get("enum") or ["on"])[0]
        elif kind == "ARRAY":
            args[name] = []
        elif kind == "OBJECT":
            args[name] = {}
    return args
