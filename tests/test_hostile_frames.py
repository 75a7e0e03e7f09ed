"""Oversized and hostile server frames: each is skipped or costs one
connection, never the daemon, and memory stays bounded."""

from __future__ import annotations

import base64
import json

from support.rig import daemon_rig

from edge_daemon.daemon import State
from edge_daemon.live import messages as m
from edge_daemon.live.session import MAX_MESSAGE_BYTES


def audio_frame(mime: str) -> bytes:
    part = {"inlineData": {"mimeType": mime, "data": base64.b64encode(b"\0\0" * 240).decode()}}
    return json.dumps({"serverContent": {"modelTurn": {"parts": [part]}}}).encode()


async def test_a_rate_with_thousands_of_digits_is_a_skipped_frame() -> None:
    async with daemon_rig() as rig:
        session = rig.daemon.link.session
        assert session is not None
        await rig.fake.send_raw(audio_frame("audio/pcm;rate=" + "9" * 5000))
        await rig.fake.send_raw(audio_frame("audio/pcm;rate=0"))
        await rig.until(lambda: session.counters.malformed == 2)
        # The same connection goes on: a clean turn is answered on it.
        await rig.turn()
        await rig.state(State.IDLE)
        assert rig.daemon.link.session is session
        assert rig.daemon.link.connects == 1


async def test_a_frame_over_the_size_cap_costs_one_connection_only() -> None:
    async with daemon_rig() as rig:
        first = rig.daemon.link.connects
        padding = "x" * (MAX_MESSAGE_BYTES + 1024)
        await rig.fake.send_raw(json.dumps({"serverContent": {"pad": padding}}).encode())
        await rig.until(lambda: rig.daemon.link.connects == first + 1, 30)
        assert rig.daemon.link.last_close_code == 1009  # "message too big"
        await rig.state(State.IDLE, 30)
        await rig.turn()
        await rig.state(State.IDLE, 30)


async def test_invented_field_names_are_remembered_only_up_to_a_bound() -> None:
    async with daemon_rig() as rig:
        session = rig.daemon.link.session
        assert session is not None
        for i in range(m._UNKNOWN_KEPT + 50):
            await rig.fake.send_raw(json.dumps({f"invented{i}": {}, "goAwayX": i}).encode())
        await rig.until(lambda: session.counters.frames_in >= m._UNKNOWN_KEPT + 50)
        assert len(m._seen_unknown) <= m._UNKNOWN_KEPT
        await rig.turn()
        await rig.state(State.IDLE)
