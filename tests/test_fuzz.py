"""Fuzzing with hypothesis: server frames into the parser and into the daemon,
config text into the loader (and the CLI), and tool arguments into every tool.

Each property is the same promise the README makes: bad input is refused with
the module's own error (MalformedMessage, ConfigError, a tool error the model
can read), never with an unhandled exception, and nothing physical moves on a
refused call. Budgets fit CI; ``EDGE_FUZZ_SCALE=20`` multiplies every
``max_examples`` for a long run (``.hypothesis/`` keeps what it found).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import math
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory, MockPWMPin
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support.chaos import chaos_tools, watching
from support.rig import daemon_rig
from websockets.exceptions import ConnectionClosed

from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.config import (
    Config,
    ConfigError,
    LedToolConfig,
    RelayToolConfig,
    ToolsConfig,
    load_config,
    render_effective,
)
from edge_daemon.daemon import Daemon, State
from edge_daemon.live import messages as m
from edge_daemon.live.reconnect import LinkSettings
from edge_daemon.live.session import SessionClosed
from edge_daemon.tools.registry import ToolRegistry

ROOT = Path(__file__).resolve().parent.parent
SCALE = float(os.environ.get("EDGE_FUZZ_SCALE", "1"))


def budget(n: int) -> Callable[[Any], Any]:
    return settings(
        max_examples=max(1, int(n * SCALE)),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


# ============================================================ server frames

_text = st.text(max_size=12)
_json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
)
_json = st.recursive(
    _json_leaf,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
    max_leaves=12,
)
# Values that break one assumption each: types, padding, odd PCM, unicode, size.
_junk = st.one_of(
    _json,
    st.sampled_from(
        [
            "not base64!!",
            "QUI",  # missing padding
            "QUJD=",  # padding in the wrong place
            "AA==",  # one byte: an odd-length PCM chunk
            "AAA=",
            "ÄÖÜ",  # non-ASCII where base64 belongs
            "\u202e\U0001f600\x00",
            "audio/pcm;rate=999999999999999999999",
            "audio/pcm;rate=0",
            "-1s",
            "1e999s",
            "NaNs",
            10**400,
            -(10**30),
            1e308,
            "x" * 3000,
        ]
    ),
)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


_pcm = st.binary(max_size=96).map(lambda b: b[: len(b) // 2 * 2])
_audio_part = _pcm.map(
    lambda pcm: {"inlineData": {"mimeType": "audio/pcm;rate=24000", "data": _b64(pcm)}}
)
_text_part = st.builds(lambda t, thought: {"text": t, "thought": thought}, _text, st.booleans())
_server_content = st.fixed_dictionaries(
    {},
    optional={
        "modelTurn": st.builds(
            lambda parts: {"parts": parts}, st.lists(_audio_part | _text_part, max_size=3)
        ),
        "inputTranscription": st.builds(lambda t: {"text": t}, _text),
        "outputTranscription": st.builds(lambda t: {"text": t}, _text),
        "interrupted": st.just(True),
        "generationComplete": st.just(True),
        "turnComplete": st.just(True),
    },
)
_call = st.fixed_dictionaries(
    {
        "id": st.from_regex(r"function-call-[0-9]{1,4}", fullmatch=True),
        "name": st.sampled_from(["fast_tool", "slow_tool", "set_led", "get_device_states"]),
        "args": st.dictionaries(_text, _json, max_size=3),
    }
)
_duration = st.one_of(
    st.floats(min_value=0, max_value=600).map(lambda s: f"{s:g}s"),
    st.builds(lambda s, n: {"seconds": s, "nanos": n}, st.integers(0, 600), st.integers(0, 10**9)),
)
_usage = st.fixed_dictionaries({"totalTokenCount": st.integers(0, 10**6)})
valid_messages = st.one_of(
    st.just({"setupComplete": {}}),
    st.builds(lambda c: {"serverContent": c}, _server_content),
    st.builds(
        lambda c, u: {"serverContent": {**c, "turnComplete": True}, "usageMetadata": u},
        _server_content,
        _usage,
    ),
    st.builds(lambda calls: {"toolCall": {"functionCalls": calls}}, st.lists(_call, max_size=3)),
    st.builds(lambda ids: {"toolCallCancellation": {"ids": ids}}, st.lists(_text, max_size=3)),
    st.builds(lambda d: {"goAway": {"timeLeft": d}}, _duration),
    st.builds(
        lambda h, r: {"sessionResumptionUpdate": {"newHandle": h, "resumable": r}},
        _text,
        st.booleans(),
    ),
)


@st.composite
def mutated_messages(draw: st.DrawFn) -> Any:
    """A valid message with one to four things broken somewhere in its tree."""
    msg = draw(valid_messages)
    for _ in range(draw(st.integers(1, 4))):
        msg = _mutate(draw, msg, 0)
    return msg


def _mutate(draw: st.DrawFn, node: Any, depth: int) -> Any:
    if isinstance(node, dict) and node and depth < 6 and draw(st.integers(0, 9)) < 8:
        key = draw(st.sampled_from(sorted(node, key=str)))
        op = draw(st.sampled_from(["descend", "descend", "replace", "delete", "add"]))
        out = dict(node)
        if op == "descend":
            out[key] = _mutate(draw, node[key], depth + 1)
        elif op == "replace":
            out[key] = draw(_junk)
        elif op == "delete":
            del out[key]
        else:
            out[draw(_text)] = draw(_junk)
        return out
    if isinstance(node, list) and node and depth < 6 and draw(st.booleans()):
        out_list = list(node)
        i = draw(st.integers(0, len(out_list) - 1))
        out_list[i] = _mutate(draw, out_list[i], depth + 1)
        return out_list
    return draw(_junk)


def _encode(msg: Any, style: int) -> bytes | str:
    """The server sends pretty-printed UTF-8 bytes; a broken one may send anything."""
    text = json.dumps(msg, indent=2 if style & 1 else None, ensure_ascii=bool(style & 2))
    return text.encode() if style & 4 else text


# Audio parts whose payload is almost right: the parser's most-travelled path.
_b64_junk = st.one_of(
    st.sampled_from(["QUI", "QUJD=", "AA==", "AAA=", "ÄÖÜ", "QU\u00c9=", "", "====", " QUJD"]),
    st.text(max_size=8),
    _json_leaf,
)
_near_audio = st.builds(
    lambda mime, data: {
        "serverContent": {
            "modelTurn": {"parts": [{"inlineData": {"mimeType": mime, "data": data}}]}
        }
    },
    st.sampled_from(["audio/pcm;rate=24000", "audio/pcm", "audio/pcm;rate=x", "image/png"]) | _text,
    _b64_junk,
)
_deep = st.integers(900, 3000).map(
    lambda n: '{"serverContent": {"modelTurn": ' + "[" * n + "]" * n + "}}"
)
frames = st.one_of(
    st.builds(_encode, valid_messages, st.integers(0, 7)),
    st.builds(_encode, mutated_messages(), st.integers(0, 7)),
    st.builds(_encode, mutated_messages(), st.integers(0, 7)),
    st.builds(_encode, _near_audio, st.integers(0, 7)),
    st.binary(max_size=200),
    st.text(max_size=200),
    st.builds(
        lambda s, n: s[:n], st.builds(_encode, valid_messages, st.just(5)), st.integers(0, 80)
    ),
    _deep,
)
_EVENT_TYPES = tuple(getattr(m.ServerEvent, "__args__", ()))


def parse_or_skip(frame: bytes | str) -> list[m.ServerEvent]:
    try:
        return m.parse_server_message(frame)
    except m.MalformedMessage:
        return []


@budget(600)
@given(frame=frames)
def test_parser_raises_only_malformed_message(frame: bytes | str) -> None:
    try:
        events = m.parse_server_message(frame)
    except m.MalformedMessage:
        return
    assert isinstance(events, list)
    for ev in events:
        assert isinstance(ev, _EVENT_TYPES), ev
        if isinstance(ev, m.ToolCall):
            assert all(isinstance(c.id, str) and isinstance(c.args, Mapping) for c in ev.calls)
        if isinstance(ev, m.GoAway) and ev.time_left_s is not None:
            assert isinstance(ev.time_left_s, float)


@budget(300)
@given(msg=valid_messages, style=st.integers(0, 7))
def test_valid_messages_parse_completely(msg: dict[str, Any], style: int) -> None:
    events = m.parse_server_message(_encode(msg, style))
    parts = ((msg.get("serverContent") or {}).get("modelTurn") or {}).get("parts") or []
    audio = [base64.b64decode(p["inlineData"]["data"]) for p in parts if "inlineData" in p]
    assert [e.pcm for e in events if isinstance(e, m.AudioOut)] == audio
    content = msg.get("serverContent") or {}
    assert any(isinstance(e, m.TurnComplete) for e in events) == bool(content.get("turnComplete"))
    if "toolCall" in msg:
        (call_event,) = [e for e in events if isinstance(e, m.ToolCall)]
        assert [c.id for c in call_event.calls] == [
            c["id"] for c in msg["toolCall"]["functionCalls"]
        ]


def test_fuzz_found_non_ascii_base64_and_deep_nesting_are_malformed() -> None:
    # Both used to escape as ValueError / RecursionError: one such frame ended
    # the connection (before that, the daemon) instead of being skipped.
    bad_audio = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {
        "mimeType": "audio/pcm;rate=24000", "data": "ÄÖÜ"}}]}}}  # fmt: skip
    with pytest.raises(m.MalformedMessage):
        m.parse_server_message(json.dumps(bad_audio))
    with pytest.raises(m.MalformedMessage):
        m.parse_server_message("[" * 100_000)


def test_a_broken_usage_field_does_not_hide_the_turn_complete() -> None:
    # Found by the fault suite: a frame was all or nothing, so a corrupted
    # usageMetadata cost the turnComplete beside it.
    frame = json.dumps({"serverContent": {"turnComplete": True}, "usageMetadata": "junk"})
    assert m.TurnComplete() in parse_or_skip(frame)


# ------------------------------------------------------------ frames into the daemon


class StubSession:
    """Stands in for a LiveSession: records what the daemon sends, and fails
    some sends the way a closing socket does."""

    def __init__(self, rng: random.Random, fail_rate: float) -> None:
        self.id = "stub-session"
        self.resumed_seq: int | None = None
        self.rng = rng
        self.fail_rate = fail_rate
        self.sent: list[tuple[str, Any]] = []

    async def _send(self, kind: str, payload: Any) -> None:
        await asyncio.sleep(0)
        if self.rng.random() < self.fail_rate:
            raise SessionClosed("send failed: closed 1006", 1006, "")
        self.sent.append((kind, payload))

    async def send_tool_response(self, results: list[m.FunctionResult]) -> None:
        await self._send("toolResponse", [r.id for r in results])

    async def send_text(self, text: str) -> None:
        await self._send("text", text)

    async def send_audio(self, pcm: bytes) -> None:
        await self._send("audio", len(pcm))

    async def send_video(self, jpeg: bytes) -> None:
        await self._send("video", len(jpeg))

    async def activity_start(self) -> None:
        await self._send("activityStart", None)

    async def activity_end(self) -> None:
        await self._send("activityEnd", None)


async def _settled(daemon: Daemon) -> None:
    """Every tool call started so far has run and its answer has been sent."""
    async with asyncio.timeout(10):
        while daemon.tool_runner.running:
            await asyncio.wait(list(daemon.tool_runner.running.values()))


async def _drive_daemon(
    steps: list[Any], seed: int, fail_rate: float, max_repeats: int = 1
) -> tuple[Counter[str], Counter[str]]:
    """Feed ``steps`` to a daemon on a stub session; return how often each tool
    token ran and how often each call id was answered."""
    executed: Counter[str] = Counter()
    speaker = NullSpeaker(speed=0)
    daemon = Daemon(
        dataclasses.replace(Config(), audio=dataclasses.replace(Config().audio, backend="null")),
        mic=NullMicrophone(chunk_ms=40, speed=0),
        speaker=speaker,
        link_settings=LinkSettings("ws://127.0.0.1:9", None),
        tools=chaos_tools(executed),
    )
    await speaker.start()
    session = StubSession(random.Random(seed), fail_rate)
    issued: Counter[str] = Counter()
    daemon.sender.session = session  # type: ignore[assignment]
    daemon.state = State.IDLE
    with watching() as dog:
        for step in steps:
            if step == "press":
                daemon.press("fuzz")
            elif step == "release":
                daemon.release("fuzz")
            elif step == "drain":
                await _settled(daemon)
            else:
                for ev in parse_or_skip(step):
                    if isinstance(ev, m.ToolCall):
                        issued.update(c.id for c in ev.calls)
                    daemon._on_event(session, ev)  # type: ignore[arg-type]
            for _ in range(3):
                await asyncio.sleep(0)  # let spawned tool, pump and finish tasks run
            # Holding the button always shows "listening", whatever the server says.
            assert not daemon.talking or daemon.state is State.LISTENING, daemon.history
        daemon.sender.session = None
        daemon.stop()
        leftovers = [*daemon.tool_runner.running.values()]
        if daemon._finish_task is not None:
            leftovers.append(daemon._finish_task)
        for task in leftovers:
            task.cancel()
        await speaker.close()
        # Whatever else the steps started (an answer sent again) ends by itself.
        others = asyncio.all_tasks() - {asyncio.current_task()}
        if others:
            _, pending = await asyncio.wait(others, timeout=10)
            assert not pending, pending
    assert not dog.crashes, dog.crashes
    answered = Counter(i for kind, ids in session.sent if kind == "toolResponse" for i in ids)
    # Each call is answered at most once on this (one) connection, however often
    # the server sent it; ``max_repeats`` is how often a test run may send one.
    twice = {i: n for i, n in answered.items() if i and n > 1 and issued[i] <= max_repeats}
    assert not twice, f"calls answered more than once: {twice}"
    return executed, answered


@budget(200)
@given(
    steps=st.lists(frames | st.sampled_from(["press", "release"]), min_size=1, max_size=25),
    seed=st.integers(0, 2**16),
    fail_rate=st.sampled_from([0.0, 0.0, 0.2]),
)
def test_daemon_event_handling_survives_any_frames(
    steps: list[Any], seed: int, fail_rate: float
) -> None:
    asyncio.run(_drive_daemon(steps, seed, fail_rate))


def test_a_repeated_call_id_is_not_run_twice() -> None:
    # The second frame comes after the first call was answered ("drain"): the
    # id is then only in the answered set, the path a duplicated frame takes.
    call = (
        '{"toolCall": {"functionCalls": [{"id": "c1", "name": "fast_tool", '
        '"args": {"token": "t1"}}]}}'
    )
    executed, answered = asyncio.run(
        _drive_daemon([call, "drain", call], seed=0, fail_rate=0.0, max_repeats=2)
    )
    assert executed == {"t1": 1} and answered == {"c1": 1}  # once each, not zero times


@budget(6)
@given(batch=st.lists(frames, min_size=40, max_size=40))
def test_live_daemon_survives_fuzzed_frames_and_still_answers(batch: list[bytes | str]) -> None:
    asyncio.run(_live_fuzz(batch))


async def _live_fuzz(batch: list[bytes | str]) -> None:
    with watching() as dog:
        async with daemon_rig() as r:
            for frame in batch:
                conn = r.fake.active
                if conn is None or not conn.setup_complete_sent:
                    await r.until(lambda: r.fake.active is not None and r.daemon.link.session)
                    continue
                try:
                    await r.fake.send_raw(frame)
                except ConnectionClosed:  # the daemon closed the socket (a goAway switch): fine
                    assert not conn.open
                    continue
            # Whatever the frames did (goAway, a junk handle, a tool call), it heals.
            r.daemon.release("fuzz")
            await r.until(
                lambda: r.daemon.state is State.IDLE and r.daemon.link.session is not None, 15
            )
            before = len(r.fake.turns)
            await r.turn()
            await r.fake.wait_for(lambda f: len(f.turns) > before and f.turns[-1].completed, 15)
    assert not dog.crashes, dog.crashes


# ============================================================ config

_EXAMPLE = (ROOT / "config" / "edge-daemon.toml").read_text(encoding="utf-8")
_EXAMPLE_LINES = _EXAMPLE.splitlines()
_SNIPPETS = ["[", "]", "[[", "=", '"', "'", "\n", "#", "\x00", "é", "\ufeff", "{", "}", ",", "1e9"]


@st.composite
def mangled_examples(draw: st.DrawFn) -> str:
    """The documented example with random keys uncommented and the text mangled:
    the configs a person editing on the device actually produces."""
    lines = list(_EXAMPLE_LINES)
    commented = [i for i, line in enumerate(lines) if line.startswith("#") and "=" in line]
    for i in draw(st.lists(st.sampled_from(commented), max_size=12, unique=True)):
        lines[i] = lines[i][1:]
    text = "\n".join(lines)
    for _ in range(draw(st.integers(0, 4))):
        pos = draw(st.integers(0, len(text)))
        cut = draw(st.integers(0, 3))
        text = text[:pos] + draw(st.sampled_from(_SNIPPETS) | _text) + text[pos + cut :]
    return text


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in value.items()) + "}"
        )
    return str(value) if isinstance(value, _Raw) else json.dumps(value)


class _Raw(str):
    """TOML value text written as is (dates, times)."""


_toml_scalars = st.one_of(
    st.booleans(),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=True, allow_infinity=True),
    _text,
    st.sampled_from([_Raw("1979-05-27T07:32:00Z"), _Raw("07:32:00"), _Raw("1979-05-27")]),
    st.sampled_from(["", "pyaudio", "wav", "null", "file", "led", "pwm", "ws://127.0.0.1:1"]),
)
_toml_values = st.one_of(
    _toml_scalars,
    st.lists(_toml_scalars, max_size=3),
    st.dictionaries(_text, _toml_scalars, max_size=2),
)
_DEVICE_KEYS = {
    "led": [f.name for f in dataclasses.fields(LedToolConfig)],
    "relay": [f.name for f in dataclasses.fields(RelayToolConfig)],
}


@st.composite
def device_tables(draw: st.DrawFn) -> str:
    """[[tools.led]] / [[tools.relay]] arrays of tables with real and odd keys."""
    out = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["led", "relay", "button"]))
        keys = _DEVICE_KEYS.get(kind, ["name", "pin"])
        table = draw(
            st.dictionaries(st.sampled_from(keys) | _text.filter(bool), _toml_values, max_size=5)
        )
        if draw(st.booleans()):
            table.setdefault("name", draw(st.sampled_from(["lamp", "pump", "lamp", "bad name"])))
            table.setdefault("pin", draw(st.sampled_from([17, 22, 17, 23, 99])))
        out.append(f"[[tools.{kind}]]")
        out += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(out) + "\n"


config_texts = st.one_of(mangled_examples(), device_tables(), st.text(max_size=300))


def _loads_or_says_why(path: Path) -> Config | None:
    """The config at ``path`` loads and survives a round trip through the
    effective config, or is refused with a ConfigError naming the file. Any
    other exception fails the test; None means it was refused."""
    try:
        cfg = load_config(path, env={})
    except ConfigError as exc:
        assert str(path) in str(exc), exc
        return None
    again = path.with_name("again.toml")
    again.write_text(render_effective(cfg, None), encoding="utf-8")
    assert load_config(again, env={}) == dataclasses.replace(cfg, source=str(again))
    return cfg


@budget(250)
@given(text=config_texts)
def test_any_config_text_loads_or_raises_config_error(
    tmp_path_factory: pytest.TempPathFactory, text: str
) -> None:
    # test_config.py fuzzes well-formed documents; this is the text a person
    # (or a bad editor) produces: broken syntax, stray bytes, TOML's own types.
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    _loads_or_says_why(path)


@budget(100)
@given(data=st.binary(max_size=200))
def test_any_bytes_load_or_raise_config_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.mktemp("cfg") / "config.toml"
    path.write_bytes(data)
    _loads_or_says_why(path)


def test_check_config_cli_never_shows_a_traceback(tmp_path: Path) -> None:
    rng = random.Random(11)
    texts = [
        "[audio\nbackend = 'wav'",  # broken syntax
        "[audio]\nbackend = 1979-05-27T07:32:00Z\n",  # a TOML date where a name belongs
        '[[tools.led]]\nname = "lamp"\npin = 17\n[[tools.led]]\nname = "lamp"\npin = 17\n',
        "[gemini]\nendpoint = 'ws://\u202eevil'\n",
        "\ufeff[link]\noffline_buffer_s = nan\n",
    ]
    for i, text in enumerate(texts):
        path = tmp_path / f"c{i}.toml"
        path.write_text(text, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "edge_daemon.cli", "check-config", "--config", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            env={**os.environ, "GEMINI_API_KEY": ""},
        )
        assert proc.returncode in (0, 78), (text, proc.returncode, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout, (text, proc.stderr)
        if proc.returncode == 78:
            assert str(path) in proc.stderr
    path = tmp_path / "bytes.toml"
    path.write_bytes(rng.randbytes(120))
    proc = subprocess.run(
        [sys.executable, "-m", "edge_daemon.cli", "check-config", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 78 and "Traceback" not in proc.stderr


# ============================================================ tool arguments

try:
    from edge_daemon.tools.hardware import HardwareTools
except ImportError:  # the hardware tools are another change; fuzz the registry alone then
    HardwareTools = None  # type: ignore[assignment,misc]

_DEVICES = ToolsConfig(
    led=(
        LedToolConfig("desk_lamp", 17),
        LedToolConfig("dimmer", 18, pwm=True),
        LedToolConfig("inverted", 19, active_high=False),
    ),
    relay=(
        RelayToolConfig("pump", 22, min_switch_interval_s=0.0, active_high=True),
        RelayToolConfig("heater", 23, active_high=False, max_on_seconds=5.0),
    ),
    timeout_s=10.0,  # blocking calls return at once: never reached, however slow the machine
)
_NAMES = ["desk_lamp", "dimmer", "inverted", "pump", "heater", "get_device_states"]
_KEYS = ["action", "on", "seconds", "brightness", "token"]
_arg_values = st.one_of(
    _json_leaf,
    st.sampled_from(["on", "off", "blink", "ON", "", True, False, 0, 1, 50, 100, 101, -1]),
    st.sampled_from([0.05, 0.1, 5.0, 3600, 3601, 1e308, math.inf, math.nan, 10**30]),
    _json,
)
_near_valid_args = st.one_of(
    st.fixed_dictionaries(
        {"action": st.sampled_from(["on", "off", "blink"])},
        optional={"brightness": st.integers(-5, 105), "seconds": st.floats(0, 4000)},
    ),
    st.fixed_dictionaries(
        {"on": st.booleans()}, optional={"seconds": st.floats(0, 700) | st.integers(0, 10)}
    ),
    st.just({}),
)
_args = st.one_of(
    _near_valid_args,
    _near_valid_args,
    st.dictionaries(st.sampled_from(_KEYS) | _text, _arg_values, max_size=4),
    st.builds(lambda v: {"__invalid__": v}, _json),  # what the parser makes of non-object args
)
_calls = st.lists(st.tuples(st.sampled_from(_NAMES) | _text, _args), min_size=1, max_size=8)


def _looks(hw: Any) -> dict[str, Any]:
    """Each device's logical state, without the clocks that tick between two reads."""
    out = {}
    for name, state in hw.states().items():
        if state["kind"] == "relay":
            out[name] = ("relay", state["on"], state["auto_off_in_s"] is not None)
        else:
            out[name] = ("led", state["state"], state["brightness"])
    return out


