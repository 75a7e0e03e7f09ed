"""Ephemeral tokens as the service issues and enforces them (Google's
ephemeral-tokens guide; ``AuthToken`` and ``CreateAuthTokenConfig`` in the
SDK's types.py):

- minted by ``POST /v1alpha/auth_tokens`` with an API key, with ``uses``
  (default 1; 0 = unlimited), ``expireTime`` (default 30 minutes ahead) and
  ``newSessionExpireTime`` (default 60 s ahead), both under 20 hours ahead;
- good only on the v1alpha ``BidiGenerateContentConstrained`` endpoint;
- a new session spends a use and must start before ``newSessionExpireTime``;
  resuming a session spends none and is not a new session;
- past ``expireTime`` the session's messages are refused.

The service's close reasons for a refused token are not published; the
fake's say "auth token" and why, and use 1008 like a refused key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

log = logging.getLogger(__name__)

MAX_AHEAD_S = 20 * 3600
TOKEN_CLOSE = 1008
TOKEN_EXPIRED = "Unauthenticated: the auth token has expired."
TOKEN_SPENT = "Unauthenticated: the auth token has no uses left."
TOKEN_LATE = "Unauthenticated: the auth token's window for new sessions has closed."
TOKEN_UNKNOWN = "Unauthenticated: invalid auth token."


@dataclass
class FakeToken:
    name: str = field(repr=False)
    uses_left: int | None  # None: unlimited
    new_session_until: float  # time.monotonic()
    expires_at: float
    setup: dict[str, Any] | None = None
    field_mask: str | None = None
    new_sessions: int = 0
    resumes: int = 0


class TokenBook:
    def __init__(self) -> None:
        self.tokens: dict[str, FakeToken] = {}
        self.mint_requests: list[dict[str, Any]] = []

    def mint(
        self,
        *,
        uses: int = 1,
        expire_s: float = 1800.0,
        new_session_s: float = 60.0,
        setup: dict[str, Any] | None = None,
        field_mask: str | None = None,
    ) -> str:
        name = f"auth_tokens/{secrets.token_hex(16)}"
        now = time.monotonic()
        self.tokens[name] = FakeToken(
            name,
            None if uses == 0 else uses,
            now + new_session_s,
            now + expire_s,
            setup,
            field_mask,
        )
        return name

    def admit(self, name: str, *, resuming: bool) -> str | None:
        """None if ``name`` may open this session (a new one spends a use);
        else the close reason."""
        token = self.tokens.get(name)
        if token is None:
            return TOKEN_UNKNOWN
        now = time.monotonic()
        if now >= token.expires_at:
            return TOKEN_EXPIRED
        if resuming:
            token.resumes += 1
            return None
        if token.uses_left is not None and token.uses_left <= 0:
            return TOKEN_SPENT
        if now >= token.new_session_until:
            return TOKEN_LATE
        if token.uses_left is not None:
            token.uses_left -= 1
        token.new_sessions += 1
        return None

    def expired(self, name: str) -> bool:
        token = self.tokens.get(name)
        return token is not None and time.monotonic() >= token.expires_at

    def mint_from_request(self, body: Any) -> str:
        """A ``POST /v1alpha/auth_tokens`` body, checked as the service checks it."""
        if not isinstance(body, dict):
            raise ValueError("the request body must be a JSON object")
        self.mint_requests.append(body)
        unknown = set(body) - {
            "uses",
            "expireTime",
            "newSessionExpireTime",
            "bidiGenerateContentSetup",
            "fieldMask",
        }
        if unknown:
            raise ValueError(f"Unknown name {sorted(unknown)[0]!r}: Cannot find field.")
        uses = body.get("uses", 1)
        if not isinstance(uses, int) or isinstance(uses, bool) or uses < 0:
            raise ValueError("uses must be a non-negative integer")
        wall = time.time()
        expire_s = _ahead(body.get("expireTime"), wall, 1800.0, "expireTime")
        new_session_s = _ahead(body.get("newSessionExpireTime"), wall, 60.0, "newSessionExpireTime")
        setup = body.get("bidiGenerateContentSetup")
        if setup is not None and not isinstance(setup, dict):
            raise ValueError("bidiGenerateContentSetup must be an object")
        mask = body.get("fieldMask")
        return self.mint(
            uses=uses, expire_s=expire_s, new_session_s=new_session_s, setup=setup, field_mask=mask
        )


def _ahead(stamp: Any, wall: float, default: float, what: str) -> float:
    if stamp is None:
        return default
    if not isinstance(stamp, str):
        raise ValueError(f"{what} must be an RFC 3339 timestamp")
    try:
        seconds = datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - wall
    except ValueError:
        raise ValueError(f"{what} is not an RFC 3339 timestamp: {stamp!r}") from None
    if not 0 < seconds < MAX_AHEAD_S:
        raise ValueError(f"{what} must be in the future and less than 20 hours ahead")
    return seconds


class AuthTokenEndpoint:
    """``POST /v1alpha/auth_tokens`` over plain HTTP/1.1 on its own port: what
    ``edge-daemon mint-token --base-url`` talks to in tests and demos."""

    def __init__(self, book: TokenBook, api_key: str | None) -> None:
        self.book = book
        self.api_key = api_key
        self.port = 0
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, host: str = "127.0.0.1") -> None:
        self._server = await asyncio.start_server(self._client, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
            self._server = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._answer(reader)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, TimeoutError):
            status, body = 400, _error(400, "malformed HTTP request", "INVALID_ARGUMENT")
        payload = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} {'OK' if status == 200 else 'Error'}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _answer(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        async with asyncio.timeout(10):
            request_line = (await reader.readline()).decode("latin-1").split()
            headers: dict[str, str] = {}
            while (line := (await reader.readline()).decode("latin-1").strip()) != "":
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            if length > 1024 * 1024:
                return 400, _error(400, "request too large", "INVALID_ARGUMENT")
            raw = await reader.readexactly(length)
        if request_line[:2] != ["POST", "/v1alpha/auth_tokens"]:
            return 404, _error(404, "not found", "NOT_FOUND")
        key = headers.get("x-goog-api-key")
        if not key or (self.api_key is not None and key != self.api_key):
            return 400, _error(
                400, "API key not valid. Please pass a valid API key.", "INVALID_ARGUMENT"
            )
        try:
            name = self.book.mint_from_request(json.loads(raw or b"{}"))
        except ValueError as exc:
            return 400, _error(400, str(exc), "INVALID_ARGUMENT")
        log.info("minted an auth token")
        return 200, {"name": name}


def _error(code: int, message: str, status: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "status": status}}
