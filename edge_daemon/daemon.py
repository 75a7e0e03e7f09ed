"""The orchestrator: the state machine, and the wiring between the button, the
microphone, the speaker, the tools and the Live link.

This is the only module where Gemini (``live/``) meets devices (``audio/``,
``hardware/``, ``tools/``). It owns no protocol details and no device details.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import inspect
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from . import trace
from .audio.base import Microphone, Speaker
from .camera import Camera, FrameTicker
from .config import Config
from .live import messages as m
from .live.reconnect import Link, LinkSettings, LinkState, SessionEnd, ToolOutbox
from .live.session import LiveSession, SessionClosed
from .tools.registry import ToolRegistry

log = logging.getLogger(__name__)


class State(enum.StrEnum):
    STARTING = "starting"
    IDLE = "idle"
    LISTENING = "listening"
    THINKING = "thinking"
    SPEAKING = "speaking"
    RECONNECTING = "reconnecting"
    ERROR = "error"


StateListener = Callable[[State, State], None]
LinkListener = Callable[[bool], None]
StatusProvider = Callable[[], Mapping[str, Any]]


class VirtualButton(Protocol):
    """A button the control socket can press, e.g. a simulated GPIO pin, so
    `ctl press` takes the same path as a finger on the real button."""

    def sim_press(self) -> None: ...

    def sim_release(self) -> None: ...


# How many past state changes `status` reports: enough to see one whole turn.
_HISTORY = 32
# Speech kept through a link outage is sent this much faster than real time:
# it catches up without a burst the Live API would frown on.
REPLAY_SPEEDUP = 2.0
# Answered tool calls remembered by id, to recognise a repeated call.
_ANSWERS_KEPT = 64


@dataclass
class Counters:
    turns: int = 0
    chunks_sent: int = 0
    chunks_buffered: int = 0
    chunks_dropped: int = 0
    audio_in_chunks: int = 0
    interruptions: int = 0
    barge_ins: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_cancellations: int = 0
    go_aways: int = 0
    stalls: int = 0
    unacked_turns_resent: int = 0


class Daemon:
    def __init__(
        self,
        cfg: Config,
        *,
        mic: Microphone,
        speaker: Speaker,
        link_settings: LinkSettings,
        tools: ToolRegistry | None = None,
        camera: Camera | None = None,
    ) -> None:
        self.cfg = cfg
        self.mic = mic
        self.speaker = speaker
        self.tools = tools or ToolRegistry()
        self.camera = camera
        self.ticker = (
            FrameTicker(camera, cfg.camera.interval_s, self._camera_wanted, self.send_frame)
            if camera is not None
            else None
        )
        self.link = Link(link_settings, self._build_setup, self._serve, self._on_link_state)
        self.state = State.STARTING
        self.counters = Counters()
        self.history: deque[tuple[float, str]] = deque(maxlen=_HISTORY)
        self._listeners: list[StateListener] = []
        self._link_listeners: list[LinkListener] = []
        self._link_up: bool | None = None
        # Extra sections for `ctl status` (devices, pins, LED pattern).
        self.status_providers: dict[str, StatusProvider] = {}
        # Set under --simulate: `ctl press` then drives the mock button pin.
        self.virtual_button: VirtualButton | None = None
        self._state_changed = asyncio.Event()  # replaced on every change
        self._started_at = time.monotonic()
        self._stop = asyncio.Event()
        self._session: LiveSession | None = None
        self._switch = asyncio.Event()  # ask the session handler to end (goAway, stop)
        self._switch_reason = SessionEnd.GO_AWAY

        chunk_s = cfg.audio.chunk_ms / 1000.0
        # The current user turn's audio, kept until the server shows it heard
        # the turn: a drop in between must not lose what was said.
        self._turn_audio: deque[bytes] = deque(
            maxlen=max(1, round(cfg.link.offline_buffer_s / chunk_s))
        )
        self._turn_total = 0  # chunks ever appended to _turn_audio this turn
        self._turn_sent = 0  # of those, how many went out on the current socket
        self._turn_lost = 0  # of those, how many the bounded buffer evicted before a replay
        self._send_lock = asyncio.Lock()  # keeps activityStart, audio, activityEnd in order
        # The last moments before a press: a live mic's pre-roll, so the first
        # syllable, spoken as the finger lands, is not clipped.
        self._preroll: deque[bytes] = deque(maxlen=round(cfg.audio.preroll_ms / cfg.audio.chunk_ms))
        self._talking = False  # the button is held (or toggled on)
        self._turn_started_in_session = False  # activityStart sent on this socket
        self._activity_open = False  # an activityStart on this socket awaits its activityEnd
        self._pump_wake = asyncio.Event()
        self._end_pending = False  # activityEnd owed once the audio before it is out
        self._turn_unacked = False  # ended, but no sign yet that the server heard it
        self._model_turn_open = False  # model output started, no turnComplete yet
        self._discard_model_audio = False  # rest of an interrupted turn in flight
        # A press cut off an answer in progress: the next interrupted+turnComplete
        # close that old answer, and must not be taken for the new turn's.
        self._superseded = False
        self._tool_calls_pending: dict[str, asyncio.Task[None]] = {}  # blocking ones
        # Every running call, blocking or not, so a cancellation reaches it.
        self._tool_tasks: dict[str, asyncio.Task[None]] = {}
        # The last answers sent, by call id: a repeated call (a duplicated frame,
        # a server re-sending calls after a resume) is never run twice.
        self._answered: OrderedDict[str, tuple[m.FunctionResult, str]] = OrderedDict()
        # Tool results not yet delivered; they outlive a dropped connection.
        self._outbox = ToolOutbox()
        # The resumption handle number when the last model turn ended: a goAway
        # switch waits for a newer one, so the next connection remembers that turn.
        self._turn_end_seq = 0
        self._shutdown_hooks: list[Callable[[], Awaitable[None] | None]] = []
        self._finish_task: asyncio.Task[None] | None = None
        self._awaiting_reply_since: float | None = None
        self._go_away_deadline: float | None = None
        self._user_text: list[str] = []
        self._model_text: list[str] = []

    # ------------------------------------------------------------------ state

    def subscribe(self, listener: StateListener) -> None:
        self._listeners.append(listener)

    def _set_state(self, new: State, why: str = "") -> None:
        old = self.state
        if new is old:
            return
        self.state = new
        self.history.append((round(time.monotonic() - self._started_at, 3), new.value))
        log.info(
            "state %s -> %s%s",
            old.value,
            new.value,
            f" ({why})" if why else "",
            extra={"EDGE_EVENT": "state", "EDGE_STATE": new.value, "EDGE_PREV_STATE": old.value},
        )
        self._state_changed.set()
        self._state_changed = asyncio.Event()
        for listener in list(self._listeners):
            try:
                listener(old, new)
            except Exception:
                log.exception("state listener failed")

    def _settle(self) -> None:
        """The resting state that matches the link, after a turn or a link change."""
        if self._talking:
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
        self._link_up = up
        for listener in list(self._link_listeners):
            try:
                listener(up)
            except Exception:
                log.exception("link listener failed")

    def _on_link_state(self, link: LinkState, detail: str) -> None:
        if link is LinkState.CONNECTED:
            self._notify_link(True)
        elif link in (LinkState.RECONNECTING, LinkState.CONFIG_ERROR):
            self._notify_link(False)
        if link is LinkState.CONNECTED:
            if self.state in (State.SPEAKING, State.THINKING, State.LISTENING):
                return  # the turn goes on across the switch
            if self._turn_unacked:
                return  # _serve replays it at once and shows THINKING
            self._set_state(State.IDLE, f"session {detail}")
        elif link is LinkState.CONFIG_ERROR:
            if not self._talking:
                self._set_state(State.ERROR, detail)
        elif (
            link is LinkState.RECONNECTING
            and not self._talking
            and self.state is not State.SPEAKING
        ):
            self._set_state(State.RECONNECTING, detail)

    # ------------------------------------------------------------------ inputs

    def press(self, source: str = "button") -> None:
        """Push-to-talk pressed: open the turn and cut off the model (barge-in)."""
        if self._talking:
            return
        self._talking = True
        if trace.ON:
            trace.event("press", time.monotonic())
        barge_in = self.state is State.SPEAKING or self.speaker.playing or self._model_turn_open
        self._superseded = barge_in or self.state is State.THINKING
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
        self._turn_audio.clear()
        self._turn_audio.extend(self._preroll)
        self._turn_total = len(self._turn_audio)
        self._turn_sent = self._turn_lost = 0
        self._preroll.clear()
        self._turn_unacked = False
        self._end_pending = False
        self._turn_started_in_session = False
        self.counters.turns += 1
        self.mic.cue()
        if self.ticker is not None:
            self.ticker.kick()  # each turn starts with a fresh look
        self._set_state(State.LISTENING, source)
        self._pump()

    def release(self, source: str = "button") -> None:
        if not self._talking:
            return
        self._talking = False
        self._turn_unacked = True
        self._end_pending = True
        if self._session is not None:
            self._set_state(State.THINKING, source)
            self._pump()
        else:
            # Offline: the turn is replayed whole once a session is back.
            self._settle()

    async def say(self, text: str) -> bool:
        """Send typed text as a user turn (desktop, scripts)."""
        session = self._session
        if session is None:
            return False
        self._cancel_finish()
        if self.speaker.playing:
            self.speaker.flush()
        self._awaiting_reply_since = time.monotonic()
        self._set_state(State.THINKING, "text")
        log.info("user (typed): %s", text, extra={"EDGE_EVENT": "transcript", "EDGE_ROLE": "user"})
        async with self._send_lock:
            await self._send(session.send_text(text))
        return True

    # ------------------------------------------------------------------ run

    async def run(self) -> None:
        await self.mic.start()
        await self.speaker.start()
        try:
            async with asyncio.TaskGroup() as tg:
                link_task = tg.create_task(self.link.run(), name="link")
                mic_task = tg.create_task(self._mic_loop(), name="mic")
                sender_task = tg.create_task(self._sender(), name="sender")
                camera_task = None
                if self.ticker is not None and await self._start_camera():
                    camera_task = tg.create_task(self.ticker.run(), name="camera")
                await self._stop.wait()
                # A turn in progress is cut, not finished: the socket closes
                # with 1000 below and the speaker is closed.
                self._talking = False
                self.speaker.flush()
                self.link.stop()
                self._request_switch(SessionEnd.STOP)
                # Let the link close its socket with 1000, but never hang on it.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(link_task), 5.0)
                link_task.cancel()
                mic_task.cancel()
                sender_task.cancel()
                if camera_task is not None:
                    camera_task.cancel()
                for task in list(self._tool_tasks.values()):
                    task.cancel()
                self._cancel_finish()
        finally:
            await self._run_shutdown_hooks()
            await self.mic.close()
            await self.speaker.close()
            if self.camera is not None:
                await self.camera.close()

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

    def _request_switch(self, reason: SessionEnd) -> None:
        self._switch_reason = reason
        self._switch.set()

    # ------------------------------------------------------------------ mic

    async def _mic_loop(self) -> None:
        while True:
            chunk = await self.mic.read()
            self.counters.audio_in_chunks += 1
            if not self._talking:
                # Half-duplex (no echo cancellation): what the mic hears while
                # the speaker plays is the model itself, never pre-roll.
                if self.cfg.audio.half_duplex and self.speaker.playing:
                    self._preroll.clear()  # pre-roll is the last moments, never stale ones
                elif self.mic.live:
                    self._preroll.append(chunk)
                continue
            self._turn_audio.append(chunk)
            self._turn_total += 1
            if trace.ON:
                captured = getattr(self.mic, "last_capture_time", None) or 0.0
                trace.event("mic", captured, time.monotonic())
            self._pump()

    def _pump(self) -> None:
        """Ask the sender to send what the current turn owes the server."""
        self._pump_wake.set()

    async def _sender(self) -> None:
        """The one place turn traffic goes out, so a press, the mic, a reconnect
        and a finished tool call can all ask for it and nothing is sent twice
        or out of order. It runs apart from the mic loop: a slow network then
        fills the bounded turn buffer, never the microphone's queue."""
        while True:
            await self._pump_wake.wait()
            self._pump_wake.clear()
            # A close mid-send: the session handler sees it and reconnects.
            with contextlib.suppress(SessionClosed):
                await self._send_owed()

    async def _send_owed(self) -> None:
        """activityStart, the turn's audio not yet sent on this socket, then
        activityEnd once released. Offline, or while a blocking tool call is
        unanswered (PROTOCOL.md: mic audio then can get the socket closed), it
        sends nothing and the audio waits in the turn buffer. A backlog longer
        than the pre-roll (speech from a link outage) goes at twice real time,
        not as one burst, as the Live API asks."""
        session = self._session
        gen = self.counters.turns
        if session is None:
            return
        async with self._send_lock:
            if session is not self._session:
                return
            if self._activity_open and not self._turn_started_in_session:
                # A new press came before the last turn's activityEnd went out.
                await session.activity_end()
                self._activity_open = False
            if not self._turn_started_in_session:
                if not (self._talking or self._end_pending):
                    return
                await session.activity_start()
                self._turn_started_in_session = self._activity_open = True
        chunk_s = self.cfg.audio.chunk_ms / 1000.0
        burst = (self._preroll.maxlen or 0) + 2
        while True:
            if session is not self._session or gen != self.counters.turns:
                self._pump()  # a new session or turn: start over from the top
                return
            if self._tool_calls_pending:
                self.counters.chunks_buffered += 1
                return
            unsent = self._turn_total - self._turn_sent
            if unsent > len(self._turn_audio):
                # The bounded buffer dropped the oldest while offline.
                self.counters.chunks_dropped += unsent - len(self._turn_audio)
                unsent = len(self._turn_audio)
                self._turn_sent = self._turn_total - unsent
            if unsent == 0:
                break
            async with self._send_lock:
                if session is not self._session or gen != self.counters.turns:
                    continue
                await session.send_audio(self._turn_audio[-unsent])
                self._turn_sent += 1
                self.counters.chunks_sent += 1
            if unsent - 1 > burst:
                await asyncio.sleep(chunk_s / REPLAY_SPEEDUP)
        if self._end_pending and not self._talking:
            async with self._send_lock:
                if session is not self._session or gen != self.counters.turns:
                    return
                await session.activity_end()
                self._activity_open = False
                self._end_pending = False
                self._awaiting_reply_since = time.monotonic()

    async def _send(self, coro: Any) -> None:
        try:
            await coro
        except SessionClosed as exc:
            log.debug("send after close: %s", exc)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        _background.add(task)
        task.add_done_callback(_background.discard)

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
        if self._session is None or self._tool_calls_pending:
            return False
        if not self.cfg.camera.only_while_talking:
            return True
        return self.state in (State.LISTENING, State.SPEAKING)

    async def send_frame(self, jpeg: bytes) -> None:
        """One camera frame up the current session (the ticker, take_photo)."""
        session = self._session
        if session is None:
            raise SessionClosed("no live session for the frame")
        async with self._send_lock:
            await session.send_video(jpeg)

    # ------------------------------------------------------------------ session

    def _build_setup(self, handle: str | None) -> str:
        g = self.cfg.gemini
        return m.build_setup(
            m.SetupOptions(
                model=g.model,
                voice=g.voice,
                language=g.language,
                system_instruction=g.system_instruction,
                function_declarations=self.tools.declarations(),
                transcribe_input=g.transcribe_input,
                transcribe_output=g.transcribe_output,
                resumption_handle=handle,
                # Audio+video sessions end after 2 minutes without compression.
                context_window_compression=g.context_window_compression or self.camera is not None,
                thinking_budget=g.thinking_budget,
                thinking_level=g.thinking_level,
                media_resolution=g.media_resolution if self.camera is not None else None,
                google_search=g.google_search,
                proactive_audio=g.proactive_audio,
                affective_dialog=g.affective_dialog,
            )
        )

    async def _serve(self, session: LiveSession) -> SessionEnd:
        self._switch.clear()
        self._go_away_deadline = None
        self._session = session
        self._awaiting_reply_since = None
        try:
            # Owed tool results before any audio: the server may close a socket
            # that streams mic audio while a call is open (PROTOCOL.md).
            await self._deliver_results()
            await self._replay_turn()
            reader = asyncio.create_task(self._read(session), name="reader")
            watcher = asyncio.create_task(self._watch(session), name="watch")
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
            self._session = None
            self._turn_started_in_session = False
            self._activity_open = False
            if (
                not self._talking
                and not self._turn_unacked
                and (self._model_turn_open or self.state is State.THINKING)
            ):
                # The server heard the turn, but its answer (or the rest of it)
                # died with the socket and will not come on the next one: play
                # out what arrived, then settle. An unheard turn is replayed instead.
                self._flush_transcripts()
                self._cancel_finish()
                self._finish_task = asyncio.get_running_loop().create_task(
                    self._finish_speaking(), name="finish-speaking"
                )
            self._model_turn_open = False
            self._discard_model_audio = False

    async def _replay_turn(self) -> None:
        """Re-send the turn the user spoke while the link was down, or that the
        server never acknowledged before the drop."""
        if not (self._talking or self._turn_unacked):
            return
        gone = self._turn_total - len(self._turn_audio)
        if gone > self._turn_lost:
            # Speech beyond link.offline_buffer_s: the oldest is gone for good.
            # Counted and said, not silently taken for sent.
            self.counters.chunks_dropped += gone - self._turn_lost
            log.warning(
                "%.1f s of this turn's speech did not fit link.offline_buffer_s; "
                "the oldest is not replayed",
                (gone - self._turn_lost) * self.cfg.audio.chunk_ms / 1000.0,
                extra={"EDGE_EVENT": "speech_dropped"},
            )
            self._turn_lost = gone
        self._turn_sent = gone
        if not self._talking:
            self._end_pending = True
            self._set_state(State.THINKING, "replaying the turn")
        self.counters.unacked_turns_resent += 1
        log.info(
            "replaying %.1f s of speech after the link came back",
            len(self._turn_audio) * self.cfg.audio.chunk_ms / 1000.0,
            extra={"EDGE_EVENT": "turn_replayed"},
        )
        self._pump()

    async def _watch(self, session: LiveSession) -> SessionEnd:
        """End the session for a goAway (between turns), a stop, or a stall."""
        timeout = self.cfg.link.response_timeout_s
        tick = min(0.5, timeout / 10)  # a stall is seen within a tenth of the timeout
        while True:
            changed = asyncio.ensure_future(self._state_changed.wait())
            switch = asyncio.ensure_future(self._switch.wait())
            try:
                # A state change may be the end of the turn a goAway waits for.
                await asyncio.wait(
                    {changed, switch}, timeout=tick, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                changed.cancel()
                switch.cancel()
            if self._switch.is_set():
                if self._switch_reason is SessionEnd.STOP:
                    return SessionEnd.STOP
                deadline = self._go_away_deadline
                between_turns = not self._talking and self.state in (State.IDLE, State.ERROR)
                # The handle must postdate the last turn, or the next connection
                # resumes without it: updates come just after turnComplete.
                res = self.link.resumption
                fresh = res.handle is not None and res.seq > self._turn_end_seq
                if (between_turns and fresh) or (
                    deadline is not None and time.monotonic() >= deadline
                ):
                    return SessionEnd.GO_AWAY
            since = self._awaiting_reply_since
            if since is not None and time.monotonic() - since > timeout:
                self.counters.stalls += 1
                log.warning(
                    "no answer from the server for %.0f s; reconnecting",
                    timeout,
                    extra={"EDGE_EVENT": "stall"},
                )
                return SessionEnd.STALLED

    async def _read(self, session: LiveSession) -> None:
        async for event in session.events():
            self._awaiting_reply_since = None
            self._on_event(session, event)
            if self._model_turn_open or (self.state is State.THINKING and not self._end_pending):
                # An answer is owed (the turn is all out) or its rest and a
                # turnComplete: silence for response_timeout_s then means the
                # server is hung. Not while a replay is still going out.
                self._awaiting_reply_since = time.monotonic()

    def _on_event(self, session: LiveSession, ev: m.ServerEvent) -> None:
        if isinstance(ev, m.AudioOut):
            self._on_audio(ev)
        elif isinstance(ev, m.InputTranscript):
            self._ack_turn()
            self._user_text.append(ev.text)
            log.debug("user transcript fragment: %s", ev.text)
        elif isinstance(ev, m.OutputTranscript):
            self._model_text.append(ev.text)
            log.debug("model transcript fragment: %s", ev.text)
        elif isinstance(ev, m.ModelText):
            self._model_text.append(ev.text)
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
            self._on_turn_complete()
        elif isinstance(ev, m.ToolCall):
            self._ack_turn()
            self._on_tool_call(session, ev)
        elif isinstance(ev, m.ToolCallCancellation):
            self._on_tool_cancel(ev)
        elif isinstance(ev, m.ResumptionUpdate):
            self.link.resumption.update(ev)
        elif isinstance(ev, m.GoAway):
            self._on_go_away(ev)
        elif isinstance(ev, m.Usage):
            log.debug("usage: %d tokens", ev.total_tokens, extra={"EDGE_TOKENS": ev.total_tokens})

    def _ack_turn(self) -> None:
        if self._turn_unacked and not self._talking:
            self._turn_unacked = False
            self._turn_audio.clear()

    def _on_audio(self, ev: m.AudioOut) -> None:
        if self._discard_model_audio:
            return
        self._ack_turn()
        self._model_turn_open = True
        if self._talking:
            # The user is speaking over the model: their turn wins.
            return
        self._cancel_finish()
        self.speaker.play(ev.pcm)
        if trace.ON:  # benchmarks only (EDGE_DAEMON_TRACE); off, this test is the cost
            trace.event("speaker_in", int.from_bytes(ev.pcm[:4], "little"), time.monotonic())
        if self.state is not State.SPEAKING:
            self._set_state(State.SPEAKING)

    def _on_turn_complete(self) -> None:
        self._ack_turn()
        self._model_turn_open = False
        self._turn_end_seq = self.link.resumption.seq
        self._flush_transcripts()
        closes_cut_off_turn = self._discard_model_audio and self._superseded
        self._discard_model_audio = False
        self._superseded = False
        if closes_cut_off_turn or self._talking:
            return  # the answer to the user's new turn is still to come
        self._cancel_finish()
        self._finish_task = asyncio.get_running_loop().create_task(
            self._finish_speaking(), name="finish-speaking"
        )

    async def _finish_speaking(self) -> None:
        await self.speaker.wait_idle()
        if not self._talking and self.state in (State.SPEAKING, State.THINKING):
            self._awaiting_reply_since = None  # the turn is over: nothing more is owed
            self._settle()

    def _cancel_finish(self) -> None:
        if self._finish_task is not None:
            self._finish_task.cancel()
            self._finish_task = None

    def _flush_transcripts(self) -> None:
        if self._user_text:
            text = "".join(self._user_text).strip()
            log.info("user: %s", text, extra={"EDGE_EVENT": "transcript", "EDGE_ROLE": "user"})
            self._user_text.clear()
        if self._model_text:
            text = "".join(self._model_text).strip()
            log.info("model: %s", text, extra={"EDGE_EVENT": "transcript", "EDGE_ROLE": "model"})
            self._model_text.clear()

    def _on_go_away(self, ev: m.GoAway) -> None:
        self.counters.go_aways += 1
        left = ev.time_left_s if ev.time_left_s is not None else 10.0
        # Switch between turns if one comes; at the latest a little before the cut.
        self._go_away_deadline = time.monotonic() + max(0.0, left - 2.0)
        log.info(
            "server goAway: %.0f s left; switching between turns",
            left,
            extra={"EDGE_EVENT": "go_away"},
        )
        self._request_switch(SessionEnd.GO_AWAY)

    # ------------------------------------------------------------------ tools

    def _on_tool_call(self, session: LiveSession, ev: m.ToolCall) -> None:
        for call in ev.calls:
            self.counters.tool_calls += 1
            if call.id in self._tool_tasks or call.id in self._outbox:
                log.warning("duplicate tool call id %s ignored", call.id)
                continue
            if call.id in self._answered:
                self._repeat_answer(session, call)
                continue
            task = asyncio.get_running_loop().create_task(
                self._run_tool(session, call, self.link.resumption.seq), name=f"tool-{call.name}"
            )
            self._tool_tasks[call.id] = task
            task.add_done_callback(lambda _t, cid=call.id: self._tool_tasks.pop(cid, None))
            if self.tools.is_blocking(call.name):
                self._tool_calls_pending[call.id] = task

    async def _run_tool(self, session: LiveSession, call: m.FunctionCall, seq: int) -> None:
        try:
            outcome = await self.tools.call(call.name, call.args)
            if not outcome.ok:
                self.counters.tool_errors += 1
            log.info(
                "tool %s(%s) -> %s",
                call.name,
                dict(call.args),
                outcome.output if outcome.ok else f"error: {outcome.error}",
                extra={
                    "EDGE_EVENT": "tool_call",
                    "EDGE_TOOL": call.name,
                    "EDGE_CALL_ID": call.id,
                    "EDGE_RESULT": "ok" if outcome.ok else "error",
                },
            )
            result = m.FunctionResult(call.id, call.name, outcome.output, outcome.error)
            # Owed until it is out: if the socket dropped while the tool ran,
            # the next connection delivers it (once), see ToolOutbox.
            self._outbox.add(result, session.id, seq)
            await self._deliver_results()
        finally:
            self._tool_calls_pending.pop(call.id, None)
        if not self._tool_calls_pending:
            self._pump()  # the mic audio held back during the call

    def _remember_answers(self, results: list[m.FunctionResult], session_id: str) -> None:
        for result in results:
            self._answered[result.id] = (result, session_id)
            self._answered.move_to_end(result.id)
        while len(self._answered) > _ANSWERS_KEPT:
            self._answered.popitem(last=False)

    def _repeat_answer(self, session: LiveSession, call: m.FunctionCall) -> None:
        """A call id already answered: on the same connection it is a duplicate
        frame (ignored); on another, the server lost our answer (sent again)."""
        result, answered_on = self._answered[call.id]
        if answered_on == session.id:
            log.warning(
                "repeated tool call %s ignored: already answered",
                call.id,
                extra={"EDGE_EVENT": "tool_call_repeated", "EDGE_CALL_ID": call.id},
            )
            return
        log.info(
            "tool call %s asked again after a reconnect: answer re-sent, tool not re-run",
            call.id,
            extra={"EDGE_EVENT": "tool_call_repeated", "EDGE_CALL_ID": call.id},
        )

        async def resend() -> None:
            async with self._send_lock:
                await self._send(session.send_tool_response([result]))
            self._remember_answers([result], session.id)

        self._spawn(resend(), "tool-answer-again")

    async def _deliver_results(self) -> None:
        """Send the tool results owed to the server, each once, in the form the
        current connection can take: a toolResponse where the server still
        knows the call, a text note where it forgot it, nothing for a new
        session (see ToolOutbox)."""
        session = self._session
        if session is None or not self._outbox:
            return
        async with self._send_lock:
            if session is not self._session:
                return
            plan = self._outbox.take(session.id, session.resumed_seq)
            for owed in plan.dropped:
                log.warning(
                    "tool result for %s dropped: the new session never saw the call",
                    owed.result.name,
                    extra={
                        "EDGE_EVENT": "tool_result_dropped",
                        "EDGE_TOOL": owed.result.name,
                        "EDGE_CALL_ID": owed.result.id,
                    },
                )
            unsent = [*plan.responses, *plan.notes]
            try:
                if plan.responses:
                    self._awaiting_reply_since = time.monotonic()
                    await session.send_tool_response([o.result for o in plan.responses])
                    self._remember_answers([o.result for o in plan.responses], session.id)
                    unsent = list(plan.notes)
                if plan.notes:
                    self._awaiting_reply_since = time.monotonic()
                    await session.send_text(ToolOutbox.note_text(plan.notes))
                    unsent = []
            except SessionClosed as exc:
                # The frame never left: the next connection owes it instead.
                self._outbox.put_back(unsent)
                log.debug("tool results kept for the next connection: %s", exc)
            for owed in plan.responses + plan.notes:
                if owed.session_id != session.id and owed not in unsent:
                    log.info(
                        "tool result for %s delivered after a reconnect (%s)",
                        owed.result.name,
                        "as a response" if owed in plan.responses else "as a note",
                        extra={
                            "EDGE_EVENT": "tool_result_late",
                            "EDGE_TOOL": owed.result.name,
                            "EDGE_CALL_ID": owed.result.id,
                        },
                    )

    def _on_tool_cancel(self, ev: m.ToolCallCancellation) -> None:
        for call_id in ev.ids:
            self._outbox.cancel(call_id)
            self._tool_calls_pending.pop(call_id, None)
            task = self._tool_tasks.pop(call_id, None)
            if task is not None:
                task.cancel()
                self.counters.tool_cancellations += 1
                log.info(
                    "tool call %s cancelled by the server",
                    call_id,
                    extra={"EDGE_EVENT": "tool_cancelled", "EDGE_CALL_ID": call_id},
                )
        if ev.ids and not self._tool_calls_pending:
            # A cancelled _run_tool never reaches its own _pump(): without this,
            # audio and an activityEnd held back during the call (a tap shorter
            # than the cancellation's round trip) would never go out.
            self._pump()

    # ------------------------------------------------------------------ status

    def status(self) -> dict[str, Any]:
        link = self.link
        session = link.session
        extras: dict[str, Any] = {}
        for name, provider in self.status_providers.items():
            try:
                extras[name] = provider()
            except Exception as exc:  # status must answer even if a device misbehaves
                extras[name] = {"error": f"{type(exc).__name__}: {exc}"}
        return {
            "state": self.state.value,
            "talking": self._talking,
            "connection": {
                "state": link.state.value,
                "url": link.settings.url,
                "connects": link.connects,
                "resumes": link.resumption.resumes,
                "has_handle": link.resumption.handle is not None,
                "handle_age_s": _round(link.resumption.age_s),
                "open_for_s": _round(session.open_for_s) if session else None,
                "last_error": link.last_error,
                "last_close_code": link.last_close_code,
            },
            "counters": {
                **vars(self.counters),
                "mic": dict(self.mic.counters),
                "speaker": dict(self.speaker.counters),
                "session": vars(session.counters) if session else {},
                **(
                    {"camera": {**self.ticker.counters, **getattr(self.camera, "counters", {})}}
                    if self.ticker is not None
                    else {}
                ),
            },
            "history": [{"t": t, "state": s} for t, s in self.history],
            "uptime_s": _round(time.monotonic() - self._started_at),
            **extras,
        }

    async def control(self, request: Mapping[str, Any]) -> Mapping[str, Any]:
        """Commands from the control socket."""
        cmd = request.get("cmd")
        if cmd == "press":
            await self._ctl_press()
        elif cmd == "release":
            await self._ctl_release()
        elif cmd == "tap":
            seconds = request.get("seconds", 1.0)
            if not isinstance(seconds, int | float) or not 0 < seconds <= 60:
                return {"ok": False, "error": "seconds must be a number in (0, 60]"}
            await self._ctl_press()
            self._spawn(self._release_after(float(seconds)), "tap")
        elif cmd == "say":
            text = request.get("text")
            if not isinstance(text, str) or not text.strip():
                return {"ok": False, "error": "say needs a non-empty text"}
            if not await self.say(text):
                return {"ok": False, "error": "no live session right now"}
        elif cmd == "status":
            return {"ok": True, **self.status()}
        elif cmd == "wait":
            wanted, timeout = request.get("state"), request.get("timeout", 30.0)
            if wanted not in State.__members__.values():
                return {"ok": False, "error": f"state must be one of {[s.value for s in State]}"}
            if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
                return {"ok": False, "error": "timeout must be a number of seconds in (0, 3600]"}
            reached = await self.wait_state(State(wanted), float(timeout))
            return {"ok": reached, "state": self.state.value}
        else:
            return {
                "ok": False,
                "error": f"unknown command {cmd!r}; try press, release, tap, say, status, wait",
            }
        return {"ok": True, "state": self.state.value}

    async def wait_state(self, wanted: State, timeout_s: float) -> bool:
        """True once the daemon is in ``wanted`` (at once if it already is)."""
        try:
            async with asyncio.timeout(timeout_s):
                while self.state is not wanted:
                    await self._state_changed.wait()
        except TimeoutError:
            return False
        return True

    async def _ctl_press(self) -> None:
        """Press, and reply once the turn is open: a simulated pin counts as
        a press only after the button's debounce and minimum press, and a
        script's next command (`ctl wait idle`, `ctl say`) must see the turn."""
        if self.virtual_button is None:
            self.press("ctl")
            return
        self.virtual_button.sim_press()
        await self._until(lambda: self._talking)

    async def _ctl_release(self) -> None:
        if self.virtual_button is None:
            self.release("ctl")
            return
        self.virtual_button.sim_release()
        await self._until(lambda: not self._talking)

    async def _until(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait for a state change that makes ``condition`` true (bounded: a
        button that never reports the press must not hang the control socket)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not condition():
                    await self._state_changed.wait()

    async def _release_after(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
        await self._ctl_release()


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# Fire-and-forget tasks must be referenced somewhere or the loop may drop them.
_background: set[asyncio.Task[Any]] = set()
