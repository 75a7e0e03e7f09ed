"""What the server says beyond audio reaches the user: stop reasons in words
(log, ctl status, a flash of the status LED), tokens used per session and
since start, waitingForInput, late transcript pieces with their own turn;
and doctor's token and link checks."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import pytest
from support.rig import daemon_rig

from edge_daemon import doctor
from edge_daemon.config import load_config
from edge_daemon.daemon import State
from edge_daemon.transcripts import Transcripts


async def test_a_safety_stop_is_logged_shown_and_flashed(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_rig() as rig:
        notices: list[str] = []
        rig.daemon.subscribe_notice(notices.append)
        await rig.fake.send(
            {
                "serverContent": {
                    "turnComplete": True,
                    "turnCompleteReason": "PROHIBITED_INPUT_CONTENT",
                }
            }
        )
        await rig.until(lambda: notices == ["safety_stop"])
        model = rig.daemon.status()["model"]
        assert model["last_stop"]["reason"] == "PROHIBITED_INPUT_CONTENT"
        assert model["last_stop"]["words"] == "safety: the input was refused"
        assert (model["stops"], model["safety_stops"]) == (1, 1)
        stopped = [r for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "turn_stopped"]
        assert len(stopped) == 1 and stopped[0].EDGE_REASON == "PROHIBITED_INPUT_CONTENT"
        # An ordinary turnComplete is no notice.
        await rig.turn()
        await rig.state(State.IDLE)
        assert notices == ["safety_stop"]


async def test_usage_adds_up_per_session_and_since_start() -> None:
    async with daemon_rig() as rig:
        usage = {"totalTokenCount": 100, "promptTokenCount": 70, "responseTokenCount": 30}
        await rig.fake.send({"usageMetadata": usage})
        await rig.fake.send({"usageMetadata": {**usage, "totalTokenCount": 50}})
        await rig.until(lambda: rig.daemon.counters.tokens_used == 150)
        tokens = rig.daemon.status()["model"]["tokens"]
        assert tokens["session"]["totalTokenCount"] == 150
        assert tokens["total"]["promptTokenCount"] == 140
        # A new session (the old one forgotten) starts its own count; the total goes on.
        rig.fake.sessions.clear()
        connects = rig.daemon.link.connects
        await rig.fake.drop_connection()
        await rig.until(lambda: rig.daemon.link.connects == connects + 1, 30)
        await rig.fake.send({"usageMetadata": {"totalTokenCount": 7}})
        await rig.until(lambda: rig.daemon.counters.tokens_used == 157)
        tokens = rig.daemon.status()["model"]["tokens"]
        assert tokens["session"]["totalTokenCount"] == 7
        assert tokens["total"]["totalTokenCount"] == 157


async def test_waiting_for_input_ends_what_is_owed() -> None:
    """The model waits for the user to go on: no answer is owed, so the
    daemon goes idle instead of calling the silence a hang."""
    async with daemon_rig(overrides={"link.response_timeout_s": 3.0}) as rig:
        rig.fake.script_turn(delay_s=120)  # the answer would come much later
        rig.daemon.press("test")
        await rig.fake.wait_for(lambda f: f.count("activityStart") >= 1)
        rig.daemon.release("test")
        await rig.fake.wait_for(lambda f: f.count("activityEnd") >= 1)
        await rig.state(State.THINKING)
        await rig.fake.send({"serverContent": {"waitingForInput": True}})
        await rig.state(State.IDLE)
        assert rig.daemon.sender.awaiting_reply_since is None
        history = [s for _, s in rig.daemon.history]
        assert history[-3:] == ["listening", "thinking", "idle"]
        assert rig.daemon.counters.stalls == 0
        assert rig.daemon.link.connects == 1


def test_a_late_piece_of_the_users_words_stays_with_its_turn(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    turn = [1]
    t = Transcripts(enabled=True, turn=lambda: turn[0])
    t.user("turn on")
    t.model("Done.")
    t.flush()  # turnComplete of turn 1
    t.user(" the lamp")  # the rest of turn 1's transcription, after its end
    turn[0] = 2
    t.new_turn()  # the user's next turn starts
    t.user("thanks")
    t.flush()
    lines = [(r.getMessage(), r.EDGE_TURN) for r in caplog.records if hasattr(r, "EDGE_TURN")]
    assert lines == [
        ("user: turn on", 1),
        ("model: Done.", 1),
        ("user (late): the lamp", 1),
        ("user: thanks", 2),
    ]


def test_transcripts_off_keep_the_words_out_of_the_log(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    t = Transcripts(enabled=False)
    t.user("my secret plans")
    t.model("I will not tell")
    t.flush()
    assert "secret" not in caplog.text and "tell" not in caplog.text
    assert "(15 characters; logging.transcripts is off)" in caplog.text


async def test_doctor_runs_the_token_command_once(tmp_path: Path) -> None:
    script = tmp_path / "mint.py"
    script.write_text("print('auth_tokens/' + 'abc')\n")
    good = tmp_path / "good.toml"
    good.write_text(
        f'[gemini]\nauth = "ephemeral_token"\ntoken_command = "{sys.executable} {script}"\n'
    )
    check = await doctor.check_token_command(load_config(good, env={}))
    assert check.status == "PASS" and "auth_tokens/abc" not in check.detail
    assert "1 new session(s)" in check.detail
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[gemini]\nauth = "ephemeral_token"\ntoken_command = "{tmp_path}/nope"\n')
    check = await doctor.check_token_command(load_config(bad, env={}))
    assert check.status == "FAIL" and "cannot run the token command" in check.detail
    plain = await doctor.check_token_command(load_config(None, env={}))
    assert plain.status == "SKIP"


def test_doctor_reads_the_running_daemons_link_trouble() -> None:
    from edge_daemon.doctor.link import check_link

    def asking(problem: str, state: str = "reconnecting"):  # type: ignore[no-untyped-def]
        def ask(_body: object) -> dict[str, object]:
            return {
                "connection": {
                    "state": state,
                    "problem": problem,
                    "last_error": "closed 1011 'RESOURCE_EXHAUSTED'",
                }
            }

        return ask

    assert check_link(None).status == "SKIP"
    assert check_link(asking("", "connected")).status == "PASS"
    quota = check_link(asking("quota"))
    assert quota.status == "FAIL" and "quota" in quota.detail and "AI Studio" in quota.fix
    assert check_link(asking("network")).status == "WARN"
    assert check_link(asking("token")).status == "FAIL"


async def test_frames_from_the_ticker_and_take_photo_share_one_a_second() -> None:
    """However frames come (the ticker, the model's take_photo), two never go
    up less than a second apart: the fake flags any that do."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 24)).save(buf, "JPEG")
    jpeg = buf.getvalue()
    async with daemon_rig() as rig:
        import asyncio

        await asyncio.gather(*(rig.daemon.send_frame(jpeg) for _ in range(3)))
        await rig.fake.wait_for(lambda f: f.connections[-1].video_frames == 3)
        assert not [v for v in rig.fake.protocol_violations if "video frames" in v]


async def test_take_photo_is_refused_outside_a_conversation_when_only_while_talking() -> None:
    from edge_daemon.tools.photo import take_photo_tool
    from edge_daemon.tools.registry import ToolRegistry

    class Camera:
        captures = 0

        async def capture(self) -> bytes:
            Camera.captures += 1
            return b""

    sent: list[bytes] = []

    async def send(jpeg: bytes) -> None:
        sent.append(jpeg)

    registry = ToolRegistry()
    registry.add(
        take_photo_tool(
            Camera(), send, refusal=lambda: "the camera is used only during a conversation"
        )  # type: ignore[arg-type]
    )
    outcome = await registry.call("take_photo", {})
    assert not outcome.ok and "only during a conversation" in (outcome.error or "")
    assert Camera.captures == 0 and sent == []


async def test_a_turn_that_is_never_released_ends_at_max_turn_s(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_rig(overrides={"audio.max_turn_s": 5.0}) as rig:
        rig.daemon.press("ctl")  # and nobody lets go
        await rig.state(State.LISTENING)
        await rig.until(lambda: not rig.daemon.talking, 30)
        # The turn went up whole and closed: activityEnd sent, answered.
        await rig.fake.wait_for(lambda f: f.count("activityEnd") == 1, 30)
        await rig.state(State.IDLE, 30)
        # About max_turn_s of audio (the rig's mic runs 4x real time), no more.
        heard = rig.fake.turns[-1].heard_s
        assert 0 < heard <= 6.0 * 4, heard
        limited = [r for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "turn_limit"]
        assert len(limited) == 1 and rig.daemon.counters.turns_cut == 1
        # A released turn is never cut.
        rig.daemon.press("ctl")
        rig.daemon.release("ctl")
        await rig.state(State.IDLE, 30)
        assert rig.daemon.counters.turns_cut == 1
