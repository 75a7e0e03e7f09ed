"""Every module imports on its own, with no side effects: nothing printed,
nothing run, no exit. A module that runs when imported (a ``__main__`` without
its guard) breaks tools that walk the package, and the ARM boot test's import
check, which runs the same script in the installed venv."""

from __future__ import annotations

import json
import subprocess
import sys

from support.modules import IMPORT_EVERY_MODULE, ROOT, checkout_modules


def test_every_module_imports_alone_and_quietly() -> None:
    done = subprocess.run(
        [sys.executable, "-c", IMPORT_EVERY_MODULE],
        capture_output=True,
        text=True,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 1, done.stdout  # the report and nothing else
    report = json.loads(lines[0])
    assert report["failed"] == {}
    assert set(report["modules"]) == checkout_modules()
    assert {"edge_daemon.doctor.__main__", "edge_daemon.fake_gemini.__main__"} <= set(
        report["modules"]
    )
