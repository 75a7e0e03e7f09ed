"""The functions the model may call: their declarations for ``setup`` and dispatch.

A call never raises: bad names and bad arguments become an error the model can
read and correct, and the daemon carries on.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ToolOutcome:
    output: Mapping[str, Any] | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


ToolFunction = Callable[[Mapping[str, Any]], Awaitable[Mapping[str, Any]]]
# Told of every call the model made, once it is answered: name, args, outcome.
CallListener = Callable[[str, Mapping[str, Any], ToolOutcome], None]

# A declaration's "behavior" for a function the model need not wait for.
NON_BLOCKING = "NON_BLOCKING"


def function_declaration(
    name: str,
    description: str,
    parameters: Mapping[str, Any] | None = None,
    *,
    blocking: bool = True,
) -> dict[str, Any]:
    """A Gemini function declaration. ``parameters`` None leaves the key out:
    the API refuses an OBJECT schema with no properties."""
    decl: dict[str, Any] = {"name": name, "description": description}
    if parameters is not None:
        decl["parameters"] = dict(parameters)
    if not blocking:
        decl["behavior"] = NON_BLOCKING
    return decl


@dataclass(frozen=True)
class Tool:
    name: str
    declaration: Mapping[str, Any]
    run: ToolFunction
    blocking: bool = True
    timeout_s: float = 10.0


@dataclass
class ToolRegistry:
    tools: dict[str, Tool] = field(default_factory=dict)
    listeners: list[CallListener] = field(default_factory=list)

    def add(self, tool: Tool) -> None:
        if tool.name in self.tools:
            raise ValueError(f"tool {tool.name!r} is declared twice")
        # The model calls what the declaration says; dispatch goes by tool.name,
        # and the daemon waits (or not) by tool.blocking: they must agree.
        if tool.declaration.get("name") != tool.name:
            raise ValueError(f"tool {tool.name!r} has a declaration named differently")
        if (tool.declaration.get("behavior") == NON_BLOCKING) == tool.blocking:
            raise ValueError(f"tool {tool.name!r}: blocking and its declared behavior disagree")
        self.tools[tool.name] = tool

    def declarations(self) -> list[Mapping[str, Any]]:
        return [t.declaration for t in self.tools.values()]

    def is_blocking(self, name: str) -> bool:
        tool = self.tools.get(name)
        return tool.blocking if tool else True

    async def call(self, name: str, args: Mapping[str, Any]) -> ToolOutcome:
        outcome = await self._call(name, args)
        for listener in list(self.listeners):
            try:
                listener(name, args, outcome)
            except Exception:  # an observer (the MQTT event topic) never costs the answer
                log.exception("tool call listener failed")
        return outcome

    async def _call(self, name: str, args: Mapping[str, Any]) -> ToolOutcome:
        tool = self.tools.get(name)
        if tool is None:
            known = ", ".join(sorted(self.tools)) or "none"
            return ToolOutcome(error=f"unknown function {name!r}; available: {known}")
        try:
            output = await asyncio.wait_for(tool.run(args), tool.timeout_s)
        except TimeoutError:
            return ToolOutcome(error=f"{name} did not finish within {tool.timeout_s:g} s")
        except (ValueError, TypeError) as exc:
            # Argument problems are the model's to fix: tell it exactly what.
            return ToolOutcome(error=str(exc))
        except Exception as exc:
            log.exception("tool %s failed", name, extra={"EDGE_TOOL": name})
            return ToolOutcome(error=f"{name} failed: {exc}")
        return ToolOutcome(output=dict(output))
