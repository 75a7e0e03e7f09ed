"""The wake word: microWakeWord models through pymicro-wakeword.

Loaded only when ``wake.model`` names one, so a daemon without a wake word
never imports TensorFlow Lite. The detector sees the mic's chunks (after
echo cancellation, when that is on) and says when the phrase was heard; it
never keeps or sends audio itself.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

BUILTIN = ("okay_nabu", "alexa", "hey_mycroft", "hey_jarvis")
# The detector runs on 120 ms at a time, not on every 40 ms chunk: the same
# work, but a third of the wake-ups of TensorFlow Lite, whose cold start
# each time is most of its cost in real time (measured: 1.04 -> 0.67 CPU-s
# per minute, paced). Detection comes up to 80 ms later.
BATCH_BYTES = 2 * 16000 * 120 // 1000


class WakeWordError(ValueError):
    """The configured model cannot be loaded; the message says why."""


class WakeWord:
    def __init__(self, model: str, *, base_dir: str | Path = "", threshold: float = 0.0) -> None:
        """``model``: a built-in name, or the path of a model's JSON (relative
        paths from ``base_dir``, the config file's folder). ``threshold``
        (0..1) replaces the model's own probability cutoff when above 0."""
        try:
            from pymicro_wakeword import MicroWakeWord, MicroWakeWordFeatures, Model
        except ImportError as exc:
            raise WakeWordError(
                f"the wake word needs pymicro-wakeword: pip install 'edge-daemon[voice]' ({exc})"
            ) from None
        try:
            if model in BUILTIN:
                detector: Any = MicroWakeWord.from_builtin(Model(model))
            else:
                path = Path(base_dir) / model
                _check_json(path)
                detector = MicroWakeWord.from_config(path)
        except WakeWordError:
            raise
        except (OSError, ValueError, KeyError) as exc:
            raise WakeWordError(f"wake word model {model!r} does not load: {exc}") from None
        if threshold > 0:
            detector.probability_cutoff = threshold
        self.name = model
        self.phrase: str = detector.wake_word
        self._detector = detector
        self._features = MicroWakeWordFeatures()
        self._fresh = True  # nothing heard since the last reset (which reloads the model)
        self._batch = bytearray()
        self.detections = 0

    def process(self, chunk: bytes) -> bool:
        """Feed 16 kHz mono s16le; True when the phrase was heard (it ended
        in the last 120 ms)."""
        self._batch += chunk
        if len(self._batch) < BATCH_BYTES:
            return False
        audio, self._batch = bytes(self._batch), bytearray()
        heard = False
        self._fresh = False
        for features in self._features.process_streaming(audio):
            if self._detector.process_streaming(features):
                heard = True
        if heard:
            self.detections += 1
            # One utterance fires once: the averaged probability stays high
            # for a few windows after the phrase.
            self.reset()
        return heard

    def reset(self) -> None:
        """Forget what was heard (after a detection, or audio that was not the room)."""
        self._batch.clear()
        if self._fresh:
            return
        self._fresh = True
        self._detector.reset()
        self._features.reset()


def _check_json(path: Path) -> None:
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise WakeWordError(f"wake word model {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WakeWordError(f"wake word model {path} is not readable JSON: {exc}") from None
    if not isinstance(config, dict) or "micro" not in config or "model" not in config:
        raise WakeWordError(
            f"wake word model {path} is not a microWakeWord model JSON "
            '(it needs "model" and "micro")'
        )
    tflite = path.parent / str(config["model"])
    if not tflite.is_file():
        raise WakeWordError(f"wake word model {path} names {tflite}, which does not exist")
