"""The setup message each connection opens with, from the config and the
tools the daemon offers."""

from __future__ import annotations

from .config import Config
from .live import messages as m
from .tools.registry import ToolRegistry


def setup_message(
    cfg: Config, tools: ToolRegistry, *, with_camera: bool, handle: str | None
) -> str:
    g = cfg.gemini
    return m.build_setup(
        m.SetupOptions(
            model=g.model,
            voice=g.voice,
            language=g.language,
            system_instruction=g.system_instruction,
            function_declarations=tools.declarations(),
            transcribe_input=g.transcribe_input,
            transcribe_output=g.transcribe_output,
            resumption_handle=handle,
            # Audio+video sessions end after 2 minutes without compression.
            context_window_compression=g.context_window_compression or with_camera,
            thinking_budget=g.thinking_budget,
            thinking_level=g.thinking_level,
            media_resolution=g.media_resolution if with_camera else None,
            google_search=g.google_search,
            proactive_audio=g.proactive_audio,
            affective_dialog=g.affective_dialog,
        )
    )
