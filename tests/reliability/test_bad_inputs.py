"""Malformed inputs through the real command line, against a real cluster started and stopped
by the CLI itself: bad plan files, bad cluster files, bad flags, bad app definitions.

Every case must end with exit code 2 (bad input) or 1 (a runtime refusal, e.g. the agents
reject the credentials), one line on stderr starting with ``error:``, no traceback, nothing on
stdout, no file left in the working directory, no object left on any agent or in the bucket.
The library-level checks of the same inputs live in tests/sonic; raw agent messages are in
test_agent_security.py. ``python tests/reliability/bad_input_inventory.py`` counts them all.

The subprocesses are independent, so they run concurrently (the suite must stay fast); each
parametrized test then checks its own case.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultapps import control_doc, write_input
from reliability_helpers import FAULTY_SPEC, assert_gone

from sonic.app import load_app
from sonic.emulation.procs import pid_alive
from sonic.plan import PassingMethod, fixed_plan

PROJECT = Path(__file__).resolve().parents[2]
FIXTURE_APPS = PROJECT / "tests" / "fixtures_apps"
CLI_TIMEOUT_S = 120
CONCURRENCY = 4


@dataclass
class Case:
    id: str
    argv: Callable[[Path], list[str]]     # given the case's files dir, the CLI arguments
    code: int
    expect: str                           # a substring of the one error line
    files: dict[str, Callable[[Path], None]] = field(default_factory=dict)   # name -> writer


@dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    leftovers: list[str]


@dataclass
class World:
    cluster: Path
    spec: dict[str, Any]
    plan: dict[str, Any]
    input: Path
    secret: Path


def cli(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SONIC_DEBUG"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT), str(FIXTURE_APPS), env.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "sonic.cli", *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env=env)


# ----------------------------------------------------------------------------- the cases
def plan_variant(mutate: Callable[[dict[str, Any]], Any]) -> Callable[[World], Callable[[Path], None]]:
    def make(world: World) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            doc = copy.deepcopy(world.plan)
            result = mutate(doc)
            path.write_text(result if isinstance(result, str) else json.dumps(doc))
        return write
    return make


def cluster_variant(mutate: Callable[[dict[str, Any], World], Any]) -> Callable[[World], Callable[[Path], None]]:
    def make(world: World) -> Callable[[Path], None]:
        def write(path: Path) -> None:
            doc = copy.deepcopy(world.spec)
            result = mutate(doc, world)
            path.write_text(result if isinstance(result, str) else yaml.safe_dump(doc))
        return write
    return make


def _set(doc: dict[str, Any], path: list[Any], value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


def _del(doc: dict[str, Any], path: list[Any]) -> None:
    for key in path[:-1]:
        doc = doc[key]
    del doc[path[-1]]


def _secret_copy(mode: int, random: bool = False) -> Callable[[dict[str, Any], World], None]:
    def mutate(doc: dict[str, Any], world: World) -> None:
        target = world.cluster.parent / f"secret-{mode:o}-{random}"
        target.write_text(os.urandom(32).hex() if random else world.secret.read_text())
        target.chmod(mode)
        doc["secret_file"] = str(target)
    return mutate


def _closed_ports(doc: dict[str, Any], world: World) -> None:
    import socket

    probes = [socket.socket() for _ in doc["vms"]]   # ports nobody listens on: bind all, note, release
    try:
        for vm, probe in zip(doc["vms"], probes):
            probe.bind(("127.0.0.1", 0))
            vm["agent_port"] = probe.getsockname()[1]
    finally:
        for probe in probes:
            probe.close()


PLAN_CASES: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("plan-method-not-allowed", lambda d: _set(d, ["edges", 0, "method"], "teleport"), "teleport"),
    ("plan-stage-missing", lambda d: _del(d, ["stages", "map"]), "map"),
    ("plan-placement-unknown-vm", lambda d: _set(d, ["stages", "map", "placement"], {"vm9": 2}), "vm9"),
    ("plan-other-app", lambda d: _set(d, ["app"], "video"), "video"),
    ("plan-not-json", lambda d: "{ this is not json", "JSON"),
    ("plan-missing-edge", lambda d: _set(d, ["edges"], d["edges"][:1]), "edge"),
    ("plan-negative-instances", lambda d: _set(d, ["stages", "map", "instances"], -3), "instances"),
    ("plan-a-list", lambda d: "[]", "plan"),
    ("plan-placement-negative", lambda d: _set(d, ["stages", "reduce", "placement"], {"vm0": -1}), "placement"),
    ("plan-zero-instances", lambda d: _set(d, ["stages", "map", "instances"], 0), "instances"),
    ("plan-placement-over-instances", lambda d: _set(d, ["stages", "map", "placement"], {"vm0": 5, "vm1": 5}),
     "add up"),
    ("plan-400-digit-instances", lambda d: _set(d, ["stages", "map", "instances"], 10**400), "instances"),
    ("plan-duplicate-conflicting-edge", lambda d: d["edges"].append({**d["edges"][0], "method": "remote"}),
     "listed twice"),
    ("plan-deep-json", lambda d: "[" * 200_000, "nested too deeply"),
    ("plan-memory-inf", lambda d: "{" + json.dumps(d)[1:].replace('"memory_mb": 0.0', '"memory_mb": Infinity', 1),
     "memory_mb"),
]

CLUSTER_CASES: list[tuple[str, Callable[[dict[str, Any], World], Any], int, str]] = [
    ("cluster-unknown-key", lambda d, w: _set(d, ["vmz"], []), 2, "unknown key 'vmz'"),
    ("cluster-missing-host", lambda d, w: _del(d, ["vms", 0, "host"]), 2, "missing required key 'host'"),
    ("cluster-bad-key-path", lambda d, w: _set(d, ["vms", 0, "ssh"], {"user": "u", "key": "/nonexistent/id_ed25519"}),
     2, "no key file"),
    ("cluster-wrong-type", lambda d, w: _set(d, ["vms", 0, "cores"], "two"), 2, "must be an integer"),
    ("cluster-not-yaml", lambda d, w: "vms: [unclosed", 2, "not valid YAML"),
    ("cluster-unsupported-storage", lambda d, w: _set(d, ["remote_storage", "kind"], "gcs"), 2, "not supported"),
    ("cluster-secret-readable", _secret_copy(0o644), 2, "readable by others"),
    ("cluster-secret-missing", lambda d, w: _set(d, ["secret_file"], "/nonexistent/secret"), 2, "cannot read"),
    ("cluster-wrong-secret", _secret_copy(0o600, random=True), 1, "refused our credentials"),
    ("cluster-no-agent-listens", _closed_ports, 1, "no agent of the cluster answers"),
    ("cluster-duplicate-endpoint", lambda d, w: d["vms"][1].update(host=d["vms"][0]["host"],
                                                                   agent_port=d["vms"][0]["agent_port"]),
     2, "one agent cannot be two VMs"),
    ("cluster-absurd-cores", lambda d, w: _set(d, ["vms", 0, "cores"], 10**30), 2, "cores"),
    ("cluster-negative-price", lambda d, w: _set(d, ["vms", 0, "price_per_hour"], -1), 2, "price_per_hour"),
    ("cluster-memory-nan", lambda d, w: _set(d, ["vms", 0, "memory_mb"], float("nan")), 2, "memory_mb"),
    ("cluster-memory-1e308", lambda d, w: _set(d, ["vms", 0, "memory_mb"], 1e308), 2, "memory_mb"),
    ("cluster-calibration-inf", lambda d, w: _set(d, ["calibration", "vm_bandwidth_Bps"], float("inf")), 2,
     "finite"),
    ("cluster-vm-name-not-identifier", lambda d, w: _set(d, ["vms", 0, "name"], "vm/../\u00e9"), 2, "VM name"),
    ("cluster-endpoint-not-url", lambda d, w: _set(d, ["remote_storage", "endpoint_url"], "not a url"), 2,
     "not a URL"),
    ("cluster-bucket-empty", lambda d, w: _set(d, ["remote_storage", "bucket"], ""), 2, "bucket"),
    ("cluster-deep-yaml", lambda d, w: "[" * 200_000, 2, "cluster file"),
    ("cluster-local-pids-not-a-map", lambda d, w: _set(d, ["local", "pids"], "x"), 2, "local.pids"),
]


def build_cases(world: World) -> list[Case]:
    cases: list[Case] = []
    base = ["run", "sort", "--input", str(world.input)]
    for name, mutate, expect in PLAN_CASES:
        cases.append(Case(name, lambda d: [*base, "--plan", str(d / "plan.json"), "--cluster", str(world.cluster)], 2,
                          expect, {"plan.json": plan_variant(mutate)(world)}))
    cases.append(Case("plan-is-a-directory", lambda d: [*base, "--plan", str(d), "--cluster", str(world.cluster)], 2,
                      "plan"))
    cases.append(Case("plan-file-missing",
                      lambda d: [*base, "--plan", str(d / "absent.json"), "--cluster", str(world.cluster)], 2, "absent"))
    good_plan = plan_variant(lambda d: None)(world)
    for name, mutate_c, code, expect in CLUSTER_CASES:
        cases.append(Case(name, lambda d: [*base, "--plan", str(d / "plan.json"), "--cluster", str(d / "c.yaml")],
                          code, expect, {"plan.json": good_plan, "c.yaml": cluster_variant(mutate_c)(world)}))
    with_plan = {"plan.json": good_plan}
    cases += [
        Case("flag-input-missing", lambda d: ["run", "sort", "--input", str(d / "none.bin"), "--plan",
                                              str(d / "plan.json"), "--cluster", str(world.cluster)], 2, "none.bin",
             with_plan),
        Case("flag-unknown-strategy", lambda d: [*base, "--strategy", "bogus", "--cluster", str(world.cluster)], 2,
             "bogus"),
        Case("flag-unknown-objective", lambda d: [*base, "--objective", "fastest", "--cluster", str(world.cluster)], 2,
             "fastest"),
        Case("flag-unknown-app", lambda d: ["run", "nosuchapp", "--input", str(world.input), "--cluster",
                                            str(world.cluster)], 2, "unknown app 'nosuchapp'"),
        Case("flag-reference-with-plan", lambda d: [*base, "--local-reference", "--plan", str(d / "plan.json")], 2,
             "--local-reference", with_plan),
        Case("flag-cluster-file-missing", lambda d: [*base, "--plan", str(d / "plan.json"), "--cluster",
                                                     str(d / "none.yaml")], 2, "no cluster file", with_plan),
        Case("flag-up-zero-vms", lambda d: ["cluster", "up", "--local", "0", "--cluster", str(d / "c.yaml")], 2,
             "--local"),
        Case("flag-up-bad-mode", lambda d: ["cluster", "up", "--local", "2", "--mode", "cloud", "--cluster",
                                            str(d / "c.yaml")], 2, "cloud"),
        Case("flag-up-vm-mbps-loopback", lambda d: ["cluster", "up", "--local", "2", "--vm-mbps", "100", "--cluster",
                                                    str(d / "c.yaml")], 2, "--mode netns"),
        Case("flag-plan-bad-size", lambda d: ["plan", "sort", "--input-size", "12XB", "--cluster", str(world.cluster)],
             2, "12XB"),
        Case("flag-gen-negative-size", lambda d: ["workloads", "gen", "sort", "--size", "-5MB", "-o", "out.bin"], 2,
             "-5MB"),
        Case("flag-status-missing-cluster", lambda d: ["cluster", "status", "--cluster", str(d / "none.yaml")], 2,
             "no cluster file"),
        Case("app-cyclic-on-cluster", lambda d: ["run", "cyclic_app:APP", "--input", str(world.input), "--plan",
                                                 str(d / "plan.json"), "--cluster", str(world.cluster)], 2, "cycle",
             with_plan),
        Case("app-bad-pattern-on-cluster", lambda d: ["run", "bad_pattern_app:APP", "--input", str(world.input),
                                                      "--cluster", str(world.cluster)], 2, "fanout"),
        Case("app-raises-at-import", lambda d: ["run", "import_raises_app:APP", "--input", str(world.input),
                                                "--plan", str(d / "plan.json"), "--cluster", str(world.cluster)], 2,
             "raised RuntimeError: configuration missing", with_plan),
        Case("flag-fullwidth-digit-size", lambda d: ["plan", "sort", "--input-size", "\uff15MB", "--cluster",
                                                     str(world.cluster)], 2, "cannot read size"),
        Case("flag-absurd-size", lambda d: ["plan", "sort", "--input-size", "99999999999999999999TB", "--cluster",
                                            str(world.cluster)], 2, "larger than 1PB"),
        Case("flag-s3-latency-nan", lambda d: ["cluster", "up", "--local", "1", "--s3-latency-ms", "nan",
                                               "--cluster", str(d / "c.yaml")], 2, "not a finite number"),
        Case("flag-s3-latency-inf", lambda d: ["cluster", "up", "--local", "1", "--s3-latency-ms", "inf",
                                               "--cluster", str(d / "c.yaml")], 2, "--s3-latency-ms"),
        Case("flag-input-dev-null", lambda d: ["run", "sort", "--input", "/dev/null", "--plan", str(d / "plan.json"),
                                               "--cluster", str(world.cluster)], 2, "neither a regular file",
             with_plan),
        Case("flag-down-missing-cluster", lambda d: ["cluster", "down", "--cluster", str(d / "none.yaml")], 2,
             "no cluster file"),
        Case("runtime-sort-input-wrong-format", lambda d: ["run", "sort", "--input", str(d / "odd.bin"), "--plan",
                                                          str(d / "plan.json"), "--cluster", str(world.cluster)], 2,
             "not a whole number", {**with_plan, "odd.bin": lambda p: p.write_bytes(b"x" * 150)}),
        Case("runtime-stage-writes-nothing", lambda d: ["run", FAULTY_SPEC, "--input", str(d / "control.json"),
                                                        "--plan", str(d / "faulty-plan.json"), "--cluster",
                                                        str(world.cluster)], 1, "wrote no output",
             {"faulty-plan.json": _faulty_plan(world), "control.json": _faulty_input("empty")}),
    ]
    return cases


def _faulty_plan(world: World) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        app = load_app(FAULTY_SPEC)
        path.write_text(json.dumps(fixed_plan(app, PassingMethod.DIRECT, [vm["name"] for vm in world.spec["vms"]])
                                   .to_json()))
    return write


def _faulty_input(mode: str) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        control = path.parent / "control"
        control.mkdir()
        write_input(path, control_doc(control, 4, mode, 1))
    return write


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, sort_input: Path) -> Iterator[World]:
    """A 2-VM loopback cluster brought up and down through the CLI itself."""
    root = tmp_path_factory.mktemp("bad-inputs")
    cluster = root / "cluster.yaml"
    up = cli(["cluster", "up", "--local", "2", "--cluster", str(cluster)], root)
    assert up.returncode == 0, up.stderr
    spec = yaml.safe_load(cluster.read_text())
    app = load_app("sort")
    plan = fixed_plan(app, PassingMethod.DIRECT, [vm["name"] for vm in spec["vms"]]).to_json()
    try:
        yield World(cluster, spec, plan, sort_input, Path(spec["secret_file"]))
    finally:
        down = cli(["cluster", "down", "--cluster", str(cluster)], root)
    assert down.returncode == 0, down.stderr
    # `cluster down` removes the secret, every agent's data and the cluster file, and stops
    # every process it started.
    assert not Path(spec["secret_file"]).exists()
    assert not any(Path(vm["data_dir"]).exists() for vm in spec["vms"])
    assert not cluster.exists()
    assert_gone(list(spec["local"]["pids"].values()))


@pytest.fixture(scope="module")
def outcomes(world: World, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    cases = build_cases(world)

    def run(case: Case) -> tuple[str, Outcome]:
        files = tmp_path_factory.mktemp(f"case-{case.id}")
        cwd = tmp_path_factory.mktemp(f"cwd-{case.id}")
        for name, write in case.files.items():
            write(files / name)
        proc = cli(case.argv(files), cwd)
        return case.id, Outcome(proc.returncode, proc.stdout, proc.stderr, sorted(p.name for p in cwd.iterdir()))

    with ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
        results = dict(pool.map(run, cases))
    # No case may have left anything on the cluster: no job objects on any agent, no bucket keys.
    for vm in world.spec["vms"]:
        objects = Path(vm["data_dir"]) / "objects"
        assert not objects.exists() or not any(objects.iterdir()), f"{vm['name']} holds objects after refusals"
    assert all(pid_alive(pid) for pid in world.spec["local"]["pids"].values()), "a bad input must not kill the cluster"
    return results


CASE_IDS = ([c[0] for c in PLAN_CASES] + ["plan-is-a-directory", "plan-file-missing"] + [c[0] for c in CLUSTER_CASES]
            + ["flag-input-missing", "flag-unknown-strategy", "flag-unknown-objective", "flag-unknown-app",
               "flag-reference-with-plan", "flag-cluster-file-missing", "flag-up-zero-vms", "flag-up-bad-mode",
               "flag-up-vm-mbps-loopback", "flag-plan-bad-size", "flag-gen-negative-size",
               "flag-status-missing-cluster", "app-cyclic-on-cluster", "app-bad-pattern-on-cluster",
               "app-raises-at-import", "flag-fullwidth-digit-size", "flag-absurd-size", "flag-s3-latency-nan",
               "flag-s3-latency-inf", "flag-input-dev-null", "flag-down-missing-cluster",
               "runtime-sort-input-wrong-format", "runtime-stage-writes-nothing"])


@pytest.mark.parametrize("case_id", CASE_IDS)
def test_bad_input_gets_one_clear_line(case_id: str, world: World, outcomes: dict[str, Outcome]) -> None:
    case = next(c for c in build_cases(world) if c.id == case_id)
    got = outcomes[case_id]
    lines = got.stderr.strip().splitlines()
    assert got.code == case.code, (got.code, got.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: "), got.stderr
    assert case.expect in lines[0], lines[0]
    assert "Traceback" not in got.stderr and got.stdout == ""
    assert got.leftovers == [], f"partial output left behind: {got.leftovers}"


def test_every_case_is_checked(world: World) -> None:
    assert sorted(CASE_IDS) == sorted(c.id for c in build_cases(world))
