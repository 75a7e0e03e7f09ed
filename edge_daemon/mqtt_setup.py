"""Connect a daemon to an MQTT broker when ``[mqtt] host`` is set: the bridge
(state out, commands in, Home Assistant discovery) and the remote tools.

The mqtt package, and with it aiomqtt and paho-mqtt, is imported here and
only here, and only then: a daemon without a broker pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from . import __version__
from .config import Config, Secret
from .daemon import Daemon
from .tools.remote import RemoteTools

if TYPE_CHECKING:
    from .mqtt import MqttBridge

log = logging.getLogger(__name__)


def attach_mqtt(daemon: Daemon, cfg: Config, password: Secret | None) -> MqttBridge | None:
    """The bridge, wired to the daemon's state stream and dispatch, with the
    remote tools registered; None without a broker. Call it after the
    hardware is attached (its devices are announced too) and before run()."""
    if not cfg.mqtt.host:
        return None
    from .mqtt import MqttBridge

    bridge = MqttBridge(
        cfg.mqtt, password=password, dispatch=daemon.commands.dispatch, version=__version__
    )
    daemon.subscribe(lambda old, new: bridge.state_changed(old.value, new.value))
    daemon.subscribe_link(bridge.link_changed)
    daemon.tools.listeners.append(
        lambda name, args, outcome: bridge.tool_called(name, args, outcome.ok, outcome.error)
    )
    if daemon.devices is not None:
        daemon.devices.subscribe(bridge.devices_changed)
    daemon.status_providers["mqtt"] = bridge.status
    if cfg.tools.mqtt:
        remote = RemoteTools(
            cfg.tools.mqtt,
            bridge.link,
            # Read at call time: the button is attached (or not) by then.
            last_press=lambda: daemon.button_touched(),
            timeout_s=cfg.tools.timeout_s,
        )
        remote.register(daemon.tools)
        daemon.status_providers["remote_tools"] = remote.states
    log.info(
        "mqtt: broker %s:%d, node %s, topics under %s%s",
        cfg.mqtt.host,
        cfg.mqtt.port,
        bridge.topics.node_id,
        bridge.topics.base,
        f", {len(cfg.tools.mqtt)} remote tool(s)" if cfg.tools.mqtt else "",
        extra={"EDGE_EVENT": "mqtt_ready"},
    )
    return bridge


async def stop_mqtt(bridge: MqttBridge, task: asyncio.Task[None]) -> None:
    """The last state and "offline" out, the connection closed; never hangs."""
    try:
        await asyncio.wait_for(bridge.close(), 3.0)
    except Exception:
        log.exception("mqtt: closing failed")
    bridge.link.stop()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(task), 5.0)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def log_if_dead(task: asyncio.Task[None]) -> None:
    """The bridge must never die quietly (nor take the daemon with it)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("mqtt stopped: %r", task.exception(), exc_info=task.exception())
