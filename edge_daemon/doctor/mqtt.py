"""The MQTT broker (``[mqtt] host``): it answers, takes the login, and a message
published on a topic of this device comes back (a subscribe/publish round
trip). Off when no broker is set."""

from __future__ import annotations

import asyncio
import secrets
import ssl
import time
from collections.abc import Mapping
from pathlib import Path

from ..config import (
    MQTT_CREDENTIAL_NAME,
    Config,
    ConfigError,
    Secret,
    mqtt_base_topic,
    mqtt_client_id,
    resolve_mqtt_password,
)
from .config_key import read_key_file
from .machine import INSTALL
from .report import Check, fail, ok, skip

# Where systemd/install.sh keeps the password the unit loads as a credential.
MQTT_PASSWORD_FILE = "/etc/edge-daemon/mqtt-password"


def check_mqtt(
    cfg: Config, env: Mapping[str, str], *, password_file: Path, timeout_s: float = 10.0
) -> Check:
    name = "mqtt"
    m = cfg.mqtt
    if not m.host:
        return skip(name, "off ([mqtt] host is empty)")
    try:
        password = resolve_mqtt_password(cfg, env)
    except ConfigError as exc:
        return fail(name, str(exc), "make mqtt.password_file a readable file holding only it")
    if password is None and m.username:
        # What the service would be given: the credential the installer stored.
        _state, password = read_key_file(password_file)
    return asyncio.run(_round_trip(cfg, password, timeout_s))


async def _round_trip(cfg: Config, password: Secret | None, timeout_s: float) -> Check:
    import aiomqtt

    name = "mqtt"
    m = cfg.mqtt
    where = f"{m.host}:{m.port}"
    topic = f"{mqtt_base_topic(m)}/doctor/{secrets.token_hex(4)}"
    how = " with TLS" if m.tls else ""
    who = f" as {m.username}" if m.username else " anonymously"
    tls = None
    if m.tls:
        try:
            tls = await asyncio.to_thread(ssl.create_default_context, cafile=m.ca_file or None)
        except (OSError, ssl.SSLError) as exc:
            return fail(name, f"cannot use mqtt.ca_file {m.ca_file}: {exc}", "point it at a PEM CA")
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout_s):
            async with aiomqtt.Client(
                m.host,
                m.port,
                # Never the daemon's own id: the broker would throw the daemon off.
                identifier=f"{mqtt_client_id(m)}-doctor-{secrets.token_hex(2)}",
                username=m.username or None,
                password=password.reveal() if password is not None else None,
                tls_context=tls,
                timeout=timeout_s,
            ) as client:
                connected = time.monotonic()
                await client.subscribe(topic, qos=1)
                await client.publish(topic, b"doctor", qos=1)
                async for message in client.messages:
                    if message.topic.value == topic:
                        break
                back = time.monotonic()
    except TimeoutError:
        return fail(
            name,
            f"{where}: no answer within {timeout_s:g} s",
            f"is the broker running and reachable from here? (nc -vz {m.host} {m.port})",
        )
    except aiomqtt.MqttError as exc:
        text = str(exc)
        if "authori" in text.lower() or "password" in text.lower():
            return fail(
                name,
                f"{where}: the broker refused the login{who}: {text}",
                "check mqtt.username and the password: "
                f"{INSTALL} --mqtt-password-file - (the systemd credential "
                f"{MQTT_CREDENTIAL_NAME}), or mqtt.password_file",
            )
        if "certificate" in text.lower() or "ssl" in text.lower():
            return fail(
                name,
                f"{where}: TLS failed: {text}",
                "is mqtt.ca_file the CA that signed the broker's certificate, and the clock "
                "right (see the clock check)?",
            )
        return fail(
            name,
            f"{where}: {text}",
            f"is the broker running, on this port, and reachable? (nc -vz {m.host} {m.port}; "
            "mqtt.tls for a TLS-only port)",
        )
    return ok(
        name,
        f"{where}{how}: logged in{who} in {(connected - started) * 1000:.0f} ms; "
        f"publish/subscribe round trip in {(back - connected) * 1000:.0f} ms",
    )
