"""Configuration: one TOML file into frozen dataclasses.

Every error names the file, the key path and what was expected; unknown keys are
errors, because a typo in a device's config must never be silently ignored.
The API key never lives in the TOML: it comes from the environment, a key file
or a systemd credential (see ``resolve_secret``).
"""

from __future__ import annotations

import dataclasses
import difflib
import hmac
import ipaddress
import json
import math
import os
import re
import shlex
import socket
import tomllib
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from .live.models import traits

DEFAULT_CONFIG_PATH = "/etc/edge-daemon/config.toml"
GOOGLE_ENDPOINT = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1beta.GenerativeService.BidiGenerateContent"
)
GOOGLE_EPHEMERAL_ENDPOINT = (
    "wss://generativelanguage.googleapis.com/ws/"
    "google.ai.generativelanguage.v1alpha.GenerativeService.BidiGenerateContentConstrained"
)
GOOGLE_V1ALPHA_ENDPOINT = GOOGLE_ENDPOINT.replace(".v1beta.", ".v1alpha.")
DEFAULT_MODEL = "models/gemini-2.5-flash-native-audio-preview-12-2025"
DEFAULT_SYSTEM_INSTRUCTION = (
    "You are a helpful voice assistant running on a small device. "
    "Answer briefly, in spoken language."
)


@dataclass(frozen=True)
class GeminiConfig:
    # Full ws:// or wss:// URL. Empty means Google's endpoint (or, under
    # --simulate, the built-in fake server).
    endpoint: str = ""
    model: str = DEFAULT_MODEL
    api_key_file: str = ""
    auth: Literal["api_key", "ephemeral_token"] = "api_key"
    voice: str = "Kore"
    language: str = ""
    system_instruction: str = DEFAULT_SYSTEM_INSTRUCTION
    transcribe_input: bool = True
    transcribe_output: bool = True
    context_window_compression: bool = True
    connect_timeout_s: float = 10.0
    setup_timeout_s: float = 10.0
    # Proactive audio and affective dialog exist only on v1alpha; ephemeral
    # tokens always use it.
    api_version: Literal["v1beta", "v1alpha"] = "v1beta"
    # Thinking costs the first word its latency. 2.5 models: a token budget
    # (0 = none, -1 = the model decides); 3.x models: a level.
    thinking_budget: int = 0
    thinking_level: Literal["minimal", "low", "medium", "high"] = "minimal"
    # Tokens per camera frame: low is about 4x fewer than medium.
    media_resolution: Literal["low", "medium", "high"] = "low"
    google_search: bool = False
    proactive_audio: bool = False
    affective_dialog: bool = False
    # auth = "ephemeral_token": a command (no shell) whose stdout is a fresh
    # token, run whenever the current one is spent or close to expiry.
    token_command: str = ""
    token_timeout_s: float = 15.0
    # What the token command's tokens allow, unless it prints them as JSON
    # ({"name": ..., "expireTime": ..., "newSessionExpireTime": ..., "uses": ...}).
    token_uses: int = 1
    token_new_session_s: float = 60.0
    token_expire_s: float = 1800.0


@dataclass(frozen=True)
class AudioConfig:
    backend: Literal["pyaudio", "wav", "null"] = "pyaudio"
    input_wav: str = ""
    output_wav: str = ""
    chunk_ms: int = 40
    input_device: str = ""
    output_device: str = ""
    volume: float = 1.0
    preroll_ms: int = 500
    half_duplex: bool = False
    # A turn ends after this long however it started (a stuck button, toggle
    # mode left on, a `ctl press` without a release): the room is not
    # streamed to the cloud for ever.
    max_turn_s: float = 60.0
    # A mic or speaker that goes away (or is missing at start) is reopened
    # with backoff, at most this many seconds apart.
    device_retry_max_s: float = 30.0
    # Missing this long, the process exits (status 74) so that systemd
    # restarts it: a wedged driver heals in a fresh process. 0 = never.
    device_grace_s: float = 300.0
    # Cancel the speaker's own sound in the mic (WebRTC AEC, with what the
    # speaker plays as the reference). Where the module is missing (armv7),
    # the mic is not listened to while the speaker plays, plus echo_tail_ms.
    echo_cancel: bool = False
    # WebRTC noise suppression on the mic: "off", "low", "moderate", "high", "very_high".
    noise_suppression: Literal["off", "low", "moderate", "high", "very_high"] = "off"
    # WebRTC automatic gain on the mic (a voice across the room gets louder).
    auto_gain: bool = False
    # Without echo cancellation: how long after the speaker stops the mic
    # still hears the room's echo of it (and is not listened to hands-free).
    echo_tail_ms: int = 300
    # PortAudio: the speaker's stream stops after this long with nothing to
    # play and no turn open (a running stream costs CPU for every block of
    # silence); 0 = it runs for ever. It runs again from a press, before the
    # reply, because some devices (ALSA's pulse plugin) take over a second
    # to start.
    speaker_rest_s: float = 5.0


@dataclass(frozen=True)
class WakeConfig:
    # A wake word beside the button: "okay_nabu", "alexa", "hey_mycroft",
    # "hey_jarvis" (built into pymicro-wakeword), or the path of a
    # microWakeWord model's JSON. Empty: no wake word (the button only).
    model: str = ""
    # After an answer, listen this many seconds for a follow-up without the
    # wake word (0 = off).
    follow_up_s: float = 0.0
    # A hands-free turn ends after this much quiet once speech was heard,
    # counted from when the speech detector lets go (it holds on ~0.6 s
    # after the voice stops by itself).
    end_silence_s: float = 0.3
    # A hands-free turn in which nobody speaks ends after this long.
    no_speech_s: float = 4.0
    # A hands-free turn ends after this long, whatever is still said.
    max_turn_s: float = 30.0
    # With audio.echo_cancel: speech while the model talks interrupts it.
    barge_in: bool = True
    # Detection threshold 0..1 replacing the model's own (0 = the model's).
    threshold: float = 0.0


@dataclass(frozen=True)
class FeedbackConfig:
    # Short sounds through the speaker: the wake word was heard ...
    wake: bool = True
    # ... a hands-free turn stopped listening (end of speech) ...
    listen_end: bool = True
    # ... the daemon went into the error state ...
    error: bool = False
    # ... the link to Gemini was lost / is back.
    link: bool = False
    # Loudness of the sounds, 0..1 of full scale (the speaker volume applies too).
    level: float = 0.3


@dataclass(frozen=True)
class MuteConfig:
    # A mute switch (GPIO, BCM number; -1 = none): while it is closed the
    # device hears nothing, no wake word, no audio goes up.
    pin: int = -1
    pull_up: bool = True
    # "switch": muted while closed. "button": each press toggles mute.
    mode: Literal["switch", "button"] = "switch"


