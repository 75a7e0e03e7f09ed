"""gemini.token_command: run it once, as the daemon would, and say whether a
usable token came back (its value never shown)."""

from __future__ import annotations

from ..config import Config
from .report import Check, fail, ok, skip


async def check_token_command(cfg: Config) -> Check:
    from ..live.tokens import TokenError, TokenLimits, TokenSource

    name = "token"
    g = cfg.gemini
    if g.auth != "ephemeral_token":
        return skip(name, "gemini.auth is api_key: no tokens to fetch")
    if not g.token_command:
        return skip(
            name,
            "no gemini.token_command: the one token given is used until spent or expired",
        )
    source = TokenSource(
        command=g.token_command,
        limits=TokenLimits(g.token_uses, g.token_new_session_s, g.token_expire_s),
        timeout_s=g.token_timeout_s,
    )
    try:
        await source.credentials(resuming=False)
    except TokenError as exc:
        return fail(
            name,
            f"gemini.token_command gave no token: {exc}",
            "run the command by hand as the service user (sudo -u edge-daemon ...), and make "
            "it print only a token (`edge-daemon mint-token` on the machine with the key)",
        )
    state = source.status()
    uses = state["uses_left"]
    return ok(
        name,
        "the token command handed out a token (value not shown): "
        f"{'any number of' if uses is None else uses} new session(s), "
        f"expires in {float(state['expires_in_s'] or 0) / 60:.0f} min",
    )
