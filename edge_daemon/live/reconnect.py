"""Keeping a Live session up: backoff with full jitter, the close-code policy,
the resumption handle, tool results owed across a drop, and the loop that
redials forever.

The policy (PROTOCOL.md): 1007 and most 1008s are configuration errors that a
retry only repeats, so back off long and say what to fix; 1008 "session not
found" means the resumption handle went stale, so drop it and start fresh;
everything else (1000 at the 10-minute limit, 1006 drops, 1011) is transient.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from . import messages as m
from .handle_store import HandleStore
from .session import (
    Credentials,
    LiveSession,
    SessionClosed,
    SessionError,
    SetupTimeout,
    current_session_id,
    new_session_id,
)
from .tokens import TokenError, TokenSource

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

    def next_delay_floor(self) -> float:
        """The doubling ceiling, jittered down by at most a fifth: for waits
        that must really be long (quota), yet not the same on every device."""
        ceiling = min(self.max_s, self.initial_s * (2.0**self.attempt))
        self.attempt += 1
        return ceiling * self._rng.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def _refused_handshake(exc: Exception) -> bool:
    text = str(exc)
    return "HTTP 401" in text or "HTTP 403" in text


class CloseAction(enum.Enum):
    RESUME = "resume"  # transient (a drop, the 10-minute limit): redial with the handle
    SERVER = "server"  # the service failed (1011 internal, unavailable): backoff, resume
    FRESH = "fresh"  # the handle is stale: drop it, redial at once
    TOKEN = "token"  # the ephemeral token was refused: fetch another, redial
    QUOTA = "quota"  # quota or rate limit exhausted: a long, growing wait
    CONFIG = "config"  # retrying repeats the same mistake: back off long


@dataclass(frozen=True)
class CloseVerdict:
    action: CloseAction
    advice: str


_QUOTA_WORDS = ("quota", "resource_exhausted", "resource exhausted", "rate limit", "exceeded")
_TOKEN_WORDS = ("token", "unauthenticated", "credential", "expired")


def classify_close(code: int | None, reason: str, *, token_auth: bool = False) -> CloseVerdict:
    """What a close means and what to do about it (PROTOCOL.md's table, with
    quota and tokens told apart from other 1011s and 1008s)."""
    text = reason.lower()
    if code == 1008 and "session not found" in text:
        return CloseVerdict(CloseAction.FRESH, "resumption handle expired; starting a new session")
    if code == 1008 and "function call" in text:
        # Mic audio reached the server while a blocking tool call was open: our
        # timing, not the configuration, and the next session starts clean.
        return CloseVerdict(CloseAction.RESUME, "closed for audio during a tool call; reconnecting")
    deadline = "deadline" in text  # "Deadline expired/exceeded": a slow server, not us
    if code in (1008, 1011) and not deadline and any(w in text for w in _QUOTA_WORDS):
        return CloseVerdict(
            CloseAction.QUOTA,
            "the API quota or rate limit is exhausted: waiting before trying again "
            "(see the project's quota page in Google AI Studio)",
        )
    if token_auth and not deadline and any(w in text for w in _TOKEN_WORDS):
        return CloseVerdict(
            CloseAction.TOKEN,
            "the ephemeral token was refused (spent or expired); fetching another",
        )
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
    if code == 1011:
        return CloseVerdict(CloseAction.SERVER, "a server-side error (1011); reconnecting")
    return CloseVerdict(CloseAction.RESUME, "transient; reconnecting")


class Resumption:
    """The last non-empty handle: the server sends empty ones mid-turn.

    ``seq`` numbers the handles kept, so "was this handle issued after that
    event" is a comparison: see ToolOutbox. With a ``store``, the handle also
    outlives the process (see handle_store.py).
    """

    def __init__(self, store: HandleStore | None = None) -> None:
        self.handle: str | None = None
        self.updated_at: float | None = None
        self.seq = 0
        self.resumes = 0
        self.store = store
        self.restored = False
        saved = store.load() if store is not None else None
        if saved is not None:
            self.handle, age = saved
            self.updated_at = time.monotonic() - age
            self.seq = 1
            self.restored = True
            log.info(
                "resuming the conversation saved %.0f s ago",
                age,
                extra={"EDGE_EVENT": "handle_restored"},
            )

    def update(self, event: m.ResumptionUpdate) -> bool:
        """Keep the handle if it is one; True if it was."""
        if not (event.handle and event.resumable):
            return False
        self.handle = event.handle
        self.updated_at = time.monotonic()
        self.seq += 1
        if self.store is not None:
            self.store.save(event.handle)
        return True

    def drop(self) -> None:
        self.handle = None
        self.updated_at = None
        if self.store is not None:
            self.store.clear()

    @property
    def age_s(self) -> float | None:
        return None if self.updated_at is None else time.monotonic() - self.updated_at


# --------------------------------------------------------------------------- tool results


@dataclass(frozen=True)
class OwedResult:
    """A tool result not yet delivered, and what the server knew when it asked."""

    result: m.FunctionResult
    session_id: str  # the connection the call came on
    seq: int  # Resumption.seq when the call came: handles numbered above it know the call


@dataclass
class Delivery:
    """What to do with the owed results on one connection."""

    responses: list[OwedResult] = field(default_factory=list)  # as a toolResponse
    notes: list[OwedResult] = field(default_factory=list)  # as text: the server forgot the call
    dropped: list[OwedResult] = field(default_factory=list)  # a new session: nobody is waiting

    def __bool__(self) -> bool:
        return bool(self.responses or self.notes or self.dropped)


class ToolOutbox:
    """Tool results owed to the server, keyed by call id, each handed out once.

    A call can outlive its connection: the relay switched, but the socket
    dropped before the answer went out. Where the answer may go then depends on
    what the next connection remembers:

    - the same connection, or one resumed from a handle issued after the call
      (the server's saved state includes the open call): a toolResponse;
    - one resumed from an older handle: the saved state predates the call, and
      the live API does not act on a response to a call it never issued on that
      state (pipecat #5497; the fake flags it), so the outcome goes as a short
      text turn, and the model can still tell the user what happened;
    - a new session: the conversation is gone and nobody waits for it: dropped,
      with a log record.

    ``take`` empties the box, so nothing goes out twice; ``put_back`` is for a
    send that failed before the frame left (the connection was already closed).
    """

    def __init__(self, limit: int = 64) -> None:
        self.limit = limit
        self._owed: OrderedDict[str, OwedResult] = OrderedDict()
        self.overflowed = 0

    def __len__(self) -> int:
        return len(self._owed)

    def __contains__(self, call_id: object) -> bool:
        return call_id in self._owed

    def add(self, result: m.FunctionResult, session_id: str, seq: int) -> None:
        self._owed[result.id] = OwedResult(result, session_id, seq)
        while len(self._owed) > self.limit:
            self._owed.popitem(last=False)  # bounded: the oldest is the least likely awaited
            self.overflowed += 1

    def cancel(self, call_id: str) -> bool:
        """The server withdrew the call: whatever we owed for it is void."""
        return self._owed.pop(call_id, None) is not None

    def take(self, session_id: str, resumed_seq: int | None) -> Delivery:
        """Everything owed, sorted for the connection ``session_id`` (which
        resumed from the handle numbered ``resumed_seq``, None if it is new)."""
        delivery = Delivery()
        for owed in self._owed.values():
            if owed.session_id == session_id:
                delivery.responses.append(owed)
            elif resumed_seq is None:
                delivery.dropped.append(owed)
            elif resumed_seq > owed.seq:
                delivery.responses.append(owed)
            else:
                delivery.notes.append(owed)
        self._owed.clear()
        return delivery

    def put_back(self, owed: Iterable[OwedResult]) -> None:
        for item in owed:
            self._owed.setdefault(item.result.id, item)

    @staticmethod
    def note_text(owed: Iterable[OwedResult]) -> str:
        """A turn telling the model how calls it no longer remembers ended."""
        parts = []
        for item in owed:
            r = item.result
            if r.error is not None:
                outcome = f"failed: {r.error}"
            else:
                outcome = f"returned {json.dumps(dict(r.output or {}), sort_keys=True)}"
            parts.append(f"{r.name} (call {r.id}) {outcome}")
        return (
            "[Device note, not the user speaking: the connection dropped while you "
            "were calling functions; they have finished. "
            + "; ".join(parts)
            + ". Tell the user the outcome in one short sentence.]"
        )


# --------------------------------------------------------------------------- the link


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
    # One send may wait this long for a peer that stopped reading; then the
    # connection counts as dead. None: wait for the keepalive to notice.
    send_timeout_s: float | None = 20.0
    # Ephemeral tokens that renew: used instead of ``credentials`` when set.
    tokens: TokenSource | None = None
    # Quota exhausted: the first wait, doubling up to config_error_backoff_s.
    quota_backoff_s: float = 60.0
    # Where the resumption handle outlives the process (None: it does not).
    handle_store: HandleStore | None = None


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
        self._rng = rng or random.Random()
        self.backoff = Backoff(settings.backoff_initial_s, settings.backoff_max_s, self._rng)
        self.quota_backoff = Backoff(
            settings.quota_backoff_s,
            max(settings.quota_backoff_s, settings.config_error_backoff_s),
            self._rng,
        )
        self.resumption = Resumption(settings.handle_store)
        self.session: LiveSession | None = None
        self.state = LinkState.CONNECTING
        self.attempts = 0  # connections tried
        self.connects = 0  # connections set up
        self.last_error = ""
        # What kind of trouble the link is in, for status and doctor: "" (none),
        # "network", "server", "quota", "token", "config", "stale_handle", "stalled".
        self.problem = ""
        self.last_close_code: int | None = None
        self.last_delay_s: float | None = None  # the wait before the latest redial
        self._end_code: int | None = None  # the close code that ended this attempt, if any
        self._stopping = False
        self._stop_event = asyncio.Event()
        self._closing: asyncio.Task[None] | None = None

    def _set(self, state: LinkState, detail: str = "") -> None:
        self.state = state
        self._on_state(state, detail)

    async def run(self) -> None:
        try:
            await self._redial_forever()
        finally:
            if self.resumption.store is not None:
                self.resumption.store.flush()

    async def _redial_forever(self) -> None:
        while not self._stopping:
            delay = await self._one_session()
            if self._stopping:
                break
            self.last_delay_s = delay
            # One record per redial, whatever the cause, so that
            # `journalctl EDGE_EVENT=reconnect` lists every one of them.
            log.info(
                "reconnecting in %.2f s: %s",
                delay,
                self.last_error or "link lost",
                extra={
                    "EDGE_EVENT": "reconnect",
                    "EDGE_DELAY_S": f"{delay:.3f}",
                    "EDGE_CLOSE_CODE": self._end_code,
                    "EDGE_LINK": self.state.value,
                },
            )
            if delay > 0:
                # A stop must not wait out a five-minute config backoff.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop_event.wait(), delay)
        self._set(LinkState.CLOSED, "stopped")

    async def _open(
        self, handle: str | None, session_id: str, credentials: Credentials | None
    ) -> LiveSession | None:
        """Open a session, or None if the link was stopped meanwhile."""
        s = self.settings
        opener = asyncio.create_task(
            LiveSession.open(
                s.url,
                self._build_setup(handle),
                credentials,
                connect_timeout_s=s.connect_timeout_s,
                setup_timeout_s=s.setup_timeout_s,
                send_timeout_s=s.send_timeout_s,
                session_id=session_id,
            ),
            name="live-open",
        )
        stopped = asyncio.create_task(self._stop_event.wait(), name="link-stop")
        try:
            await asyncio.wait({opener, stopped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopped.cancel()
            if not opener.done():
                opener.cancel()
                await asyncio.wait({opener})
        if opener.cancelled():
            return None
        session = opener.result()  # raises what open raised
        if self._stopping:
            await session.close(1000)
            return None
        return session

    async def _one_session(self) -> float:
        """Open, serve and end one session; return how long to wait before the next."""
        s = self.settings
        handle = self.resumption.handle
        resumed_seq = self.resumption.seq if handle else None
        session_id = new_session_id()
        # Everything logged about this attempt, here and in the tasks the
        # handler starts, carries its id (EDGE_SESSION).
        current_session_id.set(session_id)
        self.attempts += 1
        self._end_code = None
        tokens = s.tokens
        try:
            credentials = (
                await tokens.credentials(resuming=bool(handle))
                if tokens is not None
                else s.credentials
            )
        except TokenError as exc:
            return self._token_failed(exc)
        try:
            session = await self._open(handle, session_id, credentials)
        except SessionClosed as exc:
            return self._after_close(exc.code, exc.reason, during_setup=True)
        except (SetupTimeout, SessionError) as exc:
            self.last_error = str(exc)
            self.problem = "network"
            if tokens is not None and _refused_handshake(exc):
                # HTTP 401/403 at the handshake: the token, not the network.
                tokens.rejected()
                self.problem = "token"
            log.warning("session did not open: %s", exc, extra={"EDGE_EVENT": "connect_failed"})
            self._set(LinkState.RECONNECTING, str(exc))
            return self.backoff.next_delay()
        except Exception as exc:
            # Whatever it was, giving up is worse: log it whole and redial.
            self.last_error = f"unexpected error opening the session: {exc!r}"
            log.exception("session did not open", extra={"EDGE_EVENT": "connect_failed"})
            self._set(LinkState.RECONNECTING, self.last_error)
            return self.backoff.next_delay()
        if session is None:
            return 0.0
        session.resumed_seq = resumed_seq
        if tokens is not None:
            tokens.opened(resuming=bool(handle))
        self.session = session
        self.problem = ""
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
        failed = False
        code: int | None = None
        reason = ""
        try:
            end = await self._handler(session)
        except SessionClosed as exc:
            code, reason = exc.code, exc.reason
        except Exception as exc:
            failed = True
            self.last_error = f"session handler failed: {exc!r}"
            log.exception("session handler failed", extra={"EDGE_EVENT": "handler_failed"})
        finally:
            # The old socket is closed before any resume: a resume while the
            # old one is still open has been rejected with 1011.
            if session.is_open:
                if end is SessionEnd.STALLED or failed:
                    await session.abort()
                else:
                    await session.close(1000)
            self.session = None
        if session.open_for_s >= s.healthy_after_s:
            self.backoff.reset()
            self.quota_backoff.reset()
        if end is SessionEnd.STOP or self._stopping:
            self._stopping = True
            return 0.0
        if end is SessionEnd.GO_AWAY:
            self.backoff.reset()
            self.last_error = "server goAway: switching connection"
            log.info("switching connection after goAway", extra={"EDGE_EVENT": "go_away_switch"})
            self._set(LinkState.RECONNECTING, "goAway")
            return 0.0
        if end is SessionEnd.STALLED or failed:
            if not failed:
                self.last_error = "server stopped answering"
                self.problem = "stalled"
            self._set(LinkState.RECONNECTING, self.last_error)
            return self.backoff.next_delay()
        return self._after_close(code, reason, during_setup=False)

    def _token_failed(self, exc: TokenError) -> float:
        self.last_error = str(exc)
        self.problem = "token"
        fields = {"EDGE_EVENT": "token_failed"}
        if not exc.retry:
            delay = self.settings.config_error_backoff_s * self._rng.uniform(0.8, 1.0)
            log.error("no usable token: %s; retrying in %.0f s", exc, delay, extra=fields)
            self._set(LinkState.CONFIG_ERROR, str(exc))
            return delay
        delay = self.backoff.next_delay()
        log.warning("no token for the next connection: %s", exc, extra=fields)
        self._set(LinkState.RECONNECTING, str(exc))
        return delay

    def _after_close(self, code: int | None, reason: str, *, during_setup: bool) -> float:
        self.last_close_code = self._end_code = code
        tokens = self.settings.tokens
        verdict = classify_close(code, reason, token_auth=tokens is not None)
        fields = {"EDGE_EVENT": "session_closed", "EDGE_CLOSE_CODE": code}
        when = " during setup" if during_setup else ""
        self.problem = (
            verdict.action.value if verdict.action is not CloseAction.RESUME else "network"
        )
        if verdict.action is CloseAction.QUOTA:
            # Not jittered to zero: every retry costs quota, and a fleet must spread.
            delay = self.quota_backoff.next_delay_floor()
            self.last_error = f"closed {code} {reason!r}: {verdict.advice}"
            log.error("%s%s; retrying in %.0f s", self.last_error, when, delay, extra=fields)
            self._set(LinkState.RECONNECTING, verdict.advice)
            return delay
        if verdict.action is CloseAction.TOKEN and tokens is not None:
            tokens.rejected()
            self.last_error = f"closed {code} {reason!r}: {verdict.advice}"
            log.warning("%s%s", self.last_error, when, extra=fields)
            self._set(LinkState.RECONNECTING, verdict.advice)
            return self.backoff.next_delay()
        if verdict.action is CloseAction.CONFIG:
            delay = self.settings.config_error_backoff_s * self._rng.uniform(0.8, 1.0)
            self.last_error = f"closed {code} {reason!r}: {verdict.advice}"
            log.error(
                "session refused%s: %s; retrying in %.0f s",
                when,
                self.last_error,
                delay,
                extra=fields,
            )
            self._set(LinkState.CONFIG_ERROR, verdict.advice)
            # Long and jittered: hammering replays the same bad request.
            return delay
        if verdict.action is CloseAction.FRESH and self.resumption.handle is not None:
            self.problem = "stale_handle"
            self.resumption.drop()
            self.last_error = verdict.advice
            log.warning("closed %s %r%s: %s", code, reason, when, verdict.advice, extra=fields)
            self._set(LinkState.RECONNECTING, verdict.advice)
            return 0.0
        self.last_error = f"closed {code} {reason!r}" if code is not None else "closed"
        if verdict.action is CloseAction.SERVER:
            self.last_error += f": {verdict.advice}"
        log.warning("session ended%s: %s", when, self.last_error, extra=fields)
        self._set(LinkState.RECONNECTING, self.last_error)
        return self.backoff.next_delay()

    def stop(self) -> None:
        """End the link: no more redials, and an open session is closed with 1000
        (its handler then sees SessionClosed, or returns STOP first)."""
        self._stopping = True
        self._stop_event.set()
        session = self.session
        if session is not None and session.is_open and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(
                session.close(1000), name="link-close"
            )
