"""What the server says about how a turn ended, and what it cost: stop
reasons (turnCompleteReason: safety stops, a malformed function call, a model
that needs more input) in plain words, and usageMetadata added up per
session and since start."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from .live import messages as m

log = logging.getLogger(__name__)

# turnCompleteReason values (the SDK's TurnCompleteReason), in words a user
# reads in `ctl status` and the journal.
STOP_WORDS = {
    "MALFORMED_FUNCTION_CALL": "the model made a function call it could not complete",
    "RESPONSE_REJECTED": "the model's answer was rejected",
    "NEED_MORE_INPUT": "the model needs more input",
    "PROHIBITED_INPUT_CONTENT": "safety: the input was refused",
    "IMAGE_PROHIBITED_INPUT_CONTENT": "safety: a camera image was refused",
    "INPUT_TEXT_CONTAIN_PROMINENT_PERSON_PROHIBITED": "safety: the input names a prominent person",
    "INPUT_IMAGE_CELEBRITY": "safety: a camera image shows a celebrity",
    "INPUT_IMAGE_PHOTO_REALISTIC_CHILD_PROHIBITED": "safety: a camera image was refused",
    "INPUT_TEXT_NCII_PROHIBITED": "safety: the input was refused",
    "INPUT_OTHER": "safety: the input was refused",
    "INPUT_IP_PROHIBITED": "safety: the input was refused (intellectual property)",
}
_USAGE_KEYS = (
    "totalTokenCount",
    "promptTokenCount",
    "responseTokenCount",
    "thoughtsTokenCount",
    "toolUsePromptTokenCount",
    "cachedContentTokenCount",
)


def is_safety_stop(reason: str) -> bool:
    return STOP_WORDS.get(reason, "").startswith("safety") or reason.endswith("_PROHIBITED")


class TurnOutcomes:
    def __init__(self) -> None:
        self.last_stop: dict[str, Any] | None = None
        self.stops = 0
        self.safety_stops = 0
        self.session_usage: dict[str, int] = dict.fromkeys(_USAGE_KEYS, 0)
        self.total_usage: dict[str, int] = dict.fromkeys(_USAGE_KEYS, 0)

    def turn_complete(self, ev: m.TurnComplete) -> str | None:
        """Log a stop reason once; the notice to show for it (or None)."""
        reason = ev.reason
        if not reason or reason == "TURN_COMPLETE_REASON_UNSPECIFIED":
            return None
        words = STOP_WORDS.get(reason, f"the turn ended early ({reason})")
        self.stops += 1
        safety = is_safety_stop(reason)
        if safety:
            self.safety_stops += 1
        self.last_stop = {"reason": reason, "words": words, "at": round(time.time(), 3)}
        log.warning(
            "the model's turn ended early: %s",
            words,
            extra={"EDGE_EVENT": "turn_stopped", "EDGE_REASON": reason},
        )
        return "safety_stop" if safety else "turn_stopped"

    def new_session(self) -> None:
        self.session_usage = dict.fromkeys(_USAGE_KEYS, 0)

    def usage(self, ev: m.Usage) -> None:
        for key in _USAGE_KEYS:
            count = ev.count(key)
            self.session_usage[key] += count
            self.total_usage[key] += count
        log.debug("usage: %d tokens", ev.total_tokens, extra={"EDGE_TOKENS": ev.total_tokens})

    def status(self) -> Mapping[str, Any]:
        return {
            "last_stop": self.last_stop,
            "stops": self.stops,
            "safety_stops": self.safety_stops,
            "tokens": {
                "session": _nonzero(self.session_usage),
                "total": _nonzero(self.total_usage),
            },
        }


def _nonzero(counts: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in counts.items() if v or k == "totalTokenCount"}
