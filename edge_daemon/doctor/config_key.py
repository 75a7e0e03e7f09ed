"""The config parses, and the daemon will find a key (never shown)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from ..config import (
    CREDENTIAL_NAME,
    DEFAULT_CONFIG_PATH,
    Config,
    ConfigError,
    Secret,
    load_config,
    resolve_secret,
)
from .machine import INSTALL, KEY_FILE
from .report import Check, fail, ok, skip, warn


def check_config(path: str | None, env: Mapping[str, str]) -> tuple[Check, Config | None]:
    try:
        cfg = load_config(path, env=env)
    except ConfigError as exc:
        where = exc.file + (f" line {exc.line}" if exc.line else "")
        key = f" at {exc.key}" if exc.key else ""
        return (
            fail(
                "config",
                str(exc),
                f"edit {where}{key} ({exc.expected}), then check it with: "
                f"edge-daemon check-config --config {exc.file}",
            ),
            None,
        )
    if not cfg.source:
        file = env.get("EDGE_DAEMON_CONFIG") or path or DEFAULT_CONFIG_PATH
        return ok("config", f"no {file}: built-in defaults"), cfg
    return ok("config", f"{cfg.source} parses"), cfg


def read_key_file(path: Path) -> tuple[str, Secret | None]:
    """("present" | "empty" | "missing" | "unreadable", the key or None)."""
    try:
        with path.open("rb") as f:
            text = f.read(64 * 1024).decode("utf-8", "replace").strip()
    except FileNotFoundError:
        return "missing", None
    except OSError:
        return "unreadable", None
    if not text:
        return "empty", None
    return "present", Secret(text, f"file {path}")


def check_key(
    cfg: Config,
    env: Mapping[str, str],
    *,
    key_file: Path,
    installed: bool,
    needs_key: bool = True,
) -> tuple[Check, Secret | None]:
    """Whether the daemon will find a key, and where: its value is never shown.

    Looks where the daemon looks (environment, gemini.api_key_file, a credentials
    directory) and at the file the installed unit loads as its credential, which
    only the service (or root) sees.
    """
    name = "api_key"
    what = "token" if cfg.gemini.auth == "ephemeral_token" else "key"
    add_key = (
        f"{INSTALL} --api-key-file PATH (or --api-key-file - to paste it); "
        f"it stores the {what} in {KEY_FILE} and restarts the service"
    )
    try:
        secret = resolve_secret(cfg, env)
    except ConfigError as exc:
        return (
            fail(
                name,
                str(exc),
                f"make {exc.key or 'the key file'} a readable file holding only the {what}",
            ),
            None,
        )
    state, from_file = read_key_file(key_file)
    from_env = secret is not None and secret.source.startswith("$")
    # What the service itself would use: the environment of this shell is not its.
    service_key = from_file if secret is None or from_env else secret
    if service_key is not None:
        also = f"; also set in {secret.source} here" if secret is not None and from_env else ""
        where = (
            f"{key_file}, the service's credential {CREDENTIAL_NAME}"
            if service_key is from_file
            else service_key.source
        )
        return ok(name, f"{what} found in {where} (value not shown){also}"), service_key
    if secret is not None:
        if installed:
            return (
                warn(
                    name,
                    f"{what} only in {secret.source} of this shell; the service reads "
                    f"{key_file}, which is {state}",
                    add_key,
                ),
                secret,
            )
        return ok(name, f"{what} found in {secret.source} (value not shown)"), secret
    if state == "unreadable":
        return (
            warn(
                name,
                f"cannot read {key_file} as this user, so cannot tell whether the service has a "
                f"{what}",
                "run the doctor as root: sudo edge-daemon doctor",
            ),
            None,
        )
    if not needs_key:
        return skip(name, f"no {what}, and none needed: the built-in fake Gemini takes any"), None
    return (
        fail(
            name,
            f"no API {what}: $GEMINI_API_KEY is unset, gemini.api_key_file is unset and "
            f"{key_file} is {state}",
            f"get a key at https://aistudio.google.com/apikey, then: {add_key}",
        ),
        None,
    )
