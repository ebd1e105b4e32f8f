"""The agent's op requests and replies are typed (sonic.runtime.messages): every request a
client builds decodes into its op's Struct, and the dispatcher answers a malformed one with one
line naming the field's path, before any op runs; every reply an op makes decodes into its reply
Struct on the client, and a malformed reply is refused with one line naming agent, op and path."""

from __future__ import annotations

import math
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sonic import __version__
from sonic.errors import MalformedReplyError
from sonic.runtime import protocol
from sonic.runtime.agent import Agent, AgentConfig, Dispatcher
from sonic.runtime.agent.request import Connection
from sonic.runtime.client import AgentClient
from sonic.runtime.messages import (
    REPLY_TYPES,
    REQUEST_TYPES,
    FetchInputRequest,
    GetRequest,
    InputItem,
    LeaseRequest,
    RunRequest,
)
from sonic.runtime.transport import Endpoint, MockTransport

JOB = "job1"
ITEM = {"stage": "split", "instance": 0, "name": "chunk-0", "size": 10, "checksum": "ab" * 16, "method": "local"}
DIRECT = {**ITEM, "method": "direct", "vm": "vm1", "host": "127.0.0.1", "port": 7370}
PARTITION = {**ITEM, "pack": "_packed", "offset": 4}
# The keys sonic.runtime.coordinator sends with a run.
RUN = {"job": JOB, "app": "sort", "stage": "merge", "index": 1, "num_instances": 2, "key": None,
       "inputs": [ITEM, DIRECT, PARTITION], "upload": False, "partitions": {"merge": 2}, "pack": True,
       "peer_timeouts": {"connect_s": 5.0, "control_s": 30.0, "transfer_idle_s": 60.0},
       "timeout_s": 120.0, "lease_s": 45.0}


METRICS = {"stage": "merge", "instance": 1, "input_bytes": 10, "output_bytes": 3, "n_outputs": 1, "wall_s": 0.01,
           "peak_memory_mb": 40.0, "started": 1.0, "ended": 1.01, "vm": "vmx", "passing_s": 0.002, "cold": False,
           "attempt": 1, "error": None, "own_memory_mb": 2.0, "baseline_memory_mb": 38.0, "cpu_wait_s": 0.0}
#: A valid reply of every op, as an agent sends it.
REPLIES: dict[str, dict[str, Any]] = {
    "ping": {"version": __version__, "name": "vmx", "slots": 1, "memory_mb": 1024, "pid": 7, "busy": 0,
             "workers": [8], "idle_workers": 1, "leases": [JOB]},
    "warm": {"workers": 1}, "lease": {}, "cancel": {"killed": 0}, "gc": {"removed": ["old"], "live": [JOB]},
    "drop": {},
    "run": {"metrics": METRICS, "outputs": [{"name": "a", "size": 3, "checksum": "ab" * 16},
                                            {"name": "_packed", "size": 3, "checksum": "cd" * 16,
                                             "partitions": [["part-0", 0, 3, "ef" * 16]]}],
            "fetch_by_stage": {"split": 0.001}, "upload_s": 0.0, "cold_start_s": 0.0},
    "fetch": {"seconds": 0.1, "path": "/d/x", "inode": 5}, "push": {"seconds": 0.1},
    "app_install": {"python": "3.11.2", "missing": True}, "coldstart": {"seconds": 0.2},
    "rawtcp_serve": {"port": 4000}, "rawtcp_pull": {"seconds": 0.1}, "diskbench": {"write_s": 0.1, "read_s": 0.05},
}


