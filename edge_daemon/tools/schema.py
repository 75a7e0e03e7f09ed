"""Checks a function call's arguments against the schema we declared for it.

Gemini mostly follows a declaration but does not promise to: a call can miss a
required parameter, add one, send a number as a string or 150 for a 0-100
brightness. Nothing may move a pin on such a call, so every argument is checked
here first. Only the part of the OpenAPI-style schema that our declarations use
is understood: an OBJECT of STRING (enum), INTEGER, NUMBER (minimum, maximum)
and BOOLEAN properties with ``required``. ``check_declaration`` refuses a
declaration that uses more, so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

SCALAR_TYPES = ("STRING", "INTEGER", "NUMBER", "BOOLEAN")
_PROPERTY_KEYS = frozenset({"type", "description", "enum", "minimum", "maximum"})
_DECLARATION_KEYS = frozenset({"name", "description", "parameters", "behavior"})
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def validate_args(name: str, parameters: Mapping[str, Any] | None, args: object) -> dict[str, Any]:
    """The arguments, checked and normalised (50.0 -> 50 for an INTEGER, 5 -> 5.0 for a NUMBER).

    Raises ValueError naming every problem and what the function accepts,
    worded for the model, which reads it and tries again.
    """
    if args is None:
        args = {}
    properties: Mapping[str, Mapping[str, Any]] = (parameters or {}).get("properties", {})
    required: list[str] = list((parameters or {}).get("required", []))
    if not isinstance(args, Mapping):
        raise ValueError(
            f"{name}: the arguments must be an object. Nothing was changed. {describe(parameters)}"
        )
    problems: list[str] = []
    out: dict[str, Any] = {}
    for key in required:
        if key not in args:
            problems.append(f"missing required parameter {key!r}")
    for key, value in args.items():
        prop = properties.get(key) if isinstance(key, str) else None
        if prop is None:
            problems.append(f"unknown parameter {_show(key)}")
            continue
        checked, problem = _check_value(key, prop, value)
        if problem:
            problems.append(problem)
        else:
            out[key] = checked
    if problems:
        raise ValueError(
            f"{name}: {'; '.join(problems)}. Nothing was changed. {describe(parameters)}"
        )
    return out


def _check_value(key: str, prop: Mapping[str, Any], value: object) -> tuple[Any, str | None]:
    kind = prop["type"]
    wanted = _words(prop)
    wrong = f"{key!r} must be {wanted}, got {_show(value)}"
    if kind == "BOOLEAN":
        return (value, None) if isinstance(value, bool) else (None, wrong)
    if kind == "STRING":
        if not isinstance(value, str):
            return None, wrong
        if "enum" in prop and value not in prop["enum"]:
            return None, wrong
        return value, None
    # bool is an int in Python, but true is never a number in JSON.
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None, wrong
    if not math.isfinite(value):
        return None, wrong
    if kind == "INTEGER":
        # JSON has one number type: 50.0 is the integer 50, 50.5 is not an integer.
        if isinstance(value, float) and not value.is_integer():
            return None, wrong
        value = int(value)
    else:
        value = float(value)
    if "minimum" in prop and value < prop["minimum"]:
        return None, wrong
    if "maximum" in prop and value > prop["maximum"]:
        return None, wrong
    return value, None


def _words(prop: Mapping[str, Any]) -> str:
    kind = prop["type"]
    if kind == "BOOLEAN":
        return "true or false"
    if kind == "STRING":
        if "enum" in prop:
            return "one of " + ", ".join(f'"{v}"' for v in prop["enum"])
        return "a string"
    noun = "an integer" if kind == "INTEGER" else "a number"
    lo, hi = prop.get("minimum"), prop.get("maximum")
    if lo is not None and hi is not None:
        return f"{noun} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{noun} of at least {lo:g}"
    if hi is not None:
        return f"{noun} of at most {hi:g}"
    return noun


def describe(parameters: Mapping[str, Any] | None) -> str:
    """What a function accepts, in one sentence the model can act on."""
    properties: Mapping[str, Mapping[str, Any]] = (parameters or {}).get("properties", {})
    if not properties:
        return "This function takes no parameters."
    required = set((parameters or {}).get("required", []))
    parts = [
        f"{key} ({'required' if key in required else 'optional'}): {_words(prop)}"
        for key, prop in properties.items()
    ]
    return "Parameters: " + "; ".join(parts) + "."


def _show(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"  # JSON spelling, for the model
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_declaration(decl: Mapping[str, Any]) -> None:
    """Raise ValueError unless ``decl`` stays inside what validate_args understands."""
    unknown = set(decl) - _DECLARATION_KEYS
    if unknown:
        raise ValueError(f"declaration keys not understood: {sorted(unknown)}")
    name = decl.get("name")
    if not isinstance(name, str) or not FUNCTION_NAME.fullmatch(name):
        raise ValueError(f"not a valid function name: {name!r}")
    if not isinstance(decl.get("description"), str) or not decl["description"]:
        raise ValueError(f"{name}: a declaration needs a description")
    if decl.get("behavior", "NON_BLOCKING") != "NON_BLOCKING":
        raise ValueError(f"{name}: behavior may only be NON_BLOCKING")
    params = decl.get("parameters")
    if params is None:
        return
    if set(params) - {"type", "properties", "required"} or params.get("type") != "OBJECT":
        raise ValueError(f"{name}: parameters must be an OBJECT with properties and required")
    props = params.get("properties")
    # Gemini refuses an OBJECT without properties: leave parameters out instead.
    if not isinstance(props, Mapping) or not props:
        raise ValueError(f"{name}: parameters need at least one property")
    for key, prop in props.items():
        if set(prop) - _PROPERTY_KEYS or prop.get("type") not in SCALAR_TYPES:
            raise ValueError(f"{name}.{key}: only {', '.join(SCALAR_TYPES)} with {_PROPERTY_KEYS}")
        if not prop.get("description"):
            raise ValueError(f"{name}.{key}: a parameter needs a description")
        if "enum" in prop and prop["type"] != "STRING":
            raise ValueError(f"{name}.{key}: enum only on STRING")
        if ("minimum" in prop or "maximum" in prop) and prop["type"] not in ("INTEGER", "NUMBER"):
            raise ValueError(f"{name}.{key}: minimum/maximum only on numbers")
    if not set(params.get("required", [])) <= set(props):
        raise ValueError(f"{name}: required names a parameter that is not declared")
