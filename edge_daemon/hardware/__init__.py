"""GPIO through gpiozero: the push-to-talk button, the status LED and the pins
they sit on. Knows nothing of Gemini; daemon.py wires it to the rest."""

from .button import PushToTalk
from .pins import make_pin_factory, pin_states
from .status_led import STATE_PATTERNS, StatusLed

__all__ = ["STATE_PATTERNS", "PushToTalk", "StatusLed", "make_pin_factory", "pin_states"]