def _check_pins(hw: Any, factory: MockFactory) -> None:
    """Every pin shows what its device says (blinking LEDs toggle on their own)."""
    for device in hw.devices:
        pin = factory.pin(device.pin).state
        state = device.state()
        if state["kind"] == "relay":
            level = 1.0 if state["on"] == device.cfg.active_high else 0.0
            assert float(pin) == level, (device.name, state, pin)
        elif state["state"] != "blinking":
            lit = state["brightness"] / 100 if state["state"] == "on" else 0.0
            level = lit if device.cfg.active_high else 1.0 - lit
            assert math.isclose(float(pin), level, abs_tol=0.011), (device.name, state, pin)


async def _drive_tools(calls: list[tuple[str, Any]]) -> Counter[str]:
    factory = MockFactory(pin_class=MockPWMPin)
    hw = HardwareTools(_DEVICES, pin_factory=factory, loop=asyncio.get_running_loop())
    registry = ToolRegistry()
    hw.register(registry)
    seen: Counter[str] = Counter()
    try:
        _check_pins(hw, factory)
        for name, args in calls:
            before = _looks(hw)
            outcome = await registry.call(name, args)
            seen["ok" if outcome.ok else "refused"] += 1
            assert outcome.ok == (outcome.error is None)
            json.dumps(outcome.output if outcome.ok else outcome.error, allow_nan=True)
            if not outcome.ok:
                assert _looks(hw) == before, f"refused {name}({args!r}) still moved a device"
                assert "Nothing was changed" in outcome.error or name not in _NAMES, outcome
            _check_pins(hw, factory)
        hw.all_safe("fuzz")
        for device in hw.devices:
            state = device.state()
            assert state.get("on", False) is False and state.get("state", "off") == "off"
        _check_pins(hw, factory)
    finally:
        hw.close()
    return seen


