"""The running daemon's own view of its link, from its control socket: what
kind of trouble it is in (quota, a refused token or key, the server), in
words, and what to do."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .report import Check, fail, ok, skip, warn

Ask = Callable[[Mapping[str, Any]], Mapping[str, Any]]

_ADVICE = {
    "quota": (
        "the API quota or rate limit is exhausted",
        "check the project's quota and billing in Google AI Studio; the daemon waits and retries",
    ),
    "token": (
        "the ephemeral token was refused or none could be fetched",
        "check gemini.token_command (see the token check)",
    ),
    "config": (
        "the server refuses the key, model or setup",
        "see the live check (edge-daemon doctor --live) and the journal for the reason",
    ),
    "server": ("the service answered with server errors (1011)", "transient; it retries"),
    "network": ("the connection dropped", "transient; it retries with backoff"),
    "stalled": ("the server stopped answering", "transient; it reconnects"),
    "stale_handle": ("the resumption handle expired", "nothing: it starts a new session"),
}


def check_link(ask: Ask | None) -> Check:
    name = "link"
    if ask is None:
        return skip(name, "no running daemon to ask")
    try:
        status = ask({"cmd": "status"})
    except (OSError, ValueError) as exc:
        return skip(name, f"the running daemon did not answer its control socket: {exc}")
    conn = status.get("connection") or {}
    problem = str(conn.get("problem") or "")
    state = conn.get("state")
    if state == "connected" and not problem:
        return ok(name, f"connected ({conn.get('connects', 0)} connection(s) so far)")
    words, fix = _ADVICE.get(problem, ("not connected", "see the journal"))
    detail = f"{state}: {words}"
    if conn.get("last_error"):
        detail += f" ({conn['last_error']})"
    if problem in ("quota", "token", "config"):
        return fail(name, detail, fix)
    return warn(name, detail, fix)
