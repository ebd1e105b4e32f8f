"""The frame codec is one (sonic.runtime.protocol) for the network and the worker pipe, and its
bytes are pinned: a 4-byte big-endian length, then msgpack."""

from __future__ import annotations

import io
import socket

import pytest

from sonic.errors import TransportError
from sonic.runtime.protocol import recv_frame, sealed_frame
from sonic.runtime.worker import read_frame, write_frame

DOC = {"a": 1, "b": b"\x00"}
WIRE = b"\x00\x00\x00\x09" + b"\x82\xa1a\x01\xa1b\xc4\x01\x00"


def test_worker_pipe_bytes_are_pinned() -> None:
    out = io.BytesIO()
    write_frame(out, DOC)
    assert out.getvalue() == WIRE
    assert read_frame(io.BytesIO(WIRE)) == DOC
    assert read_frame(io.BytesIO(WIRE[:-1])) is None  # a truncated frame: the writer is gone


def test_network_plain_frame_is_the_same_bytes() -> None:
    left, right = socket.socketpair()
    with left, right:
        assert sealed_frame(left, DOC) == WIRE
        left.sendall(WIRE)
        assert recv_frame(right, "peer") == DOC


def test_a_frame_that_is_not_a_map_is_refused() -> None:
    with pytest.raises(TransportError, match="every frame must be a map"):
        read_frame(io.BytesIO(b"\x00\x00\x00\x01\x01"))