@dataclass(frozen=True)
class VolumeConfig:
    # Buttons that step the volume (BCM numbers; -1 = none).
    up_pin: int = -1
    down_pin: int = -1
    pull_up: bool = True
    # Percent per press.
    step: int = 10


@dataclass(frozen=True)
class HooksConfig:
    # Commands run on events, split like a shell would but run without one,
    # as the service user, each bounded by timeout_s. The event's detail is
    # the last argument; EDGE_EVENT, EDGE_DETAIL (and EDGE_STATE,
    # EDGE_PREV_STATE for state) are in the environment. Empty: none.
    state: str = ""
    wake: str = ""
    mute: str = ""
    volume: str = ""
    error: str = ""
    link: str = ""
    timeout_s: float = 5.0


@dataclass(frozen=True)
class ButtonConfig:
    mode: Literal["hold", "toggle"] = "hold"
    pin: int = 23
    pull_up: bool = True
    bounce_s: float = 0.02
    min_press_s: float = 0.15
    poll: bool = False
    poll_interval_s: float = 0.01


@dataclass(frozen=True)
class ControlConfig:
    socket: str = "/run/edge-daemon/control.sock"
    keyboard: bool = True


@dataclass(frozen=True)
class LoggingConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    target: Literal["auto", "journal", "stderr"] = "auto"
    # What people say at home is theirs: transcripts reach the journal (which
    # members of adm and systemd-journal can read) only when this is true.
    transcripts: bool = False


@dataclass(frozen=True)
class LinkConfig:
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 30.0
    config_error_backoff_s: float = 300.0
    healthy_after_s: float = 30.0
    offline_buffer_s: float = 10.0
    # No server message for this long after we asked for an answer (end of a
    # turn, a tool response): the server is hung though the socket is open.
    response_timeout_s: float = 20.0
    # Quota exhausted (1011 RESOURCE_EXHAUSTED): the first wait, doubling up
    # to config_error_backoff_s; retrying sooner only spends more quota.
    quota_backoff_s: float = 60.0


@dataclass(frozen=True)
class StateConfig:
    # Where the daemon keeps what must outlive a restart (the resumption
    # handle, the volume). Empty: $STATE_DIRECTORY (systemd's StateDirectory=),
    # else /var/lib/edge-daemon when writable, else ~/.local/state/edge-daemon.
    dir: str = ""


@dataclass(frozen=True)
class StatusLedConfig:
    # "none", a plain LED (on/off patterns), a PWM LED (breathing patterns) or
    # an RGB LED (a colour per state). GPIO25 is the AIY Voice Kit button LED.
    kind: Literal["none", "led", "pwm", "rgb"] = "none"
    pin: int = 25
    # RGB only: the red, green and blue pins.
    rgb_pins: tuple[int, ...] = ()
    active_high: bool = True
    brightness: float = 1.0


@dataclass(frozen=True)
class LedToolConfig:
    name: str
    pin: int
    description: str = ""
    pwm: bool = False
    active_high: bool = True


@dataclass(frozen=True)
class RelayToolConfig:
    name: str
    pin: int
    # Required: most relay boards switch on when their input is LOW, and a
    # wrong guess turns every "off" (start, timers, shutdown) into "on".
    active_high: bool
    description: str = ""
    # Switched off by a timer after this long on, even if the model forgets.
    max_on_seconds: float = 600.0
    # Refuse to switch again sooner than this: relays and what they drive
    # (pumps, motors) do not like chattering.
    min_switch_interval_s: float = 2.0
    # Off when the link to Gemini has been down this long (0 = never).
    off_after_link_lost_s: float = 60.0
    # After an automatic off (max_on_seconds, a pulse's end, link lost), it
    # stays off at least this long, whatever is asked.
    min_off_after_auto_s: float = 30.0
    # Budgets over the last hour: seconds on, and times switched on.
    max_on_per_hour_s: float = 1800.0
    max_switches_per_hour: int = 20
    # > 0: "on" only within this many seconds of a press of the physical
    # button. Camera frames, transcripts and typed text can carry
    # instructions; a finger on the button cannot be faked by them.
    require_recent_press_s: float = 0.0


@dataclass(frozen=True)
class ToolsConfig:
    led: tuple[LedToolConfig, ...] = ()
    relay: tuple[RelayToolConfig, ...] = ()
    # Remote tools: a function that publishes to the MQTT broker ([mqtt] host).
    mqtt: tuple[MqttToolConfig, ...] = ()
    # A tool call that takes longer is answered with an error.
    timeout_s: float = 5.0
    # Declare hardware tools NON_BLOCKING (the model keeps talking while they
    # run). Only some models accept it; 3.1 Live models are synchronous only.
    non_blocking: bool = False
    # Offer a take_photo tool when a camera is configured.
    take_photo: bool = True


@dataclass(frozen=True)
class CameraConfig:
    backend: Literal["picamera2", "opencv", "file", "none"] = "none"
    # file backend: an image, or a folder of images, looped.
    file: str = ""
    # opencv backend: a device index ("0") or path ("/dev/video0").
    device: str = ""
    width: int = 640
    height: int = 480
    interval_s: float = 2.0
    only_while_talking: bool = True
    max_side: int = 1024
    jpeg_quality: int = 75
    # As audio.device_retry_max_s and audio.device_grace_s, for the camera.
    device_retry_max_s: float = 30.0
    device_grace_s: float = 300.0


@dataclass(frozen=True)
class MqttParameterConfig:
    """One parameter of a remote tool, in the hardware tools' schema words."""

    name: str
    type: Literal["STRING", "INTEGER", "NUMBER", "BOOLEAN"]
    description: str
    enum: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


@dataclass(frozen=True)
class MqttToolConfig:
    """A function the model may call that publishes to the broker: "turn off
    the kitchen lights" reaching a Zigbee2MQTT or Home Assistant entity."""

    name: str
    description: str
    # Where to publish and what: {param} takes a parameter's checked value.
    topic: str
    payload: str = ""
    # Every parameter is required: each one fills a placeholder.
    parameters: tuple[MqttParameterConfig, ...] = ()
    qos: int = 1
    retain: bool = False
    # Read back for the answer: the first message on it after the publish.
    state_topic: str = ""
    state_timeout_s: float = 5.0
    max_calls_per_minute: int = 10
    # > 0: only within this many seconds of a press of the physical button.
    require_recent_press_s: float = 0.0


