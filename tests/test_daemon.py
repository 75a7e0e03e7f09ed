"""The daemon's state machine in-process, against the real fake server over a real socket."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import SECRET, wav_frames

from edge_daemon.audio.null import NullMicrophone, NullSpeaker
from edge_daemon.audio.wav import WavSpeaker
from edge_daemon.config import Config, with_overrides
from edge_daemon.daemon import Daemon, State
from edge_daemon.fake_gemini import FakeGemini, tone_pcm
from edge_daemon.live.reconnect import LinkSettings, LinkState
from edge_daemon.live.session import Credentials


@dataclass
class Rig:
    fake: FakeGemini
    daemon: Daemon
    task: asyncio.Task[None]

    async def until(self, cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
        """Wait for a daemon-side condition; re-checked on every state change."""
        async with asyncio.timeout(timeout_s):
            while not cond():
                changed = self.daemon._state_changed
                with contextlib.suppress(TimeoutError):
                    # The fake also wakes us: most conditions follow a server message.
                    await asyncio.wait_for(
                        asyncio.shield(asyncio.ensure_future(changed.wait())), 0.05
                    )

    async def state(self, wanted: State, timeout_s: float = 10.0) -> None:
        assert await self.daemon.wait_state(wanted, timeout_s), (
            f"never reached {wanted}; history={list(self.daemon.history)}"
        )


def settings(url: str) -> LinkSettings:
    return LinkSettings(
        url=url,
        credentials=Credentials(SECRET),
        # Never reached on a healthy link, however slow the machine: tests
        # count connections exactly.
        connect_timeout_s=30,
        setup_timeout_s=30,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        config_error_backoff_s=30,
    )


@contextlib.asynccontextmanager
async def rig(
    *,
    speaker=None,
    mic=None,
    tools=None,
    camera=None,
    pace: float = 8.0,
    overrides: dict | None = None,
    **fake_knobs,
) -> AsyncIterator[Rig]:
    """A fake Gemini and a daemon on it, idle and connected; torn down after."""
    fake = FakeGemini(api_key=SECRET, pace=pace, **fake_knobs)
    await fake.start()
    cfg = with_overrides(Config(), {"audio.backend": "null", **(overrides or {})})
    daemon = Daemon(
        cfg,
        mic=mic or NullMicrophone(chunk_ms=40),
        speaker=speaker or NullSpeaker(),
        link_settings=settings(fake.url),
        tools=tools,
        camera=camera,
    )
    task = asyncio.create_task(daemon.run())
    r = Rig(fake, daemon, task)
    try:
        await r.state(State.IDLE)
        yield r
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        await fake.stop()


async def turn(r: Rig, seconds_of_audio: float = 0.2) -> None:
    before = r.fake.audio_received_s()
    r.daemon.press("test")
    await r.fake.wait_for(lambda f: f.audio_received_s() >= before + seconds_of_audio)
    r.daemon.release("test")


async def test_one_turn_walks_the_states_and_answers() -> None:
    async with rig() as r:
        await turn(r)
        await r.state(State.SPEAKING)
        await r.state(State.IDLE)
        states = [s for _, s in r.daemon.history]
        assert states == ["idle", "listening", "thinking", "speaking", "idle"]
        assert r.fake.turns[-1].completed
        assert r.daemon.speaker.counters["bytes_played"] == len(r.fake.turns[-1].reply_pcm)


class RestingNullSpeaker(NullSpeaker):
    """A null speaker that records what the daemon tells it about resting."""

    def __init__(self) -> None:
        super().__init__()
        self.kept_awake: list[tuple[bool, str]] = []  # (on, the daemon's state then)
        self.daemon: Daemon | None = None

    def keep_awake(self, on: bool) -> None:
        state = self.daemon.state.value if self.daemon is not None else "?"
        self.kept_awake.append((on, state))


async def test_the_speaker_is_kept_awake_from_the_press_to_the_end_of_the_answer() -> None:
    speaker = RestingNullSpeaker()
    async with rig(speaker=speaker) as r:
        speaker.daemon = r.daemon
        assert speaker.kept_awake and not any(on for on, _ in speaker.kept_awake)
        speaker.kept_awake.clear()
        await turn(r)
        await r.state(State.SPEAKING)
        await r.state(State.IDLE)
        changes = [
            (on, state)
            for i, (on, state) in enumerate(speaker.kept_awake)
            if i == 0 or on != speaker.kept_awake[i - 1][0]
        ]
        # Awake as the turn opens (before any reply), let go only when idle again.
        assert changes == [(True, "listening"), (False, "idle")]
        assert r.daemon.speaker.counters["bytes_played"] == len(r.fake.turns[-1].reply_pcm)


async def test_press_while_speaking_is_barge_in(tmp_path: Path) -> None:
    out = tmp_path / "out.wav"
    speaker = WavSpeaker(str(out))
    long_reply = tone_pcm(440.0, 6.0)
    new_reply = tone_pcm(880.0, 0.4)
    async with rig(speaker=speaker, pace=1.0) as r:
        r.fake.script_turn(reply_pcm=long_reply, reply_text="a long answer")
        r.fake.script_turn(reply_pcm=new_reply, reply_text="short")
        await turn(r)
        await r.state(State.SPEAKING)
        await r.fake.wait_for(lambda f: f.turns[-1].audio_sent_bytes >= 48000)
        r.daemon.press("test")  # barge-in
        # Silence at once: the flush happens inside press(), before any await.
        assert not speaker.playing
        assert speaker.counters["flushes"] == 1
        assert r.daemon.counters.barge_ins == 1
        assert r.daemon.state is State.LISTENING
        await r.fake.wait_for(lambda f: f.turns[0].interrupted)
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.2)
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[1].completed)
        await r.state(State.IDLE)
    _, played = wav_frames(out)
    # The file holds a prefix of the cut-off answer, then the new answer whole;
    # nothing of the old turn after the cut.
    assert played.endswith(new_reply)
    old_part = played[: len(played) - len(new_reply)]
    assert 0 < len(old_part) < len(long_reply)
    assert long_reply.startswith(old_part)


async def test_server_interrupted_flushes_the_speaker() -> None:
    async with rig(pace=1.0) as r:
        r.fake.script_turn(reply_pcm=tone_pcm(440.0, 5.0))
        await turn(r)
        await r.state(State.SPEAKING)
        await r.fake.send({"serverContent": {"interrupted": True}})
        await r.until(lambda: r.daemon.counters.interruptions == 1)
        assert r.daemon.speaker.counters["flushes"] == 1
        assert r.daemon.speaker.counters["bytes_flushed"] > 0
        # The rest of the interrupted turn is dropped; its turnComplete settles idle.
        await r.fake.wait_for(lambda f: f.turns[-1].completed, 20)
        await r.state(State.IDLE)
        played = r.daemon.speaker.counters["bytes_played"]
        assert played < len(r.fake.turns[-1].reply_pcm) // 2


async def test_malformed_and_unknown_frames_are_skipped_and_session_lives_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with rig() as r:
        await r.fake.send_raw(b"{not json at all")
        await r.fake.send_raw(b"[1, 2]")
        await r.fake.send_raw("\u00ff\u00fe text frame")
        await r.fake.send({"someFutureMessage": {"x": 1}})
        await r.fake.send({"serverContent": {"modelTurn": {"parts": "nope"}}})
        await turn(r)
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        await r.state(State.IDLE)
        assert len(r.fake.connections) == 1
        session = r.daemon.link.session
        assert session is not None and session.counters.malformed == 4
        warnings = [rec for rec in caplog.records if "malformed" in rec.getMessage()]
        assert len(warnings) == 4


async def test_unknown_tool_is_answered_with_an_error_by_id() -> None:
    async with rig() as r:
        (call_id,) = await r.fake.tool_call([("launch_rockets", {"count": 3})])
        await r.fake.wait_for(lambda f: f.tool_responses)
        (resp,) = r.fake.tool_responses
        assert resp["id"] == call_id and resp["name"] == "launch_rockets"
        assert "unknown function 'launch_rockets'" in resp["response"]["error"]
        assert r.daemon.counters.tool_errors == 1


async def test_drop_mid_idle_reconnects_with_the_resumption_handle() -> None:
    async with rig() as r:
        await r.until(lambda: r.daemon.link.resumption.handle is not None)
        handle = r.daemon.link.resumption.handle
        await r.fake.drop_connection()
        await r.fake.wait_for(
            lambda f: len(f.connections) == 2 and f.connections[1].setup_complete_sent
        )
        assert r.fake.connections[1].resumed_from == handle
        await r.state(State.IDLE)
        await turn(r)
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)


async def test_config_error_close_shows_error_and_backs_off_long() -> None:
    async with rig() as r:
        await r.fake.close_connection(1007, "Request contains an invalid argument.")
        await r.state(State.ERROR)
        assert r.daemon.link.state is LinkState.CONFIG_ERROR
        assert "1007" in r.daemon.link.last_error
        # No hammering: the next attempt waits the long backoff (at least 80 %
        # of it, with jitter), and meanwhile there is still one connection.
        assert (r.daemon.link.last_delay_s or 0.0) >= 0.8 * 30
        assert len(r.fake.connections) == 1


async def test_api_key_never_logged_even_at_debug(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    async with rig() as r:
        await turn(r)
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        await r.fake.close_connection(1008, "API key not valid. Please pass a valid API key.")
        await r.state(State.ERROR)
    for rec in caplog.records:
        text = rec.getMessage() + repr(rec.args) + repr(vars(rec))
        assert SECRET not in text, f"key leaked in {rec.name}: {rec.getMessage()}"
    assert repr(Credentials(SECRET)).count(SECRET) == 0


async def test_control_commands_and_bad_requests() -> None:
    async with rig() as r:
        d = r.daemon
        assert (await d.control({"cmd": "nope"}))["ok"] is False
        assert (await d.control({"cmd": "tap", "seconds": -1}))["ok"] is False
        assert (await d.control({"cmd": "say", "text": ""}))["ok"] is False
        assert (await d.control({"cmd": "wait", "state": "dancing"}))["ok"] is False
        status = await d.control({"cmd": "status"})
        assert status["state"] == "idle" and status["connection"]["state"] == "connected"
        assert (await d.control({"cmd": "say", "text": "hello"}))["ok"]
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
        assert (await d.control({"cmd": "wait", "state": "idle", "timeout": 10}))["ok"]


class CountingMic(NullMicrophone):
    """A live mic whose every chunk carries its sequence number."""

    live = True

    def __init__(self) -> None:
        super().__init__(chunk_ms=40)
        self.seq = 0

    def _next_chunk(self) -> bytes:
        self.seq += 1
        return self.seq.to_bytes(2, "little") * (self.chunk_bytes // 2)


def seq_of(chunk: bytes) -> int:
    return int.from_bytes(chunk[:2], "little")


async def test_preroll_of_a_live_mic_goes_out_right_after_activity_start() -> None:
    mic = CountingMic()
    async with rig(mic=mic, overrides={"audio.preroll_ms": 400}) as r:
        await r.until(lambda: mic.seq > 20)
        last_before_press = mic.seq
        r.daemon.press("test")
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.8)
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
    heard = bytes(r.fake.turns[-1].heard_pcm)
    chunks = [heard[i : i + mic.chunk_bytes] for i in range(0, len(heard), mic.chunk_bytes)]
    seqs = [seq_of(c) for c in chunks]
    # 400 ms of pre-roll = the 10 chunks before the press, then the live stream, gapless.
    assert seqs[0] == last_before_press - 9
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_an_idle_daemon_stops_reading_its_mic_until_a_turn() -> None:
    # Unpaced: a mic read in a loop would deliver thousands of chunks in the
    # time the goAway switch below takes.
    mic = NullMicrophone(chunk_ms=40, speed=0)
    async with rig(mic=mic) as r:
        assert r.daemon.voice.resting
        before = mic.counters["chunks"]
        await r.fake.go_away(0.1)  # a session switch while idle: many loop turns
        await r.fake.wait_for(
            lambda f: len(f.connections) == 2 and f.connections[1].setup_complete_sent
        )
        await r.fake.wait_for(lambda f: f.connections[0].close_code is not None)
        await r.state(State.IDLE)
        assert r.daemon.voice.resting
        assert mic.counters["chunks"] <= before + 1  # a read already under way may finish
        r.daemon.press("test")  # the press wakes it: the turn's audio flows
        assert not r.daemon.voice.resting
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.2)
        r.daemon.release("test")
        assert r.daemon.voice.resting  # the answer needs no mic
        await r.state(State.IDLE)
        assert r.daemon.voice.resting
    states = [s for _, s in r.daemon.history]
    assert states[-5:] == ["idle", "listening", "thinking", "speaking", "idle"]


async def test_a_live_mic_keeps_its_preroll_through_the_idle_standby() -> None:
    mic = StandbyCountingMic()
    async with rig(mic=mic, overrides={"audio.preroll_ms": 400}) as r:
        assert r.daemon.voice.resting and mic.standing_by
        await r.until(lambda: mic.seq > 20)  # the room goes on, heard by nobody
        r.daemon.press("test")
        last_before_press = mic.seq
        await r.fake.wait_for(lambda f: f.audio_received_s() >= 0.8)
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: f.turns and f.turns[-1].completed)
    heard = bytes(r.fake.turns[-1].heard_pcm)
    seqs = [seq_of(heard[i : i + mic.chunk_bytes]) for i in range(0, len(heard), mic.chunk_bytes)]
    # The 10 chunks the mic kept in standby, then the live stream, gapless.
    assert seqs[0] == last_before_press - 9
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_half_duplex_listens_through_the_answer_to_keep_the_preroll_clean() -> None:
    mic = StandbyCountingMic()
    async with rig(mic=mic, overrides={"audio.half_duplex": True}) as r:
        r.fake.script_turn(reply_pcm=tone_pcm(440.0, 30.0))
        await turn(r)
        await r.state(State.SPEAKING)
        assert not r.daemon.voice.resting  # reading on, to keep the model out of the pre-roll
        await r.until(lambda: r.daemon.speaker.playing)
        start = mic.seq
        await r.until(lambda: mic.seq > start + 5)
        assert len(r.daemon.voice.preroll) == 0


class StandbyCountingMic(CountingMic):
    """A live mic that keeps hearing the room in standby, as PortAudio's does
    (one chunk every 40 ms on its own clock), and keeps the newest."""

    def __init__(self) -> None:
        super().__init__()
        self.standing_by = False
        self._kept: list[bytes] = []
        self._keep = 0
        self._clock: asyncio.Task[None] | None = None

    def standby(self, keep_chunks: int) -> bool:
        self.standing_by, self._keep = True, keep_chunks
        self._awake.clear()  # reads wait, as PacedMicrophone's own standby has them
        self._clock = asyncio.get_running_loop().create_task(self._hear())
        return True

    async def _hear(self) -> None:
        while True:
            await asyncio.sleep(0.04)  # the room's clock, not a synchronisation
            self._kept = [*self._kept, self._next_chunk()][-self._keep :]

    def resume(self) -> list[bytes]:
        self.standing_by = False
        if self._clock is not None:
            self._clock.cancel()
        kept, self._kept = self._kept, []
        self._awake.set()
        self._pacer.restart()
        return kept


@pytest.mark.parametrize("half_duplex", [True, False])
async def test_half_duplex_keeps_the_speakers_sound_out_of_the_preroll(half_duplex: bool) -> None:
    mic = CountingMic()
    overrides = {"audio.half_duplex": half_duplex, "audio.preroll_ms": 400}
    async with rig(mic=mic, overrides=overrides) as r:
        r.fake.script_turn(reply_pcm=tone_pcm(440.0, 30.0))
        await turn(r)
        await r.state(State.SPEAKING)
        await r.until(lambda: r.daemon.speaker.playing)
        # The mic hears the model talk for longer than the pre-roll ...
        start = mic.seq
        await r.until(lambda: mic.seq > start + 15)
        last_before_press, before = mic.seq, r.fake.audio_received_s()
        r.daemon.press("test")  # ... then the user barges in
        await r.fake.wait_for(lambda f: f.audio_received_s() >= before + 0.8)
        r.daemon.release("test")
        await r.fake.wait_for(lambda f: len(f.turns) == 2 and f.turns[1].completed)
    heard = bytes(r.fake.turns[1].heard_pcm)
    seqs = [seq_of(heard[i : i + mic.chunk_bytes]) for i in range(0, len(heard), mic.chunk_bytes)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # gapless
    if half_duplex:
        # What the server heard starts with the press: the model's own voice,
        # all the mic heard before it, never went up as pre-roll.
        assert seqs[0] == last_before_press + 1
    else:
        # Full duplex (an echo canceller's job): the 400 ms before the press go up.
        assert seqs[0] == last_before_press - 9


async def test_ephemeral_token_goes_in_the_authorization_header() -> None:
    fake = FakeGemini(api_key="auth_tokens/abc123", pace=8.0)
    await fake.start()
    # Tokens only work on the constrained v1alpha endpoint, as on the real service.
    link = settings(
        f"ws://127.0.0.1:{fake.port}/ws/google.ai.generativelanguage.v1alpha."
        "GenerativeService.BidiGenerateContentConstrained"
    )
    link.credentials = Credentials("auth_tokens/abc123", "ephemeral_token")
    daemon = Daemon(
        with_overrides(Config(), {"audio.backend": "null"}),
        mic=NullMicrophone(chunk_ms=40),
        speaker=NullSpeaker(),
        link_settings=link,
    )
    task = asyncio.create_task(daemon.run())
    try:
        assert await daemon.wait_state(State.IDLE, 10)
        conn = fake.connections[0]
        assert conn.auth_method == "token-header"
        assert conn.request_headers.get("Authorization") == "Token auth_tokens/abc123"
        assert "abc123" not in conn.request_path
    finally:
        daemon.stop()
        await asyncio.wait_for(task, 10)
        await fake.stop()
