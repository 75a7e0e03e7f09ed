"""Every check, wired to the real machine, in a fixed order and always the same
names (scripts rely on them)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Config, Secret, default_endpoint
from .camera import check_camera
from .clock import check_clock
from .config_key import check_config, check_key
from .gpio import check_gpio, gpio_gid, probe_pins
from .link import Ask, check_link
from .machine import KEY_FILE, Runner, run_command, under, unit_installed
from .microphone import check_microphone
from .mqtt import MQTT_PASSWORD_FILE, check_mqtt
from .network import check_endpoint, check_live
from .portaudio import load_pyaudio
from .report import Check, skip
from .service import check_service, check_service_user, service_active
from .speaker import check_speaker
from .tokens import check_token_command
from .voice import check_voice


@dataclass(frozen=True)
class Options:
    config: str | None = None
    live: bool = False
    listen: bool = False
    beep: bool = False
    simulate: bool = False


@dataclass
class Machine:
    """The real machine; tests replace parts."""

    root: Path = Path("/")
    run: Runner = run_command
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    pyaudio: Callable[[], Any] = load_pyaudio
    prompt: Callable[[str], None] | None = None

    def ask_daemon(self, cfg: Config | None) -> Ask | None:
        """A way to ask the running daemon (its control socket), or None."""
        from ..control import request

        path = (cfg or Config()).control.socket
        if not (self.root / path.lstrip("/")).exists():
            return None
        return lambda body: request(str(self.root / path.lstrip("/")), body, timeout_s=5.0)


async def _network(cfg: Config, secret: Secret | None, opts: Options) -> tuple[Check, Check]:
    fake = None
    url = default_endpoint(cfg)
    label = ""
    if opts.simulate and not cfg.gemini.endpoint:
        from ..fake_gemini import FakeGemini

        # What `run --simulate` talks to: the same fake, on a loopback port.
        fake = FakeGemini(use_speech=False)
        await fake.start()
        url, label = fake.url, "built-in fake Gemini (--simulate) at "
    try:
        # Blocking DNS/TCP/TLS in a thread, so the fake on this loop keeps serving.
        endpoint = await asyncio.to_thread(check_endpoint, url, label=label)
        if not opts.live:
            live = skip("live", "not tried (--live does one real setup handshake)")
        elif endpoint.status == "FAIL":
            live = skip("live", "the endpoint is not reachable")
        elif secret is None and fake is None:
            live = skip("live", "no API key to try it with")
        else:
            live = await check_live(url, cfg, secret)
    finally:
        if fake is not None:
            await fake.stop()
    return endpoint, live


def run_checks(opts: Options, machine: Machine | None = None) -> list[Check]:
    """Every check, in a fixed order and always the same names (scripts rely on them)."""
    m = machine or Machine()
    config, cfg = check_config(opts.config, m.env)
    installed = unit_installed(m.root)
    checks = [config]
    if cfg is None:
        unchecked = ("api_key", "token", "endpoint", "live", "clock", "microphone", "speaker")
        checks += [skip(n, "needs a config that parses") for n in unchecked]
        checks += [
            skip(n, "needs a config that parses") for n in ("voice", "gpio", "camera", "mqtt")
        ]
    else:
        # The built-in fake under --simulate needs no key, no TLS and so no clock.
        fake_endpoint = opts.simulate and not cfg.gemini.endpoint
        key, secret = check_key(
            cfg,
            m.env,
            key_file=under(m.root, KEY_FILE),
            installed=installed,
            needs_key=not fake_endpoint,
        )
        checks.append(key)
        checks.append(asyncio.run(check_token_command(cfg)))
        checks.extend(asyncio.run(_network(cfg, secret, opts)))
        tls_needed = default_endpoint(cfg).startswith("wss://") and not fake_endpoint
        checks.append(check_clock(m.run, m.root, tls_needed=tls_needed))
        # What the running service holds (sound card, pins) cannot be opened twice.
        active = service_active(m.run, m.root)
        checks.append(
            check_microphone(
                cfg,
                simulate=opts.simulate,
                listen=opts.listen,
                service_active=active,
                loader=m.pyaudio,
                prompt=m.prompt,
            )
        )
        checks.append(
            check_speaker(
                cfg, simulate=opts.simulate, beep=opts.beep, service_active=active, loader=m.pyaudio
            )
        )
        checks.append(check_voice(cfg))
        checks.append(
            check_gpio(
                cfg,
                root=m.root,
                simulate=opts.simulate,
                service_active=active,
                gpio_gid=gpio_gid(),
                probe=lambda pins: probe_pins(pins, m.run, m.root),
            )
        )
        checks.append(check_camera(cfg, root=m.root))
        checks.append(check_mqtt(cfg, m.env, password_file=under(m.root, MQTT_PASSWORD_FILE)))
    # Not installed is a failure on a device, and expected on a desktop under --simulate.
    expected = installed or not opts.simulate
    checks.append(check_service_user(installed=expected))
    checks.append(check_service(m.run, root=m.root, installed=expected))
    checks.append(check_link(m.ask_daemon(cfg)))
    return checks
