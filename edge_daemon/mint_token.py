"""``edge-daemon mint-token``: mint an ephemeral Live API token from an API key.

Run it where the long-lived key lives (a home server, a cron job, an SSH
``ForceCommand``), and let devices fetch tokens with ``gemini.token_command``:
a device then never holds the key. It POSTs to the v1alpha ``auth_tokens``
endpoint, as the google-genai SDK's ``client.auth_tokens.create`` does, and
prints only the token (or, with ``--json``, the minted token with its limits,
which ``gemini.token_command`` also understands).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from typing import Any

from . import exits
from .config import API_KEY_ENV, Config, ConfigError, load_config, resolve_secret

DEFAULT_BASE = "https://generativelanguage.googleapis.com"
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
# The service's bound for both times: less than 20 hours ahead.
MAX_AHEAD_S = 20 * 3600 - 60


class MintError(Exception):
    def __init__(self, message: str, status: int = exits.FAILED) -> None:
        super().__init__(message)
        self.status = status


def duration(text: str) -> float:
    """ "90", "90s", "30m", "2h" -> seconds (argparse type)."""
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 30m or 2h")
    seconds = float(match[1]) * _UNIT_S[match[2]]
    if not 0 < seconds <= MAX_AHEAD_S:
        raise argparse.ArgumentTypeError(f"{text!r}: must be more than 0 and under 20 hours")
    return seconds


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--uses", type=int, default=1, help="sessions the token may open (0 = any)")
    p.add_argument(
        "--expire",
        type=duration,
        default=30 * 60,
        metavar="DURATION",
        help="the token ends this long from now (default 30m; under 20h)",
    )
    p.add_argument(
        "--new-session",
        type=duration,
        default=60,
        metavar="DURATION",
        help="new sessions may start only this long from now (default 60s)",
    )
    p.add_argument(
        "--lock-setup",
        action="store_true",
        help="lock the config's model, voice, instructions and generation settings into "
        "the token, so a device that holds it cannot change them",
    )
    p.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="file holding the API key ('-' reads it from stdin); default: $GEMINI_API_KEY, "
        "then the config's gemini.api_key_file or the systemd credential",
    )
    p.add_argument("--json", action="store_true", help="print the minted token as JSON")
    p.add_argument("--base-url", default=DEFAULT_BASE, help=argparse.SUPPRESS)


def request_body(args: argparse.Namespace, cfg: Config, now: datetime) -> dict[str, Any]:
    if args.uses < 0:
        raise MintError("--uses must be 0 (any number) or more", exits.USAGE)
    if args.new_session > args.expire:
        raise MintError("--new-session cannot be later than --expire", exits.USAGE)
    body: dict[str, Any] = {
        "uses": args.uses,
        "expireTime": _rfc3339(now + timedelta(seconds=args.expire)),
        "newSessionExpireTime": _rfc3339(now + timedelta(seconds=args.new_session)),
    }
    if args.lock_setup:
        setup = _lockable_setup(cfg)
        body["bidiGenerateContentSetup"] = setup
        # Lock the fields set here, not every field: the device still sends
        # its own resumption handle and tool declarations.
        body["fieldMask"] = ",".join(_field_masks(setup))
    return body


def _lockable_setup(cfg: Config) -> dict[str, Any]:
    from .live import messages as m

    g = cfg.gemini
    setup = json.loads(
        m.build_setup(
            m.SetupOptions(
                model=g.model,
                voice=g.voice,
                language=g.language,
                system_instruction=g.system_instruction,
                transcribe_input=False,
                transcribe_output=False,
                resumption=False,
                context_window_compression=False,
                thinking_budget=g.thinking_budget,
                thinking_level=g.thinking_level,
                proactive_audio=g.proactive_audio,
                affective_dialog=g.affective_dialog,
            )
        )
    )["setup"]
    setup.pop("realtimeInputConfig", None)  # push-to-talk or hands-free is the device's choice
    return setup


def _field_masks(setup: dict[str, Any]) -> list[str]:
    # As the SDK's tokens._get_field_masks: one level into each table.
    masks: list[str] = []
    for key, value in setup.items():
        if isinstance(value, dict) and value:
            masks += [f"{key}.{inner}" for inner in value]
        else:
            masks.append(key)
    return masks


def _rfc3339(when: datetime) -> str:
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _api_key(args: argparse.Namespace, cfg: Config) -> str:
    if args.api_key_file == "-":
        key = sys.stdin.readline().strip()
    elif args.api_key_file:
        try:
            with open(args.api_key_file, encoding="utf-8") as f:
                key = f.read().strip()
        except OSError as exc:
            raise MintError(
                f"cannot read {args.api_key_file}: {exc.strerror}", exits.CONFIG
            ) from None
    else:
        # The long-lived key, wherever the daemon would find one.
        key_cfg = dataclasses.replace(cfg, gemini=dataclasses.replace(cfg.gemini, auth="api_key"))
        try:
            secret = resolve_secret(key_cfg)
        except ConfigError as exc:
            raise MintError(str(exc), exits.CONFIG) from None
        key = secret.reveal() if secret is not None else ""
    if not key or not key.isascii() or not key.isprintable():
        raise MintError(
            f"no API key: set ${API_KEY_ENV}, or pass --api-key-file PATH (or - for stdin)",
            exits.CONFIG,
        )
    return key


def mint(args: argparse.Namespace) -> dict[str, Any]:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        raise MintError(f"config error: {exc}", exits.CONFIG) from None
    body = request_body(args, cfg, datetime.now(UTC))
    key = _api_key(args, cfg)
    url = f"{args.base_url.rstrip('/')}/v1alpha/auth_tokens"
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json", "x-goog-api-key": key},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw = resp.read(1024 * 1024)
    except urllib.error.HTTPError as exc:
        raise MintError(f"{url} refused: HTTP {exc.code} {_api_message(exc)}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = getattr(exc, "reason", exc)
        raise MintError(f"cannot reach {url}: {why}", exits.UNAVAILABLE) from None
    try:
        token = json.loads(raw)
    except ValueError:
        raise MintError(f"{url} answered with something that is not JSON") from None
    if not isinstance(token, dict) or not isinstance(token.get("name"), str):
        raise MintError(f"{url} answered without a token name")
    # The service echoes only the name: the limits asked for go with it.
    for key_name in ("uses", "expireTime", "newSessionExpireTime"):
        token.setdefault(key_name, body[key_name])
    return token


def _api_message(exc: urllib.error.HTTPError) -> str:
    """Google's error body says why ({"error": {"message": ...}}); one line of it."""
    try:
        message = json.loads(exc.read(65536))["error"]["message"]
    except (ValueError, KeyError, TypeError, OSError):
        return exc.reason or ""
    return str(message).splitlines()[0][:200] if message else ""


def run_from_args(args: argparse.Namespace) -> int:
    try:
        token = mint(args)
    except MintError as exc:
        print(f"edge-daemon mint-token: {exc}", file=sys.stderr)
        return exc.status
    print(json.dumps(token) if args.json else token["name"])
    return exits.OK
