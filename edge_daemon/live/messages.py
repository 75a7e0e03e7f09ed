"""Gemini Live wire messages: build client JSON, parse server JSON into typed events.

Pure functions and frozen dataclasses, no I/O: the session sends what these build
and hands what it receives to ``parse_server_message``. The shapes follow
PROTOCOL.md (the proto and recorded traffic), not the seed guide: the first
message is ``setup``, with ``responseModalities`` inside ``generationConfig``.
"""

from __future__ import annotations

import binascii
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .models import language_instruction, traits

log = logging.getLogger(__name__)

MIC_MIME = "audio/pcm;rate=16000"
DEFAULT_OUTPUT_RATE = 24000
_RATE_RE = re.compile(r"rate=(\d+)")
# Output rates a speaker path can take; anything else is a broken frame.
_RATES = range(8000, 192001)
# Unknown field names remembered (to log each once): bounded, since a hostile
# or broken server could invent a new one in every frame.
_UNKNOWN_KEPT = 256


class MalformedMessage(ValueError):
    """A server frame that is not a JSON object we can read. Logged and skipped."""


# --------------------------------------------------------------------------- client -> server


@dataclass(frozen=True)
class SetupOptions:
    model: str
    voice: str = ""
    language: str = ""
    system_instruction: str = ""
    function_declarations: Sequence[Mapping[str, Any]] = ()
    push_to_talk: bool = True
    transcribe_input: bool = True
    transcribe_output: bool = True
    resumption: bool = True
    resumption_handle: str | None = None
    context_window_compression: bool = True
    # None: the model family's low-latency default (see _thinking).
    thinking_budget: int | None = None
    thinking_level: str | None = None
    # "low", "medium", "high"; None sends nothing (the service's default).
    media_resolution: str | None = None
    google_search: bool = False
    # v1alpha only (the config refuses them elsewhere).
    proactive_audio: bool = False
    affective_dialog: bool = False


def _thinking(opts: SetupOptions) -> dict[str, Any] | None:
    """A voice device wants the first word soon: unless told otherwise, 2.5
    models do not think (budget 0) and 3.x models think minimally."""
    style = traits(opts.model).thinking
    if style == "budget":
        budget = 0 if opts.thinking_budget is None else opts.thinking_budget
        return {"thinkingBudget": budget}
    if style == "level":
        return {"thinkingLevel": (opts.thinking_level or "minimal").upper()}
    return None


def build_setup(opts: SetupOptions) -> str:
    model = traits(opts.model)
    generation: dict[str, Any] = {"responseModalities": ["AUDIO"]}
    speech: dict[str, Any] = {}
    if opts.voice:
        speech["voiceConfig"] = {"prebuiltVoiceConfig": {"voiceName": opts.voice}}
    instruction = opts.system_instruction
    if opts.language:
        if model.native_audio:
            # Native-audio models refuse a languageCode (1007); Google's Live
            # guide steers them through the system instruction instead.
            instruction = f"{instruction}\n\n{language_instruction(opts.language)}".strip()
        else:
            speech["languageCode"] = opts.language
    if speech:
        generation["speechConfig"] = speech
    thinking = _thinking(opts)
    if thinking is not None:
        generation["thinkingConfig"] = thinking
    if opts.media_resolution:
        generation["mediaResolution"] = f"MEDIA_RESOLUTION_{opts.media_resolution.upper()}"
    if opts.affective_dialog:
        generation["enableAffectiveDialog"] = True
    setup: dict[str, Any] = {"model": opts.model, "generationConfig": generation}
    if instruction:
        setup["systemInstruction"] = {"parts": [{"text": instruction}]}
    tools: list[dict[str, Any]] = []
    if opts.function_declarations:
        tools.append({"functionDeclarations": [dict(d) for d in opts.function_declarations]})
    if opts.google_search:
        tools.append({"googleSearch": {}})
    if tools:
        setup["tools"] = tools
    if opts.push_to_talk:
        # Push-to-talk means we say when speech starts and ends; a new press
        # while the model talks must cut it off (barge-in).
        setup["realtimeInputConfig"] = {
            "automaticActivityDetection": {"disabled": True},
            "activityHandling": "START_OF_ACTIVITY_INTERRUPTS",
        }
    if opts.transcribe_input:
        setup["inputAudioTranscription"] = {}
    if opts.transcribe_output:
        setup["outputAudioTranscription"] = {}
    if opts.resumption:
        setup["sessionResumption"] = (
            {"handle": opts.resumption_handle} if opts.resumption_handle else {}
        )
    if opts.context_window_compression:
        setup["contextWindowCompression"] = {"slidingWindow": {}}
    if opts.proactive_audio:
        setup["proactivity"] = {"proactiveAudio": True}
    return json.dumps({"setup": setup}, separators=(",", ":"))


