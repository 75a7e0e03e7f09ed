"""Ephemeral tokens over a device's life: which token the next connection
uses, and when to fetch a fresh one.

A token (Google's ephemeral-tokens guide; ``AuthToken`` in the SDK's types)
has a number of uses (default 1; resuming a session does not spend one), a
window in which a new session may start (``newSessionExpireTime``, default
60 s after minting) and an expiry (``expireTime``, default 30 minutes), after
which the service rejects the session's messages. A device that keeps one
token for life therefore fails at its first redial. Here a token is used
while it may still open the connection asked for, and otherwise
``gemini.token_command`` is run (argv split with shlex, never a shell) and
its stdout is the next token: one line, or the minted ``AuthToken`` as JSON
whose times then replace the configured ones.

Nothing here ever logs a token or puts one in an exception message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .session import Credentials

log = logging.getLogger(__name__)

# A token is not used this close to one of its deadlines: the connection,
# its setup and a first exchange must all fit before it.
MARGIN_S = 10.0
# What the command may print: a token is a few hundred bytes.
MAX_OUTPUT = 64 * 1024


class TokenError(Exception):
    """No usable token: the message says why, never what the token was."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry  # False: nothing will change until the config does


@dataclass(frozen=True)
class TokenLimits:
    uses: int = 1  # 0: unlimited
    new_session_s: float = 60.0
    expire_s: float = 1800.0


@dataclass
class Token:
    value: str = field(repr=False)
    uses_left: int | None  # None: unlimited
    new_session_until: float  # on the monotonic clock
    expires_at: float
    source: str = ""

    def usable(self, *, resuming: bool, now: float) -> str | None:
        """None if this token may open the connection; else why not."""
        if now >= self.expires_at - MARGIN_S:
            return "it has expired"
        if resuming:
            return None  # a resume spends no use and is not a new session
        if self.uses_left is not None and self.uses_left <= 0:
            return "its uses are spent"
        if now >= self.new_session_until - MARGIN_S:
            return "its window for new sessions has closed"
        return None


def parse_token_output(
    text: str, limits: TokenLimits, now: float, wall_now: float | None = None
) -> Token:
    """A token command's stdout: one line (the token), or the minted AuthToken
    as JSON (``name``, and optionally ``expireTime``, ``newSessionExpireTime``
    as RFC 3339, ``uses``), whose values win over ``limits``."""
    text = text.strip()
    if not text:
        raise TokenError("the token command printed nothing")
    wall_now = time.time() if wall_now is None else wall_now
    uses: int = limits.uses
    new_session_s, expire_s = limits.new_session_s, limits.expire_s
    if text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            raise TokenError("the token command printed JSON that does not parse") from None
        if not isinstance(body, Mapping) or not isinstance(body.get("name"), str):
            raise TokenError('the token command printed JSON without a "name"')
        value = body["name"]
        if isinstance(body.get("uses"), int):
            uses = body["uses"]
        expire_s = _seconds_until(body.get("expireTime"), wall_now, expire_s)
        new_session_s = _seconds_until(body.get("newSessionExpireTime"), wall_now, new_session_s)
    else:
        lines = text.splitlines()
        if len(lines) != 1:
            raise TokenError(f"the token command printed {len(lines)} lines, not one token")
        value = lines[0].strip()
    if not value.isascii() or not value.isprintable() or " " in value:
        raise TokenError("the token command printed something that is not a token")
    return Token(
        value,
        uses_left=None if uses == 0 else uses,
        new_session_until=now + min(new_session_s, expire_s),
        expires_at=now + expire_s,
        source="token command",
    )


def _seconds_until(stamp: object, wall_now: float, default: float) -> float:
    if not isinstance(stamp, str):
        return default
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp() - wall_now
    return default


