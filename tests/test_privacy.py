"""What reaches the journal, ctl status and STATUS= from outside is bounded
and scrubbed: tool arguments, server close reasons, errors."""

from __future__ import annotations

import logging

import pytest
from support.rig import daemon_rig

from edge_daemon import systemd
from edge_daemon.daemon import State
from edge_daemon.tool_runner import MAX_LOGGED_ARGS, short


def test_scrub_keeps_one_bounded_line_without_credentials() -> None:
    text = (
        "closed 1008 'API key AIzaSyABCDEFGHIJKLMNOP1234 not valid\nfor auth_tokens/abc123 "
        "at wss://x/?key=SECRETVALUE&x=1'" + "\x00\x1b[31m" + "!" * 500
    )
    clean = systemd.scrub(text)
    assert "\n" not in clean and "\x1b" not in clean and "\x00" not in clean
    assert "AIzaSy" not in clean and "auth_tokens/abc123" not in clean
    assert "SECRETVALUE" not in clean and "?key=[redacted]" in clean
    assert len(clean) <= systemd.MAX_SHOWN and clean.endswith("...")


def test_long_tool_arguments_are_cut_in_the_log() -> None:
    huge = {"text": "x" * 10_000}
    assert len(short(huge)) == MAX_LOGGED_ARGS and short(huge).endswith("...")
    assert short({"on": True}) == "{'on': True}"


async def test_a_tool_calls_arguments_reach_the_journal_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    async with daemon_rig() as rig:
        name = rig.daemon.tools.declarations()[0]["name"]
        await rig.fake.tool_call([(name, {"junk": "y" * 50_000})])
        await rig.until(lambda: rig.fake.tool_responses)
        records = [r for r in caplog.records if getattr(r, "EDGE_EVENT", "") == "tool_call"]
        assert records and all(len(r.getMessage()) < 1000 for r in records)
        assert rig.daemon.state is not State.ERROR


async def test_a_servers_close_reason_is_scrubbed_in_status() -> None:
    async with daemon_rig() as rig:
        # A close reason is at most 123 bytes (RFC 6455): enough for a key.
        await rig.fake.close_connection(1011, "oops AIzaSyLEAKEDKEY0123456789\nsecond line")
        await rig.until(lambda: "1011" in rig.daemon.status()["connection"]["last_error"])
        shown = rig.daemon.status()["connection"]["last_error"]
        assert "AIzaSy" not in shown and "\n" not in shown and "[redacted]" in shown
