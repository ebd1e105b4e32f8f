"""The worker's run frame is decoded into a typed request: a malformed frame gets one line
naming the bad field (the worker answers it and stays warm)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from sonic.errors import TransportError
from sonic.runtime.worker import WorkerInput, decode_run_request, spec_from_request

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