def _client_requests(tmp_path: Path) -> list[dict[str, Any]]:
    """Every op's request as the clients (AgentClient, calibrate, bench, appship, gc) build it,
    through msgpack as on the wire."""
    sent: list[dict[str, Any]] = []

    def handler(_agent: Endpoint, doc: dict[str, Any]) -> dict[str, Any]:
        doc.pop("body", None)  # put's raw bytes follow the frame; they are not part of it
        sent.append(protocol.decode_doc(protocol.encode_doc(doc), "test"))
        return {"ok": True, **REPLIES.get(doc["op"], {}), "size": 3, "body": b"abc"}

    client = AgentClient("127.0.0.1", 1, b"s" * 32, "vmx", transport=MockTransport(handler))
    client.ping()
    client.warm("sort")
    client.lease(JOB, 30.0)
    client.cancel(JOB, "the run failed")
    client.drop(JOB)
    client.gc()
    client.run(dict(RUN))
    client.get_to_file(JOB, "split/0/chunk-0", tmp_path / "whole")
    client.get_to_file(JOB, "split/0/_packed", tmp_path / "part", size=3, offset=4)
    blob = tmp_path / "blob"
    blob.write_bytes(b"abc")
    client.put_file(JOB, "split/0/blob", blob, "ab" * 16)
    client.fetch(JOB, DIRECT)
    client.fetch(JOB, {**ITEM, "method": "remote"}, timeout=None)
    client.push(JOB, "split/0/blob")
    client.app_install("mod:app", "0123abcd")
    client.app_install("mod:app", "0123abcd", b"\x1f\x8b")
    client.coldstart("sonic.runtime.benchapp:noop")
    client.rawtcp_serve(1 << 20)
    client.rawtcp_pull(1 << 20, "127.0.0.1", 40000, to_file=True)
    client.diskbench(1 << 20)
    return sent


def test_every_request_a_client_builds_decodes(tmp_path: Path) -> None:
    sent = _client_requests(tmp_path)
    assert {doc["op"] for doc in sent} == set(REQUEST_TYPES), "a test request per op"
    for doc in sent:
        request = msgspec.convert(doc, REQUEST_TYPES[doc["op"]], strict=True)
        assert type(request) is REQUEST_TYPES[doc["op"]]


def test_typed_fields_carry_what_was_sent() -> None:
    run = msgspec.convert({"op": "run", **RUN}, RunRequest, strict=True)
    assert (run.stage, run.index, run.num_instances, run.pack, run.upload) == ("merge", 1, 2, True, False)
    assert run.partitions == {"merge": 2} and run.timeout_s == 120.0 and run.lease_s == 45.0
    assert run.peer_timeouts is not None and run.peer_timeouts.transfer_idle_s == 60.0
    # Items go on to the fetcher and the worker as the maps they came as.
    assert [i.as_doc() for i in run.inputs] == [
        {k: v for k, v in item.items() if k != "method" or v != "local"} for item in RUN["inputs"]]
    lease = msgspec.convert({"op": "lease", "job": JOB, "ttl_s": 30}, LeaseRequest, strict=True)
    assert lease.ttl_s == 30.0
    ranged = msgspec.convert({"op": "get", "job": JOB, "key": "s/0/_packed", "offset": 0, "length": 3}, GetRequest)
    assert (ranged.offset, ranged.length) == (0, 3)
    item = msgspec.convert({"op": "fetch", "job": JOB, "item": {**ITEM, "future": 1}}, FetchInputRequest).item
    assert isinstance(item, InputItem) and "future" not in item.as_doc()


@pytest.fixture
def dispatcher(tmp_path: Path) -> Iterator[Dispatcher]:
    agent = Agent(AgentConfig("vmx", "127.0.0.1", 0, tmp_path, b"s" * 32, 1, 1024, None))
    try:
        yield Dispatcher(agent)
    finally:
        agent.stop()


def test_the_dispatcher_knows_every_request_type(dispatcher: Dispatcher) -> None:
    assert {op: request_type for op, (request_type, _) in dispatcher.ops.items()} == REQUEST_TYPES


RUN_OP = {"op": "run", **RUN}