def _b64(data: bytes) -> str:
    return binascii.b2a_base64(data, newline=False).decode("ascii")


# Audio goes up 25-50 times a second: format it directly instead of through
# json.dumps. Base64 text never needs JSON escaping, so this is exact.
_AUDIO_TEMPLATE = '{"realtimeInput":{"audio":{"data":"%s","mimeType":"%s"}}}'
_VIDEO_TEMPLATE = '{"realtimeInput":{"video":{"data":"%s","mimeType":"%s"}}}'

ACTIVITY_START = '{"realtimeInput":{"activityStart":{}}}'
ACTIVITY_END = '{"realtimeInput":{"activityEnd":{}}}'
AUDIO_STREAM_END = '{"realtimeInput":{"audioStreamEnd":true}}'


def build_audio(pcm: bytes, mime: str = MIC_MIME) -> str:
    return _AUDIO_TEMPLATE % (_b64(pcm), mime)


def build_video(jpeg: bytes, mime: str = "image/jpeg") -> str:
    return _VIDEO_TEMPLATE % (_b64(jpeg), mime)


def build_text(text: str) -> str:
    return json.dumps({"realtimeInput": {"text": text}}, separators=(",", ":"))


def build_typed_turn(text: str, *, activity_signals: bool = True) -> list[str]:
    """A typed user turn. With automatic activity detection off (push-to-talk),
    the client says where each turn starts and ends, text included
    (``AutomaticActivityDetection.disabled``: "the client must send activity
    signals"): bare text outside an activity window may never be answered."""
    text_msg = build_text(text)
    return [ACTIVITY_START, text_msg, ACTIVITY_END] if activity_signals else [text_msg]


@dataclass(frozen=True)
class FunctionResult:
    """Our answer to one function call: ``output`` on success, ``error`` on failure."""

    id: str
    name: str
    output: Mapping[str, Any] | None = None
    error: str | None = None
    scheduling: str | None = None  # for NON_BLOCKING tools: INTERRUPT, WHEN_IDLE, SILENT


def build_tool_response(results: Iterable[FunctionResult]) -> str:
    responses = []
    for r in results:
        body: dict[str, Any] = (
            {"error": r.error} if r.error is not None else {"output": dict(r.output or {})}
        )
        response: dict[str, Any] = {"id": r.id, "name": r.name, "response": body}
        if r.scheduling:
            # A field of FunctionResponse itself (types.py), not of its response.
            response["scheduling"] = r.scheduling
        responses.append(response)
    return json.dumps({"toolResponse": {"functionResponses": responses}}, separators=(",", ":"))


# --------------------------------------------------------------------------- server -> client


@dataclass(frozen=True)
class SetupComplete:
    pass


@dataclass(frozen=True)
class AudioOut:
    pcm: bytes
    rate: int = DEFAULT_OUTPUT_RATE


@dataclass(frozen=True)
class ModelText:
    """Text parts of a model turn (TEXT modality, or thoughts)."""

    text: str


@dataclass(frozen=True)
class InputTranscript:
    text: str


@dataclass(frozen=True)
class OutputTranscript:
    text: str


@dataclass(frozen=True)
class Interrupted:
    pass


@dataclass(frozen=True)
class GenerationComplete:
    pass


@dataclass(frozen=True)
class TurnComplete:
    # turnCompleteReason when the server gives one: a safety stop
    # (PROHIBITED_INPUT_CONTENT, ...), MALFORMED_FUNCTION_CALL, NEED_MORE_INPUT.
    reason: str = ""


@dataclass(frozen=True)
class WaitingForInput:
    """The model is not generating because it expects the user to go on."""


