"""The state directory: what must outlive a restart (the resumption handle,
the volume), and nothing else. Under systemd it is ``StateDirectory=``
(``$STATE_DIRECTORY``, /var/lib/edge-daemon, owned by the service user)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

SYSTEM_STATE_DIR = Path("/var/lib/edge-daemon")


def user_state_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local/state")
    return Path(base) / "edge-daemon"


def state_dir(configured: str, env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if configured:
        return Path(configured)
    if env.get("STATE_DIRECTORY"):
        # systemd may list several, colon-separated: the first is ours.
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if os.access(SYSTEM_STATE_DIR, os.W_OK):
        return SYSTEM_STATE_DIR
    return user_state_dir(env)
