"""The link to the broker: its own task, redialled with backoff for as long as
the daemon runs, a last will that says "offline", and bounded everything.

A broker that is down costs one log line per backoff step and nothing else:
no caller ever waits for it (``publish`` fails at once while disconnected),
and the voice path never touches this module.

aiomqtt (and paho-mqtt under it) is imported here only, and this module only
when ``[mqtt] host`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiomqtt

from ..config import Secret
from .topics import OFFLINE, matches

log = logging.getLogger(__name__)

# Messages the broker may have sent that we have not read yet; past it paho
# drops them (aiomqtt logs it).
INCOMING_QUEUE = 256
# Payloads a watcher (a remote tool waiting for a state) may hold unread.
WATCH_QUEUE = 8
# Seconds any one broker operation (subscribe, a QoS 1 publish) may take.
OPERATION_TIMEOUT_S = 10.0

MessageHandler = Callable[[str, bytes, bool], None]


@dataclass(frozen=True)
class LinkSettings:
    host: str
    port: int
    client_id: str
    will_topic: str
    username: str = ""
    password: Secret | None = None
    tls: bool = False
    ca_file: str = ""
    keepalive_s: int = 30
    backoff_initial_s: float = 1.0
    backoff_max_s: float = 60.0

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class BrokerLink:
    """One connection at a time, redialled forever.

    ``subscriptions`` are made on every connection; ``on_message(topic,
    payload, retained)`` hears what arrives on them. ``on_connect`` runs on
    every new connection, while messages are already being read (so it may
    wait for replies); a connection that drops cancels it.
    """

    def __init__(
        self,
        settings: LinkSettings,
        subscriptions: tuple[str, ...],
        on_message: MessageHandler,
        on_connect: Callable[[], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self._subscriptions = subscriptions
        self._on_message = on_message
        self._on_connect = on_connect
        self._client: aiomqtt.Client | None = None
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()
        # Topic -> the queues of whoever watches it (remote tools awaiting a state).
        self._watchers: dict[str, list[asyncio.Queue[bytes]]] = {}
        self.connects = 0
        self.failures = 0
        self.last_error = ""

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        s = self.settings
        attempt = 0
        tls = await asyncio.to_thread(_tls_context, s.ca_file) if s.tls else None
        while not self._stop.is_set():
            client = aiomqtt.Client(
                s.host,
                s.port,
                identifier=s.client_id,
                username=s.username or None,
                password=s.password.reveal() if s.password is not None else None,
                will=aiomqtt.Will(s.will_topic, OFFLINE, qos=1, retain=True),
                keepalive=s.keepalive_s,
                timeout=OPERATION_TIMEOUT_S,
                tls_context=tls,
                max_queued_incoming_messages=INCOMING_QUEUE,
                logger=logging.getLogger("edge_daemon.mqtt.paho"),
                # paho leaves Nagle on: a state published right after another
                # would wait for the broker's delayed ACK (40 ms on Linux).
                socket_options=((socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),),
            )
            try:
                async with client:
                    attempt = 0
                    await self._serve(client)
            except aiomqtt.MqttError as exc:
                self.failures += 1
                self.last_error = _reason(exc)
            finally:
                self._client = None
                self.connected.clear()
            if self._stop.is_set():
                break
            delay = random.uniform(0.5, 1.0) * min(
                s.backoff_max_s, s.backoff_initial_s * 2 ** min(attempt, 20)
            )
            attempt += 1
            log.warning(
                "mqtt: broker %s: %s; retrying in %.1f s",
                s.where,
                self.last_error or "connection closed",
                delay,
                extra={"EDGE_EVENT": "mqtt_retry", "EDGE_DELAY_S": round(delay, 2)},
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), delay)

    async def _serve(self, client: aiomqtt.Client) -> None:
        for topic in (*self._subscriptions, *self._watchers):
            await client.subscribe(topic, qos=1)
        self._client = client
        self.connects += 1
        self.last_error = ""
        self.connected.set()
        log.info(
            "mqtt: connected to %s as %s",
            self.settings.where,
            self.settings.client_id,
            extra={"EDGE_EVENT": "mqtt_connected"},
        )
        reader = asyncio.create_task(self._read(client), name="mqtt-read")
        greeter = asyncio.create_task(self._greet(), name="mqtt-on-connect")
        stop = asyncio.create_task(self._stop.wait(), name="mqtt-stop")
        try:
            await asyncio.wait({reader, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, greeter, stop):
                task.cancel()
            (result, *_) = await asyncio.gather(reader, greeter, stop, return_exceptions=True)
        if isinstance(result, aiomqtt.MqttError):
            raise result
        if isinstance(result, Exception):
            log.error("mqtt: reading from the broker failed: %r", result, exc_info=result)

    async def _greet(self) -> None:
        try:
            await self._on_connect()
        except (ConnectionError, aiomqtt.MqttError) as exc:
            log.debug("mqtt: the connection went while announcing: %s", exc)
        except Exception:  # a bug: said at once, the connection stays up
            log.exception("mqtt: announcing on a new connection failed")

    async def _read(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            topic = message.topic.value
            payload = message.payload if isinstance(message.payload, bytes) else b""
            if not message.retain:
                for queue in self._watchers.get(topic, ()):
                    _put_dropping_oldest(queue, payload)
            try:
                self._on_message(topic, payload, bool(message.retain))
            except Exception:
                log.exception("mqtt: handling a message on %s failed", topic)

    def stop(self) -> None:
        self._stop.set()

    # ------------------------------------------------------------ for callers

    async def publish(
        self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish now, or raise ConnectionError: nothing is queued for later
        (retained state is published afresh on every connection instead)."""
        client = self._client
        if client is None:
            raise ConnectionError(f"the MQTT broker {self.settings.where} is not connected")
        try:
            await client.publish(topic, payload, qos=qos, retain=retain)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"publishing to {self.settings.where} failed: {exc}") from None

    async def subscribe(self, topic: str) -> None:
        client = self._client
        if client is None:
            raise ConnectionError(f"the MQTT broker {self.settings.where} is not connected")
        try:
            await client.subscribe(topic, qos=1)
        except aiomqtt.MqttError as exc:
            raise ConnectionError(f"subscribing at {self.settings.where} failed: {exc}") from None

    async def unsubscribe(self, topic: str) -> None:
        client = self._client
        if client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await client.unsubscribe(topic)

    @contextlib.asynccontextmanager
    async def watch(self, topic: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """Subscribed to ``topic`` while open; the queue gets what is published
        on it from then on (retained messages are old news, and skipped)."""
        queue: asyncio.Queue[bytes] = asyncio.Queue(WATCH_QUEUE)
        first = topic not in self._watchers
        self._watchers.setdefault(topic, []).append(queue)
        try:
            if first and not any(matches(s, topic) for s in self._subscriptions):
                await self.subscribe(topic)
            yield queue
        finally:
            queues = self._watchers.get(topic, [])
            if queue in queues:
                queues.remove(queue)
            if not queues:
                self._watchers.pop(topic, None)
                if not any(matches(s, topic) for s in self._subscriptions):
                    await self.unsubscribe(topic)


def _tls_context(ca_file: str) -> ssl.SSLContext:
    # Certificates are read from disk: done once, in a thread, never on the loop.
    return ssl.create_default_context(cafile=ca_file or None)


def _reason(exc: aiomqtt.MqttError) -> str:
    """The broker's refusal or the socket's error, in words."""
    if isinstance(exc, aiomqtt.MqttCodeError) and exc.rc is not None:
        return f"{exc}"
    return str(exc) or type(exc).__name__


def _put_dropping_oldest(queue: asyncio.Queue[bytes], item: bytes) -> None:
    if queue.full():
        queue.get_nowait()
    queue.put_nowait(item)
