"""``edge-daemon doctor``'s options, and running it from them."""

from __future__ import annotations

import argparse
import sys

from .report import exit_status, format_json, format_text
from .runner import Machine, Options, run_checks


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The doctor's options (``--config`` is added by the CLI, as for every subcommand)."""
    parser.add_argument(
        "--live", action="store_true", help="also do one real setup handshake with the endpoint"
    )
    parser.add_argument(
        "--listen", action="store_true", help="record 1 s and check the mic hears more than silence"
    )
    parser.add_argument("--beep", action="store_true", help="play a short tone on the speaker")
    parser.add_argument(
        "--simulate",
        action="store_true",
        help="check what `run --simulate` uses: mock GPIO, the built-in fake Gemini if no "
        "endpoint is set",
    )
    parser.add_argument(
        "--json", action="store_true", help="a JSON list of {name, status, detail, fix}"
    )


def run_from_args(args: argparse.Namespace) -> int:
    opts = Options(
        config=getattr(args, "config", None),
        live=args.live,
        listen=args.listen,
        beep=args.beep,
        simulate=args.simulate,
    )

    def prompt(text: str) -> None:
        print(f"edge-daemon doctor: {text}", file=sys.stderr, flush=True)

    checks = run_checks(opts, Machine(prompt=prompt))
    print(format_json(checks) if args.json else format_text(checks))
    return exit_status(checks)