@pytest.mark.parametrize(("request_doc", "expected"), [
    ({**RUN_OP, "index": "one"}, "Expected `int`, got `str` - at `$.index`"),
    ({**RUN_OP, "index": True}, "Expected `int`, got `bool` - at `$.index`"),
    ({**RUN_OP, "num_instances": -1}, "Expected `int` >= 0 - at `$.num_instances`"),
    ({"op": "put", "job": JOB, "key": "s/0/a", "size": -5, "checksum": "ab"}, "Expected `int` >= 0 - at `$.size`"),
    ({**RUN_OP, "app": ""}, "at `$.app`"),
    ({**RUN_OP, "inputs": "all"}, "Expected `array`, got `str` - at `$.inputs`"),
    ({**RUN_OP, "inputs": [ITEM, {**ITEM, "size": "big"}]}, "Expected `int`, got `str` - at `$.inputs[1].size`"),
    ({**RUN_OP, "inputs": [{"stage": "split"}]}, "Object missing required field `instance` - at `$.inputs[0]`"),
    ({"op": "lease", "job": JOB}, "Object missing required field `ttl_s`"),
    ({"op": "lease", "job": JOB, "ttl_s": math.nan}, "at `$.ttl_s`"),
    ({"op": "lease", "job": JOB, "ttl_s": math.inf}, "at `$.ttl_s`"),
    ({"op": "lease", "job": JOB, "ttl_s": 0}, "at `$.ttl_s`"),
    ({**RUN_OP, "timeout_s": "soon"}, "at `$.timeout_s`"),
    ({**RUN_OP, "peer_timeouts": {"connect_s": -math.inf}}, "at `$.peer_timeouts.connect_s`"),
    ({**RUN_OP, "peer_timeouts": [1, 2]}, "at `$.peer_timeouts`"),
    ({**RUN_OP, "partitions": {"merge": 0}}, "Expected `int` >= 1 - at `$.partitions[...]`"),
    ({**RUN_OP, "partitions": {"merge": 10**9}}, "Expected `int` <= 100000 - at `$.partitions[...]`"),
    ({**RUN_OP, "partitions": [2]}, "at `$.partitions`"),
    ({"op": "drop", "job": JOB, "jobs": [JOB]}, "Object contains unknown field `jobs`"),
    ({"op": "drop", "job": ["x"]}, "Expected `str`, got `array` - at `$.job`"),
    ({"op": "get", "job": JOB, "key": 5}, "Expected `str`, got `int` - at `$.key`"),
    ({"op": "get", "job": JOB, "key": "s/0/a", "offset": 3}, "`offset` and `length` go together"),
    ({"op": "fetch", "job": JOB, "item": "x"}, "Expected `object`, got `str` - at `$.item`"),
    ({"op": "rawtcp_pull", "size": 1, "host": "127.0.0.1", "port": 70000}, "at `$.port`"),
    ({"op": "app_install", "digest": 7}, "Expected `str`, got `int` - at `$.digest`"),
], ids=["index-str", "index-bool", "count-negative", "size-negative", "app-empty", "inputs-str", "input-size-str",
        "input-incomplete", "ttl-missing", "ttl-nan", "ttl-inf", "ttl-zero", "timeout-str", "peer-timeout-inf",
        "peer-timeouts-list", "partitions-zero", "partitions-absurd", "partitions-list", "unknown-field", "job-list",
        "key-int", "offset-alone", "item-str", "port-range", "digest-int"])
def test_a_malformed_request_gets_one_line_naming_the_field(dispatcher: Dispatcher, request_doc: dict[str, Any],
                                                            expected: str) -> None:
    with socket.socket() as sock:  # never used: the request is refused before its op runs
        reply = dispatcher.answer(request_doc, Connection(sock, "peer"))
    assert reply is not None and reply["ok"] is False and reply["kind"] == "request", reply
    assert reply["error"].startswith(f"malformed {request_doc['op']!r} request: "), reply
    assert expected in reply["error"] and "\n" not in reply["error"], reply
    assert dispatcher.agent.pool.pids() == []


