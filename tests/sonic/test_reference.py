"""The reference executor (sonic.reference) and per-instance execution (sonic.execution)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from sonic.app import APP_INPUT, App, Validation, load_app
from sonic.errors import ExecutionError, UserInputError
from sonic.execution import collect_outputs, format_failure, run_instance
from sonic.reference import ReferenceExecutor, input_refs
from sonic.routing import InstanceSpec, ObjectRef

MB = 1024 * 1024


def run_app(app: App, input_path: Path, workdir: Path | None = None, **kw):
    executor = ReferenceExecutor(app, workdir=workdir, **kw)
    try:
        return executor.run(input_path)
    finally:
        executor.cleanup()


@pytest.fixture
def small_input(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_bytes(b"abcdefghij" * 30)  # 300 bytes
    return path


def one_stage_app(fn, name: str = "only") -> App:
    app = App("single")
    app.add_stage(fn, name=name)
    return app


# --------------------------------------------------------------------------- happy path
class TestRun:
    def test_fixture_app_runs_and_validates(self, fixture_apps, small_input, tmp_path):
        app = load_app("good_app:APP")
        events: list[tuple[str, int, int]] = []
        result = run_app(app, small_input, workdir=tmp_path / "work", progress=lambda *a: events.append(a))
        assert result.output_ok, result.output_detail
        assert result.app == "good" and result.strategy == "reference"
        assert result.input_bytes == 300
        assert result.latency_s > 0
        assert [(s.name, s.instances) for s in result.stages] == [("split", 1), ("upper", 3), ("combine", 1)]
        assert [(e.src, e.dst, e.method, e.bytes) for e in result.edges] == [
            ("split", "upper", "local", 300), ("upper", "combine", "local", 300),
        ]
        assert all(s.peak_memory_mb > 0 and s.seconds >= 0 for s in result.stages)
        assert [s.input_bytes for s in result.stages] == [300, 300, 300]
        assert [s.output_bytes for s in result.stages] == [300, 300, 300]
        (out,) = result.outputs
        assert Path(out).read_bytes() == small_input.read_bytes().upper()
        assert len(result.instances) == 5
        assert {(m.stage, m.instance) for m in result.instances} == {
            ("split", 0), ("upper", 0), ("upper", 1), ("upper", 2), ("combine", 0)}
        assert events == [("split", 1, 1), ("upper", 1, 3), ("upper", 2, 3), ("upper", 3, 3), ("combine", 1, 1)]
        doc = result.to_json()
        json.dumps(doc)
        assert {"app", "strategy", "latency_s", "predicted_latency_s", "cost_usd", "output_ok",
                "edges", "stages"} <= set(doc)
        # scratch directories are removed, outputs kept in the given workdir
        assert not any((tmp_path / "work").rglob("scratch"))

    def test_temp_workdir_is_removed_by_cleanup(self, small_input):
        app = one_stage_app(lambda ctx: ctx.output("x").write_bytes(b"1"))
        executor = ReferenceExecutor(app)
        executor.run(small_input)
        assert executor.workdir.is_dir()
        executor.cleanup()
        assert not executor.workdir.exists()

    def test_validator_verdict_is_reported(self, small_input):
        app = one_stage_app(lambda ctx: ctx.output("x").write_bytes(b"1"))
        app.validate_output(lambda inp, outs: Validation(False, "deliberately wrong"))
        result = run_app(app, small_input)
        assert not result.output_ok and result.output_detail == "deliberately wrong"

    def test_no_validator(self, small_input):
        result = run_app(one_stage_app(lambda ctx: None), small_input)
        assert result.output_ok and "no validator" in result.output_detail

    def test_context_and_edge_bytes_of_a_join(self, tmp_path, small_input):
        """data -scatter-> work <-broadcast- model; work -gather-> sink."""
        app = App("join")

        @app.stage()
        def data(ctx):
            for i in range(3):
                ctx.output(f"c{i}").write_bytes(bytes([65 + i]) * 10)

        @app.stage()
        def model(ctx):
            ctx.output("weights").write_bytes(b"w" * 100)

        @app.stage(after={"data": "scatter", "model": "broadcast"})
        def work(ctx):
            assert ctx.scratch_dir.is_dir()
            info = {
                "key": ctx.key, "instance": ctx.instance, "n": ctx.num_instances, "stage": ctx.stage, "app": ctx.app,
                "inputs": [p.name for p in ctx.inputs],
                "data": [p.read_bytes().decode() for p in ctx.inputs_from("data")],
                "model": [p.stat().st_size for p in ctx.inputs_from("model")],
                "app_input": ctx.inputs_from(APP_INPUT),
            }
            ctx.output(f"info-{ctx.instance}").write_text(json.dumps(info))

        @app.stage(after="work", pattern="gather")
        def sink(ctx):
            infos = [json.loads(p.read_text()) for p in ctx.inputs]
            ctx.output("all").write_text(json.dumps(infos))
            assert ctx.inputs_from(APP_INPUT) == []

        result = run_app(app, small_input, workdir=tmp_path / "w")
        edges = {(e.src, e.dst): e.bytes for e in result.edges}
        assert edges[("data", "work")] == 30
        assert edges[("model", "work")] == 3 * 100  # broadcast: every copy counts
        assert edges[("work", "sink")] == sum(s.output_bytes for s in result.stages if s.name == "work")
        assert {s.name: s.instances for s in result.stages} == {"data": 1, "model": 1, "work": 3, "sink": 1}
        infos = json.loads(Path(result.outputs[0]).read_text())
        assert [i["key"] for i in infos] == ["c0", "c1", "c2"]
        assert [i["instance"] for i in infos] == [0, 1, 2]
        assert {i["n"] for i in infos} == {3}
        assert infos[1] == {"key": "c1", "instance": 1, "n": 3, "stage": "work", "app": "join",
                            "inputs": ["c1", "weights"], "data": ["B" * 10], "model": [100], "app_input": []}
        # sources received the application input
        assert [m.input_bytes for m in result.instances if m.stage in ("data", "model")] == [300, 300]

    def test_zero_fanout(self, small_input):
        app = App("zero")
        app.add_stage(lambda ctx: None, name="nothing")
        app.add_stage(lambda ctx: pytest.fail("must not run"), name="never", after="nothing", pattern="scatter")
        app.add_stage(lambda ctx: ctx.output("done").write_text(str(len(ctx.inputs))), name="end",
                      after="never", pattern="gather")
        result = run_app(app, small_input)
        assert {s.name: s.instances for s in result.stages} == {"nothing": 1, "never": 0, "end": 1}
        assert {s.name: s.peak_memory_mb for s in result.stages}["never"] == 0.0
        assert all(e.bytes == 0 for e in result.edges)
        assert result.output_ok

    def test_directory_input(self, tmp_path):
        indir = tmp_path / "in"
        indir.mkdir()
        (indir / "b.txt").write_bytes(b"bb")
        (indir / "a.txt").write_bytes(b"a")
        (indir / "sub").mkdir()
        refs, paths = input_refs(indir)
        assert [(r.stage, r.name, r.size) for r in refs] == [(APP_INPUT, "a.txt", 1), (APP_INPUT, "b.txt", 2)]
        assert paths[refs[0].key] == (indir / "a.txt").resolve()
        seen = tmp_path / "seen"
        app = one_stage_app(lambda ctx: seen.write_text(",".join(p.name for p in ctx.inputs)))
        assert run_app(app, indir).input_bytes == 3
        assert seen.read_text() == "a.txt,b.txt"

    def test_missing_input(self, tmp_path):
        with pytest.raises(UserInputError, match="does not exist"):
            run_app(one_stage_app(lambda ctx: None), tmp_path / "nope")

    def test_empty_input_directory(self, tmp_path):
        (tmp_path / "empty").mkdir()
        with pytest.raises(UserInputError, match="holds no files"):
            run_app(one_stage_app(lambda ctx: None), tmp_path / "empty")


# --------------------------------------------------------------------------- measured peak memory
class TestPeakMemory:
    def test_large_allocation_is_measured(self, small_input):
        def trivial(ctx):
            ctx.output("x").write_bytes(b"x")

        def hungry(ctx):
            block = b"\x01" * (200 * MB)  # filled, hence resident
            ctx.output("y").write_bytes(block[:10])

        def numpy_hungry(ctx):
            import numpy as np

            arr = np.ones(200 * MB // 8)  # writes every page
            ctx.output("z").write_bytes(arr[:2].tobytes())

        app = App("mem")
        app.add_stage(trivial, name="trivial")
        app.add_stage(hungry, name="hungry", after="trivial", pattern="scatter")
        app.add_stage(numpy_hungry, name="numpy_hungry", after="hungry", pattern="one-to-one")
        app.add_stage(trivial, name="trivial_again", after="numpy_hungry", pattern="one-to-one")
        result = run_app(app, small_input)
        peak = {s.name: s.peak_memory_mb for s in result.stages}
        assert peak["hungry"] - peak["trivial"] >= 150, peak
        assert peak["numpy_hungry"] - peak["trivial"] >= 150, peak
        # each instance reports its own peak: the big stages do not leak into later ones
        assert peak["trivial_again"] < peak["hungry"] - 150, peak
        assert peak["hungry"] < peak["trivial"] + 400, peak


# --------------------------------------------------------------------------- failures
class TestFailures:
    def test_exception_names_stage_instance_and_input(self, small_input):
        app = App("crash")
        app.add_stage(lambda ctx: [ctx.output(f"k{i}").write_bytes(b"12345") for i in range(3)], name="src")

        def explode(ctx):
            if ctx.key == "k2":
                raise RuntimeError("boom in explode")
            ctx.output("ok").write_bytes(b"")

        app.add_stage(explode, name="explode", after="src", pattern="scatter")
        with pytest.raises(ExecutionError) as exc:
            run_app(app, small_input)
        message = str(exc.value)
        assert "stage 'explode'" in message
        assert "instance 2" in message
        assert "(input 5 bytes)" in message
        assert "RuntimeError: boom in explode" in message
        assert "test_reference.py:" in message  # the user's frame
        assert "\n" not in message

    def test_os_exit(self, small_input):
        app = one_stage_app(lambda ctx: os._exit(3), name="quitter")
        with pytest.raises(ExecutionError) as exc:
            run_app(app, small_input)
        message = str(exc.value)
        assert "stage 'quitter' instance 0 (input 300 bytes)" in message
        assert "exited with code 3" in message

    def test_killed(self, small_input):
        app = one_stage_app(lambda ctx: os.kill(os.getpid(), signal.SIGKILL), name="victim")
        with pytest.raises(ExecutionError) as exc:
            run_app(app, small_input)
        message = str(exc.value)
        assert "stage 'victim' instance 0" in message
        assert f"killed by signal {int(signal.SIGKILL)}" in message

    def test_sys_exit(self, small_input):
        def leaver(ctx):
            raise SystemExit(0)

        with pytest.raises(ExecutionError, match="stage 'leaver' instance 0.*SystemExit"):
            run_app(one_stage_app(leaver, name="leaver"), small_input)

    def test_executor_still_usable_after_a_failure(self, small_input):
        with pytest.raises(ExecutionError):
            run_app(one_stage_app(lambda ctx: 1 / 0, name="div"), small_input)
        assert run_app(one_stage_app(lambda ctx: None), small_input).output_ok

    def test_output_directory_rejected(self, small_input):
        def makes_dir(ctx):
            (ctx.output_dir / "subdir").mkdir()

        with pytest.raises(ExecutionError) as exc:
            run_app(one_stage_app(makes_dir, name="makes_dir"), small_input)
        assert "stage 'makes_dir'" in str(exc.value) and "not a plain file" in str(exc.value)

    def test_output_symlink_rejected(self, small_input):
        def links(ctx):
            (ctx.output_dir / "link").symlink_to(ctx.inputs[0])

        with pytest.raises(ExecutionError, match="stage 'links'.*not a plain file"):
            run_app(one_stage_app(links, name="links"), small_input)

    def test_bad_output_name_written_directly(self, small_input):
        def sloppy(ctx):
            (ctx.output_dir / "bad name!").write_bytes(b"x")

        with pytest.raises(ExecutionError, match="stage 'sloppy'.*not a valid output name"):
            run_app(one_stage_app(sloppy, name="sloppy"), small_input)

    def test_bad_output_name_via_ctx(self, small_input):
        with pytest.raises(ExecutionError, match="stage 'escaper'.*not a plain file name"):
            run_app(one_stage_app(lambda ctx: ctx.output("../escape"), name="escaper"), small_input)


# --------------------------------------------------------------------------- in-process helpers
class TestExecutionHelpers:
    def test_run_instance_in_process(self, tmp_path, small_input):
        app = one_stage_app(lambda ctx: ctx.output("copy").write_bytes(ctx.inputs[0].read_bytes()), name="copy")
        spec = InstanceSpec("copy", 0, 1, None, (ObjectRef(APP_INPUT, 0, "input.txt", 300),))
        outcome = run_instance(app, spec, [small_input], tmp_path / "out", tmp_path / "scratch", vm="vm0", cold=True)
        assert outcome.outputs == [("copy", 300)]
        m = outcome.metrics
        assert (m.stage, m.instance, m.input_bytes, m.output_bytes, m.n_outputs) == ("copy", 0, 300, 300, 1)
        assert m.vm == "vm0" and m.cold and m.peak_memory_mb > 0 and m.ended >= m.started

    def test_run_instance_length_mismatch(self, tmp_path):
        app = one_stage_app(lambda ctx: None)
        spec = InstanceSpec("only", 0, 1, None, (ObjectRef(APP_INPUT, 0, "a", 1),))
        with pytest.raises(ValueError):
            run_instance(app, spec, [], tmp_path / "o", tmp_path / "s")

    def test_collect_outputs_sorted(self, tmp_path):
        for name in ("b", "a", "c.bin"):
            (tmp_path / name).write_bytes(b"x" * len(name))
        spec = InstanceSpec("s", 0, 1, None, ())
        assert collect_outputs(spec, tmp_path) == [("a", 1), ("b", 1), ("c.bin", 5)]

    def test_format_failure(self):
        spec = InstanceSpec("s", 4, 5, None, (ObjectRef("p", 0, "x", 42),))
        try:
            raise KeyError("missing")
        except KeyError as exc:
            line = format_failure(spec, exc)
        assert line.startswith("stage 's' instance 4 (input 42 bytes) failed at test_reference.py:")
        assert line.endswith("KeyError: 'missing'")


def test_an_instance_runs_with_one_thread_per_native_pool(tmp_path: Path, small_input: Path) -> None:
    """A VM slot is one core: the profiler's child must not time a stage on every core of the
    machine (BLAS, OpenMP pools), while the parent that profiles keeps its own pools."""
    from threadpoolctl import threadpool_info

    def report_pools(ctx) -> None:  # type: ignore[no-untyped-def]
        import numpy  # noqa: F401 - its BLAS pool is what the limit must reach
        pools = {f"{p['internal_api']}:{p['filepath']}": p["num_threads"] for p in threadpool_info()}
        ctx.output("pools").write_text(json.dumps({"pools": pools, "omp": os.environ.get("OMP_NUM_THREADS")}))

    before = {p["filepath"]: p["num_threads"] for p in threadpool_info()}
    omp_before = os.environ.get("OMP_NUM_THREADS")
    executor = ReferenceExecutor(one_stage_app(report_pools), workdir=tmp_path / "w", keep=True)
    result = executor.run(small_input)
    seen = json.loads(Path(result.outputs[0]).read_text())
    assert seen["pools"] and set(seen["pools"].values()) == {1} and seen["omp"] == "1"
    assert {p["filepath"]: p["num_threads"] for p in threadpool_info()} == before
    assert os.environ.get("OMP_NUM_THREADS") == omp_before
