"""Home Assistant MQTT discovery: one retained config per entity, all grouped
under one device, each naming every topic it uses (so nothing outside needs
to know the layout in topics.py).

The entities follow what the daemon has: mute and volume only when the
daemon reports them, one switch per relay and one light per LED.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .topics import OFFLINE, ONLINE, Topics

STATES = ["starting", "idle", "listening", "thinking", "speaking", "reconnecting", "error"]
BLINK = "blink"


@dataclass(frozen=True)
class Entity:
    component: str
    object_id: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Capabilities:
    """What the running daemon has, read from its status."""

    relays: tuple[str, ...] = ()
    # LED name -> dimmable
    leds: tuple[tuple[str, bool], ...] = ()
    mute: bool = False
    volume: bool = False

    @classmethod
    def of(cls, status: Mapping[str, Any]) -> Capabilities:
        devices = status.get("devices")
        devices = devices if isinstance(devices, Mapping) else {}
        relays, leds = [], []
        for name, dev in devices.items():
            if not isinstance(dev, Mapping):
                continue
            if dev.get("kind") == "relay":
                relays.append(str(name))
            elif dev.get("kind") == "led":
                leds.append((str(name), bool(dev.get("pwm"))))
        return cls(
            relays=tuple(relays),
            leds=tuple(leds),
            mute=isinstance(status.get("muted"), bool),
            volume=isinstance(status.get("volume"), int | float)
            and not isinstance(status.get("volume"), bool),
        )


def device_block(t: Topics, version: str) -> dict[str, Any]:
    return {
        "identifiers": [f"edge-daemon_{t.node_id}"],
        "name": f"edge-daemon {t.node_id}",
        "model": "edge-daemon",
        "manufacturer": "edge-daemon",
        "sw_version": version,
    }


def entities(t: Topics, caps: Capabilities, version: str) -> list[Entity]:
    """Every entity of this daemon, with its discovery config."""
    common = {
        "availability_topic": t.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": device_block(t, version),
        "origin": {"name": "edge-daemon", "sw_version": version},
    }

    def entity(component: str, object_id: str, name: str, **config: Any) -> Entity:
        full = {"name": name, "unique_id": f"edge_daemon_{t.node_id}_{object_id}", **config}
        return Entity(component, object_id, {**full, **common})

    diagnostic = {"entity_category": "diagnostic"}
    out = [
        entity(
            "sensor",
            "state",
            "State",
            state_topic=t.state,
            device_class="enum",
            options=STATES,
            icon="mdi:account-voice",
        ),
        entity(
            "binary_sensor",
            "link",
            "Link",
            state_topic=t.link,
            device_class="connectivity",
            payload_on="ON",
            payload_off="OFF",
            **diagnostic,
        ),
        entity(
            "button",
            "talk",
            "Talk",
            command_topic=t.listen,
            payload_press="PRESS",
            icon="mdi:microphone",
        ),
        entity("notify", "announce", "Announce", command_topic=t.say, icon="mdi:bullhorn"),
    ]
    if caps.mute:
        out.append(
            entity(
                "switch",
                "mute",
                "Mute",
                command_topic=t.command("mute"),
                state_topic=t.entity("mute"),
                payload_on="ON",
                payload_off="OFF",
                icon="mdi:microphone-off",
            )
        )
    if caps.volume:
        out.append(
            entity(
                "number",
                "volume",
                "Volume",
                command_topic=t.command("volume"),
                state_topic=t.entity("volume"),
                min=0,
                max=100,
                step=1,
                mode="slider",
                unit_of_measurement="%",
                icon="mdi:volume-high",
            )
        )
    for name in caps.relays:
        out.append(
            entity(
                "switch",
                f"relay_{name}",
                name.replace("_", " ").capitalize(),
                command_topic=t.command("relay", name),
                state_topic=t.entity("relay", name),
                payload_on="ON",
                payload_off="OFF",
            )
        )
    for name, dimmable in caps.leds:
        out.append(
            entity(
                "light",
                f"led_{name}",
                name.replace("_", " ").capitalize(),
                schema="json",
                command_topic=t.command("led", name),
                state_topic=t.entity("led", name),
                supported_color_modes=["brightness"] if dimmable else ["onoff"],
                brightness=dimmable,
                brightness_scale=100,
                effect=True,
                effect_list=[BLINK],
                # No flash or transition: Home Assistant would send them, and
                # the LED tool takes neither.
                flash=False,
                transition=False,
            )
        )
    for object_id, name, template, extra in (
        ("tokens_used", "Tokens used", "tokens_used", {"state_class": "total_increasing"}),
        ("reconnects", "Reconnects", "reconnects", {"state_class": "total_increasing"}),
        ("last_error", "Last error", "last_error", {"icon": "mdi:alert-circle-outline"}),
    ):
        out.append(
            entity(
                "sensor",
                object_id,
                name,
                state_topic=t.diagnostics,
                value_template=f"{{{{ value_json.{template} }}}}",
                **extra,
                **diagnostic,
            )
        )
    return out


def configs(t: Topics, caps: Capabilities, version: str) -> dict[str, dict[str, Any]]:
    """Discovery topic -> config, for every entity."""
    return {t.discovery(e.component, e.object_id): e.config for e in entities(t, caps, version)}
