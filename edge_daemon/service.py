"""The process around the daemon: config, logging, the built-in fake server for
``--simulate``, the control socket, the keyboard, signals and systemd.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal

from . import exits, systemd
from .audio import open_audio
from .audio.base import AudioConfigError, Microphone, Speaker
from .audio.recovery import RecoveringMicrophone, open_recovering_pyaudio
from .camera import Camera, open_camera
from .camera.recovery import RecoveringCamera
from .config import (
    Config,
    ConfigError,
    Secret,
    cleartext_to_remote,
    default_endpoint,
    resolve_mqtt_password,
    resolve_secret,
    with_overrides,
)
from .control import ControlServer, default_user_socket
from .daemon import Daemon, State
from .device_health import DeviceBoard, DeviceHealth
from .hardware_setup import attach_hardware
from .keyboard import keyboard_toggle
from .live.handle_store import FILE_NAME as HANDLE_FILE
from .live.handle_store import HandleStore
from .live.reconnect import LinkSettings
from .live.session import Credentials
from .live.tokens import TokenLimits, TokenSource
from .mqtt_setup import attach_mqtt, log_if_dead, stop_mqtt
from .state import state_dir, user_state_dir
from .tools.photo import take_photo_tool
from .voice_setup import VoiceSetupError

log = logging.getLogger(__name__)

EXIT_CONFIG = exits.CONFIG  # the unit does not restart on it (RestartPreventExitStatus)


def simulate_overrides(cfg: Config) -> dict[str, object]:
    """What --simulate changes: only what the config leaves unsaid."""
    overrides: dict[str, object] = {}
    if "state.dir" not in cfg.explicit:
        # Never the installed service's state, even when run as root.
        overrides["state.dir"] = str(user_state_dir())
    if "audio.backend" not in cfg.explicit:
        overrides["audio.backend"] = (
            "wav" if cfg.audio.input_wav or cfg.audio.output_wav else "null"
        )
    if "control.socket" not in cfg.explicit:
        overrides["control.socket"] = default_user_socket()
    return overrides


def token_source(cfg: Config, secret: Secret | None) -> TokenSource | None:
    """Ephemeral tokens are tracked (uses, windows, expiry) and renewed
    through gemini.token_command; an API key is used as it is."""
    g = cfg.gemini
    if g.auth != "ephemeral_token":
        return None
    return TokenSource(
        command=g.token_command,
        initial=secret.reveal() if secret is not None else None,
        limits=TokenLimits(g.token_uses, g.token_new_session_s, g.token_expire_s),
        timeout_s=g.token_timeout_s,
    )


def setup_fingerprint(cfg: Config, url: str) -> str:
    """What a saved resumption handle belongs to: the same endpoint, model,
    instructions and tools (a handle from another setup is not resumed)."""
    g = cfg.gemini
    parts = [url, g.model, g.system_instruction, g.language, repr(cfg.tools)]
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def link_settings(cfg: Config, url: str, secret: Secret | None) -> LinkSettings:
    tokens = token_source(cfg, secret)
    creds = (
        Credentials(secret.reveal(), cfg.gemini.auth)
        if secret is not None and tokens is None
        else None
    )
    store = HandleStore(state_dir(cfg.state.dir) / HANDLE_FILE, setup_fingerprint(cfg, url))
    return LinkSettings(
        url=url,
        credentials=creds,
        tokens=tokens,
        handle_store=store,
        quota_backoff_s=cfg.link.quota_backoff_s,
        connect_timeout_s=cfg.gemini.connect_timeout_s,
        setup_timeout_s=cfg.gemini.setup_timeout_s,
        backoff_initial_s=cfg.link.backoff_initial_s,
        backoff_max_s=cfg.link.backoff_max_s,
        config_error_backoff_s=cfg.link.config_error_backoff_s,
        healthy_after_s=cfg.link.healthy_after_s,
    )


async def run_service(cfg: Config, *, simulate: bool) -> int:
    """Run until SIGTERM/SIGINT; return the process exit status."""
    loop = asyncio.get_running_loop()
    fake = None
    try:
        secret = resolve_secret(cfg)
        mqtt_password = resolve_mqtt_password(cfg) if cfg.mqtt.host else None
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    if mqtt_password is not None:
        systemd.redact(mqtt_password.reveal())
    url = cfg.gemini.endpoint
    if simulate and not url:
        from .fake_gemini import FakeGemini

        fake = FakeGemini()
        await fake.start()
        url = fake.url
        log.info("simulating: built-in fake Gemini at %s", url, extra={"EDGE_EVENT": "fake_server"})
    else:
        url = default_endpoint(cfg)
        if secret is None and not cfg.gemini.token_command:
            log.error(
                "no Gemini API key: set $GEMINI_API_KEY, gemini.api_key_file, or the systemd "
                "credential gemini-api-key (or use --simulate to try it without one)"
            )
            return EXIT_CONFIG
    if (secret is not None or cfg.gemini.token_command) and cleartext_to_remote(url):
        log.error(
            "gemini.endpoint %s is ws:// to another machine: the key would cross the network "
            "in clear text. Use wss://, or a ws:// endpoint on this machine (127.0.0.1)",
            url,
        )
        return EXIT_CONFIG
    if secret is not None:
        # Nothing logs the key; this scrubs it should anything ever try.
        systemd.redact(secret.reveal())
        log.info("API key from %s", secret.source, extra={"EDGE_EVENT": "key_source"})

    devices = DeviceBoard()
    camera = open_devices_camera(cfg, devices)
    mic, speaker = open_devices_audio(cfg, devices)
    try:
        daemon = Daemon(
            cfg,
            mic=mic,
            speaker=speaker,
            link_settings=link_settings(cfg, url, secret),
            camera=camera,
            device_health=devices,
        )
    except VoiceSetupError as exc:
        # A wake word model that does not load, or a missing package: a
        # restart cannot fix it (the unit does not restart on 78).
        log.error("%s", exc, extra={"EDGE_EVENT": "voice_failed"})
        await mic.close()
        await speaker.close()
        if camera is not None:
            await camera.close()
        if fake is not None:
            await fake.stop()
        return EXIT_CONFIG
    if isinstance(mic, RecoveringMicrophone):
        # Never reopen the microphone under a turn (to let PortAudio find the speaker).
        mic.pair.mic_in_use = lambda: daemon.talking
    if camera is not None and cfg.tools.take_photo:
        daemon.tools.add(
            take_photo_tool(
                camera,
                daemon.send_frame,
                timeout_s=cfg.tools.timeout_s,
                refusal=lambda: photo_refusal(cfg, daemon),
            )
        )

    ready = False
    exit_status = exits.OK

    def show_status() -> None:
        # In `systemctl status`: the state, for an error what to fix, and
        # any device that is missing.
        new = daemon.state
        detail = f": {systemd.scrub(daemon.link.last_error)}" if new is State.ERROR else ""
        missing = devices.summary()
        systemd.notify_status(f"{new.value}{detail}" + (f"; {missing}" if missing else ""))

    def on_state(_old: State, new: State) -> None:
        nonlocal ready
        show_status()
        # Ready once a session is set up, or once it is clear the daemon will
        # keep trying on its own (so `systemctl start` does not hang offline).
        if not ready and new is not State.STARTING:
            ready = True
            systemd.notify("READY=1")

    def device_lost(health: DeviceHealth) -> None:
        nonlocal exit_status
        if exit_status != exits.OK:
            return
        log.error(
            "%s missing for %g s (%s.device_grace_s): exiting with status %d so that "
            "systemd restarts the service; the last error: %s",
            health.name,
            health.grace_s,
            "camera" if health.name == "camera" else "audio",
            exits.DEVICE_LOST,
            health.reason,
            extra={"EDGE_EVENT": "device_gone", "EDGE_DEVICE": health.name},
        )
        exit_status = exits.DEVICE_LOST
        systemd.notify("STOPPING=1")
        daemon.stop()

    daemon.subscribe(on_state)
    devices.subscribe(lambda _health: show_status())
    devices.on_expired(device_lost)

    def toggle() -> None:
        (daemon.release if daemon.status()["talking"] else daemon.press)("keyboard")

    def shutdown(signame: str) -> None:
        log.info("%s: shutting down", signame, extra={"EDGE_EVENT": "shutdown"})
        systemd.notify("STOPPING=1")
        daemon.stop()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shutdown, sig.name)

    control = ControlServer(cfg.control.socket, daemon.control)
    try:
        await control.start()
    except (OSError, RuntimeError) as exc:
        # Restarting will not fix a socket path that cannot be bound (or a
        # second daemon already running): say so and stop for good.
        log.error(
            "control socket %s: %s (see control.socket)",
            cfg.control.socket,
            exc,
            extra={"EDGE_EVENT": "control_failed"},
        )
        await mic.close()
        await speaker.close()
        if fake is not None:
            await fake.stop()
        return EXIT_CONFIG
    attach_hardware(daemon, cfg, simulate=simulate)
    bridge = attach_mqtt(daemon, cfg, mqtt_password)
    watchdog: asyncio.Task[None] | None = None
    mqtt_task: asyncio.Task[None] | None = None
    try:
        interval = systemd.watchdog_interval_s()
        if interval:
            watchdog = loop.create_task(systemd.watchdog_loop(interval), name="watchdog")
        if bridge is not None:
            mqtt_task = loop.create_task(bridge.run(), name="mqtt")
            mqtt_task.add_done_callback(log_if_dead)
        use_keys = cfg.control.keyboard
        with keyboard_toggle(loop, toggle) if use_keys else contextlib.nullcontext(False) as keys:
            if keys:
                print("edge-daemon: press Enter or space to talk, again to stop; Ctrl-C quits")
            await daemon.run()
    finally:
        if watchdog is not None:
            watchdog.cancel()
        if bridge is not None and mqtt_task is not None:
            await stop_mqtt(bridge, mqtt_task)
        await control.close()
        if fake is not None:
            await fake.stop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
    log.info("stopped", extra={"EDGE_EVENT": "stopped"})
    return exit_status


def photo_refusal(cfg: Config, daemon: Daemon) -> str:
    """Why the model may not take a photo now ("" if it may)."""
    in_conversation = daemon.state in (State.LISTENING, State.THINKING, State.SPEAKING)
    if cfg.camera.only_while_talking and not in_conversation:
        return "the camera is used only during a conversation (camera.only_while_talking)"
    return ""


def open_devices_camera(cfg: Config, devices: DeviceBoard) -> Camera | None:
    """The configured camera (None for none), reopened whenever it goes away:
    a broken camera costs the eyes, not the voice. It opens when the daemon
    starts it."""
    c = cfg.camera
    if c.backend == "none":
        return None

    def make() -> Camera:
        camera = open_camera(c)
        assert camera is not None  # backend is not "none"
        return camera

    health = devices.add("camera", c.device_grace_s, c.device_retry_max_s)
    return RecoveringCamera(make, health, retry_max_s=c.device_retry_max_s)


def open_devices_audio(cfg: Config, devices: DeviceBoard) -> tuple[Microphone, Speaker]:
    """The configured mic and speaker. Real devices (``pyaudio``) open when the
    daemon starts them, and whichever is missing, then or later, is reopened
    with backoff; meanwhile typed turns, tools and the control socket keep
    working. A WAV file that cannot be used means no sound until the config
    is fixed."""
    a = cfg.audio
    if a.backend == "pyaudio":
        pair = open_recovering_pyaudio(
            devices,
            chunk_ms=a.chunk_ms,
            input_device=a.input_device,
            output_device=a.output_device,
            volume=a.volume,
            grace_s=a.device_grace_s,
            retry_max_s=a.device_retry_max_s,
            speaker_rest_s=a.speaker_rest_s,
        )
        return pair.mic, pair.speaker
    try:
        return open_audio(
            a.backend,
            input_wav=a.input_wav,
            output_wav=a.output_wav,
            chunk_ms=a.chunk_ms,
            volume=a.volume,
        )
    except AudioConfigError as exc:
        log.error(
            "audio unavailable, running without sound until the config is fixed and the "
            "service restarted: %s",
            exc,
            extra={"EDGE_EVENT": "device_off", "EDGE_DEVICE": "audio"},
        )
        return open_audio("null", chunk_ms=a.chunk_ms)


def prepare(cfg: Config, simulate: bool) -> Config:
    if simulate:
        cfg = with_overrides(cfg, simulate_overrides(cfg), origin="--simulate")
    return cfg
