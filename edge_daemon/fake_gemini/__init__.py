"""A protocol-faithful local Gemini Live server, for tests, demos and benchmarks.

It speaks the wire protocol of the project's PROTOCOL.md (``setup`` ->
``setupComplete``, push-to-talk turns, tool calls, barge-in, goAway, session
resumption) and enforces the rules the real server enforces, with the same
close codes. It parses client JSON on its own, never through ``edge_daemon.live``,
so it is an independent check of our client rather than a mirror of its bugs.

The rules it enforces, each with where it comes from and the test that pins
it (tests/...). "Proto" is Google's generative_service.proto
(BidiGenerateContent*), "SDK" the google-genai Python SDK (types.py, live.py,
_live_converters.py, tokens.py), "guide" Google's Live API pages
(live-guide, live-tools, live-session, ephemeral-tokens), "field" what public
clients have recorded from the real service. Where the real service's exact
close reason is not published, the fake's wording is its own (marked *).

    - the first message is setup ({"config"} is refused): 1007; proto, field.
      test_fake_gemini::test_bad_first_message_closes_1007
    - exactly one top-level key, a known one: 1007; proto.
      test_fake_gemini::test_bad_first_message_closes_1007
    - setup once; nothing else before setupComplete: 1007; proto, SDK.
      test_fake_gemini::test_bad_messages_after_setup_close_1007,
      test_messages_before_setup_complete_close_1007
    - setup fields are the proto's, in camelCase: 1007; proto.
      test_fake_gemini::test_bad_first_message_closes_1007
    - generationConfig fields are the proto's: 1007 "Unknown name"; proto.
      test_fake_dialect::test_setup_dialect
    - a model name needs "models/", else it is not found: 1008; field.
      test_fake_gemini::test_unknown_model_closes_1008
    - the key in x-goog-api-key or ?key=; tokens only on the v1alpha Constrained endpoint:
      1008; SDK live.py.
      test_fake_gemini::test_api_key_header_query_and_ephemeral_token
    - one field per realtimeInput, known fields only: 1007; proto.
      test_fake_gemini::test_bad_messages_after_setup_close_1007
    - activityStart/End only with automatic activity detection off: 1007; SDK types.
      test_fake_gemini::test_activity_start_needs_vad_disabled
    - with detection off, text outside an activity window is never answered; inside one it
      is the turn: ignored; SDK types (disabled: "the client must send activity signals").
      test_fake_gemini::test_bare_text_with_detection_off_is_never_answered,
      test_a_typed_turn_inside_an_activity_window_is_answered
    - audio outside an activity window with detection off: ignored, noted; SDK types.
      test_fake_gemini::test_text_turn_with_automatic_detection_and_stray_audio_violation
    - audio is 16-bit PCM in whole samples at rate=16000: 1007, noted; guide.
      test_fake_gemini::test_bad_messages_after_setup_close_1007
    - video is JPEG or PNG, at most a frame a second, longest side 1024: 1007, noted; guide.
      test_fake_gemini::test_video_frames_are_checked
    - mic audio while a blocking tool call is unanswered: 1008 (strict); field.
      test_fake_gemini::test_strict_tool_audio_closes_1008
    - a native-audio model takes no speechConfig.languageCode: 1007; field, guide.
      test_fake_dialect::test_setup_dialect
    - 2.5 models think by budget, 3.x by level, half-cascade ones not at all: 1007; SDK
      types, guide.
      test_fake_dialect::test_setup_dialect
    - proactivity and enableAffectiveDialog only on v1alpha: 1007 "Unknown name"; field.
      test_fake_dialect::test_setup_dialect
    - a resumption handle must be known: 1008 "session not found"; field.
      test_fake_gemini::test_resumption_keeps_history_and_rejects_unknown_handles
    - a token has uses (default 1); a resume spends none: 1008 *; SDK types, guide.
      test_fake_dialect::test_a_single_use_token_opens_one_session_and_any_resumes
    - a token opens new sessions only before newSessionExpireTime: 1008 *; SDK types.
      test_fake_dialect::test_the_new_session_window_and_the_expiry
    - nothing is accepted after a token's expireTime: 1008 *; SDK types.
      test_fake_dialect::test_a_token_past_its_expiry_ends_the_session_at_its_next_message
    - POST /v1alpha/auth_tokens: a valid key; times less than 20 hours ahead: HTTP 400; SDK
      tokens.py, types.
      test_fake_dialect::test_tokens_minted_over_http_as_the_service_mints_them
    - a toolResponse answers an issued id, once: noted; proto.
      test_fake_gemini::test_scripted_tool_call_waits_for_the_response

"noted" rules are recorded in ``protocol_violations`` instead of closing, as
the real server ignores or merely frowns on them.

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
    activity_detection.py  the automatic activity detection (an energy detector
                  that honours silenceDurationMs, prefixPaddingMs, sensitivities)
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
