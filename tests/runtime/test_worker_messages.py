"""The worker's run frame is decoded into a typed request: a malformed frame gets one line
naming the bad field (the worker answers it and stays warm). Its reply is typed the same way
(``WorkerRunReply``): what the worker writes decodes on the agent's side, and a malformed reply
is one line naming the field."""

from __future__ import annotations

import re
from typing import Any

import msgspec
import pytest

from sonic.errors import TransportError
from sonic.metrics import InstanceMetrics
from sonic.runtime import protocol
from sonic.runtime.worker import (
    WorkerInput,
    WorkerRunReply,
    decode_run_reply,
    decode_run_request,
    spec_from_request,
)

GOOD: dict[str, Any] = {
    "stage": "map", "index": 1, "num_instances": 2, "key": None, "paths": ["/d/x"],
    "inputs": [{"stage": "src", "instance": 0, "name": "x", "size": 3, "extra": "ignored"}],
    "partitions": {"reduce": 4}, "output_dir": "/o", "scratch_dir": "/s", "vm": "vm1",
}


def test_good_frame_decodes_to_spec() -> None:
    req = decode_run_request(GOOD)
    assert req.inputs == [WorkerInput("src", 0, "x", 3, "")]
    spec = spec_from_request(req)
    assert (spec.stage, spec.index, spec.num_instances, spec.partitions) == ("map", 1, 2, {"reduce": 4})


@pytest.mark.parametrize(("change", "field"), [
    ({"index": "1"}, "$.index"),
    ({"inputs": [{"stage": "src", "instance": 0, "name": "x", "size": "3"}]}, "$.inputs[0].size"),
    ({"output_dir": None}, "$.output_dir"),
])
def test_wrong_type_names_the_field(change: dict[str, Any], field: str) -> None:
    with pytest.raises(TransportError, match=f"malformed worker run frame: .*{re.escape(field)}"):
        decode_run_request({**GOOD, **change})


def test_missing_field_is_named() -> None:
    doc = {k: v for k, v in GOOD.items() if k != "scratch_dir"}
    with pytest.raises(TransportError, match="missing required field `scratch_dir`"):
        decode_run_request(doc)


METRICS = InstanceMetrics("map", 1, 3, 5, 1, 0.01, 40.0, 1.0, 1.01, vm="vm1", own_memory_mb=2.0)


@pytest.mark.parametrize("reply", [
    WorkerRunReply(True, METRICS, [("part-0", 5)]),
    WorkerRunReply(False, error="stage 'map' instance 1 failed: ValueError: bad"),
    WorkerRunReply(False, error="stage 'map' instance 1: the input is not a sort input", bad_input=True),
], ids=["ok", "failed", "bad-input"])
def test_what_the_worker_writes_decodes_on_the_agent(reply: WorkerRunReply) -> None:
    doc = protocol.decode_doc(protocol.encode_doc(msgspec.to_builtins(reply)), "test")  # through msgpack
    assert decode_run_reply(doc) == reply
    if not reply.ok:  # failures carry no metrics or outputs on the wire
        assert set(doc) <= {"ok", "error", "bad_input"}


@pytest.mark.parametrize(("doc", "expected"), [
    ({"ok": True, "outputs": [["a", 1]]}, "a successful run carries its metrics"),
    ({"ok": True, "metrics": {**msgspec.to_builtins(METRICS), "wall_s": "fast"}, "outputs": []},
     "at `$.metrics.wall_s`"),
    ({"ok": True, "metrics": msgspec.to_builtins(METRICS), "outputs": [["a", "1"]]}, "at `$.outputs[0][1]`"),
    ({"error": "x"}, "missing required field `ok`"),
    (None, "Expected `object`, got `null`"),
], ids=["no-metrics", "wall-str", "output-size-str", "no-ok", "null"])
def test_a_malformed_worker_reply_names_the_field(doc: Any, expected: str) -> None:
    with pytest.raises(ValueError, match=re.escape(expected)):
        decode_run_reply(doc)
