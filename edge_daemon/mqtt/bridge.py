"""The daemon on the broker. Out: its state, link, devices and counters as
retained topics, and events; in: commands from Home Assistant (or anyone on
the broker) into the command dispatch, exactly as ``ctl`` sends them.

The bridge knows the daemon only through what it is handed: the dispatch
(``{"cmd": ...}`` in, a reply out; ``status`` for reading) and calls of
``state_changed``, ``link_changed``, ``devices_changed`` and ``tool_called``
(the state stream). Those calls only note what changed and wake the
publisher: nothing on the voice path ever waits for the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from ..config import MqttConfig, Secret, mqtt_base_topic, mqtt_client_id, mqtt_node_id
from . import discovery, inbound
from .client import BrokerLink, LinkSettings
from .topics import ONLINE, Topics, matches

log = logging.getLogger(__name__)

Dispatch = Callable[[Mapping[str, Any], str], Awaitable[Mapping[str, Any]]]

# The status is read again this often anyway: what changes without a state
# change (mute or volume from elsewhere, the link's last error) shows up.
POLL_S = 2.0
# Commands waiting for the dispatch; past it the oldest is dropped (counted).
COMMAND_QUEUE = 32
# Events waiting for the publisher; past it the oldest is dropped (counted).
EVENT_QUEUE = 64
# The stale-discovery sweep waits this long at most for its own marker.
SYNC_TIMEOUT_S = 5.0
# Rejected commands: this many log lines at once, then one a second.
REJECT_LOG_BURST = 60
# State changes waiting for the publisher: each one is published, in order.
STATE_QUEUE = 32
RECENT_COMMANDS = 16
_RESTING = frozenset({"idle", "reconnecting", "error", "starting"})
_TURN = frozenset({"listening", "thinking", "speaking"})


class MqttBridge:
    def __init__(
        self,
        cfg: MqttConfig,
        *,
        password: Secret | None,
        dispatch: Dispatch,
        version: str,
        hostname: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.version = version
        self.topics = t = Topics(
            mqtt_base_topic(cfg, hostname), cfg.discovery_prefix, mqtt_node_id(cfg, hostname)
        )
        self._dispatch = dispatch
        subscriptions = t.commands + ((t.ha_status,) if cfg.discovery else ())
        self.link = BrokerLink(
            LinkSettings(
                host=cfg.host,
                port=cfg.port,
                client_id=mqtt_client_id(cfg, hostname),
                will_topic=t.availability,
                username=cfg.username,
                password=password,
                tls=cfg.tls,
                ca_file=cfg.ca_file,
                keepalive_s=cfg.keepalive_s,
                backoff_initial_s=cfg.backoff_initial_s,
                backoff_max_s=cfg.backoff_max_s,
            ),
            subscriptions,
            self._on_message,
            self._on_connect,
        )
        self._caps = discovery.Capabilities()
        self._wake = asyncio.Event()
        self._announce_lock = asyncio.Lock()
        # The publisher, a new connection and close() all publish state: one at
        # a time, or two could both find a value unpublished and send it twice.
        self._state_lock = asyncio.Lock()
        self._announce_wanted = False
        self._commands: deque[tuple[str, dict[str, Any]]] = deque()
        self._command_ready = asyncio.Event()
        self._events: deque[dict[str, Any]] = deque()
        # Every state change, so a quick listening -> thinking -> speaking
        # reaches the state topic whole, not only where it ended.
        self._states: deque[str] = deque(maxlen=STATE_QUEUE)
        # Topic -> payload as last published on this connection (retained state).
        self._published: dict[str, bytes] = {}
        self._diagnostics_at = 0.0
        # The stale-discovery sweep: configs of this node the broker still keeps.
        self._sync_topic = ""
        self._synced = asyncio.Event()
        self._seen_configs: set[str] | None = None
        self._reject_tokens = float(REJECT_LOG_BURST)
        self._reject_refill = time.monotonic()
        self._rejects_unlogged = 0
        self.recent: deque[dict[str, Any]] = deque(maxlen=RECENT_COMMANDS)
        self.counters = {
            "published": 0,
            "events": 0,
            "events_dropped": 0,
            "commands": 0,
            "commands_failed": 0,
            "commands_dropped": 0,
            "rejected": 0,
            "entities": 0,
            "stale_entities_removed": 0,
        }

    # ------------------------------------------------------------ the state stream

    def state_changed(self, old: str, new: str) -> None:
        if self.link.connected.is_set():
            self._states.append(new)
        if new == "listening" or (new in _TURN and old in _RESTING):
            self._event("turn_started", state=new, previous=old)
        elif new in _RESTING and old in _TURN:
            self._event("turn_ended", state=new, previous=old)
        self._wake.set()

    def link_changed(self, _up: bool) -> None:
        self._wake.set()

    def devices_changed(self, _name: str) -> None:
        self._wake.set()

    def tool_called(
        self, name: str, args: Mapping[str, Any], ok: bool, error: str | None = None
    ) -> None:
        fields: dict[str, Any] = {"name": name, "args": _bounded(args), "ok": ok}
        if error:
            fields["error"] = error[:500]
        self._event("tool_call", **fields)

    def _event(self, kind: str, **fields: Any) -> None:
        if not self.link.connected.is_set():
            # Events are news: one from before an outage would mislead whoever
            # reads it after. Counted, not kept.
            self.counters["events_dropped"] += 1
            return
        if len(self._events) >= EVENT_QUEUE:
            self._events.popleft()
            self.counters["events_dropped"] += 1
        self._events.append(
            {"event": kind, "time": round(time.time(), 3), "node_id": self.topics.node_id, **fields}
        )
        self._wake.set()

    # ------------------------------------------------------------ running

    async def run(self) -> None:
        """Until close(): the broker link, the publisher and the command worker."""
        tasks = [
            asyncio.create_task(self.link.run(), name="mqtt-link"),
            asyncio.create_task(self._publisher(), name="mqtt-publish"),
            asyncio.create_task(self._worker(), name="mqtt-commands"),
        ]
        try:
            await tasks[0]
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def close(self) -> None:
        """Say "offline" (a clean stop sends no last will), then disconnect."""
        if self.link.connected.is_set():
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(2.0):
                    # The safe states the shutdown left (relays off), then "offline".
                    await self._publish_states()
                    await self.link.publish(self.topics.availability, b"offline", retain=True)
        self.link.stop()

    def status(self) -> dict[str, Any]:
        """The ``mqtt`` section of ``ctl status``."""
        link = self.link
        return {
            "connected": link.connected.is_set(),
            "broker": link.settings.where,
            "node_id": self.topics.node_id,
            "base_topic": self.topics.base,
            "connects": link.connects,
            "failures": link.failures,
            "last_error": link.last_error,
            **self.counters,
            "recent_commands": list(self.recent),
        }

    # ------------------------------------------------------------ a new connection

    async def _on_connect(self) -> None:
        self._published.clear()
        self._states.clear()
        status = await self._status()
        self._caps = discovery.Capabilities.of(status)
        if self.cfg.discovery:
            await self._announce()
        await self._publish_states(force=True)
        await self.link.publish(self.topics.availability, ONLINE.encode(), retain=True)
        self._wake.set()

    async def _announce(self) -> None:
        """Every entity's retained config, after removing (empty retained
        payload) the configs of this node that no longer name an entity."""
        async with self._announce_lock:
            t = self.topics
            wanted = discovery.configs(t, self._caps, self.version)
            stale = await self._configs_on_broker() - wanted.keys()
            for topic in sorted(stale):
                await self.link.publish(topic, b"", retain=True)
                self.counters["stale_entities_removed"] += 1
                log.info(
                    "mqtt: removed the stale entity %s",
                    topic,
                    extra={"EDGE_EVENT": "mqtt_entity_removed", "EDGE_TOPIC": topic},
                )
            for topic, config in wanted.items():
                await self._publish(topic, json.dumps(config).encode(), force=True)
            self.counters["entities"] = len(wanted)
            log.info(
                "mqtt: %d entities announced under %s/+/%s",
                len(wanted),
                t.prefix,
                t.node_id,
                extra={"EDGE_EVENT": "mqtt_discovery"},
            )

    async def _configs_on_broker(self) -> set[str]:
        """The retained discovery configs of this node: they arrive right
        after the subscription, and a marker published after it comes back
        after them, so its return says the list is complete."""
        t = self.topics
        self._seen_configs = set()
        self._sync_topic = t.sync(secrets.token_hex(4))
        self._synced.clear()
        try:
            await self.link.subscribe(t.all_discovery)
            await self.link.subscribe(self._sync_topic)
            await self.link.publish(self._sync_topic, b"", qos=1)
            try:
                await asyncio.wait_for(self._synced.wait(), SYNC_TIMEOUT_S)
            except TimeoutError:
                log.warning("mqtt: the broker did not echo the discovery sweep's marker")
            return set(self._seen_configs)
        finally:
            self._seen_configs = None
            await self.link.unsubscribe(t.all_discovery)
            await self.link.unsubscribe(self._sync_topic)

    # ------------------------------------------------------------ publishing

    async def _publisher(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), POLL_S)
            self._wake.clear()
            if not self.link.connected.is_set():
                continue  # everything is published afresh on the next connection
            try:
                status = await self._status()
                caps = discovery.Capabilities.of(status)
                if caps != self._caps or self._announce_wanted:
                    # Devices attached after the connection, mute and volume
                    # appearing, or Home Assistant restarted.
                    self._caps, self._announce_wanted = caps, False
                    if self.cfg.discovery:
                        await self._announce()
                await self._publish_states()
                while self._events:
                    event = self._events.popleft()
                    await self.link.publish(self.topics.event, _json(event), qos=0)
                    self.counters["events"] += 1
            except ConnectionError:
                continue
            except Exception:
                log.exception("mqtt: publishing the daemon's state failed")

    async def _publish_states(self, *, force: bool = False) -> None:
        async with self._state_lock:
            # Read under the lock: a status read before it could be older than
            # what the last holder published.
            status = await self._status()
            while self._states:
                await self._publish(self.topics.state, self._states.popleft().encode())
            for topic, payload in self._state_payloads(status, force).items():
                await self._publish(topic, payload, force=force)

    def _state_payloads(self, status: Mapping[str, Any], force: bool) -> dict[str, bytes]:
        t, caps = self.topics, self._caps
        connection = status.get("connection") or {}
        out: dict[str, bytes] = {
            t.link: b"ON" if connection.get("state") == "connected" else b"OFF",
        }
        if force:
            # Afterwards every change comes through state_changed, in order;
            # a status read a moment ago could be older than the last of them.
            out[t.state] = str(status.get("state", "")).encode()
        if caps.mute:
            out[t.entity("mute")] = b"ON" if status.get("muted") else b"OFF"
        if caps.volume:
            out[t.entity("volume")] = str(round(float(status.get("volume") or 0))).encode()
        devices = status.get("devices") or {}
        for name in caps.relays:
            on = bool((devices.get(name) or {}).get("on"))
            out[t.entity("relay", name)] = b"ON" if on else b"OFF"
        for name, dimmable in caps.leds:
            out[t.entity("led", name)] = _json(_light_state(devices.get(name) or {}, dimmable))
        now = time.monotonic()
        if force or now - self._diagnostics_at >= self.cfg.diagnostics_interval_s:
            counters = status.get("counters") or {}
            diagnostics = {
                "tokens_used": int(counters.get("tokens_used") or 0),
                "reconnects": max(0, int(connection.get("connects") or 0) - 1),
                "last_error": str(connection.get("last_error") or "")[:255],
            }
            payload = _json(diagnostics)
            if payload != self._published.get(t.diagnostics):
                self._diagnostics_at = now
                out[t.diagnostics] = payload
        return out

    async def _publish(self, topic: str, payload: bytes, *, force: bool = False) -> None:
        """Retained state, published only when it changed on this connection."""
        if not force and self._published.get(topic) == payload:
            return
        await self.link.publish(topic, payload, qos=1, retain=True)
        self._published[topic] = payload
        self.counters["published"] += 1

    async def _status(self) -> Mapping[str, Any]:
        return await self._dispatch({"cmd": "status"}, "mqtt")

    # ------------------------------------------------------------ commands in

    def _on_message(self, topic: str, payload: bytes, retained: bool) -> None:
        t = self.topics
        if topic == self._sync_topic and self._seen_configs is not None:
            self._synced.set()
            return
        if self._seen_configs is not None and matches(t.all_discovery, topic):
            if retained and payload:
                self._seen_configs.add(topic)
            return
        if topic == t.ha_status:
            if payload.strip() == b"online":
                # Home Assistant restarted: it may have lost what it knew.
                self._announce_wanted = True
                self._wake.set()
            return
        if not any(matches(f, topic) for f in t.commands):
            return  # a remote tool's state topic, or our own marker: not a command
        try:
            request = inbound.parse(
                t, self._caps, topic, payload, retain=retained, listen_s=self.cfg.listen_s
            )
        except inbound.Rejected as exc:
            self.counters["rejected"] += 1
            self.recent.append({"topic": topic, "ok": False, "error": str(exc)})
            self._log_rejected(topic, str(exc))
            return
        if len(self._commands) >= COMMAND_QUEUE:
            self._commands.popleft()
            self.counters["commands_dropped"] += 1
            log.warning("mqtt: commands arrive faster than they run; the oldest was dropped")
        self._commands.append((topic, request))
        self._command_ready.set()

    async def _worker(self) -> None:
        while True:
            await self._command_ready.wait()
            self._command_ready.clear()
            while self._commands:
                topic, request = self._commands.popleft()
                await self._run_command(topic, request)

    async def _run_command(self, topic: str, request: dict[str, Any]) -> None:
        cmd = request["cmd"]
        try:
            reply = await self._dispatch(request, "mqtt")
        except Exception as exc:
            log.exception("mqtt: %s from %s failed", cmd, topic)
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        self.counters["commands"] += 1
        ok = bool(reply.get("ok"))
        entry: dict[str, Any] = {"topic": topic, "cmd": cmd, "ok": ok}
        fields = {"EDGE_EVENT": "mqtt_command", "EDGE_COMMAND": cmd, "EDGE_TOPIC": topic}
        if ok:
            log.info("mqtt: %s from %s", cmd, topic, extra=fields)
        else:
            self.counters["commands_failed"] += 1
            entry["error"] = str(reply.get("error", ""))[:300]
            log.warning("mqtt: %s from %s refused: %s", cmd, topic, entry["error"], extra=fields)
        self.recent.append(entry)
        # Refused or not, the entity's state is published again: a dashboard
        # toggled against the rules snaps back to the truth.
        self._published.pop(_state_topic_of(topic), None)
        self._wake.set()

    def _log_rejected(self, topic: str, why: str) -> None:
        now = time.monotonic()
        self._reject_tokens = min(
            float(REJECT_LOG_BURST), self._reject_tokens + (now - self._reject_refill)
        )
        self._reject_refill = now
        if self._reject_tokens < 1:
            self._rejects_unlogged += 1
            return
        self._reject_tokens -= 1
        more = f" ({self._rejects_unlogged} more not logged)" if self._rejects_unlogged else ""
        self._rejects_unlogged = 0
        log.warning(
            "mqtt: ignored a message on %s: %s%s",
            topic[:200],
            why,
            more,
            extra={"EDGE_EVENT": "mqtt_rejected", "EDGE_TOPIC": topic[:200]},
        )


def _light_state(device: Mapping[str, Any], dimmable: bool) -> dict[str, Any]:
    shown = device.get("state")
    out: dict[str, Any] = {
        "state": "ON" if shown in ("on", "blinking") else "OFF",
        "color_mode": "brightness" if dimmable else "onoff",
    }
    if dimmable and shown == "on":
        out["brightness"] = int(device.get("brightness") or 0)
    if shown == "blinking":
        out["effect"] = discovery.BLINK
    return out


def _state_topic_of(command_topic: str) -> str:
    return command_topic.removesuffix("/set")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _bounded(args: Mapping[str, Any], limit: int = 2000) -> Any:
    """A tool call's arguments for the event topic: whole, unless huge."""
    text = json.dumps(dict(args), default=str, ensure_ascii=False)
    return dict(args) if len(text) <= limit else {"truncated": text[:limit]}
