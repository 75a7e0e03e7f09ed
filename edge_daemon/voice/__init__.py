"""The mic pipeline: what the microphone hears, on its way to a turn.

No Gemini and no GPIO here (the house rules): the stages see only audio and
say where it goes. The sender, which talks to the Live session, sits beside
the daemon (sender.py).
"""

from .pipeline import MicPipeline
from .preroll import PreRoll

__all__ = ["MicPipeline", "PreRoll"]