@pytest.mark.skipif(HardwareTools is None, reason="edge_daemon.tools.hardware is not there yet")
@budget(200)
@given(calls=_calls)
def test_hardware_tools_refuse_or_act_and_pins_stay_consistent(
    calls: list[tuple[str, Any]],
) -> None:
    asyncio.run(_drive_tools(calls))


@pytest.mark.skipif(HardwareTools is None, reason="edge_daemon.tools.hardware is not there yet")
def test_the_tool_fuzz_reaches_both_outcomes() -> None:
    calls = [
        ("desk_lamp", {"action": "on"}),
        ("dimmer", {"action": "on", "brightness": 40}),
        ("inverted", {"action": "blink", "seconds": 1}),
        ("pump", {"on": True, "seconds": 5}),
        ("heater", {"on": True}),
        ("heater", {"on": "yes"}),
        ("dimmer", {"action": "off", "brightness": 40}),
        ("pump", {"__invalid__": [1, 2]}),
        ("get_device_states", {}),
    ]
    assert asyncio.run(_drive_tools(calls)) == Counter(ok=6, refused=3)


@budget(100)
@given(calls=_calls)
def test_registry_answers_every_call_with_output_or_error(calls: list[tuple[str, Any]]) -> None:
    async def run() -> None:
        registry = chaos_tools(Counter())
        for name, args in calls:
            outcome = await registry.call(name, args)
            assert outcome.ok == (outcome.error is None)
            if name not in registry.tools:
                assert "unknown function" in (outcome.error or "")

    asyncio.run(run())