@dataclass(frozen=True)
class Usage:
    total_tokens: int
    fields: Mapping[str, Any] = field(default_factory=dict)

    def count(self, name: str) -> int:
        value = self.fields.get(name, 0)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0


@dataclass(frozen=True)
class FunctionCall:
    id: str
    name: str
    args: Mapping[str, Any]


@dataclass(frozen=True)
class ToolCall:
    calls: tuple[FunctionCall, ...]


@dataclass(frozen=True)
class ToolCallCancellation:
    ids: tuple[str, ...]


@dataclass(frozen=True)
class GoAway:
    time_left_s: float | None


@dataclass(frozen=True)
class ResumptionUpdate:
    handle: str
    resumable: bool


ServerEvent = (
    SetupComplete
    | AudioOut
    | ModelText
    | InputTranscript
    | OutputTranscript
    | Interrupted
    | GenerationComplete
    | TurnComplete
    | WaitingForInput
    | Usage
    | ToolCall
    | ToolCallCancellation
    | GoAway
    | ResumptionUpdate
)

_KNOWN_TOP = {
    "setupComplete",
    "serverContent",
    "toolCall",
    "toolCallCancellation",
    "goAway",
    "sessionResumptionUpdate",
    "usageMetadata",
}
_KNOWN_CONTENT = {
    "modelTurn",
    "inputTranscription",
    "outputTranscription",
    "interrupted",
    "generationComplete",
    "turnComplete",
    # Fields we read nothing from but know to be harmless.
    "groundingMetadata",
    "turnCompleteReason",
    "waitingForInput",
    "urlContextMetadata",
}
_seen_unknown: set[str] = set()


def _note_unknown(where: str, names: Iterable[str]) -> None:
    # New fields appear over time; say so once per name, never per message.
    for name in names:
        key = f"{where}.{name[:64]}"
        if key not in _seen_unknown and len(_seen_unknown) < _UNKNOWN_KEPT:
            _seen_unknown.add(key)
            log.debug(
                "ignoring unknown server field %s", key, extra={"EDGE_EVENT": "unknown_field"}
            )


def parse_duration(value: Any) -> float | None:
    """Protobuf Duration JSON ("50s", "1.5s") or a bare number, in seconds.
    None for anything that is not a finite, non-negative duration."""
    seconds: float | None = None
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str):
            seconds = float(value[:-1] if value.endswith("s") else value)
        elif isinstance(value, Mapping):
            seconds = float(value.get("seconds", 0)) + float(value.get("nanos", 0)) / 1e9
    except (TypeError, ValueError, OverflowError):
        return None
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return seconds


