"""A check's result, and the report of them all: one line per check, with the
fix for what is wrong, as text or JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

Status = Literal["PASS", "FAIL", "WARN", "SKIP"]


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""


def ok(name: str, detail: str) -> Check:
    return Check(name, "PASS", detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name, "FAIL", detail, fix)


def warn(name: str, detail: str, fix: str = "") -> Check:
    return Check(name, "WARN", detail, fix)


def skip(name: str, detail: str) -> Check:
    return Check(name, "SKIP", detail)


def format_text(checks: Sequence[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status}  {c.name:<{width}}  {c.detail}")
        if c.fix and c.status in ("FAIL", "WARN"):
            lines.append(f"{'':6}{'':<{width}}  fix: {c.fix}")
    counts = {s: sum(c.status == s for c in checks) for s in ("PASS", "FAIL", "WARN", "SKIP")}
    lines.append(
        f"\n{counts['PASS']} passed, {counts['FAIL']} failed, {counts['WARN']} warnings, "
        f"{counts['SKIP']} skipped"
    )
    return "\n".join(lines)


def format_json(checks: Sequence[Check]) -> str:
    return json.dumps([asdict(c) for c in checks], indent=2)


def exit_status(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "FAIL" for c in checks) else 0
