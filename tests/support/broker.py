"""A real Mosquitto for the tests, on a free loopback port with a generated
config (never the system service), and a client that reads the broker the
way Home Assistant does: discovery configs first, every other topic from them.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import json
import shutil
import signal
import socket
import subprocess
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Broker:
    """``mosquitto -c <generated config>``; no persistence, so a restart
    forgets every retained message (what a broker that lost its disk does)."""

    def __init__(self, workdir: Path, *, users: dict[str, str] | None = None) -> None:
        if not Path(MOSQUITTO).exists():
            pytest.skip("mosquitto is needed for the broker tests (apt-get install mosquitto)")
        self.workdir = workdir
        self.port = free_port()
        self.users = users or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "mosquitto.log"
        conf = [
            f"listener {self.port} 127.0.0.1",
            "persistence false",
            "log_dest stderr",
            # Started as root it would become the user "mosquitto", who cannot
            # read a password file in the test's private directory.
            f"user {getpass.getuser()}",
        ]
        if self.users:
            pwfile = workdir / "passwd"
            for i, (user, password) in enumerate(self.users.items()):
                flags = ["-b", "-c"] if i == 0 else ["-b"]
                subprocess.run(
                    [MOSQUITTO_PASSWD, *flags, str(pwfile), user, password],
                    check=True,
                    capture_output=True,
                )
            conf += ["allow_anonymous false", f"password_file {pwfile}"]
        else:
            conf.append("allow_anonymous true")
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")

    def start(self) -> None:
        log = open(self.log_path, "ab")  # noqa: SIM115 - the broker holds it
        self.proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
        )
        log.close()
        deadline = time.monotonic() + 15.0
        while True:  # ready when it accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mosquitto did not start:\n{self.log_path.read_text()}")
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def running_broker(tmp_path: Path) -> Iterator[Broker]:
    """For a test module's ``broker`` fixture: anonymous access, stopped after."""
    b = Broker(tmp_path)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class HomeAssistant:
    """Subscribes to everything and keeps, per topic, every payload in order
    (``history``) and what is retained now (``retained``); finds entities
    from their discovery configs."""

    def __init__(
        self, port: int, prefix: str = "homeassistant", *, username: str = "", password: str = ""
    ) -> None:
        self.port = port
        self.prefix = prefix
        self._auth = {"username": username, "password": password} if username else {}
        self.history: defaultdict[str, list[bytes]] = defaultdict(list)
        self.client: aiomqtt.Client | None = None
        self._changed = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> HomeAssistant:
        self.client = aiomqtt.Client("127.0.0.1", self.port, **self._auth)  # type: ignore[arg-type]
        await self.client.__aenter__()
        await self.client.subscribe("#", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self.client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self.client is not None
        async for message in self.client.messages:
            payload = message.payload if isinstance(message.payload, bytes) else b""
            self.history[message.topic.value].append(payload)
            self._changed.set()

    # ------------------------------------------------------------ reading

    def last(self, topic: str) -> bytes | None:
        values = self.history.get(topic)
        return values[-1] if values else None

    def entities(self, node_id: str) -> dict[tuple[str, str], dict[str, Any]]:
        """(component, object_id) -> discovery config, for every entity of
        ``node_id`` that the broker still announces."""
        found = {}
        for topic, values in self.history.items():
            parts = topic.split("/")
            if (
                len(parts) == 5
                and parts[0] == self.prefix
                and parts[2] == node_id
                and parts[4] == "config"
                and values[-1]
            ):
                found[(parts[1], parts[3])] = json.loads(values[-1])
        return found

    async def until(self, cond: Callable[[], Any], timeout_s: float = 15.0, what: str = "") -> Any:
        """Wait for ``cond()`` to be true, re-checked after every message."""
        try:
            async with asyncio.timeout(timeout_s):
                while not (result := cond()):
                    self._changed.clear()  # no await since cond(): nothing is missed
                    await self._changed.wait()
                return result
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what or cond}") from None

    async def value(self, topic: str, wanted: bytes | str, timeout_s: float = 15.0) -> None:
        want = wanted.encode() if isinstance(wanted, str) else wanted
        try:
            await self.until(lambda: self.last(topic) == want, timeout_s)
        except AssertionError:
            raise AssertionError(
                f"{topic} never became {want!r}; it went {self.history.get(topic)}"
            ) from None

    async def found(self, node_id: str, count: int, timeout_s: float = 15.0) -> dict[Any, Any]:
        try:
            await self.until(lambda: len(self.entities(node_id)) >= count, timeout_s)
        except AssertionError:
            raise AssertionError(
                f"{node_id} announced {sorted(self.entities(node_id))}, expected {count}"
            ) from None
        return self.entities(node_id)

    # ------------------------------------------------------------ writing

    async def send(self, topic: str, payload: bytes | str, *, retain: bool = False) -> None:
        assert self.client is not None
        data = payload.encode() if isinstance(payload, str) else payload
        await self.client.publish(topic, data, qos=1, retain=retain)


@contextlib.asynccontextmanager
async def home_assistant(port: int, **auth: str) -> AsyncIterator[HomeAssistant]:
    async with HomeAssistant(port, **auth) as ha:
        yield ha
