"""edge-daemon: a headless Gemini Live voice daemon for Raspberry Pi class devices."""

__version__ = "0.1.0"
