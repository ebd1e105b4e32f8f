"""Typed decoding of the plan and cluster files (sonic.documents, msgspec): a wrong type names
the path of the bad key, as one line naming the file and the fix, exit code 2 through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from sonic.cluster.spec import ClusterSpec, VMSpec, load_cluster
from sonic.documents import describe, dotted, steps, unknown_keys
from sonic.errors import ClusterFileError, PlanError
from sonic.plan import Plan

CLUSTER = {"vms": [{"name": "vm0", "host": "127.0.0.1", "agent_port": 1},
                   {"name": "vm1", "host": "127.0.0.1", "agent_port": 2}]}
PLAN = {
    "app": "good", "input_bytes": 880, "objective": "latency", "strategy": "sonic",
    "stages": {"upper": {"instances": 1, "placement": {"vm0": 1}, "memory_mb": 10.0}},
    "edges": [],
}


def one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    return lines[0]


def test_paths() -> None:
    assert steps("$.vms[1].cores") == ["vms", 1, "cores"]
    assert steps("$.stages[...].placement") == ["stages", "...", "placement"]
    assert dotted(["vms", 1, "ssh", "port"]) == "vms[1].ssh.port"
    assert dotted(["local", "pids", "..."]) == "local.pids[...]"


def test_describe_names_file_path_value_and_fix() -> None:
    doc = {"vms": [{}, {"cores": "two"}]}
    line = describe("Expected `int`, got `str` - at `$.vms[1].cores`", doc, source="c.yaml", fix="fix it")
    assert line == "c.yaml: vms[1].cores must be an integer, got 'two' (at $.vms[1].cores); fix it"
    line = describe("Object missing required field `host` - at `$.vms[0]`", doc, source="c.yaml", fix="fix it")
    assert line == "c.yaml: vms[0]: missing required key 'host' (at $.vms[0]); fix it"


def test_unknown_keys_walks_nested_dataclasses() -> None:
    assert unknown_keys({"vms": [{"name": "a", "host": "h", "ssh": {"pasword": "x"}}]}, ClusterSpec)[:2] == (
        ["vms", 0, "ssh"], "pasword")
    assert unknown_keys({"vms": [{"name": "a", "host": "h"}]}, ClusterSpec)[1] == ""


def test_cluster_file_decodes_into_the_dataclasses(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CLUSTER))
    spec = load_cluster(path)
    assert spec.vms == [VMSpec("vm0", "127.0.0.1", agent_port=1), VMSpec("vm1", "127.0.0.1", agent_port=2)]


def test_malformed_cluster_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"vms": [CLUSTER["vms"][0], {**CLUSTER["vms"][1], "cores": "two"}]}))
    with pytest.raises(ClusterFileError) as exc:
        load_cluster(path)
    assert str(exc.value).startswith(f"{path}: vms[1].cores must be an integer, got 'two' (at $.vms[1].cores); fix")


def test_malformed_plan_file_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "p.json"
    path.write_text(json.dumps({**PLAN, "stages": {"upper": {"instances": "1", "placement": {"vm0": 1}}}}))
    with pytest.raises(PlanError) as exc:
        Plan.load(path)
    message = str(exc.value)
    assert message.startswith(f"{path}: stage 'upper': instances must be an integer, got '1'")
    assert "(at $.stages.upper.instances)" in message and "sonic plan APP --json" in message


def test_cli_malformed_cluster_file_is_one_line_exit_2(sonic_cli, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"vms": [CLUSTER["vms"][0], {**CLUSTER["vms"][1], "cores": "two"}]}))
    proc = sonic_cli("cluster", "status", "--cluster", path)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(path) in line and "vms[1].cores" in line and "$.vms[1].cores" in line


def test_cli_malformed_plan_file_is_one_line_exit_2(sonic_cli, tmp_path: Path) -> None:
    cluster, plan, data = tmp_path / "c.yaml", tmp_path / "p.json", tmp_path / "in.txt"
    cluster.write_text(yaml.safe_dump(CLUSTER))
    plan.write_text(json.dumps({**PLAN, "edges": [{"src": "a", "dst": "b", "method": "vm", "predicted_s": [1]}]}))
    data.write_text("hello\n")
    proc = sonic_cli("run", "good_app:APP", "--input", data, "--plan", plan, "--cluster", cluster)
    assert proc.returncode == 2, proc.stderr
    line = one_error_line(proc.stderr)
    assert str(plan) in line and "edge #0 a -> b: predicted_s must be an object" in line
    assert "$.edges[0].predicted_s" in line


def test_one_name_per_method_old_wire_name_still_decodes() -> None:
    from sonic.plan import WIRE_ALIASES, PassingMethod

    assert PassingMethod.from_wire("local") is PassingMethod.VM
    assert all(PassingMethod.from_wire(m.value) is m for m in PassingMethod)
    assert set(WIRE_ALIASES) == {"local"}
    with pytest.raises(ValueError, match="unknown passing method 'ftp'"):
        PassingMethod.from_wire("ftp")
