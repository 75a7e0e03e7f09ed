"""``edge-daemon``: the command line. Parses arguments and hands over; imports
the heavy parts only for the subcommand that needs them, so `ctl` stays quick."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence

from . import __version__


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $EDGE_DAEMON_CONFIG or /etc/edge-daemon/config.toml)",
    )


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-daemon", description="A Gemini Live voice daemon for small devices."
    )
    parser.add_argument("--version", action="version", version=f"edge-daemon {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the daemon")
    _add_config(run)
    run.add_argument(
        "--simulate",
        action="store_true",
        help="no hardware, no API key: mock GPIO, WAV/null audio and the built-in fake Gemini "
        "for whatever the config leaves unset",
    )

    check = sub.add_parser("check-config", help="print the effective config (secrets redacted)")
    _add_config(check)

    ctl = sub.add_parser("ctl", help="control a running daemon")
    ctl.add_argument("--socket", metavar="PATH", help="control socket (default: from the config)")
    _add_config(ctl)
    ctl_sub = ctl.add_subparsers(dest="action", required=True)
    ctl_sub.add_parser("press", help="push-to-talk pressed")
    ctl_sub.add_parser("release", help="push-to-talk released")
    tap = ctl_sub.add_parser("tap", help="press, hold for SECONDS, release")
    tap.add_argument("seconds", nargs="?", type=float, default=1.0)
    say = ctl_sub.add_parser("say", help="send typed text as a user turn")
    say.add_argument("text")
    ctl_sub.add_parser("status", help="state, connection and counters as JSON")
    wait = ctl_sub.add_parser("wait", help="wait until the daemon is in STATE (for scripts)")
    wait.add_argument("state")
    wait.add_argument("--timeout", type=float, default=30.0)

    sub.add_parser("devices", help="list the audio devices PortAudio sees")

    doctor = sub.add_parser("doctor", help="check this device and say how to fix what is wrong")
    _add_config(doctor)
    from .doctor import add_arguments as add_doctor_arguments

    add_doctor_arguments(doctor)

    fake = sub.add_parser("fake-server", help="run the built-in fake Gemini Live server")
    if argv is None or "fake-server" in argv:
        # Only then: the fake server costs every other process ~2.5 MB.
        from .fake_gemini import add_arguments

        add_arguments(fake)
    return parser


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        print(f"edge-daemon: config error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def cmd_run(args: argparse.Namespace) -> int:
    from . import service, systemd

    cfg = service.prepare(_load(args.config), args.simulate)
    systemd.configure_logging(cfg.logging.level, cfg.logging.target)
    try:
        return asyncio.run(service.run_service(cfg, simulate=args.simulate))
    except KeyboardInterrupt:
        return 130


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, render_effective, resolve_secret

    cfg = _load(args.config)
    try:
        secret = resolve_secret(cfg)
    except ConfigError as exc:
        print(f"edge-daemon: config error: {exc}", file=sys.stderr)
        return 2
    print(render_effective(cfg, secret), end="")
    return 0


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config or os.environ.get("EDGE_DAEMON_CONFIG"):
        return str(_load(args.config).control.socket)
    from .config import DEFAULT_CONFIG_PATH, load_config
    from .control import default_user_socket

    # No config named: prefer the system service's socket, else a --simulate
    # run's per-user one.
    system = load_config(DEFAULT_CONFIG_PATH).control.socket
    return system if os.path.exists(system) else default_user_socket()


def cmd_ctl(args: argparse.Namespace) -> int:
    from .control import request

    body: dict[str, object] = {"cmd": args.action}
    if args.action == "tap":
        body["seconds"] = args.seconds
    elif args.action == "say":
        body["text"] = args.text
    elif args.action == "wait":
        body["state"], body["timeout"] = args.state, args.timeout
    path = _socket_path(args)
    try:
        reply = request(path, body, timeout_s=args.timeout + 5.0 if args.action == "wait" else 10.0)
    except (OSError, ValueError) as exc:
        print(f"edge-daemon: cannot reach the daemon at {path}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(reply, indent=2 if args.action == "status" else None))
    return 0 if reply.get("ok") else 1


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    if args.command == "run":
        return cmd_run(args)
    if args.command == "check-config":
        return cmd_check_config(args)
    if args.command == "ctl":
        return cmd_ctl(args)
    if args.command == "devices":
        from .audio.devices import print_devices

        return print_devices()
    if args.command == "doctor":
        from .doctor import run_from_args as run_doctor

        return run_doctor(args)
    if args.command == "fake-server":
        from .fake_gemini import run_from_args

        return run_from_args(args)
    raise AssertionError(args.command)


if __name__ == "__main__":
    sys.exit(main())
