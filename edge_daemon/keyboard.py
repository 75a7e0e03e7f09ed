"""A terminal key as push-to-talk, for desktop runs.

A terminal reports key presses but never releases, so Enter or space toggles:
press once to talk, again to stop. The terminal is put in cbreak mode (keys
arrive at once, unechoed) and restored on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import termios
import tty
from collections.abc import Callable, Iterator

TOGGLE_KEYS = {b"\n", b"\r", b" "}


@contextlib.contextmanager
def keyboard_toggle(
    loop: asyncio.AbstractEventLoop, on_toggle: Callable[[], None], fd: int | None = None
) -> Iterator[bool]:
    """While active, Enter/space calls ``on_toggle``. Yields False (and does
    nothing) when stdin is not a terminal, e.g. under systemd."""
    fd = sys.stdin.fileno() if fd is None else fd
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)

    def readable() -> None:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        for byte in data:
            if bytes([byte]) in TOGGLE_KEYS:
                on_toggle()

    tty.setcbreak(fd)
    loop.add_reader(fd, readable)
    try:
        yield True
    finally:
        loop.remove_reader(fd)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)
