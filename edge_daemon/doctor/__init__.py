"""``edge-daemon doctor``: check this device, one line per check, and say how to fix
whatever is wrong.

Every check is a small function that takes what it looks at (paths under a
filesystem root, a command runner, the environment, loaders for optional
modules) and returns a ``Check``, so each can be tried on its own against a
simulated failure. ``run_checks`` (runner.py) wires them to the real machine.

``--simulate`` reports on what ``edge-daemon run --simulate`` would use: GPIO is
mocked and an unset endpoint is the built-in fake Gemini, so those checks are
skipped or run against the fake instead of failing on a desktop.

Nothing here prints or returns a key: checks name where it came from, never
what it is.

The checks, one module each (or a few closely related):

    config_key.py   the config parses; a key will be found (never shown)
    network.py      the endpoint: DNS, TCP, TLS; with --live a setup handshake
    clock.py        NTP has set the clock
    microphone.py   the mic opens; with --listen it hears sound
    speaker.py      the speaker opens; with --beep it plays a tone
    voice.py        the wake word, end of speech and echo cancellation can run
    gpio.py         the configured pins exist and are free
    camera.py       the configured camera is there
    mqtt.py         the broker: connect, log in, a publish/subscribe round trip
    service.py      the service user, and the unit's state
    tokens.py       gemini.token_command hands out a token
    link.py         the running daemon's link: quota, token, key, server trouble

What they share: report.py (Check, the report), machine.py (paths, the
command runner), portaudio.py (devices opened as the daemon opens them).
"""

from .camera import check_camera
from .cli import add_arguments, run_from_args
from .clock import check_clock
from .config_key import check_config, check_key, read_key_file
from .gpio import (
    check_gpio,
    configured_pins,
    parse_gpioinfo,
    probe_pins_debugfs,
    probe_pins_gpioinfo,
    probe_pins_lgpio,
)
from .machine import Completed, Runner, run_command
from .microphone import check_microphone, rms_s16
from .mqtt import check_mqtt
from .network import Connector, Resolver, check_endpoint, check_live, clock_hint
from .report import Check, Status, exit_status, format_json, format_text
from .runner import Machine, Options, run_checks
from .service import check_service, check_service_user
from .speaker import check_speaker, tone_s16
from .tokens import check_token_command
from .voice import check_voice

__all__ = [
    "Check",
    "Completed",
    "Connector",
    "Machine",
    "Options",
    "Resolver",
    "Runner",
    "Status",
    "add_arguments",
    "check_camera",
    "check_clock",
    "check_config",
    "check_endpoint",
    "check_gpio",
    "check_key",
    "check_live",
    "check_microphone",
    "check_mqtt",
    "check_service",
    "check_service_user",
    "check_speaker",
    "check_token_command",
    "check_voice",
    "clock_hint",
    "configured_pins",
    "exit_status",
    "format_json",
    "format_text",
    "parse_gpioinfo",
    "probe_pins_debugfs",
    "probe_pins_gpioinfo",
    "probe_pins_lgpio",
    "read_key_file",
    "rms_s16",
    "run_checks",
    "run_command",
    "run_from_args",
    "tone_s16",
]
