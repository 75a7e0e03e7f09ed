"""sd_notify datagrams stamped by the kernel as they arrive.

A test that reads a datagram late (its loop was busy, the machine is loaded)
would otherwise take the time it read it for the time it was sent, and see
gaps between watchdog pings that never were. With SO_TIMESTAMPNS the kernel
stamps each datagram on arrival; for an AF_UNIX datagram that is the moment
the sender's sendmsg() queued it.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from pathlib import Path

# Not exported by Python's socket module; 35 on Linux's generic ABI (x86_64,
# arm, arm64). The stamp comes back as a struct timespec (two longs).
SO_TIMESTAMPNS = 35
_CMSG_SPACE = socket.CMSG_SPACE(16)


def bind_notify(path: Path) -> socket.socket:
    """A NOTIFY_SOCKET at ``path`` whose datagrams carry their arrival time."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    return sock


def recv_stamped(sock: socket.socket) -> tuple[float, str]:
    """One datagram and when it arrived, on the ``time.monotonic()`` clock."""
    data, ancillary, _flags, _addr = sock.recvmsg(4096, _CMSG_SPACE)
    # The stamp is wall-clock time: convert it by how long ago it was.
    mono, wall = time.monotonic(), time.time()
    for level, kind, raw in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            fmt = "qq" if len(raw) >= 16 else "ii"  # 32-bit ABIs: two 32-bit longs
            seconds, nanos = struct.unpack(fmt, raw[: struct.calcsize(fmt)])
            return mono - (wall - (seconds + nanos / 1e9)), data.decode()
    raise AssertionError("the kernel did not stamp the datagram (SO_TIMESTAMPNS)")


async def recv_stamped_async(sock: socket.socket) -> tuple[float, str]:
    """``recv_stamped`` on a non-blocking socket, waiting in the event loop."""
    loop = asyncio.get_running_loop()
    while True:
        try:
            return recv_stamped(sock)
        except BlockingIOError:
            pass
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(sock.fileno(), _resolve, readable)
        try:
            await readable
        finally:
            loop.remove_reader(sock.fileno())


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():  # the reader may fire again before the waiter runs
        future.set_result(None)