@dataclass(frozen=True)
class MqttConfig:
    # The broker. Empty: no MQTT at all (not even imported).
    host: str = ""
    port: int = 1883
    username: str = ""
    # A file holding only the password; empty: the systemd credential
    # mqtt-password, if there is one. Never the password itself.
    password_file: str = ""
    tls: bool = False
    # With tls: the CA that signed the broker's certificate (empty: the system's).
    ca_file: str = ""
    # Empty: "edge-daemon-<node_id>".
    client_id: str = ""
    # This device among others on the broker. Empty: the host name, in [a-z0-9_].
    node_id: str = ""
    # Empty: "edge-daemon/<node_id>".
    base_topic: str = ""
    discovery_prefix: str = "homeassistant"
    # Announce the entities to Home Assistant (MQTT discovery).
    discovery: bool = True
    keepalive_s: int = 30
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0
    # How long a listening turn started over MQTT stays open.
    listen_s: float = 5.0
    # The diagnostic counters are published at most this often.
    diagnostics_interval_s: float = 10.0


@dataclass(frozen=True)
class Config:
    gemini: GeminiConfig = field(default_factory=GeminiConfig)
    audio: AudioConfig = field(default_factory=AudioConfig)
    button: ButtonConfig = field(default_factory=ButtonConfig)
    control: ControlConfig = field(default_factory=ControlConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    link: LinkConfig = field(default_factory=LinkConfig)
    state: StateConfig = field(default_factory=StateConfig)
    status_led: StatusLedConfig = field(default_factory=StatusLedConfig)
    tools: ToolsConfig = field(default_factory=ToolsConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    wake: WakeConfig = field(default_factory=WakeConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    mute: MuteConfig = field(default_factory=MuteConfig)
    volume: VolumeConfig = field(default_factory=VolumeConfig)
    hooks: HooksConfig = field(default_factory=HooksConfig)
    # The file this came from ("" for built-in defaults): error messages name it.
    source: str = ""
    # Dotted keys the file (or with_overrides) set, as opposed to defaults:
    # --simulate replaces only what was not configured. Not part of equality,
    # so a file that spells out every default still equals Config().
    explicit: frozenset[str] = field(default=frozenset(), compare=False, repr=False)


API_KEY_ENV = "GEMINI_API_KEY"
EPHEMERAL_TOKEN_ENV = "GEMINI_EPHEMERAL_TOKEN"
CONFIG_ENV = "EDGE_DAEMON_CONFIG"
CREDENTIAL_NAME = "gemini-api-key"
MQTT_CREDENTIAL_NAME = "mqtt-password"

# Config fields the loader fills in itself; a TOML file may not set them.
_INTERNAL = frozenset({"source", "explicit"})

_SECRET_ADVICE = (
    "the API key must come from $GEMINI_API_KEY, gemini.api_key_file or the systemd "
    f"credential {CREDENTIAL_NAME}, never from the TOML file"
)
_MQTT_SECRET_ADVICE = (
    "the MQTT password must come from mqtt.password_file or the systemd credential "
    f"{MQTT_CREDENTIAL_NAME}, never from the TOML file"
)
# Google API keys start with "AIza"; ephemeral tokens are named "auth_tokens/...".
# Values like these are never echoed back, wherever they were typed.
_SECRET_VALUE = re.compile(r"AIza[0-9A-Za-z_\-]{8,}|auth_tokens/|[?&](key|access_token)=", re.I)
_SECRET_NAMES = frozenset({"key", "apikey", "token", "secret", "password", "credential"})


class _Unset:
    pass


_UNSET = _Unset()


class ConfigError(Exception):
    """A config problem, worded for the person editing the file on the device.

    ``file`` is the config file (or another origin such as "overrides"), ``key``
    the dotted key path or None, ``expected`` what would have been accepted.
    The offending value is shown in the message only when it cannot be a secret,
    and is never kept on the exception.
    """

    def __init__(
        self,
        file: str,
        key: str | None,
        expected: str,
        *,
        got: object = _UNSET,
        problem: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.key = key
        self.expected = expected
        self.line = line
        self.column = column
        if problem is None:
            problem = f"expected {expected}"
            if not isinstance(got, _Unset):
                problem += f", got {_show(got)}"
        self.problem = problem
        super().__init__(": ".join(part for part in (file, key, problem) if part))


def _show(value: object) -> str:
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        return "a value that looks like a secret (not shown)"
    if isinstance(value, bool):
        return "true" if value else "false"  # TOML spelling, not Python's
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------- value rules


@dataclass(frozen=True)
class _Range:
    lo: float | None = None
    hi: float | None = None
    lo_exclusive: bool = False

    def __contains__(self, value: float) -> bool:
        if self.lo is not None and (value <= self.lo if self.lo_exclusive else value < self.lo):
            return False
        return self.hi is None or value <= self.hi

    def words(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"from {self.lo:g} to {self.hi:g}"
        if self.lo is not None:
            return f"greater than {self.lo:g}" if self.lo_exclusive else f"of at least {self.lo:g}"
        return f"of at most {self.hi:g}"


_INDEX = re.compile(r"\[\d+\]")
_POSITIVE = _Range(0, lo_exclusive=True)
_NON_NEGATIVE = _Range(0)

_RANGES: dict[str, _Range] = {
    "gemini.connect_timeout_s": _POSITIVE,
    "gemini.setup_timeout_s": _POSITIVE,
    "gemini.thinking_budget": _Range(-1, 32768),
    "gemini.token_timeout_s": _Range(1, 300),
    "gemini.token_uses": _Range(0, 1000),
    # The service's own bounds: both less than 20 hours ahead.
    "gemini.token_new_session_s": _Range(5, 72000),
    "gemini.token_expire_s": _Range(60, 72000),
    "link.quota_backoff_s": _POSITIVE,
    # Gemini Live wants 20-40 ms of audio per message; more adds latency,
    # less floods the socket.
    "audio.chunk_ms": _Range(20, 40),
    "audio.volume": _Range(0, 2),
    "audio.preroll_ms": _Range(0, 2000),
    "audio.max_turn_s": _Range(5, 3600),
    "audio.device_retry_max_s": _Range(1, 3600),
    "audio.device_grace_s": _Range(0, 86400),
    "audio.speaker_rest_s": _Range(0, 86400),
    "button.pin": _Range(0, 27),  # the BCM GPIO numbers on a Pi header
    "button.bounce_s": _NON_NEGATIVE,
    "button.min_press_s": _NON_NEGATIVE,
    "button.poll_interval_s": _POSITIVE,
    "link.backoff_initial_s": _POSITIVE,
    "link.backoff_max_s": _POSITIVE,
    "link.config_error_backoff_s": _POSITIVE,
    "link.healthy_after_s": _NON_NEGATIVE,
    # Buffered mic audio costs 32 kB a second: keep it bounded.
    "link.offline_buffer_s": _Range(0, 60),
    "link.response_timeout_s": _POSITIVE,
    "status_led.pin": _Range(0, 27),
    "status_led.rgb_pins": _Range(0, 27),
    "status_led.brightness": _Range(0, 1),
    "tools.led.pin": _Range(0, 27),
    "tools.relay.pin": _Range(0, 27),
    "tools.relay.max_on_seconds": _Range(0, 86400, lo_exclusive=True),
    "tools.relay.min_switch_interval_s": _Range(0, 3600),
    "tools.relay.off_after_link_lost_s": _Range(0, 86400),
    "tools.relay.min_off_after_auto_s": _Range(0, 86400),
    "tools.relay.max_on_per_hour_s": _Range(0, 3600, lo_exclusive=True),
    "tools.relay.max_switches_per_hour": _Range(1, 3600),
    "tools.relay.require_recent_press_s": _Range(0, 3600),
    "tools.timeout_s": _POSITIVE,
    # Gemini Live takes at most one frame a second.
    "camera.interval_s": _Range(1.0, 3600),
    "camera.width": _Range(16, 4096),
    "camera.height": _Range(16, 4096),
    "camera.max_side": _Range(16, 1024),
    "camera.jpeg_quality": _Range(10, 95),
    "camera.device_retry_max_s": _Range(1, 3600),
    "camera.device_grace_s": _Range(0, 86400),
    "mqtt.port": _Range(1, 65535),
    "mqtt.keepalive_s": _Range(5, 3600),
    "mqtt.backoff_initial_s": _POSITIVE,
    "mqtt.backoff_max_s": _Range(0, 3600, lo_exclusive=True),
    "mqtt.listen_s": _Range(0, 60, lo_exclusive=True),
    "mqtt.diagnostics_interval_s": _Range(1, 3600),
    "tools.mqtt.qos": _Range(0, 2),
    "tools.mqtt.state_timeout_s": _Range(0, 60, lo_exclusive=True),
    "tools.mqtt.max_calls_per_minute": _Range(1, 600),
    "tools.mqtt.require_recent_press_s": _Range(0, 3600),
    "audio.echo_tail_ms": _Range(0, 2000),
    "wake.follow_up_s": _Range(0, 60),
    "wake.end_silence_s": _Range(0, 5),
    "wake.no_speech_s": _Range(0.5, 30),
    "wake.max_turn_s": _Range(1, 300),
    "wake.threshold": _Range(0, 1),
    "feedback.level": _Range(0, 1),
    "mute.pin": _Range(-1, 27),
    "volume.up_pin": _Range(-1, 27),
    "volume.down_pin": _Range(-1, 27),
    "volume.step": _Range(1, 50),
    "hooks.timeout_s": _Range(0.1, 300),
}


def _endpoint(text: str) -> str | None:
    if text == "":
        return text
    try:
        parts = urlsplit(text)
    except ValueError:
        return None
    ok = parts.scheme in ("ws", "wss") and parts.netloc and not re.search(r"\s", text)
    return text if ok else None


def _model(text: str) -> str | None:
    # "gemini-2.5-flash-..." is what people copy from the docs; the protocol
    # wants "models/gemini-2.5-flash-...", so the prefix is added, not demanded.
    if not text or re.search(r"\s", text):
        return None
    name = text if text.startswith("models/") else f"models/{text}"
    return name if name != "models/" else None


def _language(text: str) -> str | None:
    return text if re.fullmatch(r"([A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*)?", text) else None


def _command(text: str) -> str | None:
    if not text:
        return text
    try:
        argv = shlex.split(text)
    except ValueError:
        return None
    return text if argv else None


def _socket_path(text: str) -> str | None:
    # sockaddr_un holds 108 bytes including the terminating NUL; a longer path
    # would only fail at bind time, long after the config was accepted.
    return text if text and "\0" not in text and len(os.fsencode(text)) <= 107 else None


# The wake word models pymicro-wakeword ships; anything else is a JSON path.
WAKE_MODELS = ("okay_nabu", "alexa", "hey_mycroft", "hey_jarvis")


def _wake_model(text: str) -> str | None:
    text = text.strip()
    if not text or text in WAKE_MODELS:
        return text
    # A custom model is named by its JSON (microWakeWord's format), which
    # names the .tflite beside it; the file itself is checked at start-up.
    return text if text.endswith(".json") and "\0" not in text else None


# Names the hardware tools may not take: other tools the daemon declares.
RESERVED_TOOL_NAMES = frozenset({"get_device_states", "take_photo"})
_FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_TOOL_NAME_WORDS = (
    "a function name: a letter or _, then letters, digits or _ (at most 64 in all), "
    "not " + " or ".join(sorted(RESERVED_TOOL_NAMES))
)


def _tool_name(text: str) -> str | None:
    # The name is the Gemini function name the model calls: the API refuses
    # anything else at setup, long after the config was accepted.
    ok = _FUNCTION_NAME.fullmatch(text) and text not in RESERVED_TOOL_NAMES
    return text if ok else None


def _mqtt_host(text: str) -> str | None:
    # A name or an address, as a socket takes it: "mqtt://host" or "host:1883"
    # would fail only at connect time, with a less useful error.
    return text if re.fullmatch(r"[A-Za-z0-9._-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*", text) else None


def _topic_prefix(text: str) -> str | None:
    # A topic that others are put under: no wildcards, no empty levels, no $.
    ok = (
        re.fullmatch(r"[^+#\x00-\x1f]{1,128}", text)
        and "" not in text.split("/")
        and not text.startswith("$")
    )
    return text if ok else None


def _node_id(text: str) -> str | None:
    return text if re.fullmatch(r"[A-Za-z0-9_-]{0,64}", text) else None


def _printable(text: str) -> str | None:
    return text if re.fullmatch(r"[\x21-\x7e]{0,128}", text) else None


def _parameter_name(text: str) -> str | None:
    return text if _FUNCTION_NAME.fullmatch(text) else None


_TOPIC_WORDS = "a topic: no +, #, empty levels or leading $, at most 128 characters"

_STRING_RULES: dict[str, tuple[str, Callable[[str], str | None]]] = {
    "tools.led.name": (_TOOL_NAME_WORDS, _tool_name),
    "tools.relay.name": (_TOOL_NAME_WORDS, _tool_name),
    "tools.mqtt.name": (_TOOL_NAME_WORDS, _tool_name),
    "tools.mqtt.description": ("a description of what the function does", lambda s: s or None),
    "tools.mqtt.parameters.name": (
        "a parameter name: a letter or _, then letters, digits or _",
        _parameter_name,
    ),
    "tools.mqtt.parameters.description": ("a description of the parameter", lambda s: s or None),
    "mqtt.host": ("a host name or IP address (no mqtt://, no :port), or empty", _mqtt_host),
    "mqtt.node_id": ("letters, digits, _ or - (at most 64), or empty", _node_id),
    "mqtt.base_topic": (_TOPIC_WORDS + ", or empty", lambda s: s if not s else _topic_prefix(s)),
    "mqtt.discovery_prefix": (_TOPIC_WORDS, _topic_prefix),
    "mqtt.client_id": ("printable ASCII without spaces, at most 128, or empty", _printable),
    "gemini.endpoint": ("a ws:// or wss:// URL, or an empty string", _endpoint),
    "gemini.model": (f"a model name such as {DEFAULT_MODEL!r}", _model),
    "gemini.voice": ("a voice name such as 'Kore'", lambda s: s or None),
    "gemini.language": ("a language code such as 'en-US', or an empty string", _language),
    "control.socket": ("a socket path of at most 107 bytes", _socket_path),
    "gemini.token_command": (
        "a command line split like a shell would (quotes allowed, no pipes), or empty",
        _command,
    ),
    "wake.model": (
        f"one of {', '.join(repr(m) for m in WAKE_MODELS)}, the path of a model's "
        ".json, or empty (no wake word)",
        _wake_model,
    ),
    **{
        f"hooks.{name}": (
            "a command line split like a shell would (quotes allowed, no pipes), or empty",
            _command,
        )
        for name in ("state", "wake", "mute", "volume", "error", "link")
    },
}


# ---------------------------------------------------------------- building


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _settable(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.name not in _INTERNAL]


def _looks_secret(name: str) -> bool:
    words = re.split(r"[^a-z]+", name.lower())
    joined = "".join(words)
    return joined in _SECRET_NAMES or joined.endswith(("apikey", "token", "secret"))


def _unknown(file: str, path: str, name: str, value: object, cls: type) -> ConfigError:
    valid = _settable(cls)
    if _SECRET_VALUE.search(name):
        return ConfigError(
            file, path or None, "no secret in the config file", problem=_SECRET_ADVICE
        )
    key = _join(path, name)
    if _looks_secret(name):
        advice = _MQTT_SECRET_ADVICE if path == "mqtt" else _SECRET_ADVICE
        return ConfigError(file, key, "no secret in the config file", problem=advice)
    if path:
        problem = f"unknown key; valid keys in [{path}]: {', '.join(valid)}"
    elif isinstance(value, Mapping):
        problem = f"unknown section; valid sections: {', '.join(valid)}"
    else:
        problem = f"a key outside any [section]; valid sections: {', '.join(valid)}"
    close = difflib.get_close_matches(name, valid, n=1)
    if close:
        problem += f"; did you mean {close[0]!r}?"
    elif not path:
        # A key above every [section] header is a common slip: point at its section.
        hints = typing.get_type_hints(cls)
        homes = [s for s in valid if name in _settable(hints[s])]
        if homes:
            problem += f"; did you mean {name!r} under [{homes[0]}]?"
    return ConfigError(file, key, f"one of: {', '.join(valid)}", problem=problem)


# Required keys whose absence deserves more than "missing".
_MISSING_ADVICE = {
    "tools.relay.active_high": (
        "missing: say how the relay module switches. false for the common active-low "
        "modules (on when IN is low: off, the safe level, is HIGH); true for modules that "
        "switch on when IN is high (off, the safe level, is LOW). A wrong guess turns every "
        '"off" into "on"'
    ),
}


def _build(cls: type, data: object, path: str, file: str) -> Any:
    if not isinstance(data, Mapping):
        return _fail(file, path, f"a table [{path}]", data)
    for name, value in data.items():
        if name not in _settable(cls):
            raise _unknown(file, path, str(name), value, cls)
    for f in dataclasses.fields(cls):
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if required and f.name not in data:
            # Named here, or cls(**kw) would fail with a TypeError naming no file.
            key = _join(path, f.name)
            problem = _MISSING_ADVICE.get(_INDEX.sub("", key), "missing")
            raise ConfigError(file, key, f"a value for {f.name}", problem=problem)
    hints = typing.get_type_hints(cls)
    return cls(
        **{
            name: _coerce(hints[name], value, _join(path, name), file)
            for name, value in data.items()
        }
    )


def _fail(file: str, key: str, expected: str, got: object) -> typing.NoReturn:
    raise ConfigError(file, key, expected, got=got)


def _coerce(tp: Any, value: object, path: str, file: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return _build(typing.cast(type, tp), value, path, file)
    if isinstance(value, str) and _SECRET_VALUE.search(value):
        raise ConfigError(file, path, "no secret in the config file", problem=_SECRET_ADVICE)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (types.UnionType, typing.Union) and type(None) in args:
        # "float | None": TOML has no null, so None is only ever the default.
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, path, file)
    if origin is Literal:
        # Compare types too: True == 1 must not pass for a Literal[1].
        if any(type(value) is type(a) and value == a for a in args):
            return value
        return _fail(file, path, "one of " + ", ".join(_show(a) for a in args), value)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        if not isinstance(value, list | tuple):
            return _fail(file, path, "an array", value)
        return tuple(_coerce(args[0], v, f"{path}[{i}]", file) for i, v in enumerate(value))
    if tp is bool:
        return value if isinstance(value, bool) else _fail(file, path, "true or false", value)
    if tp is str:
        expected, check = _STRING_RULES.get(_INDEX.sub("", path), ("a string", str))
        if not isinstance(value, str):
            return _fail(file, path, expected, value)
        checked = check(value)
        return checked if checked is not None else _fail(file, path, expected, value)
    if tp is int or tp is float:
        # Array entries share their key's rule: tools.led[2].pin -> tools.led.pin.
        rule = _RANGES.get(_INDEX.sub("", path))
        expected = "an integer" if tp is int else "a number"
        if rule:
            expected += " " + rule.words()
        # bool is an int subclass in Python, but `true` is never a number in TOML.
        if isinstance(value, bool) or not isinstance(value, int | float):
            return _fail(file, path, expected, value)
        if tp is int and not isinstance(value, int):
            return _fail(file, path, expected, value)
        if tp is float:
            try:
                value = float(value)
            except OverflowError:
                return _fail(file, path, expected, value)
            if not math.isfinite(value):
                return _fail(file, path, expected, value)
        if rule and value not in rule:
            return _fail(file, path, expected, value)
        return value
    raise TypeError(f"config field {path} has a type the loader does not handle: {tp!r}")


def _check(cfg: Config, file: str) -> None:
    """Rules that span more than one key."""
    link = cfg.link
    if link.backoff_initial_s > link.backoff_max_s:
        _fail(
            file,
            "link.backoff_initial_s",
            f"a number no greater than link.backoff_max_s ({link.backoff_max_s:g})",
            link.backoff_initial_s,
        )
    led = cfg.status_led
    if led.kind == "rgb" and len(led.rgb_pins) != 3:
        raise ConfigError(
            file,
            "status_led.rgb_pins",
            'three pins (red, green, blue) for kind = "rgb"',
            problem=f'kind = "rgb" needs exactly three pins (red, green, blue), '
            f"got {len(led.rgb_pins)}",
        )
    _check_tool_names(cfg, file)
    _check_pins(cfg, file)
    _check_gemini(cfg, file)
    _check_mqtt(cfg, file)


def _check_gemini(cfg: Config, file: str) -> None:
    """Setups the service would refuse with 1007, refused here instead, with
    the key to change."""
    g = cfg.gemini
    model = traits(g.model)
    explicit = cfg.explicit
    v1alpha = g.api_version == "v1alpha" or g.auth == "ephemeral_token"
    for key, on in (
        ("proactive_audio", g.proactive_audio),
        ("affective_dialog", g.affective_dialog),
    ):
        if not on:
            continue
        if not model.native_audio:
            raise ConfigError(
                file,
                f"gemini.{key}",
                "a native-audio model",
                problem=f"{g.model} ({model.family}) has no {key.replace('_', ' ')}",
            )
        if not v1alpha:
            raise ConfigError(
                file,
                f"gemini.{key}",
                'gemini.api_version = "v1alpha"',
                problem=f'{key} exists only on the v1alpha endpoint (v1beta answers 1007 "Unknown '
                'name"): set gemini.api_version = "v1alpha"',
            )
    wrong_thinking = {
        "budget": "gemini.thinking_level",
        "level": "gemini.thinking_budget",
        "none": None,
    }[model.thinking]
    defaults = GeminiConfig()
    for key in ("gemini.thinking_budget", "gemini.thinking_level"):
        name = key.split(".")[1]
        # The other family's key at its default is harmless (the example
        # config shows both); a value the model would never see is a mistake.
        changed = key in explicit and getattr(g, name) != getattr(defaults, name)
        if changed and (model.thinking == "none" or key == wrong_thinking):
            other = {"budget": "gemini.thinking_budget", "level": "gemini.thinking_level"}
            fix = f"; use {other[model.thinking]}" if model.thinking in other else ""
            raise ConfigError(
                file,
                key,
                f"a thinking setting {g.model} takes",
                problem=f"{g.model} ({model.family}) does not take {key.split('.')[1]}{fix}",
            )
    if cfg.tools.non_blocking and not model.non_blocking_tools:
        raise ConfigError(
            file,
            "tools.non_blocking",
            "false for this model",
            problem=f"{g.model} ({model.family}) calls functions synchronously only",
        )
    if g.token_command and g.auth != "ephemeral_token":
        raise ConfigError(
            file,
            "gemini.token_command",
            'gemini.auth = "ephemeral_token"',
            problem='a token command needs gemini.auth = "ephemeral_token"',
        )
    if g.token_new_session_s > g.token_expire_s:
        _fail(
            file,
            "gemini.token_new_session_s",
            f"no more than gemini.token_expire_s ({g.token_expire_s:g})",
            g.token_new_session_s,
        )


def mqtt_node_id(m: MqttConfig, hostname: str | None = None) -> str:
    """This device's id on the broker: ``node_id``, else the host name folded
    into [a-z0-9_] (what Home Assistant's discovery topics allow)."""
    if m.node_id:
        return m.node_id
    name = socket.gethostname() if hostname is None else hostname
    folded = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
    return folded[:64] or "edge_daemon"


def mqtt_base_topic(m: MqttConfig, hostname: str | None = None) -> str:
    return m.base_topic or f"edge-daemon/{mqtt_node_id(m, hostname)}"


def mqtt_client_id(m: MqttConfig, hostname: str | None = None) -> str:
    return m.client_id or f"edge-daemon-{mqtt_node_id(m, hostname)}"


def _check_mqtt(cfg: Config, file: str) -> None:
    m = cfg.mqtt
    if m.ca_file and not m.tls:
        raise ConfigError(file, "mqtt.ca_file", "mqtt.tls = true", problem="a CA file needs tls")
    if m.password_file and not m.username:
        raise ConfigError(
            file,
            "mqtt.password_file",
            "mqtt.username",
            problem="a password needs a user name (mqtt.username)",
        )
    if m.backoff_initial_s > m.backoff_max_s:
        _fail(
            file,
            "mqtt.backoff_initial_s",
            f"a number no greater than mqtt.backoff_max_s ({m.backoff_max_s:g})",
            m.backoff_initial_s,
        )
    if cfg.tools.mqtt and not m.host:
        raise ConfigError(
            file,
            "tools.mqtt",
            "[mqtt] host",
            problem="remote tools publish to a broker: set mqtt.host",
        )
    # A remote tool must not drive this daemon itself, nor rewrite discovery.
    ours = [f"{m.discovery_prefix}/", f"{mqtt_base_topic(m)}/"]
    for i, tool in enumerate(cfg.tools.mqtt):
        _check_remote_tool(tool, f"tools.mqtt[{i}]", file, ours)


def _check_remote_tool(tool: MqttToolConfig, path: str, file: str, ours: list[str]) -> None:
    """The remote tool's declaration is what the hardware tools' validator
    holds calls to, and its templates can only ever make one plain topic and
    (for JSON) a payload that parses."""
    from .tools import template
    from .tools.schema import check_declaration

    props: dict[str, dict[str, Any]] = {}
    for j, param in enumerate(tool.parameters):
        key = f"{path}.parameters[{j}]"
        if param.name in props:
            raise ConfigError(file, f"{key}.name", "a name no other parameter has", got=param.name)
        prop: dict[str, Any] = {"type": param.type, "description": param.description}
        if param.enum:
            prop["enum"] = list(param.enum)
        for bound in ("minimum", "maximum"):
            if getattr(param, bound) is not None:
                prop[bound] = getattr(param, bound)
        props[param.name] = prop
    decl: dict[str, Any] = {"name": tool.name, "description": tool.description}
    if props:
        decl["parameters"] = {"type": "OBJECT", "properties": props, "required": list(props)}
    try:
        check_declaration(decl)
    except ValueError as exc:
        raise ConfigError(
            file,
            f"{path}.parameters",
            "parameters the tool validator understands",
            problem=str(exc),
        ) from None
    for key in ("topic", "state_topic"):
        text = getattr(tool, key)
        if key == "state_topic" and not text:
            continue
        shape = template.PLACEHOLDER.sub("x", text)
        problem = template.topic_problem(shape)
        if not problem and any(shape.startswith(p) for p in ours):
            problem = "is one of this daemon's own topics (discovery prefix or base topic)"
        for name in template.placeholders(text):
            if name not in props:
                problem = f"names {{{name}}}, which is not a parameter"
                break
            why = template.topic_value_problem(props[name])
            if why:
                problem = f"takes {{{name}}}, but {why}"
                break
        if problem:
            raise ConfigError(file, f"{path}.{key}", "a topic to publish to", problem=problem)
    for name in template.placeholders(tool.payload):
        if name not in props:
            raise ConfigError(
                file,
                f"{path}.payload",
                "placeholders that name parameters",
                problem=f"names {{{name}}}, which is not a parameter",
            )
    left = template.unused(props, tool.topic, tool.payload, tool.state_topic)
    if left:
        raise ConfigError(
            file,
            f"{path}.parameters",
            "every parameter used in topic, payload or state_topic",
            problem=f"{', '.join(left)} fill(s) no placeholder",
        )
    try:
        template.render_payload(tool.payload, template.sample_args(props))
    except ValueError as exc:
        raise ConfigError(file, f"{path}.payload", "a payload template", problem=str(exc)) from None


def _tool_entries(cfg: Config) -> Iterator[tuple[str, LedToolConfig | RelayToolConfig]]:
    for kind, entries in (("led", cfg.tools.led), ("relay", cfg.tools.relay)):
        for i, entry in enumerate(entries):
            yield f"tools.{kind}[{i}]", entry


def _check_tool_names(cfg: Config, file: str) -> None:
    seen: dict[str, str] = {}
    remote = ((f"tools.mqtt[{i}]", entry) for i, entry in enumerate(cfg.tools.mqtt))
    for path, entry in (*_tool_entries(cfg), *remote):
        if entry.name in seen:
            raise ConfigError(
                file,
                f"{path}.name",
                "a name no other tool has",
                problem=f"{entry.name!r} is already the name of {seen[entry.name]}",
            )
        seen[entry.name] = path


def _check_pins(cfg: Config, file: str) -> None:
    # Two devices on one GPIO would fight over it (or gpiozero refuses the second
    # at start-up, with no word of the config key): say which keys collide.
    used: list[tuple[str, int]] = [("button.pin", cfg.button.pin)]
    led = cfg.status_led
    if led.kind == "rgb":
        used += [(f"status_led.rgb_pins[{i}]", pin) for i, pin in enumerate(led.rgb_pins)]
    elif led.kind != "none":
        used.append(("status_led.pin", led.pin))
    used += [(f"{path}.pin", entry.pin) for path, entry in _tool_entries(cfg)]
    used += [
        (key, pin)
        for key, pin in (
            ("mute.pin", cfg.mute.pin),
            ("volume.up_pin", cfg.volume.up_pin),
            ("volume.down_pin", cfg.volume.down_pin),
        )
        if pin >= 0  # -1: not wired
    ]
    owner: dict[int, str] = {}
    for key, pin in used:
        if pin in owner:
            raise ConfigError(
                file,
                key,
                "a GPIO pin no other device uses",
                problem=f"GPIO{pin} is already used by {owner[pin]}",
            )
        owner[pin] = key


def _leaf_paths(data: Mapping[str, object], path: str = "") -> Iterator[str]:
    for name, value in data.items():
        if isinstance(value, Mapping):
            yield from _leaf_paths(value, _join(path, name))
        else:
            yield _join(path, name)


def _from_mapping(data: Mapping[str, object], file: str) -> Config:
    cfg = _build(Config, data, "", file)
    cfg = dataclasses.replace(cfg, source=file, explicit=frozenset(_leaf_paths(data)))
    _check(cfg, file)
    return cfg


def load_config(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """Load and check the config file.

    ``path`` None means ``$EDGE_DAEMON_CONFIG``, else DEFAULT_CONFIG_PATH. Only
    that default may be missing (built-in defaults then); a file someone named
    must exist. Raises ConfigError for every problem.
    """
    env = os.environ if env is None else env
    named = path is not None or bool(env.get(CONFIG_ENV))
    file = os.fsdecode(path) if path is not None else env.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH
    try:
        with open(file, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        if not named:
            return Config()
        raise ConfigError(file, None, "an existing config file", problem="file not found") from None
    except tomllib.TOMLDecodeError as e:
        # tomllib's messages give the position but never the text, so they are safe to show.
        where = re.search(r"at line (\d+), column (\d+)", str(e))
        line, column = (int(where[1]), int(where[2])) if where else (None, None)
        raise ConfigError(
            file, None, "valid TOML", problem=f"TOML syntax error: {e}", line=line, column=column
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(file, None, "UTF-8 text", problem="not valid UTF-8 text") from None
    except OSError as e:
        raise ConfigError(
            file, None, "a readable file", problem=f"cannot read: {e.strerror or e}"
        ) from None
    return _from_mapping(data, file)


def _as_data(obj: object) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        # None is a key left out (TOML has no null).
        return {
            name: _as_data(getattr(obj, name))
            for name in _settable(type(obj))
            if getattr(obj, name) is not None
        }
    return [_as_data(v) for v in obj] if isinstance(obj, tuple) else obj


def with_overrides(
    cfg: Config, overrides: Mapping[str, object], *, origin: str = "overrides"
) -> Config:
    """``cfg`` with dotted keys replaced (``{"audio.backend": "wav"}``), checked
    exactly like the file. Errors name ``origin`` instead of the file."""
    flat = dict(_flatten(overrides))
    data = _as_data(cfg)
    for dotted, value in flat.items():
        parts = dotted.split(".")
        if not all(parts):
            raise ConfigError(origin, dotted, "a dotted key such as 'audio.backend'", got=dotted)
        table = data
        for depth, part in enumerate(parts[:-1]):
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ConfigError(
                    origin,
                    dotted,
                    "a key inside a table",
                    problem=f"{prefix} is a value, not a table",
                )
        table[parts[-1]] = value
    new = _from_mapping(data, origin)
    return dataclasses.replace(new, source=cfg.source, explicit=cfg.explicit | frozenset(flat))


def _flatten(overrides: Mapping[str, object], prefix: str = "") -> Iterator[tuple[str, object]]:
    for key, value in overrides.items():
        if isinstance(value, Mapping):
            yield from _flatten(value, _join(prefix, str(key)))
        else:
            yield _join(prefix, str(key)), value


def cleartext_to_remote(url: str) -> bool:
    """A ws:// URL to a host other than this machine: a key or token sent
    there crosses the network in clear text."""
    parts = urlsplit(url)
    if parts.scheme != "ws":
        return False
    host = (parts.hostname or "").lower()
    if host == "localhost":
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def default_endpoint(cfg: Config) -> str:
    if cfg.gemini.endpoint:
        return cfg.gemini.endpoint
    if cfg.gemini.auth == "ephemeral_token":
        return GOOGLE_EPHEMERAL_ENDPOINT
    return GOOGLE_V1ALPHA_ENDPOINT if cfg.gemini.api_version == "v1alpha" else GOOGLE_ENDPOINT


# ---------------------------------------------------------------- secrets


class Secret:
    """A credential that will not print itself.

    repr/str/format all give ``Secret('***')``, so a Secret that slips into a
    log line or an f-string leaks nothing; ``reveal()`` is the one way out.
    """

    __slots__ = ("_value", "source")

    def __init__(self, value: str, source: str = "") -> None:
        self._value = value
        self.source = source  # where it came from, in words: safe to log

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return format(repr(self), spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> typing.NoReturn:
        raise TypeError("a Secret is not pickled: it would leave the process in clear text")


def _secret(value: str, source: str, file: str, key: str | None) -> Secret | None:
    value = value.strip()
    if not value:
        return None
    # It goes into a URL or a header: one line of visible ASCII, nothing else.
    if not re.fullmatch(r"[\x21-\x7e]+", value):
        raise ConfigError(
            file,
            key,
            "only the key, on one line",
            problem=f"the key from {source} is not one line of printable ASCII characters",
        )
    return Secret(value, source)


_SECRET_FILE_MAX = 64 * 1024


def _read_secret(path: Path, file: str, key: str | None, what: str) -> str:
    # Errors say which file and why, never a byte of what is in it. The read is
    # bounded so a key file pointed at a device or a log cannot eat the memory.
    try:
        with path.open("rb") as f:
            raw = f.read(_SECRET_FILE_MAX + 1)
        if len(raw) > _SECRET_FILE_MAX:
            problem = f"{what} is larger than {_SECRET_FILE_MAX} bytes"
        else:
            return raw.decode("utf-8")
    except UnicodeDecodeError:
        problem = f"{what} is not UTF-8 text"
    except OSError as e:
        problem = f"cannot read {what}: {e.strerror or type(e).__name__}"
    raise ConfigError(file, key, "a readable file holding only the key", problem=problem)


def resolve_secret(cfg: Config, env: Mapping[str, str] | None = None) -> Secret | None:
    """Find the API key (or, with ``gemini.auth = "ephemeral_token"``, the token).

    Order: ``$GEMINI_EPHEMERAL_TOKEN`` (ephemeral mode only), ``$GEMINI_API_KEY``,
    ``gemini.api_key_file`` (relative paths are relative to the config file),
    ``$CREDENTIALS_DIRECTORY/gemini-api-key``. Empty values count as absent.
    Returns None when there is none; raises ConfigError, without the content,
    when a configured source cannot be read.
    """
    env = os.environ if env is None else env
    names = [API_KEY_ENV]
    if cfg.gemini.auth == "ephemeral_token":
        names.insert(0, EPHEMERAL_TOKEN_ENV)
    for name in names:
        found = _secret(env.get(name, ""), f"${name}", "", None)
        if found:
            return found
    if cfg.gemini.api_key_file:
        base = Path(cfg.source).parent if cfg.source else Path()
        path = base / cfg.gemini.api_key_file
        text = _read_secret(path, cfg.source, "gemini.api_key_file", str(path))
        found = _secret(text, f"file {path}", cfg.source, "gemini.api_key_file")
        if found:
            return found
    if env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"], CREDENTIAL_NAME)
        source = f"systemd credential {CREDENTIAL_NAME}"
        if path.exists():
            return _secret(_read_secret(path, "", None, f"{source} ({path})"), source, "", None)
    return None


def resolve_mqtt_password(cfg: Config, env: Mapping[str, str] | None = None) -> Secret | None:
    """The MQTT password: ``mqtt.password_file`` (relative to the config file),
    else ``$CREDENTIALS_DIRECTORY/mqtt-password``. Empty counts as absent; a
    configured file that cannot be read is a ConfigError, without its content."""
    env = os.environ if env is None else env
    candidates: list[tuple[Path, str, str, str | None]] = []
    if cfg.mqtt.password_file:
        base = Path(cfg.source).parent if cfg.source else Path()
        path = base / cfg.mqtt.password_file
        candidates.append((path, f"file {path}", cfg.source, "mqtt.password_file"))
    if env.get("CREDENTIALS_DIRECTORY"):
        path = Path(env["CREDENTIALS_DIRECTORY"], MQTT_CREDENTIAL_NAME)
        if path.exists():
            candidates.append((path, f"systemd credential {MQTT_CREDENTIAL_NAME}", "", None))
    for path, source, file, key in candidates:
        text = _read_secret(path, file, key, source if key is None else str(path))
        value = text.rstrip("\r\n")
        if not value.strip():
            continue
        # Any printable text (a password may be Unicode), on one line.
        if re.search(r"[\x00-\x1f\x7f]", value):
            raise ConfigError(
                file,
                key,
                "only the password, on one line",
                problem=f"the password from {source} is not one line of printable text",
            )
        return Secret(value, source)
    return None


# ---------------------------------------------------------------- rendering


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, str):
        # JSON escapes are a subset of TOML's basic-string escapes; DEL is the
        # one control character JSON leaves raw and TOML forbids.
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def _toml_key(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_-]+", name) else _toml_value(name)


def _is_table_array(value: object) -> bool:
    return (
        isinstance(value, list) and bool(value) and all(isinstance(item, Mapping) for item in value)
    )


def _emit(
    data: Mapping[str, object], path: list[str], out: list[str], *, array_item: bool = False
) -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, Mapping)}
    arrays = {k: v for k, v in data.items() if _is_table_array(v)}
    scalars = {k: v for k, v in data.items() if k not in tables and k not in arrays}
    name = ".".join(_toml_key(p) for p in path)
    if array_item:
        out += ["", f"[[{name}]]"]
    elif path and (scalars or not (tables or arrays)):
        out += ["", f"[{name}]"]
    out += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in scalars.items()]
    # Arrays of tables ([[tools.led]]) come after the table's own keys, which
    # would otherwise land in the array's last entry.
    for k, items in arrays.items():
        for item in typing.cast(list[Mapping[str, object]], items):
            _emit(item, [*path, k], out, array_item=True)
    for k, v in tables.items():
        _emit(typing.cast(Mapping[str, object], v), [*path, k], out)


def _comment(text: str) -> str:
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "?", text)


def render_effective(cfg: Config, secret: Secret | None) -> str:
    """The effective config as TOML that load_config reads back to ``cfg``.

    Says whether a key was found and where, never what it is.
    """
    what = "ephemeral token" if cfg.gemini.auth == "ephemeral_token" else "api key"
    if secret is None:
        presence = (
            f"absent (set ${API_KEY_ENV}, gemini.api_key_file "
            f"or the systemd credential {CREDENTIAL_NAME})"
        )
    else:
        presence = f"present (from {_comment(secret.source)}), value redacted"
    origin = _comment(cfg.source) or "built-in defaults"
    out = [f"# edge-daemon effective configuration, from {origin}", f"# {what}: {presence}"]
    _emit(_as_data(cfg), [], out)
    return "\n".join(out) + "\n"
