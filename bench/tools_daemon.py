"""`edge-daemon` with N more declared tools, for the scale curve (bench only).

A config can declare at most the Pi's GPIO pins' worth of LED and relay
tools; the curve goes to 50. So each extra tool is declared in code, shaped
like a LED tool (one required boolean) and doing nothing but answer.

    python bench/tools_daemon.py N run --simulate --config PATH
"""

import sys
from collections.abc import Mapping
from typing import Any

from edge_daemon import cli, service
from edge_daemon.tools.registry import Tool, function_declaration


def declared(n: int) -> list[Tool]:
    tools = []
    for i in range(n):
        name = f"switch_{i}"
        decl = function_declaration(
            name,
            f"Switch device number {i} on or off.",
            {
                "type": "OBJECT",
                "properties": {"on": {"type": "BOOLEAN", "description": "true for on"}},
                "required": ["on"],
            },
        )

        async def run(args: Mapping[str, Any], i: int = i) -> Mapping[str, Any]:
            return {"device": i, "on": bool(args.get("on"))}

        tools.append(Tool(name=name, declaration=decl, run=run))
    return tools


def main() -> int:
    n = int(sys.argv[1])

    class WithTools(service.Daemon):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            for tool in declared(n):
                self.tools.add(tool)

    service.Daemon = WithTools  # type: ignore[misc]
    return cli.main(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