def test_unknown_op_and_valid_requests(dispatcher: Dispatcher) -> None:
    with socket.socket() as sock:
        conn = Connection(sock, "peer")
        assert dispatcher.answer({"op": "explode"}, conn) == {"ok": False, "kind": "request",
                                                              "error": "unknown op 'explode'"}
        assert dispatcher.answer({"op": None}, conn) == {"ok": False, "kind": "request", "error": "unknown op None"}
        ping = dispatcher.answer({"op": "ping"}, conn)
        assert ping is not None and ping["ok"] and ping["name"] == "vmx"
        assert dispatcher.answer({"op": "drop", "job": JOB}, conn) == {"ok": True}
        # Checks beyond a type stay the object store's: a job id that escapes the data dir.
        escape = dispatcher.answer({"op": "drop", "job": "../etc"}, conn)
        assert escape is not None and not escape["ok"] and "invalid job id" in escape["error"]


# --------------------------------------------------------------------------- replies
def _client_answered_with(reply: dict[str, Any]) -> AgentClient:
    return AgentClient("127.0.0.1", 1, b"s" * 32, "vmx",
                       transport=MockTransport(lambda _agent, _doc: {"ok": True, **reply}))


def test_every_op_has_a_reply_type_and_valid_replies_decode() -> None:
    assert set(REPLY_TYPES) == set(REQUEST_TYPES) - {"get", "put"}, "get and put answer with raw bytes"
    for op, reply in REPLIES.items():
        decoded = msgspec.convert({"ok": True, **reply}, REPLY_TYPES[op], strict=True)
        assert msgspec.convert(msgspec.to_builtins(decoded), REPLY_TYPES[op]) == decoded
    run = _client_answered_with(REPLIES["run"]).run(dict(RUN))
    assert run.metrics.own_memory_mb == 2.0 and run.outputs[1].partitions == [("part-0", 0, 3, "ef" * 16)]
    assert _client_answered_with(REPLIES["gc"]).gc().live == [JOB]


@pytest.mark.parametrize(("op", "reply", "expected"), [
    ("run", {**REPLIES["run"], "outputs": [{"name": "a", "size": "3", "checksum": "ab"}]},
     "Expected `int`, got `str` - at `$.outputs[0].size`"),
    ("run", {**REPLIES["run"], "metrics": {**METRICS, "wall_s": "fast"}}, "at `$.metrics.wall_s`"),
    ("run", {k: v for k, v in REPLIES["run"].items() if k != "outputs"}, "missing required field `outputs`"),
    ("rawtcp_serve", {"port": 70000}, "at `$.port`"),
    ("gc", {"removed": "all", "live": []}, "Expected `array`, got `str` - at `$.removed`"),
    ("ping", {**REPLIES["ping"], "slots": -1}, "at `$.slots`"),
], ids=["output-size-str", "metrics-wall-str", "outputs-missing", "port-range", "removed-str", "slots-negative"])
def test_a_malformed_reply_is_refused_naming_agent_op_and_path(op: str, reply: dict[str, Any], expected: str) -> None:
    client = _client_answered_with(reply)
    calls = {"run": lambda: client.run(dict(RUN)), "rawtcp_serve": lambda: client.rawtcp_serve(1),
             "gc": client.gc, "ping": client.ping}
    with pytest.raises(MalformedReplyError) as caught:
        calls[op]()
    message = str(caught.value)
    assert message.startswith(f"agent vmx (127.0.0.1:1) sent a malformed {op!r} reply: "), message
    assert expected in message and "\n" not in message
    assert caught.value.kind == "request"


def test_the_dispatcher_sends_every_ops_typed_reply_as_a_map(dispatcher: Dispatcher) -> None:
    with socket.socket() as sock:
        conn = Connection(sock, "peer")
        for doc in ({"op": "ping"}, {"op": "gc"}, {"op": "lease", "job": JOB, "ttl_s": 5.0},
                    {"op": "cancel", "job": "job2"}):
            reply = dispatcher.answer(doc, conn)
            assert isinstance(reply, dict) and reply["ok"] is True, reply
            msgspec.convert(reply, REPLY_TYPES[doc["op"]], strict=True)
