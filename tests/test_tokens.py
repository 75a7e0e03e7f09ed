"""Ephemeral tokens over time: which token each connection gets, when the
command runs, what a failure looks like, and that no token reaches a log."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from edge_daemon.live.tokens import (
    MARGIN_S,
    TokenError,
    TokenLimits,
    TokenSource,
    parse_token_output,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def minting_command(tmp_path: Path, *, fail_after: int | None = None, output: str = "") -> str:
    """A token command that hands out auth_tokens/t1, t2, ... and counts its runs."""
    script = tmp_path / "mint.py"
    script.write_text(
        "import pathlib, sys\n"
        f"n = pathlib.Path({str(tmp_path / 'count')!r})\n"
        "k = int(n.read_text()) + 1 if n.exists() else 1\n"
        "n.write_text(str(k))\n"
        f"if {fail_after!r} is not None and k > {fail_after!r}:\n"
        "    print('mint server unreachable: auth_tokens/leak AIzaLEAK', file=sys.stderr)\n"
        "    sys.exit(3)\n"
        f"out = {output!r}\n"
        "print(out or f'auth_tokens/t{k}')\n"
    )
    return f"{sys.executable} {script}"


async def test_single_use_tokens_are_fetched_for_each_new_session_never_for_a_resume(
    tmp_path: Path,
) -> None:
    clock = Clock()
    source = TokenSource(command=minting_command(tmp_path), clock=clock)
    used = []
    for resuming in (False, True, True, False, True, False):
        creds = await source.credentials(resuming=resuming)
        source.opened(resuming=resuming)
        used.append((creds.value, resuming))
        clock.now += 5
    new_sessions = [value for value, resuming in used if not resuming]
    assert new_sessions == ["auth_tokens/t1", "auth_tokens/t2", "auth_tokens/t3"]
    # A resume keeps the token of its session: no use spent, no fetch.
    assert used[1][0] == used[2][0] == "auth_tokens/t1"
    assert source.fetched == 3


async def test_the_new_session_window_and_the_expiry_each_force_a_fresh_token(
    tmp_path: Path,
) -> None:
    clock = Clock()
    limits = TokenLimits(uses=0, new_session_s=60, expire_s=600)
    source = TokenSource(command=minting_command(tmp_path), limits=limits, clock=clock)
    assert (await source.credentials(resuming=False)).value == "auth_tokens/t1"
    source.opened(resuming=False)
    clock.now += 60 - MARGIN_S - 1
    assert (await source.credentials(resuming=False)).value == "auth_tokens/t1"
    clock.now += 2  # inside the margin before the window closes
    assert (await source.credentials(resuming=False)).value == "auth_tokens/t2"
    # Resuming needs only an unexpired token...
    clock.now += 300
    assert (await source.credentials(resuming=True)).value == "auth_tokens/t2"
    # ... until it nears its expiry.
    clock.now += 300 - MARGIN_S
    assert (await source.credentials(resuming=True)).value == "auth_tokens/t3"


async def test_a_rejected_token_is_never_offered_again(tmp_path: Path) -> None:
    source = TokenSource(command=minting_command(tmp_path), limits=TokenLimits(uses=0))
    first = await source.credentials(resuming=False)
    source.rejected()
    second = await source.credentials(resuming=True)
    assert first.value != second.value


async def test_json_output_sets_the_limits(tmp_path: Path) -> None:
    body = {
        "name": "auth_tokens/j1",
        "uses": 3,
        "expireTime": "2026-12-01T12:30:00Z",
        "newSessionExpireTime": "2026-12-01T12:05:00.000Z",
    }
    from datetime import UTC, datetime

    wall = datetime(2026, 12, 1, 12, 0, tzinfo=UTC).timestamp()
    token = parse_token_output(json.dumps(body), TokenLimits(), now=50.0, wall_now=wall)
    assert token.value == "auth_tokens/j1" and token.uses_left == 3
    assert token.expires_at == pytest.approx(50 + 1800)
    assert token.new_session_until == pytest.approx(50 + 300)


@pytest.mark.parametrize(
    ("output", "problem"),
    [
        ("", "printed nothing"),
        ("auth_tokens/a\nauth_tokens/b", "2 lines"),
        ("{not json", "does not parse"),
        ('{"uses": 1}', 'without a "name"'),
        ("auth tokens/with space", "not a token"),
    ],
)
def test_unusable_output_is_a_clear_error(output: str, problem: str) -> None:
    with pytest.raises(TokenError, match=problem):
        parse_token_output(output, TokenLimits(), now=0.0)


async def test_a_failing_command_is_reported_without_what_it_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    source = TokenSource(command=minting_command(tmp_path, fail_after=1))
    assert (await source.credentials(resuming=False)).value == "auth_tokens/t1"
    source.opened(resuming=False)
    with pytest.raises(TokenError) as failed:
        await source.credentials(resuming=False)
    assert failed.value.retry
    assert "exited with status 3" in str(failed.value)
    # Its stderr quoted a token and a key: neither is repeated anywhere.
    for text in (str(failed.value), source.last_problem, caplog.text):
        assert "auth_tokens/leak" not in text and "AIzaLEAK" not in text
    assert "auth_tokens/t1" not in caplog.text
    assert source.failures == 1


async def test_a_command_that_hangs_is_cut_off(tmp_path: Path) -> None:
    source = TokenSource(command=f"{sys.executable} -c 'import time; time.sleep(60)'", timeout_s=1)
    with pytest.raises(TokenError, match="longer than 1 s"):
        await source.credentials(resuming=False)


async def test_a_missing_command_says_so(tmp_path: Path) -> None:
    source = TokenSource(command=str(tmp_path / "no-such-program"))
    with pytest.raises(TokenError, match="cannot run the token command"):
        await source.credentials(resuming=False)


async def test_without_a_command_a_spent_token_is_a_config_error() -> None:
    source = TokenSource(initial="auth_tokens/once")
    assert (await source.credentials(resuming=False)).value == "auth_tokens/once"
    source.opened(resuming=False)
    assert (await source.credentials(resuming=True)).value == "auth_tokens/once"
    with pytest.raises(TokenError, match=r"uses are spent.*token_command") as failed:
        await source.credentials(resuming=False)
    assert not failed.value.retry


async def test_the_command_never_sees_the_long_lived_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GEMINI_API_KEY", "AIzaSyNEVER-TO-A-TOKEN-COMMAND")
    script = tmp_path / "env.py"
    script.write_text("import os\nprint('auth_tokens/' + str('GEMINI_API_KEY' in os.environ))\n")
    source = TokenSource(command=f"{sys.executable} {script}")
    assert (await source.credentials(resuming=False)).value == "auth_tokens/False"
