"""The model's tool calls: each run once, cancellable by the server, answered
once, and the answer delivered even across a dropped connection.

``tools/`` runs a tool; this is the part that knows the Live session (a call
arrives on one connection and may be answered on another), so it sits beside
the daemon, not in ``tools/`` (which may not import ``live/``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque

from .background import spawn
from .counters import Counters
from .live import messages as m
from .live.reconnect import Resumption, ToolOutbox
from .live.session import LiveSession, SessionClosed
from .sender import Sender
from .tools.registry import ToolRegistry

log = logging.getLogger(__name__)

# Answered tool calls remembered by id, to recognise a repeated call.
_ANSWERS_KEPT = 64
# A model (or whatever speaks through it) asking for many calls at once, or
# for calls without end, is refused past these: each refused call is answered
# with an error it can read, and nothing runs.
MAX_CALLS_PER_FRAME = 8
MAX_CALLS_PER_MINUTE = 60
# Tool arguments in the journal: enough to read, never a whole payload.
MAX_LOGGED_ARGS = 200


def short(value: object, limit: int = MAX_LOGGED_ARGS) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[: limit - 3]}..."


class ToolRunner:
    def __init__(
        self,
        tools: ToolRegistry,
        sender: Sender,
        counters: Counters,
        resumption: Resumption,
    ) -> None:
        self.tools = tools
        self.sender = sender
        self.counters = counters
        self._resumption = resumption
        # Blocking calls not answered yet: mic audio waits while any is open.
        self.blocking: dict[str, asyncio.Task[None]] = {}
        # Every running call, blocking or not, so a cancellation reaches it.
        self.running: dict[str, asyncio.Task[None]] = {}
        # The last answers sent, by call id: a repeated call (a duplicated frame,
        # a server re-sending calls after a resume) is never run twice.
        self._answered: OrderedDict[str, tuple[m.FunctionResult, str]] = OrderedDict()
        # Tool results not yet delivered; they outlive a dropped connection.
        self.outbox = ToolOutbox()
        self._recent: deque[float] = deque()  # when the calls of the last minute came

    def on_call(self, session: LiveSession, ev: m.ToolCall) -> None:
        for index, call in enumerate(ev.calls):
            self.counters.tool_calls += 1
            if call.id in self.running or call.id in self.outbox:
                log.warning("duplicate tool call id %s ignored", call.id)
                continue
            if call.id in self._answered:
                self._repeat_answer(session, call)
                continue
            refusal = self._over_limit(index)
            if refusal:
                self._refuse(session, call, refusal)
                continue
            task = asyncio.get_running_loop().create_task(
                self._run(session, call, self._resumption.seq), name=f"tool-{call.name}"
            )
            self.running[call.id] = task
            task.add_done_callback(lambda _t, cid=call.id: self.running.pop(cid, None))
            if self.tools.is_blocking(call.name):
                self.blocking[call.id] = task

    def _over_limit(self, index: int) -> str:
        now = time.monotonic()
        while self._recent and now - self._recent[0] > 60.0:
            self._recent.popleft()
        if index >= MAX_CALLS_PER_FRAME:
            return f"more than {MAX_CALLS_PER_FRAME} calls at once; make fewer, one after another"
        if len(self._recent) >= MAX_CALLS_PER_MINUTE:
            return f"more than {MAX_CALLS_PER_MINUTE} calls in a minute; wait a little"
        self._recent.append(now)
        return ""

    def _refuse(self, session: LiveSession, call: m.FunctionCall, why: str) -> None:
        self.counters.tool_errors += 1
        log.warning(
            "tool call %s(%s) refused: %s",
            call.name,
            short(dict(call.args)),
            why,
            extra={"EDGE_EVENT": "tool_refused", "EDGE_TOOL": call.name, "EDGE_CALL_ID": call.id},
        )
        result = m.FunctionResult(call.id, call.name, error=f"refused: {why}")
        self.outbox.add(result, session.id, self._resumption.seq)
        spawn(self.deliver(), "tool-refusal")

    def on_cancel(self, ev: m.ToolCallCancellation) -> None:
        for call_id in ev.ids:
            self.outbox.cancel(call_id)
            self.blocking.pop(call_id, None)
            task = self.running.pop(call_id, None)
            if task is not None:
                task.cancel()
                self.counters.tool_cancellations += 1
                log.info(
                    "tool call %s cancelled by the server",
                    call_id,
                    extra={"EDGE_EVENT": "tool_cancelled", "EDGE_CALL_ID": call_id},
                )
        if ev.ids and not self.blocking:
            # A cancelled run never reaches its own pump(): without this, audio
            # and an activityEnd held back during the call (a tap shorter than
            # the cancellation's round trip) would never go out.
            self.sender.pump()

    def cancel_all(self) -> None:
        for task in list(self.running.values()):
            task.cancel()

    async def _run(self, session: LiveSession, call: m.FunctionCall, seq: int) -> None:
        try:
            outcome = await self.tools.call(call.name, call.args)
            if not outcome.ok:
                self.counters.tool_errors += 1
            log.info(
                "tool %s(%s) -> %s",
                call.name,
                short(dict(call.args)),
                short(outcome.output) if outcome.ok else f"error: {short(outcome.error)}",
                extra={
                    "EDGE_EVENT": "tool_call",
                    "EDGE_TOOL": call.name,
                    "EDGE_CALL_ID": call.id,
                    "EDGE_RESULT": "ok" if outcome.ok else "error",
                },
            )
            # A NON_BLOCKING call's answer joins the conversation without
            # cutting off what the model is saying (FunctionResponse.scheduling).
            scheduling = None if self.tools.is_blocking(call.name) else "WHEN_IDLE"
            result = m.FunctionResult(
                call.id, call.name, outcome.output, outcome.error, scheduling=scheduling
            )
            # Owed until it is out: if the socket dropped while the tool ran,
            # the next connection delivers it (once), see ToolOutbox.
            self.outbox.add(result, session.id, seq)
            await self.deliver()
        finally:
            self.blocking.pop(call.id, None)
        if not self.blocking:
            self.sender.pump()  # the mic audio held back during the call

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
            async with self.sender.lock:
                await self.sender.send(session.send_tool_response([result]))
            self._remember_answers([result], session.id)

        spawn(resend(), "tool-answer-again")

    async def deliver(self) -> None:
        """Send the tool results owed to the server, each once, in the form the
        current connection can take: a toolResponse where the server still
        knows the call, a text note where it forgot it, nothing for a new
        session (see ToolOutbox)."""
        sender = self.sender
        session = sender.session
        if session is None or not self.outbox:
            return
        async with sender.lock:
            if session is not sender.session:
                return
            plan = self.outbox.take(session.id, session.resumed_seq)
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
                    sender.expect_reply()
                    await session.send_tool_response([o.result for o in plan.responses])
                    self._remember_answers([o.result for o in plan.responses], session.id)
                    unsent = list(plan.notes)
                if plan.notes:
                    sender.expect_reply()
                    # A turn of its own, framed as the setup asks (see
                    # messages.build_typed_turn): bare text may never be answered.
                    await session.send_typed_turn(
                        ToolOutbox.note_text(plan.notes), activity_signals=sender.activity_signals
                    )
                    unsent = []
            except SessionClosed as exc:
                # The frame never left: the next connection owes it instead.
                self.outbox.put_back(unsent)
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
