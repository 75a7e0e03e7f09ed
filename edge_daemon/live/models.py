"""What each family of Live models accepts, from the model name.

The Live API rejects setups that ask a model for something it does not do,
with close 1007 at setup (and some fields only on the v1alpha endpoint).
Knowing the families here lets the config refuse such a setup with a clear
error instead, and lets the setup builder send each family its own dialect:

- native-audio models (``*native-audio*`` and the 3.x Live models) choose
  their own language and take no ``speechConfig.languageCode``; the reply
  language is steered through the system instruction, as Google documents;
- 2.5 models think with a ``thinkingBudget``, 3.x models with a
  ``thinkingLevel``; half-cascade models (``gemini-live-2.5-flash-preview``,
  ``gemini-2.0-flash-live-001``) do not think and do take a language code;
- 3.x Live models call functions synchronously only (no NON_BLOCKING) and
  refuse ``clientContent`` after the first turn;
- proactive audio and affective dialog exist only for native-audio models,
  and only on the v1alpha endpoint.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

ThinkingStyle = Literal["budget", "level", "none"]


@dataclass(frozen=True)
class ModelTraits:
    native_audio: bool
    thinking: ThinkingStyle
    non_blocking_tools: bool
    family: str  # for messages: "2.5 native audio", "3.x Live", "half-cascade"


_GEMINI_3 = re.compile(r"(^|/)gemini-3(\.\d+)?-")


def traits(model: str) -> ModelTraits:
    name = model.removeprefix("models/")
    if _GEMINI_3.search(name):
        return ModelTraits(True, "level", False, "3.x Live")
    if "native-audio" in name:
        return ModelTraits(True, "budget", True, "2.5 native audio")
    return ModelTraits(False, "none", True, "half-cascade")


# Languages the Live API speaks (its documented list), by primary subtag: the
# name goes into the system instruction of a native-audio model.
LANGUAGE_NAMES = {
    "ar": "Arabic",
    "bn": "Bengali",
    "cmn": "Mandarin Chinese",
    "de": "German",
    "en": "English",
    "es": "Spanish",
    "fr": "French",
    "gu": "Gujarati",
    "hi": "Hindi",
    "id": "Indonesian",
    "it": "Italian",
    "ja": "Japanese",
    "kn": "Kannada",
    "ko": "Korean",
    "ml": "Malayalam",
    "mr": "Marathi",
    "nl": "Dutch",
    "pl": "Polish",
    "pt": "Portuguese",
    "ru": "Russian",
    "ta": "Tamil",
    "te": "Telugu",
    "th": "Thai",
    "tr": "Turkish",
    "vi": "Vietnamese",
    "zh": "Chinese",
}


def language_name(code: str) -> str | None:
    return LANGUAGE_NAMES.get(code.split("-")[0].lower())


def language_instruction(code: str) -> str:
    """How Google's Live guide tells a native-audio model which language to
    answer in: in capitals, in the system instruction."""
    name = language_name(code) or code
    return f"RESPOND IN {name.upper()}. YOU MUST RESPOND UNMISTAKABLY IN {name.upper()}."
