"""``edge-daemon fake-server`` (and ``python -m edge_daemon.fake_gemini``):
the fake on a port, for demos and outside clients."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from typing import Any

from .server import FakeGemini


async def serve(host: str = "127.0.0.1", port: int = 8765, **knobs: Any) -> None:
    """Run a FakeGemini until cancelled. Received audio is not kept unless asked for."""
    knobs.setdefault("keep_audio", False)
    fake = FakeGemini(**knobs)
    await fake.start(host, port)
    print(f"fake-gemini listening on {fake.url}", flush=True)
    print(f"fake-gemini mints tokens at {fake.auth_url}/v1alpha/auth_tokens", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--pace",
        type=float,
        default=1.0,
        help="reply audio speed: 1 = real time, 10 = ten times faster, 0 = unpaced",
    )
    parser.add_argument(
        "--api-key-env",
        metavar="VAR",
        default=None,
        help="require the API key held in this environment variable "
        "(a name, so the key never shows in the process list)",
    )
    parser.add_argument(
        "--go-away-after",
        type=float,
        metavar="SECONDS",
        default=None,
        help="send goAway this long into every connection, then close it",
    )
    parser.add_argument("--reply-text", default=None, help="say this instead of an echo")
    parser.add_argument(
        "--no-speech", action="store_true", help="reply with a tone instead of espeak-ng speech"
    )


def run_from_args(args: argparse.Namespace) -> int:
    api_key = None
    if args.api_key_env:
        api_key = os.environ.get(args.api_key_env)
        if not api_key:
            print(
                f"fake-gemini: environment variable {args.api_key_env} is not set or empty",
                file=sys.stderr,
            )
            return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    async def main() -> None:
        task = asyncio.create_task(
            serve(
                args.host,
                args.port,
                api_key=api_key,
                pace=args.pace,
                go_away_after_s=args.go_away_after,
                reply_text=args.reply_text,
                use_speech=not args.no_speech,
            )
        )
        # SIGTERM (systemd, CI) should stop as cleanly as Ctrl-C.
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    try:
        asyncio.run(main())
    except OSError as exc:
        print(f"fake-gemini: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
