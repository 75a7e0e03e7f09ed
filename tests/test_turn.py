"""The life of one user turn (edge_daemon/turn.py), without a socket: the
named states it passes through, and what it keeps for a replay."""

from __future__ import annotations

from edge_daemon.turn import Phase, Turn


def _life(turn: Turn, *steps: str) -> list[str]:
    seen = [turn.phase.value]
    for step in steps:
        getattr(turn, step)()
        seen.append(turn.phase.value)
    return seen


def test_a_turn_is_opened_owed_closed_then_answered() -> None:
    turn = Turn([b"pre"], 10)
    turn.append(b"a")
    assert (turn.open, turn.end_owed, turn.unheard) == (True, False, False)
    assert _life(turn, "end", "end_sent", "hear") == ["opened", "audio owed", "closed", "answered"]
    assert len(turn.audio) == 0  # heard: nothing kept for a replay


def test_heard_before_its_end_went_out_is_answered_once_the_end_is_out() -> None:
    # A transcript while activityEnd waits behind a tool call: the end is still owed.
    turn = Turn([], 10)
    turn.append(b"a")
    assert _life(turn, "end", "hear") == ["opened", "audio owed", "audio owed"]
    assert turn.end_owed and not turn.unheard
    assert _life(turn, "end_sent") == ["audio owed", "answered"]


def test_hearing_an_open_turn_changes_nothing() -> None:
    # The user is still speaking: a transcript so far must not drop the audio.
    turn = Turn([b"a", b"b"], 10)
    turn.hear()
    assert turn.phase is Phase.OPENED and list(turn.audio) == [b"a", b"b"]


def test_an_unheard_turn_is_replayed_from_its_oldest_kept_chunk() -> None:
    turn = Turn([], 3)
    for i in range(5):
        turn.append(bytes([i]))
    turn.sent = 5
    assert _life(turn, "end", "end_sent") == ["opened", "audio owed", "closed"]
    # A new socket: the 2 evicted chunks are lost (said once), the 3 kept go again.
    assert turn.replay() == 2
    assert turn.phase is Phase.AUDIO_OWED and turn.unheard
    assert turn.unsent() == (3, 0)
    assert turn.replay() == 0  # the same loss is not counted twice


def test_chunks_evicted_before_they_were_sent_are_counted_once() -> None:
    turn = Turn([], 2)
    for i in range(5):
        turn.append(bytes([i]))
    assert turn.unsent() == (2, 3)
    assert turn.unsent() == (2, 0)


def test_superseded_and_cut_turns_owe_nothing() -> None:
    answered = Turn([b"a"], 10)
    assert _life(answered, "end", "end_sent", "supersede") == [
        "opened",
        "audio owed",
        "closed",
        "superseded",
    ]
    assert not (answered.open or answered.end_owed or answered.unheard)
    assert len(answered.audio) == 0
    stopped = Turn([b"a"], 10)
    assert _life(stopped, "cut") == ["opened", "cut"]
    assert not (stopped.open or stopped.end_owed or stopped.unheard)


def test_the_turn_before_the_first_press_owes_nothing() -> None:
    none = Turn.none()
    assert not (none.open or none.end_owed or none.unheard)
    assert _life(none, "end", "end_sent", "hear") == ["answered"] * 4
