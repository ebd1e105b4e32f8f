"""A failed request is one type on both ends of the wire (sonic.errors.AgentRequestError):
what the agent raises comes back out of the client with the same fields; the agent's
dispatcher answers failures by their type, and a clean close is a type of its own."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from sonic.errors import AgentRequestError, PeerClosedError, SonicError, TransportError
from sonic.runtime import protocol
from sonic.runtime.agent import Agent, AgentConfig, Dispatcher
from sonic.runtime.agent.request import Connection, RequestError
from sonic.runtime.client import RemoteCallError


def test_agent_and_client_share_one_error_type() -> None:
    assert RequestError is RemoteCallError is AgentRequestError
    assert issubclass(AgentRequestError, SonicError)


def test_a_fetch_failure_survives_the_round_trip() -> None:
    sent = RequestError("input s/0/a (direct from vm1) could not be fetched", "fetch", cause="unreachable",
                        input="s/0/a", source="vm1")
    reply = sent.reply()
    assert reply == {"ok": False, "kind": "fetch", "error": str(sent), "cause": "unreachable", "input": "s/0/a",
                     "source": "vm1"}
    got = RemoteCallError.from_reply("vm0 (10.0.0.1:7370)", reply, "request")
    assert (got.kind, got.cause, got.input, got.source) == ("fetch", "unreachable", "s/0/a", "vm1")
    assert str(got) == f"agent vm0 (10.0.0.1:7370): {sent}"


def test_a_plain_failure_carries_no_fetch_fields() -> None:
    reply = RequestError("field 'app' must be a non-empty string").reply()
    assert reply == {"ok": False, "kind": "request", "error": "field 'app' must be a non-empty string"}
    got = RemoteCallError.from_reply("vm0", {"ok": False}, "request")
    assert (got.kind, got.cause, got.input, got.source) == ("request", "", None, None)


def test_the_dispatcher_answers_a_failure_by_its_type(tmp_path: Path) -> None:
    agent = Agent(AgentConfig("vmx", "127.0.0.1", 0, tmp_path, b"s" * 32, 1, 1024, None))
    dispatcher = Dispatcher(agent)
    conn = Connection(socket.socket(), "peer")  # never used by these ops
    try:
        assert dispatcher.answer({"op": "nope"}, conn) == {"ok": False, "kind": "request",
                                                           "error": "unknown op 'nope'"}
        assert dispatcher.answer({"op": "warm"}, conn) == {
            "ok": False, "kind": "request", "error": "malformed 'warm' request: Object missing required field `app`"}
        bad_key = dispatcher.answer({"op": "drop", "job": "../etc"}, conn)
        assert bad_key is not None and bad_key["kind"] == "request" and not bad_key["ok"]
        malformed = dispatcher.answer({"op": "fetch", "job": "job1", "item": {"stage": "s"}}, conn)
        assert malformed is not None and malformed["error"].startswith("malformed 'fetch' request")
        unknown_method = dispatcher.answer({"op": "fetch", "job": "job1", "item": {
            "stage": "s", "instance": 0, "name": "a", "size": 1, "method": "carrier-pigeon"}}, conn)
        assert unknown_method == {"ok": False, "kind": "request", "error": "unknown passing method 'carrier-pigeon'"}
    finally:
        conn.sock.close()
        agent.stop()


def test_a_close_between_frames_is_typed_apart_from_a_broken_frame() -> None:
    for partial in (b"", b"\x00\x00"):
        ours, theirs = socket.socketpair()
        with ours, theirs:
            theirs.sendall(partial)
            theirs.close()
            with pytest.raises(TransportError) as info:
                protocol.recv_frame(ours, "peer")
            assert isinstance(info.value, PeerClosedError) is (partial == b"")
