"""The fork-join example (``examples/forkjoin.py``): a diamond DAG whose scattered stage feeds a
wide CPU-heavy branch and a one-instance summary branch that re-join. Reference runs at three
sizes, a validator that catches wrong outputs, a profile the models trust, and one run on a
2-VM loopback cluster through the CLI."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from models import AppModel
from profiler import ProfileStore, profile_app
from sonic.app import App, load_app
from sonic.errors import ExecutionError
from sonic.metrics import RunResult
from sonic.reference import ReferenceExecutor

REPO_ROOT = Path(__file__).resolve().parents[2]
KB = 1_000
MB = 1_000_000


@pytest.fixture(scope="module", autouse=True)
def examples_on_path() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(REPO_ROOT))
        yield


def forkjoin_app() -> App:
    return load_app("examples.forkjoin:app")


def generate(app: App, path: Path, size: int, seed: int = 0) -> Path:
    assert app.generator is not None
    app.generator(path, size, seed)
    return path


def run(app: App, input_path: Path, workdir: Path) -> RunResult:
    return ReferenceExecutor(app, workdir=workdir).run(input_path)


def instances_of(result: RunResult, stage: str) -> int:
    return next(s.instances for s in result.stages if s.name == stage)


def outputs_by_name(result: RunResult) -> dict[str, Path]:
    return {Path(p).name: Path(p) for p in result.outputs}


# --------------------------------------------------------------------------- shape
def test_app_is_a_diamond() -> None:
    app = forkjoin_app().validate()
    assert app.sources() == ["split"] and app.sinks() == ["join"]
    patterns = {(e.src, e.dst): e.pattern.value for e in app.edges()}
    assert patterns == {
        ("split", "parse"): "scatter",
        ("parse", "enrich"): "one-to-one",
        ("parse", "stats"): "gather",
        ("enrich", "join"): "gather",
        ("stats", "join"): "broadcast",
    }
    assert app.topological_order()[0] == "split" and app.topological_order()[-1] == "join"


# --------------------------------------------------------------------------- reference runs
def test_runs_validate_at_three_sizes_with_growing_fanout(tmp_path: Path) -> None:
    from examples import forkjoin

    app = forkjoin_app()
    fanouts = []
    for size in (150 * KB, 1_500 * KB, 3 * MB):
        input_path = generate(app, tmp_path / f"in-{size}", size)
        result = run(app, input_path, tmp_path / f"work-{size}")
        assert result.output_ok, result.output_detail
        assert result.input_bytes == pytest.approx(size, rel=0.01)
        n = instances_of(result, "parse")
        assert instances_of(result, "enrich") == n
        assert instances_of(result, "stats") == instances_of(result, "join") == 1
        assert n == forkjoin.num_chunks(size // forkjoin.LINE_BYTES)
        fanouts.append(n)
        edge_bytes = {(e.src, e.dst): e.bytes for e in result.edges}
        events = (size // forkjoin.LINE_BYTES) * forkjoin.EVENT_DTYPE.itemsize
        # parse's output goes both ways whole; enrich keeps the size; stats shrinks it to a few hundred bytes.
        assert edge_bytes[("parse", "enrich")] == edge_bytes[("parse", "stats")] == events
        assert edge_bytes[("enrich", "join")] == events
        assert edge_bytes[("stats", "join")] < 1_000
        outputs = outputs_by_name(result)
        assert set(outputs) == {forkjoin.REPORT_NAME, forkjoin.TABLE_NAME}
        report = json.loads(outputs[forkjoin.REPORT_NAME].read_text())
        assert report["events"] == size // forkjoin.LINE_BYTES and report["slow_events"] > 0
    # The branches' costs differ: enrich (N instances of the iterated mix) outweighs stats.
    busy = {stage: sum(m.wall_s for m in result.instances if m.stage == stage) for stage in ("enrich", "stats")}
    assert busy["enrich"] > 2 * busy["stats"], busy
    assert fanouts[0] == 1 and fanouts[0] < fanouts[1] < fanouts[2]


def test_validator_rejects_corrupted_outputs(tmp_path: Path) -> None:
    from examples import forkjoin

    app = forkjoin_app()
    input_path = generate(app, tmp_path / "in", 1 * MB)
    result = run(app, input_path, tmp_path / "work")
    assert result.output_ok, result.output_detail
    outputs = outputs_by_name(result)
    report, table = outputs[forkjoin.REPORT_NAME], outputs[forkjoin.TABLE_NAME]
    good_report, good_table = report.read_text(), table.read_text()
    both = [table, report]
    assert app.check_output(input_path, both).ok

    other = generate(app, tmp_path / "other", 1 * MB, seed=5)
    assert not app.check_output(other, both).ok, "output of seed 0 accepted for an input of seed 5"

    def corrupt_report(change) -> None:  # type: ignore[no-untyped-def]
        doc = json.loads(good_report)
        change(doc)
        report.write_text(json.dumps(doc, sort_keys=True))
        verdict = app.check_output(input_path, both)
        assert not verdict.ok, f"corrupted report accepted ({verdict.detail})"
        report.write_text(good_report)

    corrupt_report(lambda d: d["top_users"][0].__setitem__("slow", d["top_users"][0]["slow"] + 1))
    corrupt_report(lambda d: d["thresholds_us"].__setitem__("view", d["thresholds_us"]["view"] + 1024))
    corrupt_report(lambda d: d["kinds"]["click"].__setitem__("latency_sum", d["kinds"]["click"]["latency_sum"] - 1))
    corrupt_report(lambda d: d.__setitem__("extra", 1))

    rows = list(csv.reader(good_table.splitlines()))
    rows[1], rows[2] = rows[2], rows[1]                       # same numbers, wrong order
    table.write_text("".join(",".join(r) + "\n" for r in rows))
    assert not app.check_output(input_path, both).ok
    rows = list(csv.reader(good_table.splitlines()))
    rows[-1][3] = str(int(rows[-1][3]) + 1)                     # one error too many in one region
    table.write_text("".join(",".join(r) + "\n" for r in rows))
    verdict = app.check_output(input_path, both)
    assert not verdict.ok and forkjoin.TABLE_NAME in verdict.detail
    table.write_text(good_table)

    assert app.check_output(input_path, both).ok
    assert not app.check_output(input_path, [report]).ok
    assert not app.check_output(input_path, []).ok
    report.write_text("{}")
    assert not app.check_output(input_path, both).ok


def test_parser_and_score_match_plain_python(tmp_path: Path) -> None:
    """The vectorised parser and mix against a line-by-line Python reading of the same log."""
    from examples import forkjoin

    path = generate(forkjoin_app(), tmp_path / "in", 20 * KB, seed=2)
    lines = path.read_text().splitlines()
    events = forkjoin.parse_lines(path.read_bytes())
    enriched = forkjoin.enrich_events(events)
    assert events.size == len(lines)
    for line, event, rich in zip(lines, events, enriched):
        ts, user, kind, status, latency = line.split()
        assert (int(ts), int(user[1:]), int(status), int(latency)) == (
            event["ts"], event["user"], event["status"], event["latency"])
        assert forkjoin.KINDS[event["kind"]] == kind
        z = (int(user[1:]) << 32 | int(ts)) ^ ((forkjoin.KINDS.index(kind) * 0x9E3779B97F4A7C15) & (2**64 - 1))
        for _ in range(forkjoin.ENRICH_ROUNDS):
            z = forkjoin.mix64_int((z + 0x9E3779B97F4A7C15) & (2**64 - 1))
        assert rich["score"] == z >> 48
        assert rich["region"] == forkjoin.mix64_int(int(user[1:]) + 0x9E3779B97F4A7C15) % forkjoin.NUM_REGIONS
    # One formatting round trip.
    assert forkjoin.format_lines(events) == path.read_bytes()


def test_generator_is_deterministic(tmp_path: Path) -> None:
    app = forkjoin_app()
    first = generate(app, tmp_path / "a", 300 * KB, seed=3).read_bytes()
    assert first == generate(app, tmp_path / "b", 300 * KB, seed=3).read_bytes()
    assert first != generate(app, tmp_path / "c", 300 * KB, seed=4).read_bytes()
    assert app.features_of(tmp_path / "a") == {"events": 300 * KB // 41, "chunks": 1.0}


def test_rejects_an_input_of_another_app(tmp_path: Path) -> None:
    other = generate(load_app("examples.topk:app"), tmp_path / "topk.in", 41 * 1000)
    with pytest.raises(ExecutionError, match="not a forkjoin"):
        run(forkjoin_app(), other, tmp_path / "work")
    bad = tmp_path / "bad.in"
    data = bytearray(generate(forkjoin_app(), tmp_path / "good.in", 41 * 100).read_bytes())
    data[41 * 7 + 20: 41 * 7 + 28] = b"teleport"
    bad.write_bytes(bytes(data))
    with pytest.raises(ExecutionError, match="line 8 is not a forkjoin log line"):
        run(forkjoin_app(), bad, tmp_path / "work-bad")


# --------------------------------------------------------------------------- models
def test_profile_fits_trusted_models(tmp_path: Path) -> None:
    from examples import forkjoin

    app = forkjoin_app()
    store = ProfileStore(tmp_path / "profiles")
    # Fanouts 1, 1, 2, 4: the held-out refit (0.5-2 MB) sees the count leave its floor only at
    # its largest size, so no CV fold can score the step form; it must still be chosen (it is
    # exact on every size) and predict 4 MB's fanout (models.metric._admit_exact_steps).
    summary = profile_app(app, [MB // 2, 1 * MB, 2 * MB, 4 * MB], 1, store=store)
    assert summary.invalid_outputs == 0
    model = AppModel.for_app(app).fit(store.load(app.name))
    untrusted = {s: sm.untrusted_reason for s, sm in model.stages_.items() if not sm.trusted}
    assert untrusted == {}, untrusted
    prediction = model.predict(app, 8 * MB)
    assert set(prediction.stages) == set(app.stages)
    # 8 MB of whole lines is 8 chunks of 999,990 bytes and one of a single line.
    assert forkjoin.num_chunks(8 * MB // forkjoin.LINE_BYTES) == 9
    assert prediction.stages["parse"].instances == prediction.stages["enrich"].instances == 9
    assert prediction.stages["stats"].instances == prediction.stages["join"].instances == 1
    for stage in prediction.stages.values():
        assert np.isfinite(stage.time_s.mean) and np.isfinite(stage.memory_mb.hi)
        assert stage.output_bytes.mean >= 0


# --------------------------------------------------------------------------- cluster
def _cli(args: list[str], env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *args], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def loopback_cluster(tmp_path: Path) -> Iterator[dict[str, str]]:
    """A 2-VM loopback cluster whose files (and the store) live under ``tmp_path``; the CLI runs
    from the repository root so ``examples.forkjoin:app`` resolves (and is shipped as a bundle)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SONIC_DEBUG")}
    env.update(SONIC_CLUSTER=str(tmp_path / "sonic" / "cluster.yaml"), SONIC_HOME=str(tmp_path / "sonic" / "home"),
               PIP_NO_INDEX="1")
    up = _cli(["cluster", "up", "--local", "2"], env)
    assert up.returncode == 0, up.stderr
    try:
        yield env
    finally:
        down = _cli(["cluster", "down"], env)
        assert down.returncode == 0, down.stderr


