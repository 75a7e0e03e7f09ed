"""The rules the real server enforces on what a client sends, with the same
close codes: setup first and once, camelCase fields, one kind per message,
activity signals only with automatic activity detection off, 16 kHz PCM,
frame size and rate limits, tool responses by id. A rule the real server
enforces by closing closes here too; one it only frowns on is recorded as a
protocol violation."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from typing import Any

from websockets.exceptions import ConnectionClosed

from .activity_detection import ActivityDetector
from .answers import Answers
from .protocol import (
    CLIENT_KEYS,
    GENERATION_FIELDS,
    INPUT_RATE,
    MAX_VIDEO_SIDE,
    MIN_VIDEO_GAP_S,
    REALTIME_FIELDS,
    SESSION_NOT_FOUND,
    SETUP_FIELDS,
    V1ALPHA_ONLY,
    Reject,
    b64_data,
    image_size,
    model_family,
    unknown_name,
)
from .records import FakeConnection, SessionState, Turn
from .tokens import TOKEN_CLOSE, TOKEN_EXPIRED

log = logging.getLogger(__name__)


class ClientRules(Answers):
    """Each client message checked against the rules, then handled."""

    async def _dispatch(self, conn: FakeConnection, msg: Any) -> None:
        if not isinstance(msg, dict):
            raise Reject("a client message must be a JSON object")
        keys = list(msg)
        if conn.setup is None and keys != ["setup"]:
            raise Reject(f"the first message must be {{'setup': ...}}, got keys {keys}")
        if len(keys) != 1 or keys[0] not in CLIENT_KEYS:
            raise Reject(f"a message needs exactly one of {CLIENT_KEYS}, got keys {keys}")
        key = keys[0]
        body = msg[key]
        if not isinstance(body, dict):
            raise Reject(f"{key} must be an object")
        if key == "setup":
            if conn.setup is not None:
                raise Reject("a second setup message")
            await self._on_setup(conn, body)
            return
        if not conn.setup_complete_sent:
            raise Reject(f"{key} sent before setupComplete")
        if conn.token is not None and self.tokens.expired(conn.token):
            raise Reject("a message after the token's expireTime", TOKEN_CLOSE, TOKEN_EXPIRED)
        if key == "realtimeInput":
            await self._on_realtime(conn, body)
        elif key == "toolResponse":
            self._on_tool_response(conn, body)
        else:
            await self._on_client_content(conn, body)

    async def _on_setup(self, conn: FakeConnection, setup: dict[str, Any]) -> None:
        unknown = sorted(set(setup) - SETUP_FIELDS)
        if unknown:
            raise Reject(f"unknown setup fields {unknown}")
        model = setup.get("model")
        if not isinstance(model, str) or not model:
            raise Reject("setup.model is required")
        if not model.startswith("models/"):
            found = re.search(r"\.(v1\w*)\.", conn.request_path)
            version = found.group(1) if found else "v1beta"
            raise Reject(
                f"bad model name {model!r}", 1008, f"{model} is not found for API version {version}"
            )
        modalities = (setup.get("generationConfig") or {}).get("responseModalities")
        if modalities is not None and modalities not in (["AUDIO"], ["TEXT"]):
            raise Reject(f"responseModalities must be ['AUDIO'] or ['TEXT'], got {modalities}")
        self._check_dialect(conn, setup, model)
        for tool in setup.get("tools") or []:
            for decl in (tool or {}).get("functionDeclarations") or []:
                if not isinstance(decl, dict) or not isinstance(decl.get("name"), str):
                    raise Reject(f"a function declaration needs a name: {decl!r}")
        resumption = setup.get("sessionResumption")
        handle = resumption.get("handle") if isinstance(resumption, dict) else None
        if conn.token is not None:
            refused = self.tokens.admit(conn.token, resuming=bool(handle))
            if refused:
                raise Reject(f"token refused at setup: {refused}", TOKEN_CLOSE, refused)
        if handle:
            session = self.sessions.get(handle) if self.resumption else None
            if session is None:
                raise Reject(f"unknown resumption handle {handle[:8]}...", 1008, SESSION_NOT_FOUND)
            if session.connection is not None and session.connection.open:
                self._violation(
                    conn,
                    f"resumed session {session.index} while conn "
                    f"{session.connection.index} still holds it open "
                    "(the real server has answered 1011)",
                )
            conn.resumed_from = handle
        else:
            self._session_seq += 1
            session = SessionState(index=self._session_seq)
        session.connection = conn
        conn.session, conn.setup = session, setup
        log.info("conn %d setup model=%s resumed=%s", conn.index, model, bool(handle))
        self._notify()
        if not self.send_setup_complete:
            return
        if self.setup_complete_delay_s > 0:
            conn.spawn(self._complete_setup(conn, self.setup_complete_delay_s))
        else:
            await self._complete_setup(conn, 0.0)

    def _check_dialect(self, conn: FakeConnection, setup: dict[str, Any], model: str) -> None:
        """What each model family and API version refuses at setup (1007)."""
        gen = setup.get("generationConfig") or {}
        if not isinstance(gen, dict):
            raise Reject("generationConfig must be an object")
        for name in sorted(set(gen) - GENERATION_FIELDS):
            raise Reject(
                f"unknown generationConfig field {name}",
                1007,
                unknown_name(name, "setup.generation_config"),
            )
        if ".v1alpha." not in conn.request_path:
            for name, where in V1ALPHA_ONLY.items():
                if name in setup or name in gen:
                    raise Reject(f"{name} exists only on v1alpha", 1007, unknown_name(name, where))
        family = model_family(model)
        speech = gen.get("speechConfig") or {}
        if family != "cascade" and isinstance(speech, dict) and "languageCode" in speech:
            raise Reject(
                f"speechConfig.languageCode for a native-audio model ({model}): it chooses "
                "its own language"
            )
        thinking = gen.get("thinkingConfig")
        if thinking is not None:
            if not isinstance(thinking, dict):
                raise Reject("thinkingConfig must be an object")
            if family == "cascade":
                raise Reject(f"thinkingConfig for {model}, which does not think")
            if family == "live3" and "thinkingBudget" in thinking:
                raise Reject(f"thinkingBudget for {model}: 3.x models take thinkingLevel")
            if family == "native" and "thinkingLevel" in thinking:
                raise Reject(f"thinkingLevel for {model}: 2.5 models take thinkingBudget")
        if (setup.get("proactivity") or gen.get("enableAffectiveDialog")) and family == "cascade":
            raise Reject(f"proactivity or affective dialog for {model}, a half-cascade model")

    async def _complete_setup(self, conn: FakeConnection, delay: float) -> None:
        await asyncio.sleep(delay)
        await self._unstalled.wait()
        # Flag first: the client may answer setupComplete before our send() returns.
        conn.setup_complete_sent = True
        with contextlib.suppress(ConnectionClosed):
            await self._send(conn, {"setupComplete": {}})
            await self._resumption_update(conn)

    async def _on_realtime(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        if len(body) != 1 or next(iter(body)) not in REALTIME_FIELDS:
            raise Reject(f"realtimeInput needs exactly one of {REALTIME_FIELDS}, got {list(body)}")
        key, value = next(iter(body.items()))
        if key in ("activityStart", "activityEnd"):
            if not isinstance(value, dict):
                raise Reject(f"{key} must be an object")
            if not conn.vad_disabled:
                raise Reject(
                    f"{key} needs realtimeInputConfig.automaticActivityDetection.disabled = true"
                )
            await (
                self._activity_start(conn) if key == "activityStart" else self._activity_end(conn)
            )
        elif key == "audio":
            await self._on_audio(conn, value, "audio")
        elif key == "video":
            self._on_video(conn, value, "video")
        elif key == "text":
            if not isinstance(value, str):
                raise Reject("realtimeInput.text must be a string")
            if conn.vad_disabled:
                # With detection off the client marks every turn, typed ones
                # too (AutomaticActivityDetection.disabled: "the client must
                # send activity signals"): text inside a window joins that
                # turn; text outside one starts nothing, and is never answered.
                if conn.capture is None:
                    self._violation(
                        conn,
                        "realtimeInput.text outside activityStart/activityEnd with automatic "
                        "activity detection off: ignored, never answered",
                    )
                    conn.ignored_texts.append(value)
                    return
                conn.capture.input_text = f"{conn.capture.input_text or ''} {value}".strip()
                conn.capture.typed = True
                return
            await self._barge_in(conn)
            await self._begin_reply(conn, Turn("text", conn, input_text=value))
        elif key == "audioStreamEnd":
            if conn.capture is not None and not conn.vad_disabled:
                await self._end_capture(conn)
        else:  # mediaChunks
            self._violation(
                conn, "realtimeInput.mediaChunks is deprecated: use audio/video", once="mediaChunks"
            )
            if not isinstance(value, list):
                raise Reject("mediaChunks must be a list")
            for chunk in value:
                mime = str((chunk or {}).get("mimeType", ""))
                if mime.startswith("image/"):
                    self._on_video(conn, chunk, "mediaChunks[]")
                else:
                    await self._on_audio(conn, chunk, "mediaChunks[]")

    async def _on_audio(self, conn: FakeConnection, blob: Any, what: str) -> None:
        if not isinstance(blob, dict):
            raise Reject(f"{what} must be an object")
        mime = str(blob.get("mimeType", ""))
        if not mime.startswith("audio/pcm"):
            raise Reject(f"{what}.mimeType must be audio/pcm;rate=16000, got {mime!r}")
        pcm = b64_data(blob.get("data"), what)
        if len(pcm) % 2:
            raise Reject(f"{what} holds {len(pcm)} bytes: not whole 16-bit samples")
        rate_match = re.search(r"rate=(\d+)", mime)
        rate = int(rate_match.group(1)) if rate_match else INPUT_RATE
        if rate != INPUT_RATE or not rate_match:
            self._violation(conn, f"audio mimeType {mime!r}: expected rate=16000", once="rate")
        seconds = len(pcm) / 2 / max(rate, 1)
        conn.audio_s += seconds
        if conn.pending_tool_ids:
            detail = (
                f"mic audio while tool call(s) {sorted(conn.pending_tool_ids)} are "
                "unanswered (the real server has closed 1008 for this)"
            )
            if self.strict_tool_audio:
                raise Reject(detail, 1008, "Audio received while a function call is pending.")
            self._violation(conn, detail, once=f"tool-audio:{sorted(conn.pending_tool_ids)}")
        if not conn.vad_disabled:
            await self._vad(conn, pcm, seconds)
        elif conn.capture is None:
            self._violation(
                conn,
                "audio outside activityStart/activityEnd (the server ignores it)",
                once="stray-audio",
            )
        else:
            self._hear(conn.capture, pcm, seconds)

    def _hear(self, turn: Turn, pcm: bytes, seconds: float) -> None:
        turn.heard_s += seconds
        if self.keep_audio:
            turn.heard_pcm += pcm

    async def _vad(self, conn: FakeConnection, pcm: bytes, seconds: float) -> None:
        """Automatic activity detection, crudely (activity_detection.py)."""
        if conn.activity is None:
            conn.activity = ActivityDetector.from_setup(conn.setup)
        event = conn.activity.feed(pcm, seconds)
        if conn.capture is None:
            if event != "start":
                return
            await self._barge_in(conn)
            conn.capture = Turn("vad", conn)
        self._hear(conn.capture, pcm, seconds)
        if event == "end":
            await self._end_capture(conn)

    def _on_video(self, conn: FakeConnection, blob: Any, what: str) -> None:
        if not isinstance(blob, dict):
            raise Reject(f"{what} must be an object")
        mime = blob.get("mimeType")
        if mime not in ("image/jpeg", "image/png"):
            raise Reject(f"{what}.mimeType must be image/jpeg or image/png, got {mime!r}")
        data = b64_data(blob.get("data"), what)
        png = mime == "image/png"
        if not data.startswith(b"\x89PNG\r\n\x1a\n" if png else b"\xff\xd8"):
            raise Reject(f"{what}: the data is not a {mime} image")
        conn.video_frames += 1
        size = image_size(data, png)
        if size and max(size) > MAX_VIDEO_SIDE:
            self._violation(
                conn,
                f"video frame {size[0]}x{size[1]}: longest side over {MAX_VIDEO_SIDE}",
                once="video-size",
            )
        now = asyncio.get_running_loop().time()
        if conn._last_video_at is not None and now - conn._last_video_at < MIN_VIDEO_GAP_S:
            self._violation(
                conn,
                f"video frames {now - conn._last_video_at:.2f}s apart (at most 1 frame/s)",
                once="video-rate",
            )
        conn._last_video_at = now

    async def _on_client_content(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        if "gemini-3" in conn.model:
            raise Reject("clientContent mid-session is rejected by gemini-3 live models")
        assert conn.session is not None
        last_user = None
        for content in body.get("turns") or []:
            text = " ".join(
                str(p.get("text", ""))
                for p in content.get("parts") or []
                if isinstance(p, dict) and "text" in p
            )
            role = content.get("role", "user")
            conn.session.history.append((role, text))
            last_user = text if role == "user" else last_user
        if body.get("turnComplete"):
            await self._barge_in(conn)
            await self._begin_reply(conn, Turn("clientContent", conn, input_text=last_user))

    def _on_tool_response(self, conn: FakeConnection, body: dict[str, Any]) -> None:
        responses = body.get("functionResponses")
        if not isinstance(responses, list):
            raise Reject("toolResponse.functionResponses must be a list")
        for fr in responses:
            if not isinstance(fr, dict):
                raise Reject("a functionResponse must be an object")
            self.tool_responses.append(fr)
            call_id = fr.get("id")
            issued = self._issued_calls.get(call_id) if isinstance(call_id, str) else None
            if not isinstance(fr.get("response"), dict):
                self._violation(conn, f"functionResponse {call_id!r} has no response object")
            if not call_id:
                self._violation(conn, f"functionResponse without an id: {fr!r}")
            elif call_id in conn.pending_tool_ids:
                conn.pending_tool_ids.discard(call_id)
                self._answered_ids.add(call_id)
                if fr.get("name") not in (None, issued[1] if issued else None):
                    self._violation(
                        conn,
                        f"functionResponse {call_id} names {fr.get('name')!r}"
                        f", the call was {issued[1] if issued else None!r}",
                    )
            elif call_id in self._answered_ids:
                self._violation(conn, f"duplicated toolResponse for {call_id}")
            elif call_id in self._cancelled_ids:
                pass  # crossed our cancellation on the wire: legitimate, and ignored
            elif issued is not None:
                self._violation(
                    conn,
                    f"toolResponse for {call_id}, issued on conn {issued[0].index}, not this one",
                )
            else:
                self._violation(conn, f"toolResponse for unknown id {call_id!r}")
        self._notify()

    async def _activity_start(self, conn: FakeConnection) -> None:
        if conn.capture is not None:
            self._violation(conn, "activityStart while an activity is already open")
            return
        conn._flags.discard("stray-audio")
        await self._barge_in(conn)
        conn.capture = Turn("activity", conn)

    async def _activity_end(self, conn: FakeConnection) -> None:
        if conn.capture is None:
            self._violation(conn, "activityEnd without activityStart")
            return
        await self._end_capture(conn)

    async def _end_capture(self, conn: FakeConnection) -> None:
        turn, conn.capture, conn._silence_s = conn.capture, None, 0.0
        if conn.activity is not None:
            conn.activity.reset()
        assert turn is not None
        await self._begin_reply(conn, turn)
