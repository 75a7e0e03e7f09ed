"""The endpoint answers (DNS, TCP, TLS), and with --live one real setup handshake."""

from __future__ import annotations

import re
import socket
import ssl
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from ..config import Config, Secret
from .machine import INSTALL
from .report import Check, fail, ok

Resolver = Callable[[str, int], list[tuple[Any, ...]]]
Connector = Callable[[tuple[Any, ...], float], socket.socket]


def resolve(host: str, port: int) -> list[tuple[Any, ...]]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def connect(addrinfo: tuple[Any, ...], timeout_s: float) -> socket.socket:
    family, kind, proto, _name, sockaddr = addrinfo
    sock = socket.socket(family, kind, proto)
    try:
        sock.settimeout(timeout_s)
        sock.connect(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock


def clock_hint(message: str) -> str:
    if re.search(r"not yet valid|expired", message, re.I):
        return "the clock is probably wrong (see the clock check): sudo timedatectl set-ntp true"
    return (
        "update the CA certificates: sudo apt-get install --reinstall ca-certificates "
        "(a proxy that intercepts TLS needs its CA installed too)"
    )


def check_endpoint(
    url: str,
    *,
    resolver: Resolver = resolve,
    connector: Connector = connect,
    tls: ssl.SSLContext | None = None,
    timeout_s: float = 10.0,
    label: str = "",
) -> Check:
    """DNS, then TCP, then (for wss://) a TLS handshake with SNI and a verified certificate."""
    name = "endpoint"
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    try:
        port = parts.port or (443 if secure else 80)
    except ValueError:
        return fail(name, f"bad port in {url}", "set gemini.endpoint to a ws:// or wss:// URL")
    where = f"{label}{host}:{port}"
    try:
        addrs = resolver(host, port)
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        return fail(
            name,
            f"DNS: cannot resolve {host}: {reason}",
            "check the network (ip route; ping 1.1.1.1) and DNS (/etc/resolv.conf, "
            "resolvectl status); is gemini.endpoint spelled right?",
        )
    if not addrs:
        return fail(name, f"DNS: {host} has no addresses", "check DNS (resolvectl status)")
    errors: list[str] = []
    sock: socket.socket | None = None
    address = ""
    for info in addrs:
        address = str(info[4][0])
        try:
            sock = connector(info, timeout_s)
            break
        except OSError as exc:
            errors.append(f"{address}: {exc.strerror or exc}")
    if sock is None:
        return fail(
            name,
            f"TCP: cannot connect to {where} ({'; '.join(errors)})",
            f"check the network, and any firewall or proxy between this device and {host}:{port} "
            f"(try: nc -vz {host} {port})",
        )
    with sock:
        if not secure:
            return ok(name, f"{where} reachable: DNS {address}, TCP (ws://, so no TLS)")
        context = tls or ssl.create_default_context()
        try:
            with context.wrap_socket(sock, server_hostname=host) as conn:
                version = conn.version()
        except ssl.SSLCertVerificationError as exc:
            message = exc.verify_message or str(exc)
            return fail(
                name,
                f"TLS: the certificate of {host} is not accepted: {message}",
                clock_hint(message),
            )
        except (ssl.SSLError, OSError) as exc:
            return fail(
                name,
                f"TLS: handshake with {where} failed: {exc}",
                f"something between this device and {host} breaks TLS (a captive portal or "
                "proxy?); " + clock_hint(str(exc)),
            )
    return ok(name, f"{where} reachable: DNS {address}, TCP, {version} with a valid certificate")


async def check_live(
    url: str, cfg: Config, secret: Secret | None, *, timeout_s: float | None = None
) -> Check:
    """One real ``setup`` -> ``setupComplete`` handshake, then a clean close."""
    from ..live.messages import SetupOptions, build_setup
    from ..live.reconnect import CloseAction, classify_close
    from ..live.session import Credentials, LiveSession, SessionError

    name = "live"
    setup = build_setup(
        SetupOptions(
            model=cfg.gemini.model,
            voice=cfg.gemini.voice,
            language=cfg.gemini.language,
            transcribe_input=False,
            transcribe_output=False,
            resumption=False,
            context_window_compression=False,
        )
    )
    creds = Credentials(secret.reveal(), cfg.gemini.auth) if secret is not None else None
    started = time.monotonic()
    try:
        session = await LiveSession.open(
            url,
            setup,
            creds,
            connect_timeout_s=timeout_s or cfg.gemini.connect_timeout_s,
            setup_timeout_s=timeout_s or cfg.gemini.setup_timeout_s,
        )
    except SessionError as exc:
        verdict = classify_close(
            exc.code, exc.reason, token_auth=cfg.gemini.auth == "ephemeral_token"
        )
        if verdict.action in (CloseAction.QUOTA, CloseAction.TOKEN):
            return fail(name, f"setup handshake failed: {exc}", verdict.advice)
        if exc.code == 1008:
            fix = (
                "the server refused the key: check it at https://aistudio.google.com/apikey, "
                f"then store the right one: {INSTALL} --api-key-file PATH"
            )
        elif exc.code == 1007:
            fix = (
                f"the server refused the session setup: is gemini.model ({cfg.gemini.model}) "
                "a Live model your key may use?"
            )
        else:
            fix = "see the endpoint check; if that passes, the service may be down: try later"
        return fail(name, f"setup handshake failed: {exc}", fix)
    elapsed_ms = (time.monotonic() - started) * 1000
    await session.close()
    return ok(name, f"setup -> setupComplete in {elapsed_ms:.0f} ms ({cfg.gemini.model})")