def test_runs_validated_on_a_two_vm_loopback_cluster(loopback_cluster: dict[str, str], tmp_path: Path) -> None:
    input_path = generate(forkjoin_app(), tmp_path / "in", 3 * MB, seed=1)
    done = _cli(["run", "examples.forkjoin:app", "--input", str(input_path), "--strategy", "direct",
                 "--no-learn", "--json"], loopback_cluster)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["output_ok"], report["output_detail"]
    stages = {s["name"]: s["instances"] for s in report["stages"]}
    assert stages == {"split": 1, "parse": 3, "enrich": 3, "stats": 1, "join": 1}
    assert {m["vm"] for m in report["instances"]} <= {"vm0", "vm1"}
    assert {e["method"] for e in report["edges"]} == {"direct"}


@pytest.mark.slow
def test_64mb_input_validates(tmp_path: Path) -> None:
    from examples import forkjoin

    app = forkjoin_app()
    input_path = generate(app, tmp_path / "in", 64 * MB, seed=9)
    result = run(app, input_path, tmp_path / "work")
    assert result.output_ok, result.output_detail
    assert instances_of(result, "enrich") == forkjoin.num_chunks(64 * MB // forkjoin.LINE_BYTES) == 65
    # Memory per instance stays bounded (chunks of ~1 MB; stats and join stream their inputs).
    assert max(m.peak_memory_mb for m in result.instances) < 400
