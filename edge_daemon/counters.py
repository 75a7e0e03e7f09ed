"""The daemon's counters: one object every part counts into, shown whole by
``ctl status``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Counters:
    turns: int = 0
    turns_cut: int = 0  # ended by audio.max_turn_s
    chunks_sent: int = 0
    chunks_buffered: int = 0
    chunks_dropped: int = 0
    audio_in_chunks: int = 0
    interruptions: int = 0
    barge_ins: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    tool_cancellations: int = 0
    go_aways: int = 0
    # usageMetadata.totalTokenCount summed over every answer: what was billed.
    tokens_used: int = 0
    stalls: int = 0
    unacked_turns_resent: int = 0
