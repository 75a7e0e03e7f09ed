"""The speaker volume at runtime: a level from 0 to 100 percent of
``audio.volume``, set by ``ctl volume N`` or the volume buttons, and kept
in the state directory so it outlives a restart."""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

from .audio.base import Speaker

log = logging.getLogger(__name__)

FILE_NAME = "volume.json"


class Volume:
    def __init__(self, speaker: Speaker, ceiling: float, path: Path | None) -> None:
        """``ceiling``: the gain at 100 (audio.volume); ``path``: where the
        level is kept (None: not kept)."""
        self.speaker = speaker
        self.ceiling = ceiling
        self.path = path
        self.level = self._load()
        self._apply()

    def _load(self) -> int:
        if self.path is None:
            return 100
        try:
            level = json.loads(self.path.read_text())["level"]
        except FileNotFoundError:
            return 100
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("volume in %s unreadable (%s): 100 %%", self.path, exc)
            return 100
        if not isinstance(level, int) or isinstance(level, bool) or not 0 <= level <= 100:
            log.warning("volume in %s is not 0..100: 100 %%", self.path)
            return 100
        return level

    def _apply(self) -> None:
        # Speakers without a gain of their own (a test double) just play.
        with contextlib.suppress(AttributeError):
            self.speaker.volume = self.ceiling * self.level / 100  # type: ignore[attr-defined]

    def set(self, level: int) -> int:
        """Set the level (clamped to 0..100), apply it to what is queued from
        now on, and keep it. Returns the level set."""
        self.level = max(0, min(100, int(level)))
        self._apply()
        self._save()
        log.info(
            "volume %d %%", self.level, extra={"EDGE_EVENT": "volume", "EDGE_VOLUME": self.level}
        )
        return self.level

    def step(self, delta: int) -> int:
        return self.set(self.level + delta)

    def _save(self) -> None:
        if self.path is None:
            return
        tmp = self.path.with_suffix(".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps({"level": self.level}))
            os.replace(tmp, self.path)  # atomic: a crash leaves the old level or the new
        except OSError as exc:
            log.warning(
                "volume not kept in %s: %s (it resets to 100 %% at the next start)",
                self.path,
                exc.strerror or exc,
            )
