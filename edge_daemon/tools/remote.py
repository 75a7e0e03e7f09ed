"""Remote tools: ``[[tools.mqtt]]`` entries offered to the model as functions
that publish to the MQTT broker, so "turn off the kitchen lights" can reach a
Zigbee2MQTT or Home Assistant entity.

The rules are the hardware tools' own:

- arguments are checked by the same validator (tools/schema.py) before
  anything is published, and a bad call is an error the model reads;
- at most ``max_calls_per_minute`` calls a minute per tool, and with
  ``require_recent_press_s`` only within that many seconds of a finger on the
  physical button (what is said, typed or seen can carry instructions; a
  finger cannot); every refusal is a journal record;
- values reach topics and payloads only through tools/template.py (no eval).

The broker is whatever implements ``Broker`` (the mqtt package does): this
module knows no MQTT library, and the mqtt package knows no tool.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from ..config import MqttToolConfig
from . import template
from .registry import Tool, ToolRegistry, function_declaration
from .schema import check_declaration, validate_args

log = logging.getLogger(__name__)

# What of a state message goes back to the model: enough for any device state.
STATE_MAX_CHARS = 2000


class Broker(Protocol):
    """What a remote tool needs of the broker link."""

    async def publish(self, topic: str, payload: bytes, *, qos: int, retain: bool) -> None:
        """Publish; raise ConnectionError when the broker cannot be reached."""
        ...

    def watch(self, topic: str) -> AbstractAsyncContextManager[asyncio.Queue[bytes]]:
        """Subscribed to ``topic`` while open: the payloads published on it from
        then on (never a retained one, which is old news)."""
        ...


def parameters_of(cfg: MqttToolConfig) -> dict[str, Any] | None:
    """The tool's parameters as a declaration's schema: every one required."""
    if not cfg.parameters:
        return None
    props: dict[str, Any] = {}
    for p in cfg.parameters:
        prop: dict[str, Any] = {"type": p.type, "description": p.description}
        if p.enum:
            prop["enum"] = list(p.enum)
        if p.minimum is not None:
            prop["minimum"] = p.minimum
        if p.maximum is not None:
            prop["maximum"] = p.maximum
        props[p.name] = prop
    return {"type": "OBJECT", "properties": props, "required": list(props)}


class RemoteTool:
    def __init__(
        self,
        cfg: MqttToolConfig,
        broker: Broker,
        last_press: Callable[[], float | None],
    ) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.parameters = parameters_of(cfg)
        self._broker = broker
        self._last_press = last_press
        self._calls: deque[float] = deque()  # time.monotonic() of the last minute's calls
        self.refusals = 0
        self.published = 0

    def declaration(self) -> dict[str, Any]:
        decl = function_declaration(self.name, self.cfg.description, self.parameters)
        check_declaration(decl)  # the config loader checked it too; they cannot drift
        return decl

    async def run(self, args: Mapping[str, Any]) -> Mapping[str, Any]:
        cfg = self.cfg
        a = validate_args(self.name, self.parameters, args)
        now = time.monotonic()
        self._check_may_call(now)
        topic = template.render_topic(cfg.topic, a)
        payload = template.render_payload(cfg.payload, a)
        state_topic = template.render_topic(cfg.state_topic, a) if cfg.state_topic else ""
        self._calls.append(now)
        try:
            if state_topic:
                async with self._broker.watch(state_topic) as states:
                    await self._publish(topic, payload)
                    state = await self._read_state(states)
            else:
                await self._publish(topic, payload)
                state = None
        except ConnectionError as exc:
            raise ValueError(f"{self.name}: {exc}; nothing was sent. Try again later.") from None
        out: dict[str, Any] = {"published": topic, "payload": payload}
        if state_topic:
            if state is None:
                out["state"] = None
                out["note"] = f"no answer on {state_topic} within {cfg.state_timeout_s:g} s"
            else:
                out["state"] = state
        return out

    async def _publish(self, topic: str, payload: str) -> None:
        await self._broker.publish(
            topic, payload.encode(), qos=self.cfg.qos, retain=self.cfg.retain
        )
        self.published += 1
        log.info(
            "remote tool %s published to %s",
            self.name,
            topic,
            extra={"EDGE_EVENT": "remote_tool", "EDGE_TOOL": self.name, "EDGE_TOPIC": topic},
        )

    async def _read_state(self, states: asyncio.Queue[bytes]) -> Any:
        try:
            raw = await asyncio.wait_for(states.get(), self.cfg.state_timeout_s)
        except TimeoutError:
            return None
        text = raw.decode("utf-8", "replace")[:STATE_MAX_CHARS]
        try:
            return json.loads(text)
        except ValueError:
            return text

    def _check_may_call(self, now: float) -> None:
        cfg = self.cfg
        while self._calls and now - self._calls[0] >= 60.0:
            self._calls.popleft()
        problem = ""
        if len(self._calls) >= cfg.max_calls_per_minute:
            wait = 60.0 - (now - self._calls[0])
            problem = (
                f"it was called {len(self._calls)} times in the last minute, at most "
                f"{cfg.max_calls_per_minute} are allowed: try again in {wait:.0f} s"
            )
        elif cfg.require_recent_press_s > 0:
            pressed = self._last_press()
            if pressed is None or now - pressed > cfg.require_recent_press_s:
                problem = (
                    f"it works only within {cfg.require_recent_press_s:g} s of a press of the "
                    "device's button; ask the user to press the button and say it again"
                )
        if not problem:
            return
        self.refusals += 1
        log.warning(
            "remote tool %s refused: %s",
            self.name,
            problem,
            extra={"EDGE_EVENT": "remote_tool_refused", "EDGE_TOOL": self.name},
        )
        raise ValueError(f"{self.name}: refused: {problem}. Nothing was sent.")


class RemoteTools:
    """Every ``[[tools.mqtt]]`` entry, as tools for a ToolRegistry."""

    def __init__(
        self,
        configs: tuple[MqttToolConfig, ...],
        broker: Broker,
        last_press: Callable[[], float | None] = lambda: None,
        timeout_s: float = 5.0,
    ) -> None:
        self.tools = [RemoteTool(cfg, broker, last_press) for cfg in configs]
        self._timeout_s = timeout_s

    def register(self, registry: ToolRegistry) -> None:
        for tool in self.tools:
            registry.add(
                Tool(
                    name=tool.name,
                    declaration=tool.declaration(),
                    run=tool.run,
                    # The model waits for the answer; the state read back is part of it.
                    timeout_s=self._timeout_s + tool.cfg.state_timeout_s,
                )
            )

    def states(self) -> dict[str, dict[str, Any]]:
        """For ``ctl status``: what each tool has done."""
        return {
            t.name: {"topic": t.cfg.topic, "published": t.published, "refusals": t.refusals}
            for t in self.tools
        }
