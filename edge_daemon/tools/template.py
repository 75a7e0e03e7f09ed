"""Topic and payload templates of the remote (MQTT) tools: ``{name}`` stands for
a parameter's checked value, and nothing else is ever evaluated.

- A placeholder is ``{`` a parameter name ``}``; any other brace is text, so a
  JSON payload needs no escaping: ``{"state": {state}}``.
- A payload that starts with ``{`` or ``[`` (a placeholder aside) is JSON:
  each value goes in JSON-encoded (a string quoted and escaped), and the
  result must parse. Any other payload (``{state}`` alone too) is text:
  strings go in as they are.
- In a topic only values from a closed set may go (a STRING with an enum, an
  INTEGER, a BOOLEAN), never free text: the model can then reach only the
  topics the config spells out, and never a ``/``, ``+`` or ``#`` it made up.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a topic level may not hold: MQTT's wildcards, its separator and NUL.
_TOPIC_FORBIDDEN = re.compile(r"[+#\x00]")
TOPIC_MAX = 256
PAYLOAD_MAX = 16 * 1024


def placeholders(template: str) -> list[str]:
    """The parameter names a template uses, in order of first use."""
    seen: list[str] = []
    for name in PLACEHOLDER.findall(template):
        if name not in seen:
            seen.append(name)
    return seen


def is_json_template(payload: str) -> bool:
    """JSON when, placeholders aside, it starts with { or [: ``{"state": {s}}``
    is JSON, ``{s}`` alone is text."""
    return PLACEHOLDER.sub("0", payload).lstrip().startswith(("{", "["))


def text_of(value: Any) -> str:
    """A checked argument as text: true/false as JSON spells them, 50.0 as 50."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value)


def _json_of(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    return json.dumps(value, ensure_ascii=False)


def render_payload(template: str, args: Mapping[str, Any]) -> str:
    """The payload with every placeholder filled in. Raises ValueError when a
    JSON payload does not parse once filled, or the result is too large."""
    as_json = is_json_template(template)
    out = PLACEHOLDER.sub(
        lambda m: (_json_of if as_json else text_of)(args[m[1]]) if m[1] in args else m[0],
        template,
    )
    if as_json:
        try:
            json.loads(out)
        except ValueError as exc:
            raise ValueError(f"the payload is not valid JSON once filled in ({exc})") from None
    if len(out.encode()) > PAYLOAD_MAX:
        raise ValueError(f"the payload would be larger than {PAYLOAD_MAX} bytes")
    return out


def render_topic(template: str, args: Mapping[str, Any]) -> str:
    """The topic with every placeholder filled in; ValueError if a value would
    make it something other than one plain topic."""
    out = PLACEHOLDER.sub(lambda m: text_of(args[m[1]]) if m[1] in args else m[0], template)
    problem = topic_problem(out)
    if problem:
        raise ValueError(f"the topic {out[:80]!r} {problem}")
    return out


def topic_problem(topic: str) -> str:
    """Why ``topic`` cannot be published to, or "" when it can."""
    if not topic:
        return "is empty"
    if _TOPIC_FORBIDDEN.search(topic):
        return "holds a wildcard (+ or #) or a NUL"
    if topic.startswith("$"):
        return "starts with $ (the broker's own topics)"
    if len(topic.encode()) > TOPIC_MAX:
        return f"is longer than {TOPIC_MAX} bytes"
    return ""


def topic_value_problem(prop: Mapping[str, Any]) -> str:
    """Why a parameter may not fill a topic placeholder, or ""."""
    kind = prop.get("type")
    if kind in ("INTEGER", "BOOLEAN"):
        return ""
    if kind == "STRING" and prop.get("enum"):
        for value in prop["enum"]:
            if not value or "/" in value or _TOPIC_FORBIDDEN.search(value):
                return f"its enum value {value!r} is empty or holds /, +, # or NUL"
        return ""
    return "only a STRING with an enum, an INTEGER or a BOOLEAN may go into a topic"


def sample_args(properties: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One valid value per parameter: a template is tried with these when the
    config is loaded, so a broken JSON payload is a config error, not a
    failure the first time the model calls."""
    out: dict[str, Any] = {}
    for name, prop in properties.items():
        kind = prop.get("type")
        if kind == "BOOLEAN":
            out[name] = True
        elif kind == "STRING":
            out[name] = (prop.get("enum") or ["text"])[0]
        else:
            low = prop.get("minimum", prop.get("maximum", 0))
            out[name] = int(low) if kind == "INTEGER" else float(low)
    return out


def unused(names: Iterable[str], *templates: str) -> list[str]:
    used = {n for t in templates for n in placeholders(t)}
    return [n for n in names if n not in used]
