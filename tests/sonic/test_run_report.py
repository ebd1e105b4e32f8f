"""The run report printed by ``sonic run`` (without --json) shows, per edge, the objects its
producer stored (issue 12: a packed shuffle stores one per producer instance) and the S3
requests of the run."""

from __future__ import annotations

import pytest

from sonic.cli import _print_run
from sonic.metrics import EdgeMetrics, RunResult, StageMetrics


def test_edges_show_objects_stored_and_s3_requests(capsys: pytest.CaptureFixture[str]) -> None:
    result = RunResult("sort", "remote", 1000, 2.5, True, "ok",
                       [EdgeMetrics("map", "reduce", "remote", 1000, 0.4, 3)],
                       [StageMetrics("map", 3, 1.0, 50.0)], s3_requests={"put": 4, "get": 16})
    _print_run(result)
    out = capsys.readouterr().out
    assert "3 objects stored" in out
    assert "S3 requests: 4 PUT, 16 GET" in out
    assert result.to_json()["edges"][0]["objects_stored"] == 3
    assert result.to_json()["s3_requests"] == {"put": 4, "get": 16}
