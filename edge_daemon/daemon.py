"""The orchestrator: the state machine, the dispatch of server events, and the
wiring between the turn sources, the mic pipeline, the speaker, the tools and
the Live link.

This is the only module where Gemini (``live/``) meets devices (``audio/``,
``hardware/``, ``tools/``, ``voice/``). Each part has a home of its own and
is wired here:

- state_machine.py: the states, and what every change does (log, history, listeners);
- turn.py: the life of one user turn (opened, audio owed, closed, answered);
- voice/: the mic pipeline (capture, pre-roll, half duplex);
- sender.py: the way up the current session, and the one task that sends turn traffic;
- tool_runner.py: tool calls, cancellations, repeated ids and the outbox;
- session_watch.py: when a connection ends (stop, goAway, stall);
- commands.py: the command dispatch (``ctl``) and ``status``;
- session_setup.py: the setup message;
- hands_free.py: the wake word, follow-up and voice barge-in turn source
  (its pipeline stages built by voice_setup.py);
- feedback.py, hooks.py, volume.py: earcons, hook commands, the volume.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from . import trace
from .audio.base import Microphone, RestingSpeaker, Speaker
from .camera import Camera, FrameTicker
from .commands import Commands, Devices, StatusProvider, VirtualButton
from .config import Config
from .counters import Counters
from .device_health import DeviceBoard
from .feedback import Feedback
from .hands_free import HandsFree
from .hooks import Hooks
from .live import messages as m
from .live.reconnect import Link, LinkSettings, LinkState, SessionEnd
from .live.session import LiveSession
from .sender import Sender
from .session_setup import setup_message
from .session_watch import SessionWatch
from .state import state_dir
from .state_machine import State, StateMachine
from .tool_runner import ToolRunner
from .tools.registry import ToolRegistry
from .transcripts import Transcripts, log_transcript
from .turn import Turn
from .turn_outcome import TurnOutcomes
from .voice import MicPipeline
from .voice_setup import build_detectors, hands_free_wanted
from .volume import FILE_NAME as VOLUME_FILE
from .volume import Volume

log = logging.getLogger(__name__)

LinkListener = Callable[[bool], None]


class Daemon(StateMachine):
    def __init__(
        self,
        cfg: Config,
        *,
        mic: Microphone,
        speaker: Speaker,
        link_settings: LinkSettings,
        tools: ToolRegistry | None = None,
        camera: Camera | None = None,
        device_health: DeviceBoard | None = None,
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.mic = mic
        self.speaker = speaker
        self.tools = tools or ToolRegistry()
        self.camera = camera
        # Which devices are up, down (being reopened) or off: `ctl status`,
        # the status LED and sd_notify show it; the states above do not
        # change for it (typed turns and tools work without a microphone).
        self.device_health = device_health or DeviceBoard()
        self.counters = Counters()
        chunk_s = cfg.audio.chunk_ms / 1000.0
        detectors, no_echo_cancel = build_detectors(cfg, speaker)
        self.voice = MicPipeline(
            mic,
            speaker,
            self.counters,
            preroll_chunks=round(cfg.audio.preroll_ms / cfg.audio.chunk_ms),
            # Echo cancellation asked for but not available here: half duplex.
            half_duplex=cfg.audio.half_duplex or no_echo_cancel,
            detectors=detectors,
        )
        # Muted: no wake word, no audio up (a switch, `ctl mute on`).
        self.muted = False
        self._mute_listeners: list[Callable[[bool], None]] = []
        self.feedback = Feedback(speaker, cfg.feedback)
        self.hooks = Hooks(cfg.hooks)
        self.volume = Volume(
            speaker,
            getattr(speaker, "volume", 1.0),
            state_dir(cfg.state.dir) / VOLUME_FILE,
        )
        self.hands_free: HandsFree | None = None
        if hands_free_wanted(cfg):
            self.hands_free = HandsFree(
                self,
                self.voice,
                follow_up_s=cfg.wake.follow_up_s,
                on_wake=self._on_wake,
                on_listen_end=self.feedback.listen_end,
            )
            self.subscribe(self.hands_free.on_state)
        self.subscribe(self._on_state_feedback)
        # The current user turn's audio is kept until the server shows it heard
        # the turn: a drop in between must not lose what was said.
        self._turn_chunks = max(1, round(cfg.link.offline_buffer_s / chunk_s))
        self.turn = Turn.none()
        # A press cut off an answer in progress: the next interrupted+turnComplete
        # close that old answer, and must not be taken for the new turn's.
        self._superseded: Turn | None = None
        self.sender = Sender(
            self.counters,
            lambda: self.turn,
            lambda: bool(self.tool_runner.blocking),
            chunk_s=chunk_s,
            burst=self.voice.preroll.chunks + 2,
        )
        self.link = Link(link_settings, self._build_setup, self._serve, self._on_link_state)
        self.watch = SessionWatch(self.link.resumption, self.counters, cfg.link.response_timeout_s)
        self.sender.on_reply_owed = self.watch.reply_owed
        self.tool_runner = ToolRunner(self.tools, self.sender, self.counters, self.link.resumption)
        self.ticker = (
            FrameTicker(camera, cfg.camera.interval_s, self._camera_wanted, self.sender.send_frame)
            if camera is not None
            else None
        )
        self.commands = Commands(self)
        self._link_listeners: list[LinkListener] = []
        self._link_up: bool | None = None
        # Extra sections for `ctl status` (devices, pins, LED pattern).
        self.status_providers: dict[str, StatusProvider] = {}
        # Set under --simulate: `ctl press` then drives the mock button pin.
        self.virtual_button: VirtualButton | None = None
        # The LEDs and relays, for the dispatch's "device" command.
        self.devices: Devices | None = None
        # When a finger was last on the physical button (time.monotonic()),
        # for a tool's require_recent_press_s; set where the button is made.
        self.button_touched: Callable[[], float | None] = lambda: None
        self._stop = asyncio.Event()
        self._model_turn_open = False  # model output started, no turnComplete yet
        self._turn_limit: asyncio.TimerHandle | None = None  # audio.max_turn_s
        self._discard_model_audio = False  # rest of an interrupted turn in flight
        self._shutdown_hooks: list[Callable[[], Awaitable[None] | None]] = []
        self._finish_task: asyncio.Task[None] | None = None
        self.outcomes = TurnOutcomes()
        self.transcripts = Transcripts(
            enabled=cfg.logging.transcripts, turn=lambda: self.counters.turns
        )
        if self.hands_free is not None:
            self.hands_free.refresh()
        self.subscribe(self._voice_follows_state)
        self.subscribe(self._speaker_follows_state)

    def _voice_follows_state(self, _old: State, new: State) -> None:
        """With no turn open nothing needs the mic chunk by chunk: it rests
        (keeping the pre-roll, if it is live) until a press, unless a detector
        listens (the pipeline knows). Half duplex wants the pre-roll cleared
        of the speaker's sound, so it listens through the model's answer."""
        if self.turn.open or (self.cfg.audio.half_duplex and new is State.SPEAKING):
            self.voice.wake()
        else:
            self.voice.rest()

    def _speaker_follows_state(self, _old: State, new: State) -> None:
        """From a press to the end of the answer the speaker's device runs (a
        device can take a while to start: not when the reply comes); idle, it
        may rest."""
        if isinstance(self.speaker, RestingSpeaker):
            self.speaker.keep_awake(
                self.turn.open or new in (State.LISTENING, State.THINKING, State.SPEAKING)
            )

    @property
    def talking(self) -> bool:
        """A turn is open: the button is held (or toggled on)."""
        return self.turn.open

    # ------------------------------------------------------------------ state

    def _settle(self) -> None:
        """The resting state that matches the link, after a turn or a link change."""
        if self.turn.open:
            return
        link = self.link.state
        if link is LinkState.CONNECTED:
            self._set_state(State.IDLE)
        elif link is LinkState.CONFIG_ERROR:
            self._set_state(State.ERROR, self.link.last_error)
        elif link in (LinkState.RECONNECTING, LinkState.CONNECTING) and (
            self.state is not State.STARTING
        ):
            self._set_state(State.RECONNECTING)

    def subscribe_link(self, listener: LinkListener) -> None:
        """``listener(True)`` when a session is up, ``listener(False)`` when it is
        lost (e.g. relays that must go safe after a long outage)."""
        self._link_listeners.append(listener)

    def _notify_link(self, up: bool) -> None:
        if up is self._link_up:
            return
        if self._link_up is not None or not up:  # not the first connect: a change
            self.feedback.link(up)
            self.hooks.fire("link", "up" if up else "down")
        self._link_up = up
        for listener in list(self._link_listeners):
            try:
                listener(up)
            except Exception:
                log.exception("link listener failed")

    def _on_link_state(self, link: LinkState, detail: str) -> None:
        if link is LinkState.CONNECTED:
            self._notify_link(True)
            if detail == "new":
                self.outcomes.new_session()  # a new conversation: its own token count
        elif link in (LinkState.RECONNECTING, LinkState.CONFIG_ERROR):
            self._notify_link(False)
        if link is LinkState.CONNECTED:
            if self.state in (State.SPEAKING, State.THINKING, State.LISTENING):
                return  # the turn goes on across the switch
            if self.turn.unheard:
                return  # _serve replays it at once and shows THINKING
            self._set_state(State.IDLE, f"session {detail}")
        elif link is LinkState.CONFIG_ERROR:
            if not self.turn.open:
                self._set_state(State.ERROR, detail)
        elif (
            link is LinkState.RECONNECTING
            and not self.turn.open
            and self.state is not State.SPEAKING
        ):
            self._set_state(State.RECONNECTING, detail)

    # ------------------------------------------------------------------ feedback, mute

    def _on_state_feedback(self, old: State, new: State) -> None:
        if new is State.ERROR:
            self.feedback.error()
            self.hooks.fire("error", self.link.last_error or "")
        self.hooks.fire("state", new.value, EDGE_STATE=new.value, EDGE_PREV_STATE=old.value)

    def _on_wake(self, name: str) -> None:
        self.feedback.wake(name)
        self.hooks.fire("wake", name)

    def subscribe_mute(self, listener: Callable[[bool], None]) -> None:
        """``listener(muted)`` on every change (the status LED, MQTT)."""
        self._mute_listeners.append(listener)

    def set_muted(self, on: bool, source: str = "ctl") -> None:
        """Muted: the mic is heard by nothing, no wake word, no audio goes up;
        a turn in progress ends."""
        if on is self.muted:
            return
        self.muted = on
        self.voice.muted = on
        if on and self.turn.open:
            self.release("mute")
        log.info(
            "%s (%s)",
            "muted" if on else "unmuted",
            source,
            extra={"EDGE_EVENT": "mute", "EDGE_MUTED": on, "EDGE_SOURCE": source},
        )
        if self.hands_free is not None:
            self.hands_free.refresh()
        self.feedback.mute(on)
        self.hooks.fire("mute", "on" if on else "off")
        for listener in list(self._mute_listeners):
            try:
                listener(on)
            except Exception:
                log.exception("mute listener failed")

    def set_volume(self, level: int, source: str = "ctl") -> int:
        """The speaker level, 0..100 (kept across restarts)."""
        level = self.volume.set(level)
        self.feedback.volume()
        self.hooks.fire("volume", str(level))
        return level

    # ------------------------------------------------------------------ turn sources

    def press(self, source: str = "button") -> None:
        """A turn starts (push-to-talk pressed, ctl, the keyboard, the wake
        word): open it and cut off the model (barge-in)."""
        if self.turn.open:
            return
        if self.muted:
            log.info(
                "muted: %s ignored (no audio goes up while muted)",
                source,
                extra={"EDGE_EVENT": "press_muted", "EDGE_SOURCE": source},
            )
            self.feedback.mute(True)
            return
        if trace.ON:
            trace.event("press", time.monotonic())
        barge_in = self.state is State.SPEAKING or self.speaker.playing or self._model_turn_open
        previous = self.turn
        self.turn = Turn(self.voice.open_turn(), self._turn_chunks)
        self._superseded = None
        if barge_in or self.state is State.THINKING:
            previous.supersede()
            self._superseded = previous
        if barge_in:
            self.counters.barge_ins += 1
            dropped = self.speaker.flush()
            log.info(
                "barge-in: speaker flushed (%d bytes)",
                dropped,
                extra={"EDGE_EVENT": "barge_in", "EDGE_SOURCE": source},
            )
            # Audio of the cut-off turn may still be in flight: drop it until
            # the server closes that turn.
            self._discard_model_audio = self._model_turn_open
        self._cancel_finish()
        self.transcripts.new_turn()
        self.counters.turns += 1
        if self._turn_limit is not None:
            self._turn_limit.cancel()
        self._turn_limit = asyncio.get_running_loop().call_later(
            self.cfg.audio.max_turn_s, self._turn_too_long, self.turn, source
        )
        if self.ticker is not None:
            self.ticker.kick()  # each turn starts with a fresh look
        self._set_state(State.LISTENING, source)
        self.sender.pump()

    def _turn_too_long(self, turn: Turn, source: str) -> None:
        if turn is not self.turn or not turn.open:
            return
        self.counters.turns_cut += 1
        log.warning(
            "turn ended after %g s (audio.max_turn_s): started by %s, never released; "
            "a stuck button or toggle mode left on? Nothing more goes up until the next press",
            self.cfg.audio.max_turn_s,
            source,
            extra={"EDGE_EVENT": "turn_limit", "EDGE_SOURCE": source},
        )
        self.release("max_turn_s")

    def release(self, source: str = "button") -> None:
        """The turn ends (push-to-talk let go)."""
        if not self.turn.open:
            return
        if self._turn_limit is not None:
            self._turn_limit.cancel()
            self._turn_limit = None
        self.turn.end()
        if self.sender.session is not None:
            self._set_state(State.THINKING, source)
            self.sender.pump()
        else:
            # Offline: the turn is replayed whole once a session is back.
            self._settle()

    async def say(self, text: str) -> str:
        """Send typed text as a user turn (desktop, scripts, announcements).
        "" once it is sent; else why it was not."""
        session = self.sender.session
        if session is None:
            return "no live session right now"
        if self.talking:
            return "the button is held: a typed turn waits until the spoken one is over"
        async with self.sender.lock:
            if session is not self.sender.session:
                return "no live session right now"
            if self.sender.activity_open:
                return "a spoken turn is still going up; try again in a moment"
            self._cancel_finish()
            if self.speaker.playing:
                self.speaker.flush()
            self.sender.expect_reply()
            self._set_state(State.THINKING, "text")
            self.transcripts.new_turn()
            self.counters.turns += 1
            log_transcript("user (typed)", text, self.cfg.logging.transcripts, self.counters.turns)
            await self.sender.send(
                session.send_typed_turn(text, activity_signals=self.sender.activity_signals)
            )
        return ""

    def _to_turn(self, chunk: bytes) -> None:
        self.turn.append(chunk)
        self.sender.pump()

    # ------------------------------------------------------------------ status and control

    def status(self) -> dict[str, Any]:
        """What `ctl status` shows (commands.py)."""
        return self.commands.status()

    async def control(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """Commands from the control socket (commands.py)."""
        return await self.commands.dispatch(request)

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.mic.start()
        await self.speaker.start()
        try:
            async with asyncio.TaskGroup() as tg:
                link_task = tg.create_task(self.link.run(), name="link")
                mic_task = tg.create_task(
                    self.voice.run(lambda: self.turn.open, self._to_turn), name="mic"
                )
                sender_task = tg.create_task(self.sender.run(), name="sender")
                camera_task = None
                if self.ticker is not None and await self._start_camera():
                    camera_task = tg.create_task(self.ticker.run(), name="camera")
                await self._stop.wait()
                # A turn in progress is cut, not finished: the socket closes
                # with 1000 below and the speaker is closed.
                self.turn.cut()
                self.speaker.flush()
                self.link.stop()
                self.watch.stop()
                # Let the link close its socket with 1000, but never hang on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(link_task), 5.0)
                link_task.cancel()
                mic_task.cancel()
                sender_task.cancel()
                if camera_task is not None:
                    camera_task.cancel()
                self.tool_runner.cancel_all()
                self._cancel_finish()
        finally:
            if self.hands_free is not None:
                self.hands_free.close()
            await self.hooks.close()
            await self._run_shutdown_hooks()
            await self.mic.close()
            await self.speaker.close()
            if self.camera is not None:
                await self.camera.close()
            self.device_health.close()

    def stop(self) -> None:
        self._stop.set()

    def add_shutdown_hook(self, hook: Callable[[], Awaitable[None] | None]) -> None:
        """Run ``hook`` on the way out, however run() ends: the place to put
        outputs (relays, LEDs) in their safe state. Hooks run in the order
        added, each bounded to 2 s; one failing does not stop the rest."""
        self._shutdown_hooks.append(hook)

    async def _run_shutdown_hooks(self) -> None:
        for hook in self._shutdown_hooks:
            try:
                result = hook()
                if inspect.isawaitable(result):
                    await asyncio.wait_for(result, 2.0)
            except Exception:
                log.exception("shutdown hook %r failed", hook, extra={"EDGE_EVENT": "shutdown"})

    # ------------------------------------------------------------------ camera

    async def _start_camera(self) -> bool:
        """A camera that will not start costs the device its eyes, not its voice."""
        assert self.camera is not None
        try:
            await self.camera.start()
        except Exception as exc:
            log.error(
                "camera did not start, going on without it: %s",
                exc,
                extra={"EDGE_EVENT": "camera_failed"},
            )
            return False
        return True

    def _camera_wanted(self) -> bool:
        if self.sender.session is None or self.tool_runner.blocking:
            return False
        if not self.cfg.camera.only_while_talking:
            return True
        return self.state in (State.LISTENING, State.SPEAKING)

    async def send_frame(self, jpeg: bytes) -> None:
        """One camera frame up the current session (the ticker, take_photo)."""
        await self.sender.send_frame(jpeg)

    # ------------------------------------------------------------------ session

    def _build_setup(self, handle: str | None) -> str:
        return setup_message(
            self.cfg, self.tools, with_camera=self.camera is not None, handle=handle
        )

    async def _serve(self, session: LiveSession) -> SessionEnd:
        self.watch.new_session()
        self.sender.attach(session)
        self.sender.awaiting_reply_since = None
        try:
            # Owed tool results before any audio: the server may close a socket
            # that streams mic audio while a call is open (PROTOCOL.md).
            await self.tool_runner.deliver()
            self._replay_turn()
            reader = asyncio.create_task(self._read(session), name="reader")
            watcher = asyncio.create_task(
                self.watch.run(
                    lambda: self._state_changed,
                    lambda: not self.turn.open and self.state in (State.IDLE, State.ERROR),
                    lambda: self.sender.awaiting_reply_since,
                ),
                name="watch",
            )
            try:
                done, _ = await asyncio.wait({reader, watcher}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (reader, watcher):
                    task.cancel()
                await asyncio.gather(reader, watcher, return_exceptions=True)
            if reader in done:
                reader.result()  # raises SessionClosed
                return SessionEnd.STOP
            return watcher.result()
        finally:
            self.sender.detach()
            if (
                not self.turn.open
                and not self.turn.unheard
                and (self._model_turn_open or self.state is State.THINKING)
            ):
                # The server heard the turn, but its answer (or the rest of it)
                # died with the socket and will not come on the next one: play
                # out what arrived, then settle. An unheard turn is replayed instead.
                self.transcripts.flush()
                self._cancel_finish()
                self._finish_task = asyncio.get_running_loop().create_task(
                    self._finish_speaking(), name="finish-speaking"
                )
            self._model_turn_open = False
            self._discard_model_audio = False

    def _replay_turn(self) -> None:
        """Re-send the turn the user spoke while the link was down, or that the
        server never acknowledged before the drop."""
        turn = self.turn
        if not (turn.open or turn.unheard):
            return
        lost = turn.replay()
        if lost:
            # Speech beyond link.offline_buffer_s: the oldest is gone for good.
            # Counted and said, not silently taken for sent.
            self.counters.chunks_dropped += lost
            log.warning(
                "%.1f s of this turn's speech did not fit link.offline_buffer_s; "
                "the oldest is not replayed",
                lost * self.cfg.audio.chunk_ms / 1000.0,
                extra={"EDGE_EVENT": "speech_dropped"},
            )
        if not turn.open:
            self._set_state(State.THINKING, "replaying the turn")
        self.counters.unacked_turns_resent += 1
        log.info(
            "replaying %.1f s of speech after the link came back",
            len(turn.audio) * self.cfg.audio.chunk_ms / 1000.0,
            extra={"EDGE_EVENT": "turn_replayed"},
        )
        self.sender.pump()

    async def _read(self, session: LiveSession) -> None:
        async for event in session.events():
            self.sender.awaiting_reply_since = None
            self._on_event(session, event)
            if self._model_turn_open or (self.state is State.THINKING and not self.turn.end_owed):
                # An answer is owed (the turn is all out) or its rest and a
                # turnComplete: silence for response_timeout_s then means the
                # server is hung. Not while a replay is still going out.
                self.sender.expect_reply()

    # ------------------------------------------------------------------ server events

    def _on_event(self, session: LiveSession, ev: m.ServerEvent) -> None:
        if isinstance(ev, m.AudioOut):
            self._on_audio(ev)
        elif isinstance(ev, m.InputTranscript):
            self.turn.hear()
            self.transcripts.user(ev.text)
        elif isinstance(ev, m.OutputTranscript):
            self.transcripts.model(ev.text)
        elif isinstance(ev, m.ModelText):
            self.transcripts.model_text(ev.text)
        elif isinstance(ev, m.Interrupted):
            self.counters.interruptions += 1
            dropped = self.speaker.flush()
            if trace.ON:
                trace.event("flush", time.monotonic())
            # What still comes of the interrupted turn, until its turnComplete, is stale.
            self._discard_model_audio = True
            self._cancel_finish()
            log.info(
                "interrupted by the server: speaker flushed (%d bytes)",
                dropped,
                extra={"EDGE_EVENT": "interrupted"},
            )
        elif isinstance(ev, m.TurnComplete):
            notice = self.outcomes.turn_complete(ev)
            if notice:
                self.notify(notice)
            self._on_turn_complete()
        elif isinstance(ev, m.WaitingForInput):
            self._on_waiting_for_input()
        elif isinstance(ev, m.ToolCall):
            self.turn.hear()
            self.tool_runner.on_call(session, ev)
        elif isinstance(ev, m.ToolCallCancellation):
            self.tool_runner.on_cancel(ev)
        elif isinstance(ev, m.ResumptionUpdate):
            if self.link.resumption.update(ev):
                self.watch.poke()  # the fresh handle a goAway switch may wait for
        elif isinstance(ev, m.GoAway):
            self.watch.go_away(ev)
        elif isinstance(ev, m.Usage):
            self.counters.tokens_used += ev.total_tokens
            self.outcomes.usage(ev)

    def _on_audio(self, ev: m.AudioOut) -> None:
        if self._discard_model_audio:
            return
        self.turn.hear()
        self._model_turn_open = True
        if self.turn.open:
            # The user is speaking over the model: their turn wins.
            return
        self._cancel_finish()
        self.speaker.play(ev.pcm)
        if trace.ON:  # benchmarks only (EDGE_DAEMON_TRACE); off, this test is the cost
            trace.event("speaker_in", int.from_bytes(ev.pcm[:4], "little"), time.monotonic())
        if self.state is not State.SPEAKING:
            self._set_state(State.SPEAKING)

    def _on_turn_complete(self) -> None:
        self.turn.hear()
        self._model_turn_open = False
        self.watch.turn_ended()
        self.transcripts.flush()
        closes_cut_off_turn = self._discard_model_audio and self._superseded is not None
        self._discard_model_audio = False
        self._superseded = None
        if closes_cut_off_turn and self.state is State.SPEAKING:
            # What played was the cut-off answer, arrived late (the flush has
            # stopped it); the new turn's answer is owed: wait for it as for
            # any answer, so that its silence can be called a stall.
            self._set_state(State.THINKING, "the cut-off answer is closed")
        if closes_cut_off_turn or self.turn.open:
            return  # the answer to the user's new turn is still to come
        self._cancel_finish()
        self._finish_task = asyncio.get_running_loop().create_task(
            self._finish_speaking(), name="finish-speaking"
        )

    def _on_waiting_for_input(self) -> None:
        """The model stops because it expects the user to go on: nothing more
        is owed, so the response watchdog must not call the silence a hang."""
        self.sender.awaiting_reply_since = None
        log.info("the model is waiting for more input", extra={"EDGE_EVENT": "waiting_for_input"})
        if not self.turn.open and self.state is State.THINKING and not self._model_turn_open:
            self._settle()

    async def _finish_speaking(self) -> None:
        await self.speaker.wait_idle()
        if not self.turn.open and self.state in (State.SPEAKING, State.THINKING):
            self.sender.awaiting_reply_since = None  # the turn is over: nothing more is owed
            self._settle()

    def _cancel_finish(self) -> None:
        if self._finish_task is not None:
            self._finish_task.cancel()
            self._finish_task = None
