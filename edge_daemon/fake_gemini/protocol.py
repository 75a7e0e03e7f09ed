"""The wire as the real server speaks it: the endpoint path, the close
reasons, which client messages and fields exist, the limits it enforces, and
the small codecs the rules need (base64, image sizes, durations)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

DEFAULT_PATH = "/ws/google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
CONSTRAINED_PATH = (
    "/ws/google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
INVALID_ARGUMENT = "Request contains an invalid argument."
BAD_API_KEY = "API key not valid. Please pass a valid API key."
SESSION_NOT_FOUND = "session not found"
OUTPUT_RATE = 24000
INPUT_RATE = 16000
CLIENT_KEYS = ("setup", "clientContent", "realtimeInput", "toolResponse")
REALTIME_FIELDS = (
    "audio",
    "video",
    "text",
    "activityStart",
    "activityEnd",
    "audioStreamEnd",
    "mediaChunks",
)
# BidiGenerateContentSetup's fields in the v1beta proto. camelCase only: our client
# must send camelCase (PROTOCOL.md), so accepting snake_case here would hide a bug.
SETUP_FIELDS = frozenset(
    {
        "model",
        "generationConfig",
        "systemInstruction",
        "tools",
        "realtimeInputConfig",
        "sessionResumption",
        "contextWindowCompression",
        "inputAudioTranscription",
        "outputAudioTranscription",
        "proactivity",
    }
)
# GenerationConfig's fields the Live API takes (v1alpha and v1beta alike,
# but for enableAffectiveDialog: v1alpha only).
GENERATION_FIELDS = frozenset(
    {
        "responseModalities",
        "speechConfig",
        "thinkingConfig",
        "mediaResolution",
        "temperature",
        "topP",
        "topK",
        "maxOutputTokens",
        "candidateCount",
        "presencePenalty",
        "frequencyPenalty",
        "seed",
        "enableAffectiveDialog",
    }
)
# Setup fields that exist only on the v1alpha endpoint: v1beta answers 1007
# "Unknown name" (public reports of proactivity and affective dialog).
V1ALPHA_ONLY = {"proactivity": "setup", "enableAffectiveDialog": "generation_config"}


def unknown_name(name: str, where: str) -> str:
    """The proto parser's own words for a field it does not know."""
    return (
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def model_family(model: str) -> str:
    """ "native" (2.5 native audio), "live3" (3.x Live: native audio too) or
    "cascade" (half-cascade), from the name, as Google's model pages list them."""
    name = model.removeprefix("models/")
    if re.match(r"gemini-3(\.\d+)?-", name):
        return "live3"
    return "native" if "native-audio" in name else "cascade"


VAD_SILENCE_S = 0.5  # automatic-VAD mode: this much quiet after speech ends a turn
VAD_PEAK = 1000  # s16 peak above which a chunk counts as speech
MIN_VIDEO_GAP_S = 0.75  # well under the 1 frame/s limit, so timer jitter is not flagged
MAX_VIDEO_SIDE = 1024


class Reject(Exception):
    """Raised while handling a client message: close the connection like the real server."""

    def __init__(self, detail: str, code: int = 1007, reason: str = INVALID_ARGUMENT) -> None:
        super().__init__(detail)
        self.code, self.reason, self.detail = code, reason, detail


def message_kinds(msg: dict[str, Any]) -> list[str]:
    """Top-level keys plus the fields of realtimeInput/serverContent: what count() matches."""
    kinds: list[str] = []
    for key, value in msg.items():
        kinds.append(key)
        if key in ("realtimeInput", "serverContent") and isinstance(value, dict):
            kinds.extend(value)
    return kinds


def duration(seconds: float) -> str:
    """protobuf Duration JSON: "50s", "0.5s"."""
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def b64_data(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise Reject(f"{what}.data must be a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Reject(f"{what}.data is not valid base64: {exc}") from None


def image_size(data: bytes, png: bool) -> tuple[int, int] | None:
    """Width and height from a PNG IHDR or a JPEG SOF segment, without decoding."""
    if png:
        return struct.unpack(">II", data[16:24]) if len(data) >= 24 else None
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return width, height
        i += 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
    return None


def word_groups(text: str, size: int = 3) -> list[str]:
    """Transcript pieces as the server streams them: later pieces carry their leading space."""
    words = text.split()
    groups = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [g if i == 0 else " " + g for i, g in enumerate(groups)]
