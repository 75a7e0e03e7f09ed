"""The fake model's side of a turn: barge-in, tool calls (waiting for their
responses), and the answer, streamed as paced audio chunks with its
transcript spread over them, then turnComplete and a resumption update."""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
from typing import Any

from websockets.exceptions import ConnectionClosed

from .audio import synthesize_speech, tone_pcm
from .core import FakeCore
from .protocol import OUTPUT_RATE, word_groups
from .records import FakeConnection, Turn
from .scenarios import ScriptedTurn, auto_tool_calls, default_reply

log = logging.getLogger(__name__)


class Answers(FakeCore):
    """How the fake model answers a turn."""

    async def _resumption_update(self, conn: FakeConnection, resumable: bool = True) -> None:
        if (
            not self.resumption
            or conn.session is None
            or not isinstance((conn.setup or {}).get("sessionResumption"), dict)
        ):
            return
        handle = ""
        if resumable:
            handle = secrets.token_urlsafe(24)
            self.sessions[handle] = conn.session
            conn.session.handles.append(handle)
        await self._send(
            conn, {"sessionResumptionUpdate": {"newHandle": handle, "resumable": resumable}}
        )

    async def _barge_in(self, conn: FakeConnection) -> None:
        """New user input while the model is answering: stop at once, like the real server
        with START_OF_ACTIVITY_INTERRUPTS (the default)."""
        task, turn = conn.reply_task, conn.reply_turn
        if task is None or task.done() or turn is None or not conn.interrupts:
            return
        if turn.completed:  # only the trailing resumption update is left: let it go out
            await asyncio.wait([task])
            return
        task.cancel()
        await asyncio.wait([task])
        turn.interrupted = True
        pending = [c["id"] for c in turn.tool_calls if c["id"] in conn.pending_tool_ids]
        if pending:
            conn.pending_tool_ids.difference_update(pending)
            self._cancelled_ids.update(pending)
            await self._send(conn, {"toolCallCancellation": {"ids": pending}})
        await self._send(conn, {"serverContent": {"interrupted": True}})
        await self._send(conn, {"serverContent": {"turnComplete": True}})
        log.info(
            "conn %d turn %d interrupted after %d audio bytes",
            conn.index,
            turn.index,
            turn.audio_sent_bytes,
        )
        await self._resumption_update(conn)

    async def _begin_reply(self, conn: FakeConnection, turn: Turn) -> None:
        turn.index = len(self.turns)
        self.turns.append(turn)
        script = self._scripts.popleft() if self._scripts else None
        # With NO_INTERRUPTION the previous answer is still running: queue behind it.
        previous = conn.reply_task if conn.reply_task and not conn.reply_task.done() else None
        conn.reply_turn = turn
        conn.reply_task = asyncio.create_task(self._run_turn(conn, turn, script, previous))
        self._notify()

    async def _run_turn(
        self,
        conn: FakeConnection,
        turn: Turn,
        script: ScriptedTurn | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])
            await self._answer(conn, turn, script)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("conn %d turn %d failed", conn.index, turn.index)
            self._violation(conn, f"fake server error in turn {turn.index} (see log)")

    async def _answer(self, conn: FakeConnection, turn: Turn, script: ScriptedTurn | None) -> None:
        assert conn.session is not None
        history = conn.session.history
        scripted_input = script.input_text if script else None
        if turn.source in ("activity", "vad") and not turn.typed:
            turn.input_text = scripted_input or f"({turn.heard_s:.1f} seconds of audio)"
            if "inputAudioTranscription" in (conn.setup or {}):
                await self._send(
                    conn, {"serverContent": {"inputTranscription": {"text": turn.input_text}}}
                )
        elif scripted_input:
            turn.input_text = scripted_input
        if turn.source != "clientContent":
            history.append(("user", turn.input_text or ""))
        log.info(
            "conn %d turn %d (%s) heard %.1fs: %r",
            conn.index,
            turn.index,
            turn.source,
            turn.heard_s,
            turn.input_text,
        )
        if script is not None and script.tool_calls is not None:
            calls = script.tool_calls
        elif turn.source in ("text", "clientContent") or turn.typed or scripted_input:
            calls = auto_tool_calls(conn.setup, turn.input_text or "")
        else:
            calls = []
        if calls:
            ids = set(await self._issue_tool_calls(conn, calls, turn))
            try:
                await self.wait_for(lambda _: not ids & conn.pending_tool_ids, self.tool_timeout_s)
            except TimeoutError:
                self._violation(
                    conn, f"no toolResponse for {sorted(ids)} within {self.tool_timeout_s}s"
                )
                conn.pending_tool_ids.difference_update(ids)
        if script is not None and script.delay_s > 0:
            await asyncio.sleep(script.delay_s)
        turn.reply_text = (
            (script.reply_text if script else None)
            or self.reply_text
            or ("Done." if calls else default_reply(turn))
        )
        if not conn.text_modality:
            if script is not None and script.reply_pcm is not None:
                turn.reply_pcm, turn.audio_kind = script.reply_pcm, "scripted"
            else:
                turn.reply_pcm, turn.audio_kind = await self._reply_audio(turn.reply_text)
        await self._stream_reply(conn, turn)
        await self._send(conn, {"serverContent": {"generationComplete": True}})
        turn.completed = True
        prompt = 10 + int(32 * turn.heard_s) + 2 * sum(len(t.split()) for _, t in history)
        response = max(
            1, int(32 * len(turn.reply_pcm) / (2 * OUTPUT_RATE)) or 2 * len(turn.reply_text.split())
        )
        await self._send(
            conn,
            {
                "serverContent": {"turnComplete": True},
                "usageMetadata": {
                    "promptTokenCount": prompt,
                    "responseTokenCount": response,
                    "totalTokenCount": prompt + response,
                },
            },
        )
        history.append(("model", turn.reply_text))
        log.info(
            "conn %d turn %d answered %r (%.1fs of %s audio)",
            conn.index,
            turn.index,
            turn.reply_text,
            len(turn.reply_pcm) / (2 * OUTPUT_RATE),
            turn.audio_kind,
        )
        await self._resumption_update(conn)

    async def _reply_audio(self, text: str) -> tuple[bytes, str]:
        if self.use_speech:
            # A thread, so the loop keeps serving other connections (and barge-in) meanwhile.
            pcm = await asyncio.to_thread(synthesize_speech, text)
            if pcm:
                return pcm, "speech"
        return tone_pcm(), "tone"

    async def _issue_tool_calls(
        self,
        conn: FakeConnection,
        calls: list[tuple[str, dict[str, Any]]],
        turn: Turn | None = None,
    ) -> list[str]:
        function_calls = []
        for name, args in calls:
            self._call_seq += 1
            call = {"id": f"function-call-{self._call_seq}", "name": name, "args": args}
            function_calls.append(call)
            self._issued_calls[call["id"]] = (conn, name)
            conn.pending_tool_ids.add(call["id"])
        if turn is not None:
            turn.tool_calls.extend(function_calls)
        await self._send(conn, {"toolCall": {"functionCalls": function_calls}})
        # While a tool runs the session is not resumable; the client must keep its last handle.
        await self._resumption_update(conn, resumable=False)
        log.info("conn %d tool call %s", conn.index, [(c["id"], c["name"]) for c in function_calls])
        return [c["id"] for c in function_calls]

    async def _stream_reply(self, conn: FakeConnection, turn: Turn) -> None:
        pieces = word_groups(turn.reply_text)
        if conn.text_modality:
            for piece in pieces:
                await self._send(
                    conn, {"serverContent": {"modelTurn": {"parts": [{"text": piece}]}}}
                )
            return
        if "outputAudioTranscription" not in (conn.setup or {}):
            pieces = []
        size = max(2, OUTPUT_RATE * 2 * self.chunk_ms // 1000 // 2 * 2)
        pcm = turn.reply_pcm
        chunks = [pcm[i : i + size] for i in range(0, len(pcm), size)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        played = 0.0  # seconds of audio sent so far
        next_piece = 0
        mime = f"audio/pcm;rate={OUTPUT_RATE}"
        for k, chunk in enumerate(chunks):
            # Spread the transcript over the audio, a word group at its share of the way.
            while next_piece < len(pieces) and next_piece * len(chunks) <= k * len(pieces):
                await self._send(
                    conn, {"serverContent": {"outputTranscription": {"text": pieces[next_piece]}}}
                )
                next_piece += 1
            if self.pace > 0:
                delay = start + played / self.pace - loop.time()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)  # still let barge-in and other connections in
            inline = {"mimeType": mime, "data": base64.b64encode(chunk).decode()}
            await self._send(
                conn,
                {"serverContent": {"modelTurn": {"parts": [{"inlineData": inline}]}}},
                record={
                    "serverContent": {
                        "modelTurn": {
                            "parts": [{"inlineData": {"mimeType": mime, "data": len(chunk)}}]
                        }
                    }
                },
            )
            turn.audio_sent_bytes += len(chunk)
            played += len(chunk) / (2 * OUTPUT_RATE)
        for piece in pieces[next_piece:]:
            await self._send(conn, {"serverContent": {"outputTranscription": {"text": piece}}})
