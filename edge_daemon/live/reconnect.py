"""Keeping a Live session up: backoff with full jitter, the close-code policy,
the resumption handle, and the loop that redials forever.

The policy (PROTOCOL.md): 1007 and most 1008s are configuration errors that a
retry only repeats, so back off long and say what to fix; 1008 "session not
found" means the resumption handle went stale, so drop it and start fresh;
everything else (1000 at the 10-minute limit, 1006 drops, 1011) is transient.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from . import messages as m
from .session import Credentials, LiveSession, SessionClosed, SessionError, SetupTimeout

log = logging.getLogger(__name__)


class Backoff:
    """Exponential backoff with full jitter: a herd of devices that lost the
    same Wi-Fi must not all redial on the same tick."""

    def __init__(self, initial_s: float, max_s: float, rng: random.Random | None = None) -> None:
        self.initial_s = initial_s
        self.max_s = max_s
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = min(self.max_s, self.initial_s * (2.0**self.attempt))
        self.attempt += 1
        return self._rng.uniform(0.0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


class CloseAction(enum.Enum):
    RESUME = "resume"  # transient: redial with the handle, short backoff
    FRESH = "fresh"  # the handle is stale: drop it, redial at once
    CONFIG = "config"  # retrying repeats the same mistake: back off long


@dataclass(frozen=True)
class CloseVerdict:
    action: CloseAction
    advice: str


def classify_close(code: int | None, reason: str) -> CloseVerdict:
    text = reason.lower()
    if code == 1008 and "session not found" in text:
        return CloseVerdict(CloseAction.FRESH, "resumption handle expired; starting a new session")
    if code == 1008:
        if "api key" in text or "unregistered" in text or "permission" in text:
            advice = (
                "the API key was rejected: check $GEMINI_API_KEY or the gemini-api-key credential"
            )
        elif "model" in text or "not found" in text or "not supported" in text:
            advice = "the model was rejected: check gemini.model in the config"
        else:
            advice = "the server refused the session (1008): check the key and gemini.model"
        return CloseVerdict(CloseAction.CONFIG, advice)
    if code == 1007:
        if "location" in text or "region" in text:
            advice = "the API is not available from this region"
        else:
            advice = "the server rejected the setup as invalid (1007): check gemini.* in the config"
        return CloseVerdict(CloseAction.CONFIG, advice)
    return CloseVerdict(CloseAction.RESUME, "transient; reconnecting")


class Resumption:
    """The last non-empty handle: the server sends empty ones mid-turn."""

    def __init__(self) -> None:
        self.handle: str | None = None
        self.updated_at: float | None = None
        self.resumes = 0

    def update(self, event: m.ResumptionUpdate) -> None:
        if event.handle and event.resumable:
            self.handle = event.handle
            self.updated_at = time.monotonic()

    def drop(self) -> None:
        self.handle = None
        self.updated_at = None

    @property
    def age_s(self) -> float | None:
        return None if self.updated_at is None else time.monotonic() - self.updated_at


class LinkState(enum.Enum):
    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CONFIG_ERROR = "config_error"
    CLOSED = "closed"


@dataclass
class LinkSettings:
    url: str
    credentials: Credentials | None
    connect_timeout_s: float = 10.0
    setup_timeout_s: float = 10.0
    backoff_initial_s: float = 0.25
    backoff_max_s: float = 30.0
    config_error_backoff_s: float = 300.0
    healthy_after_s: float = 30.0


class SessionEnd(enum.Enum):
    """Why a session handler returned without the socket closing on its own."""

    GO_AWAY = "go_away"  # switch to a fresh connection now, with the handle
    STALLED = "stalled"  # the server stopped answering
    STOP = "stop"  # the daemon is shutting down


SessionHandler = Callable[[LiveSession], Awaitable[SessionEnd]]
SetupBuilder = Callable[[str | None], str]
StateListener = Callable[[LinkState, str], None]


class Link:
    """Redials forever. Each open session goes to ``handler``, which reads its
    events and returns (or raises SessionClosed) when the session is over."""

    def __init__(
        self,
        settings: LinkSettings,
        build_setup: SetupBuilder,
        handler: SessionHandler,
        on_state: StateListener,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._build_setup = build_setup
        self._handler = handler
        self._on_state = on_state
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, rng)
        self.resumption = Resumption()
        self.session: LiveSession | None = None
        self.state = LinkState.CONNECTING
        self.connects = 0
        self.last_error = ""
        self.last_close_code: int | None = None
        self._stopping = False

    def _set(self, state: LinkState, detail: str = "") -> None:
        self.state = state
        self._on_state(state, detail)

    async def run(self) -> None:
        while not self._stopping:
            delay = await self._one_session()
            if self._stopping:
                break
            if delay > 0:
                log.info(
                    "reconnecting in %.2f s",
                    delay,
                    extra={"EDGE_EVENT": "backoff", "EDGE_DELAY_S": f"{delay:.3f}"},
                )
                await asyncio.sleep(delay)
        self._set(LinkState.CLOSED, "stopped")

    async def _one_session(self) -> float:
        """Open, serve and end one session; return how long to wait before the next."""
        s = self.settings
        handle = self.resumption.handle
        try:
            session = await LiveSession.open(
                s.url,
                self._build_setup(handle),
                s.credentials,
                connect_timeout_s=s.connect_timeout_s,
                setup_timeout_s=s.setup_timeout_s,
            )
        except SessionClosed as exc:
            return self._after_close(exc.code, exc.reason, during_setup=True, healthy=False)
        except (SetupTimeout, SessionError) as exc:
            self.last_error = str(exc)
            log.warning("session did not open: %s", exc, extra={"EDGE_EVENT": "connect_failed"})
            self._set(LinkState.RECONNECTING, str(exc))
            return self.backoff.next_delay()
        self.session = session
        self.connects += 1
        if handle:
            self.resumption.resumes += 1
        log.info(
            "session open%s",
            " (resumed)" if handle else "",
            extra={"EDGE_EVENT": "session_open", "EDGE_RESUMED": int(bool(handle))},
        )
        self._set(LinkState.CONNECTED, "resumed" if handle else "new")
        end: SessionEnd | None = None
        code: int | None = None
        reason = ""
        try:
            end = await self._handler(session)
        except SessionClosed as exc:
            code, reason = exc.code, exc.reason
        finally:
            # The old socket is closed before any resume: a resume while the
            # old one is still open has been rejected with 1011.
            if session.is_open:
                if end is SessionEnd.STALLED:
                    await session.abort()
                else:
                    await session.close(1000)
            self.session = None
        healthy = session.open_for_s >= s.healthy_after_s
        if end is SessionEnd.STOP:
            self._stopping = True
            return 0.0
        if end is SessionEnd.GO_AWAY:
            self.backoff.reset()
            log.info("switching connection after goAway", extra={"EDGE_EVENT": "go_away_switch"})
            self._set(LinkState.RECONNECTING, "goAway")
            return 0.0
        if end is SessionEnd.STALLED:
            self.last_error = "server stopped answering"
            self._set(LinkState.RECONNECTING, self.last_error)
            return self.backoff.next_delay()
        return self._after_close(code, reason, during_setup=False, healthy=healthy)

    def _after_close(
        self, code: int | None, reason: str, *, during_setup: bool, healthy: bool
    ) -> float:
        self.last_close_code = code
        verdict = classify_close(code, reason)
        fields = {
            "EDGE_EVENT": "session_closed",
            "EDGE_CLOSE_CODE": code if code is not None else "",
        }
        if healthy:
            self.backoff.reset()
        if verdict.action is CloseAction.CONFIG:
            self.last_error = f"closed {code} {reason!r}: {verdict.advice}"
            log.error("session refused: %s", self.last_error, extra=fields)
            self._set(LinkState.CONFIG_ERROR, verdict.advice)
            # Long and jittered: hammering replays the same bad request.
            return self.settings.config_error_backoff_s * random.uniform(0.8, 1.0)
        if verdict.action is CloseAction.FRESH and self.resumption.handle is not None:
            self.resumption.drop()
            self.last_error = verdict.advice
            log.warning("closed %s %r: %s", code, reason, verdict.advice, extra=fields)
            self._set(LinkState.RECONNECTING, verdict.advice)
            return 0.0
        if verdict.action is CloseAction.FRESH:
            verdict = CloseVerdict(CloseAction.RESUME, "session not found without a handle")
        self.last_error = f"closed {code} {reason!r}" if code is not None else "closed"
        log.warning("session ended: %s", self.last_error, extra=fields)
        self._set(LinkState.RECONNECTING, self.last_error)
        return self.backoff.next_delay()

    def stop(self) -> None:
        self._stopping = True