class TokenSource:
    """Hands each connection a token it may use, fetching fresh ones with
    ``command`` as needed. With no command, the one token given (from
    $GEMINI_EPHEMERAL_TOKEN, a key file or the credential) lasts as long as
    its limits allow, and then there is nothing more to try."""

    def __init__(
        self,
        *,
        command: str = "",
        initial: str | None = None,
        limits: TokenLimits | None = None,
        timeout_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.command = command
        self.limits = limits or TokenLimits()
        self.timeout_s = timeout_s
        self._clock = clock
        self._env = env
        self.fetched = 0  # tokens the command has handed out
        self.failures = 0  # command runs that gave no token
        self.last_problem = ""
        self.current: Token | None = None
        if initial:
            now = clock()
            self.current = Token(
                initial,
                uses_left=None if self.limits.uses == 0 else self.limits.uses,
                new_session_until=now + self.limits.new_session_s,
                expires_at=now + self.limits.expire_s,
                source="configured token",
            )

    async def credentials(self, *, resuming: bool) -> Credentials:
        """A token for the next connection (the command runs if need be)."""
        now = self._clock()
        token = self.current
        why = "there is none yet" if token is None else token.usable(resuming=resuming, now=now)
        if why is None and token is not None:
            return Credentials(token.value, "ephemeral_token")
        if not self.command:
            raise TokenError(
                f"the ephemeral token cannot be used ({why}) and gemini.token_command is not "
                "set to fetch another: set it, or give a fresh token and restart",
                retry=False,
            )
        log.info(
            "fetching a fresh token: the current one cannot be used (%s)",
            why,
            extra={"EDGE_EVENT": "token_fetch"},
        )
        token = await self._run_command()
        self.current = token
        return Credentials(token.value, "ephemeral_token")

    def opened(self, *, resuming: bool) -> None:
        """A connection was set up with the current token: a new session spent a use."""
        token = self.current
        if token is not None and not resuming and token.uses_left is not None:
            token.uses_left -= 1

    def rejected(self) -> None:
        """The service refused the current token: never offer it again."""
        self.current = None

    def status(self) -> dict[str, object]:
        token, now = self.current, self._clock()
        return {
            "command": bool(self.command),
            "fetched": self.fetched,
            "failures": self.failures,
            "last_problem": self.last_problem,
            "uses_left": None if token is None else token.uses_left,
            "expires_in_s": None if token is None else round(token.expires_at - now, 1),
            "new_sessions_for_s": None
            if token is None
            else round(max(0.0, token.new_session_until - now), 1),
        }

    async def _run_command(self) -> Token:
        try:
            argv = shlex.split(self.command)
        except ValueError as exc:
            raise TokenError(f"gemini.token_command does not parse: {exc}", retry=False) from None
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=dict(self._env) if self._env is not None else _command_env(),
                start_new_session=True,  # a timeout kills the whole group
            )
        except OSError as exc:
            problem = f"cannot run the token command {argv[0]!r}: {exc.strerror or exc}"
            raise self._failure(problem) from None
        try:
            async with asyncio.timeout(self.timeout_s):
                out, err = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            problem = f"the token command took longer than {self.timeout_s:g} s"
            raise self._failure(problem) from None
        if proc.returncode != 0:
            # Its stderr may help, but it is not ours to trust: one line, short,
            # and never anything that could be a token.
            hint = _first_line(err)
            raise self._failure(
                f"the token command exited with status {proc.returncode}"
                + (f": {hint}" if hint else "")
            )
        if len(out) > MAX_OUTPUT:
            raise self._failure(f"the token command printed more than {MAX_OUTPUT} bytes")
        try:
            token = parse_token_output(out.decode("utf-8", "replace"), self.limits, self._clock())
        except TokenError as exc:
            raise self._failure(str(exc)) from None
        self.fetched += 1
        self.last_problem = ""
        log.info("fresh token from the token command", extra={"EDGE_EVENT": "token_fetched"})
        return token

    def _failure(self, problem: str) -> TokenError:
        self.failures += 1
        self.last_problem = problem
        return TokenError(problem)


def _first_line(raw: bytes) -> str:
    line = raw.decode("utf-8", "replace").strip().splitlines()[:1]
    text = line[0][:160] if line else ""
    # A stderr line that quotes a token or key is dropped, not shown.
    return "" if "auth_tokens/" in text or "AIza" in text else text


def _command_env() -> dict[str, str]:
    """The daemon's environment, minus the key: a token command that needs
    the long-lived key reads it from its own place, never from us."""
    return {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY",)}
