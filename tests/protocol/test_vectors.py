"""Every public vector: whole, byte by byte, several in one read; exact replies; decoded values."""

from __future__ import annotations

import json

import pytest

from fleet.protocol.navtelecom import Reply, Telemetry, command

from .conftest import LOCAL_VECTORS, SHARED_VECTORS, vector_groups
from .vector_replay import check_vector, replay, session_for

GROUPS = vector_groups()


@pytest.mark.parametrize("group", list(GROUPS), ids=list(GROUPS))
def test_group_whole_frames(group: str) -> None:
    vectors = GROUPS[group]
    session = session_for(vectors)
    for vector in vectors:
        outputs = session.feed(vector.raw)
        check_vector(vector, outputs, session)
    assert session.buffered == 0
    assert session.fatal is None


@pytest.mark.parametrize("group", list(GROUPS), ids=list(GROUPS))
def test_group_byte_by_byte_equals_whole(group: str) -> None:
    vectors = GROUPS[group]
    whole = replay(vectors, "whole")
    by_byte = replay(vectors, "bytes")
    assert by_byte == whole
    for vector, outputs in zip(vectors, by_byte, strict=True):
        check_vector(vector, outputs)


@pytest.mark.parametrize("group", list(GROUPS), ids=list(GROUPS))
def test_group_in_one_read_equals_whole(group: str) -> None:
    vectors = GROUPS[group]
    whole = replay(vectors, "whole")
    (together, *_rest) = replay(vectors, "one")
    assert together == [out for outputs in whole for out in outputs]


def test_every_frame_is_accounted_for() -> None:
    """Each consumed byte belongs to exactly one output's raw frame."""
    for vectors in GROUPS.values():
        stream = b"".join(v.raw for v in vectors)
        outputs = session_for(vectors).feed(stream)
        assert b"".join(out.raw for out in outputs) == stream


def test_replies_are_exact_and_acks_are_not_sent_early() -> None:
    """Handshake/negotiation answers are Replies; telemetry carries its ack for after the commit."""
    seen_reply = seen_ack = 0
    for vectors in GROUPS.values():
        session = session_for(vectors)
        for vector in vectors:
            for out in session.feed(vector.raw):
                if isinstance(out, Reply):
                    assert out.data == vector.reply
                    seen_reply += 1
                elif isinstance(out, Telemetry) and vector.reply is not None:
                    assert out.ack == vector.reply
                    seen_ack += 1
    assert seen_reply >= 8 and seen_ack >= 10


def test_encoder_vector() -> None:
    (vector,) = GROUPS["NavtelecomProtocolEncoderTest.java:testEncode"]
    assert command(vector.expects["command"]["data"]).hex() == vector.expects["encoded_hex"]
    assert command(vector.expects["command"]["data"]) == vector.raw


def test_committed_copy_matches_shared_vectors() -> None:
    if not SHARED_VECTORS.exists():
        pytest.skip("shared/ is not laid out beside the checkout")
    shared = json.loads(SHARED_VECTORS.read_text(encoding="utf-8"))
    local = json.loads(LOCAL_VECTORS.read_text(encoding="utf-8"))
    # The shared file may grow; every committed vector must still be in it.
    assert all(item in shared for item in local)