def _obj(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise MalformedMessage(f"{where}: expected an object, got {type(value).__name__}")
    return value


def _text(value: Any) -> str | None:
    if isinstance(value, Mapping):
        text = value.get("text")
        return text if isinstance(text, str) else None
    return None


def _decode_inline(data: Any, where: str) -> bytes:
    if not isinstance(data, str):
        raise MalformedMessage(f"{where}.data: expected base64 text")
    try:
        # strict: the lenient decoder silently skips junk and returns garbage audio
        return binascii.a2b_base64(data, strict_mode=True)
    except ValueError as exc:  # binascii.Error, or a plain ValueError for non-ASCII text
        raise MalformedMessage(f"{where}.data: invalid base64 ({exc})") from None


def _audio_rate(mime: str) -> int:
    match = _RATE_RE.search(mime)
    if not match:
        return DEFAULT_OUTPUT_RATE
    digits = match.group(1)
    # int() of thousands of digits raises ValueError (and costs time): a
    # rate that long is a broken frame, never a rate.
    rate = int(digits) if len(digits) <= 6 else 0
    if rate not in _RATES:
        raise MalformedMessage(f"inlineData.mimeType: unusable audio rate {digits[:12]!r}")
    return rate


def _server_content(content: Mapping[str, Any], out: list[ServerEvent]) -> None:
    _note_unknown("serverContent", (k for k in content if k not in _KNOWN_CONTENT))
    turn = content.get("modelTurn")
    if turn is not None:
        parts = _obj(turn, "serverContent.modelTurn").get("parts") or []
        if not isinstance(parts, list):
            raise MalformedMessage("serverContent.modelTurn.parts: expected a list")
        for i, part in enumerate(parts):
            part = _obj(part, f"serverContent.modelTurn.parts[{i}]")
            inline = part.get("inlineData")
            if inline is not None:
                inline = _obj(inline, f"modelTurn.parts[{i}].inlineData")
                mime = str(inline.get("mimeType", ""))
                if mime.startswith("audio/"):
                    pcm = _decode_inline(inline.get("data"), f"modelTurn.parts[{i}].inlineData")
                    out.append(AudioOut(pcm, _audio_rate(mime)))
                else:
                    _note_unknown("inlineData.mimeType", [mime])
            elif isinstance(part.get("text"), str) and not part.get("thought"):
                out.append(ModelText(part["text"]))
    text = _text(content.get("inputTranscription"))
    if text:
        out.append(InputTranscript(text))
    text = _text(content.get("outputTranscription"))
    if text:
        out.append(OutputTranscript(text))
    if content.get("interrupted") is True:
        out.append(Interrupted())
    if content.get("generationComplete") is True:
        out.append(GenerationComplete())
    if content.get("waitingForInput") is True:
        out.append(WaitingForInput())
    if content.get("turnComplete") is True:
        reason = content.get("turnCompleteReason")
        out.append(TurnComplete(reason if isinstance(reason, str) else ""))


def _tool_call(body: Mapping[str, Any]) -> ToolCall:
    calls_raw = body.get("functionCalls") or []
    if not isinstance(calls_raw, list):
        raise MalformedMessage("toolCall.functionCalls: expected a list")
    calls = []
    for i, raw in enumerate(calls_raw):
        raw = _obj(raw, f"toolCall.functionCalls[{i}]")
        call_id, name, args = raw.get("id"), raw.get("name"), raw.get("args", {})
        if not isinstance(name, str) or not name:
            raise MalformedMessage(f"toolCall.functionCalls[{i}].name: expected a string")
        # An id is required to answer; without one we can only log the call.
        if not isinstance(call_id, str):
            call_id = ""
        if args is None:
            args = {}
        if not isinstance(args, Mapping):
            # Keep the call so the model hears back that its arguments were bad.
            args = {"__invalid__": args}
        calls.append(FunctionCall(call_id, name, dict(args)))
    return ToolCall(tuple(calls))


def parse_server_message(frame: bytes | str) -> list[ServerEvent]:
    """Every event in one server frame, in the order a client should act on them.

    Raises MalformedMessage for frames that are not a JSON object; unknown
    message types and fields are logged once and ignored.
    """
    try:
        msg = json.loads(frame)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # deep nesting recurses
        raise MalformedMessage(f"not JSON: {exc}") from None
    msg = _obj(msg, "message")
    out: list[ServerEvent] = []
    _note_unknown("message", (k for k in msg if k not in _KNOWN_TOP))
    if "setupComplete" in msg:
        out.append(SetupComplete())
    if "serverContent" in msg:
        _server_content(_obj(msg["serverContent"], "serverContent"), out)
    if "toolCall" in msg:
        out.append(_tool_call(_obj(msg["toolCall"], "toolCall")))
    if "toolCallCancellation" in msg:
        ids = _obj(msg["toolCallCancellation"], "toolCallCancellation").get("ids") or []
        if not isinstance(ids, list):
            raise MalformedMessage("toolCallCancellation.ids: expected a list")
        out.append(ToolCallCancellation(tuple(str(i) for i in ids)))
    if "sessionResumptionUpdate" in msg:
        upd = _obj(msg["sessionResumptionUpdate"], "sessionResumptionUpdate")
        handle = upd.get("newHandle") or ""
        out.append(ResumptionUpdate(str(handle), bool(upd.get("resumable", False))))
    usage = msg.get("usageMetadata")
    if isinstance(usage, Mapping):
        total = usage.get("totalTokenCount", 0)
        out.append(Usage(total if isinstance(total, int) else 0, dict(usage)))
    elif usage is not None:
        # Informational only: a broken one must not cost the frame's turnComplete.
        _note_unknown("usageMetadata", [type(usage).__name__])
    if "goAway" in msg:
        go = _obj(msg["goAway"], "goAway")
        out.append(GoAway(parse_duration(go.get("timeLeft"))))
    return out
