"""Every module of the package, imported one by one: on this machine
(tests/test_modules.py) and in the installed service's venv on each Pi
architecture (tests/test_boot_arm.py)."""

from __future__ import annotations

import pkgutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Run as `python -c`: prints one JSON line, and nothing else may print or exit
# (an import with side effects, e.g. a __main__ module that runs, shows here).
IMPORT_EVERY_MODULE = """\
import importlib, json, pkgutil, platform
import edge_daemon
failed = {}
names = [
    m.name
    for m in pkgutil.walk_packages(
        edge_daemon.__path__, "edge_daemon.", onerror=lambda n: failed.setdefault(n, "walk")
    )
]
for name in names:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed[name] = f"{type(exc).__name__}: {exc}"
print(json.dumps({"machine": platform.machine(), "modules": names, "failed": failed}))
"""


def checkout_modules() -> set[str]:
    """Every module of edge_daemon in the checkout: what the installed package
    must hold, one for one."""
    return {m.name for m in pkgutil.walk_packages([str(ROOT / "edge_daemon")], "edge_daemon.")}
