"""``edge-daemon``: the command line. Parses arguments and hands over; imports
the heavy parts only for the subcommand that needs them, so `ctl` stays quick."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence

from . import __version__, exits


def _add_config(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: $EDGE_DAEMON_CONFIG or /etc/edge-daemon/config.toml)",
    )


def _percent(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number from 0 to 100") from None
    if not 0 <= value <= 100:
        raise argparse.ArgumentTypeError(f"{value} is not from 0 to 100")
    return value


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The whole parser. The arguments of doctor, mint-token, safe-state and
    fake-server live in their own modules, imported only when ``argv`` names
    that command (or is None): `run` and `ctl` must not pay for them."""

    def wanted(command: str) -> bool:
        return argv is None or command in argv

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
    mute = ctl_sub.add_parser("mute", help="mute (no wake word, no audio up) or unmute")
    mute.add_argument("on_off", choices=("on", "off"), metavar="on|off")
    volume = ctl_sub.add_parser("volume", help="set the speaker volume, 0 to 100 (kept)")
    volume.add_argument("level", type=_percent, metavar="N")

    sub.add_parser("devices", help="list the audio devices PortAudio sees")

    doctor = sub.add_parser("doctor", help="check this device and say how to fix what is wrong")
    _add_config(doctor)
    if wanted("doctor"):
        from .doctor import add_arguments as add_doctor_arguments

        add_doctor_arguments(doctor)

    mint = sub.add_parser(
        "mint-token", help="mint an ephemeral token from an API key (for gemini.token_command)"
    )
    _add_config(mint)
    if wanted("mint-token"):
        from .mint_token import add_arguments as add_mint_arguments

        add_mint_arguments(mint)

    safe = sub.add_parser(
        "safe-state",
        help="drive every configured output to its off level and exit (the unit "
        "runs it before each start and after each stop)",
    )
    _add_config(safe)
    if wanted("safe-state"):
        from .safe_state import add_arguments as add_safe_arguments

        add_safe_arguments(safe)

    fake = sub.add_parser("fake-server", help="run the built-in fake Gemini Live server")
    if wanted("fake-server"):
        # The fake server costs every other process ~2.5 MB.
        from .fake_gemini import add_arguments

        add_arguments(fake)
    return parser


class CliError(Exception):
    """A failure the user can act on: one line on stderr, and its exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def _load(path: str | None):  # type: ignore[no-untyped-def]
    from .config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", exits.CONFIG) from None


def cmd_run(args: argparse.Namespace) -> int:
    from . import service, systemd

    cfg = service.prepare(_load(args.config), args.simulate)
    systemd.configure_logging(cfg.logging.level, cfg.logging.target)
    try:
        return asyncio.run(service.run_service(cfg, simulate=args.simulate))
    except KeyboardInterrupt:
        return exits.INTERRUPTED


def cmd_check_config(args: argparse.Namespace) -> int:
    from .config import ConfigError, render_effective, resolve_secret

    cfg = _load(args.config)
    try:
        secret = resolve_secret(cfg)
    except ConfigError as exc:
        raise CliError(f"config error: {exc}", exits.CONFIG) from None
    print(render_effective(cfg, secret), end="")
    return exits.OK


def _socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    if args.config or os.environ.get("EDGE_DAEMON_CONFIG"):
        return str(_load(args.config).control.socket)
    from .control import default_user_socket

    # No config named: the installed service's socket if it is there, else
    # the per-user one a `run --simulate` with no config listens on.
    system = _service_socket()
    return system if os.path.exists(system) else default_user_socket()


def _service_socket() -> str:
    """The control socket the system service uses: from the default config
    when this user can read it, else the built-in default. A default config
    that is missing, unreadable or broken must not stop `ctl` from reaching
    a daemon (the daemon itself reports a broken config)."""
    from .config import Config, ConfigError, load_config

    try:
        return load_config(None, env={}).control.socket
    except ConfigError:
        return Config().control.socket


def cmd_ctl(args: argparse.Namespace) -> int:
    from .control import request

    body: dict[str, object] = {"cmd": args.action}
    if args.action == "tap":
        body["seconds"] = args.seconds
    elif args.action == "say":
        body["text"] = args.text
    elif args.action == "wait":
        body["state"], body["timeout"] = args.state, args.timeout
    elif args.action == "mute":
        body["on"] = args.on_off == "on"
    elif args.action == "volume":
        body["level"] = args.level
    path = _socket_path(args)
    try:
        reply = request(path, body, timeout_s=args.timeout + 5.0 if args.action == "wait" else 10.0)
    except (OSError, ValueError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        hint = (
            " (is it running? `edge-daemon run --simulate` on a desktop, "
            "`systemctl status edge-daemon` on a device)"
            if isinstance(exc, FileNotFoundError | ConnectionRefusedError)
            else ""
        )
        message = f"cannot reach the daemon at {path}: {why}{hint}"
        raise CliError(message, exits.UNAVAILABLE) from None
    print(json.dumps(reply, indent=2 if args.action == "status" else None))
    return exits.OK if reply.get("ok") else exits.FAILED


def dispatch(args: argparse.Namespace) -> int:
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
    if args.command == "safe-state":
        from .safe_state import run_from_args as run_safe_state

        return run_safe_state(args)
    if args.command == "mint-token":
        from .mint_token import run_from_args as run_mint

        return run_mint(args)
    if args.command == "fake-server":
        from .fake_gemini import run_from_args

        return run_from_args(args)
    raise AssertionError(args.command)


def _logs_to_journal() -> bool:
    from . import systemd

    return systemd.log_target() == "journal"


def main(argv: Sequence[str] | None = None) -> int:
    """Every way a command can end is an exit status and at most one line on
    stderr (see exits.py); never a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
    try:
        return dispatch(args)
    except CliError as exc:
        print(f"edge-daemon: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return exits.INTERRUPTED
    except BrokenPipeError:
        # `edge-daemon ctl status | head -1`: the reader left, nothing is wrong.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return exits.OK
    except Exception as exc:
        if os.environ.get("EDGE_DAEMON_TRACEBACK"):
            raise
        if _logs_to_journal():
            # Under systemd the journal keeps the whole story; stderr gets one line.
            logging.getLogger("edge_daemon").critical(
                "internal error in %s", args.command, exc_info=True, extra={"EDGE_EVENT": "crash"}
            )
        print(
            f"edge-daemon: internal error in `{args.command}`: {type(exc).__name__}: {exc} "
            "(a bug: please report it with the output of the same command run with "
            "EDGE_DAEMON_TRACEBACK=1)",
            file=sys.stderr,
        )
        return exits.SOFTWARE


if __name__ == "__main__":
    sys.exit(main())
