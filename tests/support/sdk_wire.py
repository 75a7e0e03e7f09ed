"""An independent check of every client message: the google-genai SDK's own
pydantic types (``LiveClientMessage`` and its parts), which forbid unknown
fields. The SDK is a dev dependency only; the daemon never imports it.

Where the SDK's client types lag the wire (``LiveClientSetup`` has no
``realtimeInputConfig``, though the SDK's own converter puts
``LiveConnectConfig.realtime_input_config`` there), that part is checked
against the SDK type it comes from (``RealtimeInputConfig``).
"""

from __future__ import annotations

import json
import warnings
from typing import Any

from google.genai import types

# FunctionResponse.response: "Use "output" key to specify function output and
# "error" key to specify error details" (types.py). The SDK types it as a free
# dict, so a field nested there by mistake (scheduling) would pass the model.
_RESPONSE_KEYS = {"output", "error"}


class WireError(AssertionError):
    pass


def check_client_message(text: str | bytes) -> dict[str, Any]:
    try:
        msg = json.loads(text)
    except ValueError as exc:
        raise WireError(f"not JSON: {exc}") from None
    if not isinstance(msg, dict) or len(msg) != 1:
        raise WireError(f"a client message has exactly one top-level key: {str(msg)[:200]}")
    body = dict(msg)
    setup = body.get("setup")
    if isinstance(setup, dict) and "realtimeInputConfig" in setup:
        setup = dict(setup)
        _validate(
            types.RealtimeInputConfig, setup.pop("realtimeInputConfig"), "realtimeInputConfig"
        )
        body["setup"] = setup
    _validate(types.LiveClientMessage, body, next(iter(msg)))
    realtime = msg.get("realtimeInput")
    if isinstance(realtime, dict) and len(realtime) != 1:
        raise WireError(f"one realtimeInput field per message, got {sorted(realtime)}")
    tool_response = msg.get("toolResponse")
    if isinstance(tool_response, dict):
        for response in tool_response.get("functionResponses") or []:
            extra = set(response.get("response") or {}) - _RESPONSE_KEYS
            if extra:
                raise WireError(f"functionResponses[].response has {sorted(extra)}: not its place")
    return msg


def _validate(model: Any, value: Any, where: str) -> None:
    try:
        # The SDK's enums only warn about a value they do not know.
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            model.model_validate(value)
    except Exception as exc:  # pydantic.ValidationError, kept out of the import list
        raise WireError(f"{where}: the SDK's {model.__name__} refuses it: {exc}") from None
