"""What the fake keeps of every connection, session and turn: tests read
these to see exactly what our client did."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.datastructures import Headers
from websockets.protocol import State


@dataclass(eq=False)
class SessionState:
    """Server-side state a resumption handle points at; outlives connections."""

    index: int
    history: list[tuple[str, str]] = field(default_factory=list)  # (role, text)
    handles: list[str] = field(default_factory=list)
    connection: FakeConnection | None = field(default=None, repr=False)


@dataclass(eq=False)
class Turn:
    """One user turn and the model's answer to it."""

    source: str  # "activity" | "vad" | "text" | "clientContent"
    connection: FakeConnection = field(repr=False)
    index: int = -1
    input_text: str | None = None
    typed: bool = False  # text came inside the activity window (a typed turn)
    heard_s: float = 0.0
    heard_pcm: bytearray = field(default_factory=bytearray, repr=False)
    reply_text: str = ""
    reply_pcm: bytes = field(default=b"", repr=False)
    audio_kind: str = ""  # "speech" | "tone" | "scripted" | "" (text modality)
    audio_sent_bytes: int = 0
    tool_calls: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    completed: bool = False


@dataclass(eq=False)
class FakeConnection:
    index: int
    ws: ServerConnection = field(repr=False)
    request_path: str
    request_headers: Headers = field(repr=False)
    auth_method: str | None = None  # "header" | "query" | "token-header" | "token-query"
    token: str | None = field(default=None, repr=False)  # the minted token it presented
    token_offered: bool = False  # it offered a token (known or not)
    ignored_texts: list[str] = field(default_factory=list)  # text the server never answers
    received: list[dict[str, Any]] = field(default_factory=list, repr=False)
    sent: list[dict[str, Any]] = field(default_factory=list, repr=False)
    setup: dict[str, Any] | None = field(default=None, repr=False)
    setup_complete_sent: bool = False
    session: SessionState | None = field(default=None, repr=False)
    resumed_from: str | None = None
    close_code: int | None = None
    close_reason: str | None = None
    close_detail: str | None = None  # the fake's own explanation of a close
    closed_by: str | None = None  # "server" | "client" | "drop"
    ended: bool = False
    audio_s: float = 0.0
    video_frames: int = 0
    capture: Turn | None = field(default=None, repr=False)  # user turn being heard
    pending_tool_ids: set[str] = field(default_factory=set)
    reply_task: asyncio.Task[None] | None = field(default=None, repr=False)
    reply_turn: Turn | None = field(default=None, repr=False)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set, repr=False)
    _flags: set[str] = field(default_factory=set, repr=False)  # violations reported once
    _silence_s: float = 0.0
    activity: Any = field(default=None, repr=False)  # the automatic activity detector
    _last_video_at: float | None = None

    @property
    def open(self) -> bool:
        return not self.ended and self.close_code is None and self.ws.state is State.OPEN

    @property
    def model(self) -> str:
        return str((self.setup or {}).get("model", ""))

    def _setup_get(self, *path: str) -> Any:
        node: Any = self.setup or {}
        for key in path:
            node = node.get(key) if isinstance(node, dict) else None
        return node

    @property
    def vad_disabled(self) -> bool:
        return (
            self._setup_get("realtimeInputConfig", "automaticActivityDetection", "disabled") is True
        )

    @property
    def interrupts(self) -> bool:
        return self._setup_get("realtimeInputConfig", "activityHandling") != "NO_INTERRUPTION"

    @property
    def text_modality(self) -> bool:
        return self._setup_get("generationConfig", "responseModalities") == ["TEXT"]

    def spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task
