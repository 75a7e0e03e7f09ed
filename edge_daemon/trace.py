"""An opt-in timing trace for benchmarks: ``EDGE_DAEMON_TRACE=/path/to/file``.

Off (the default, and always in production) every hook is one test of
``trace.ON``: no call, no allocation, no I/O. On, hooks append
``(event, a, b)`` to a list in memory (atomic under the GIL, so the PortAudio
thread may call ``event`` too) and the list is written, one tab-separated line
per event, when the process exits: nothing touches the disk while audio flows.

Events (times are ``time.monotonic()``, comparable across processes):
``press``/``release`` (a: time), ``speaker_in`` (a: the first four bytes of the
chunk as a little-endian int, which the benchmark's fake uses as a sequence
number; b: time), ``mic`` (a: the chunk's capture time; b: time),
``flush`` (a: time the speaker was flushed for ``interrupted``),
``silence`` (a: time of the first output callback after a flush).
"""

from __future__ import annotations

import atexit
import os

ENV = "EDGE_DAEMON_TRACE"
ON = False
_events: list[tuple[str, float, float]] = []


def event(name: str, a: float = 0.0, b: float = 0.0) -> None:
    _events.append((name, a, b))


def _write(path: str) -> None:
    with open(path, "w") as f:
        f.writelines(f"{name}\t{a!r}\t{b!r}\n" for name, a, b in _events)


def _enable() -> None:
    global ON
    path = os.environ.get(ENV)
    if path:
        ON = True
        atexit.register(_write, path)


_enable()
