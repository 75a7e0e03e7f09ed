"""A protocol-faithful local Gemini Live server, for tests, demos and benchmarks.

It speaks the wire protocol of the project's PROTOCOL.md (``setup`` ->
``setupComplete``, push-to-talk turns, tool calls, barge-in, goAway, session
resumption) and enforces the rules the real server enforces, with the same
close codes. It parses client JSON on its own, never through ``edge_daemon.live``,
so it is an independent check of our client rather than a mirror of its bugs.

Everything it sees and sends is recorded, and ``wait_for`` lets a test wait on
any condition without sleeping. Reply audio is espeak-ng speech (or a tone) so
a demo through a real speaker sounds like something.

The parts, each building on the ones before it:

    protocol.py   the wire: paths, close reasons, message kinds, limits, codecs
    records.py    what is kept of each connection, session and turn
    audio.py      reply audio: espeak-ng speech, or a tone
    scenarios.py  how the model behaves unless told: scripted turns, echo, auto tool calls
    core.py       the fake's state; send, close, violations, wait_for
    answers.py    the model's side of a turn: barge-in, tool calls, the streamed answer
    rules.py      what a client may send, and what happens when it breaks a rule
    controls.py   what a test does to the fake during a run
    server.py     FakeGemini: listening, authentication, the read loop
    cli.py        ``edge-daemon fake-server``
"""

from .audio import synthesize_speech, tone_pcm
from .cli import add_arguments, run_from_args, serve
from .protocol import (
    BAD_API_KEY,
    DEFAULT_PATH,
    INPUT_RATE,
    INVALID_ARGUMENT,
    OUTPUT_RATE,
    SESSION_NOT_FOUND,
    message_kinds,
)
from .records import FakeConnection, SessionState, Turn
from .scenarios import ScriptedTurn
from .server import FakeGemini

__all__ = [
    "BAD_API_KEY",
    "DEFAULT_PATH",
    "INPUT_RATE",
    "INVALID_ARGUMENT",
    "OUTPUT_RATE",
    "SESSION_NOT_FOUND",
    "FakeConnection",
    "FakeGemini",
    "ScriptedTurn",
    "SessionState",
    "Turn",
    "add_arguments",
    "message_kinds",
    "run_from_args",
    "serve",
    "synthesize_speech",
    "tone_pcm",
]
