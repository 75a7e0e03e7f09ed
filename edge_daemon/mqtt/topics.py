"""Where everything of one daemon lives on the broker.

    <base>/availability          online / offline (retained; offline is the last will)
    <base>/state                 idle, listening, thinking, speaking, reconnecting, error
    <base>/link                  ON / OFF: the link to Gemini (retained)
    <base>/diagnostics           {"tokens_used", "reconnects", "last_error"} (retained)
    <base>/event                 turn_started, turn_ended, tool_call (JSON, not retained)
    <base>/listen                PRESS (or a number of seconds): a listening turn
    <base>/say                   text: an announcement, said through the model
    <base>/mute[/set]            ON / OFF
    <base>/volume[/set]          0-100
    <base>/relay/<name>[/set]    ON / OFF
    <base>/led/<name>[/set]      JSON: {"state": "ON", "brightness": 0-100, "effect": "blink"}
    <prefix>/<component>/<node_id>/<object_id>/config   Home Assistant discovery (retained)

Outside tools should not rely on this table: every topic an entity uses is in
its discovery config. Only this module spells topics out.
"""

from __future__ import annotations

from dataclasses import dataclass

ONLINE = "online"
OFFLINE = "offline"


@dataclass(frozen=True)
class Topics:
    base: str
    prefix: str
    node_id: str

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def state(self) -> str:
        return f"{self.base}/state"

    @property
    def link(self) -> str:
        return f"{self.base}/link"

    @property
    def diagnostics(self) -> str:
        return f"{self.base}/diagnostics"

    @property
    def event(self) -> str:
        return f"{self.base}/event"

    @property
    def listen(self) -> str:
        return f"{self.base}/listen"

    @property
    def say(self) -> str:
        return f"{self.base}/say"

    def entity(self, *parts: str) -> str:
        """A state topic: ``mute``, ``relay/<name>``, ``led/<name>``."""
        return "/".join((self.base, *parts))

    def command(self, *parts: str) -> str:
        return self.entity(*parts, "set")

    @property
    def commands(self) -> tuple[str, ...]:
        """What to subscribe to for commands: every entity's command topic,
        and any other ``.../set`` under the base (so a command for an entity
        that does not exist is heard, and said to be unknown)."""
        return (self.listen, self.say, f"{self.base}/+/set", f"{self.base}/+/+/set")

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.prefix}/{component}/{self.node_id}/{object_id}/config"

    @property
    def all_discovery(self) -> str:
        """Every discovery config of this node, whatever the component."""
        return f"{self.prefix}/+/{self.node_id}/+/config"

    @property
    def ha_status(self) -> str:
        """Home Assistant's birth and will: "online" after it restarts."""
        return f"{self.prefix}/status"

    def sync(self, nonce: str) -> str:
        return f"{self.base}/sync/{nonce}"


def matches(pattern: str, topic: str) -> bool:
    """MQTT topic filter matching (``+`` one level, ``#`` the rest)."""
    want, got = pattern.split("/"), topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(got) or (level != "+" and level != got[i]):
            return False
    return len(want) == len(got)
