"""The ``sonic`` command line (sonic.cli): JSON report, exit codes, one-line errors, verb registry.

Most checks run the real CLI in a subprocess (``python -m sonic.cli``, cwd ``tests/fixtures_apps`` so
``module:attr`` resolves); the verb registry and the error plumbing of ``main`` are checked in-process.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

import sonic
from sonic import cli as cli_module
from sonic.errors import UserInputError


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """stderr is exactly one line starting with ``error:`` and never a traceback."""
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@pytest.fixture
def text_input(tmp_path: Path) -> Path:
    path = tmp_path / "input.txt"
    path.write_bytes(b"the quick brown fox jumps over the lazy dog\n" * 20)  # 880 bytes
    return path


# --------------------------------------------------------------------------- basics
def test_version(sonic_cli):
    proc = sonic_cli("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"sonic, version {sonic.__version__}"


@pytest.mark.skipif(shutil.which("sonic") is None, reason="console script `sonic` is not installed")
def test_console_script():
    proc = subprocess.run(["sonic", "--version"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and sonic.__version__ in proc.stdout


# --------------------------------------------------------------------------- sonic run --local-reference
class TestRunLocalReference:
    def test_json_report(self, sonic_cli, text_input):
        proc = sonic_cli("run", "good_app:APP", "--input", text_input, "--local-reference", "--json")
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr == ""  # no progress with --json / without a TTY
        report = json.loads(proc.stdout)  # stdout is exactly one JSON document
        for key in ("app", "strategy", "latency_s", "predicted_latency_s", "cost_usd", "output_ok", "edges", "stages"):
            assert key in report, key
        assert report["app"] == "good"
        assert report["strategy"] == "reference"
        assert report["output_ok"] is True
        assert isinstance(report["latency_s"], float) and report["latency_s"] > 0
        assert report["input_bytes"] == 880
        edges = report["edges"]
        assert [(e["src"], e["dst"]) for e in edges] == [("split", "upper"), ("upper", "combine")]
        for e in edges:
            assert set(e) >= {"src", "dst", "method", "bytes", "seconds"}
            assert e["bytes"] == 880 and isinstance(e["seconds"], (int, float))
        stages = report["stages"]
        assert [(s["name"], s["instances"]) for s in stages] == [("split", 1), ("upper", 3), ("combine", 1)]
        for s in stages:
            assert set(s) >= {"name", "instances", "seconds", "peak_memory_mb"}
            assert s["peak_memory_mb"] > 0 and s["seconds"] >= 0

    def test_human_report_and_keep(self, sonic_cli, text_input, tmp_path):
        keep = tmp_path / "kept"
        proc = sonic_cli("run", "good_app:APP", "--input", text_input, "--local-reference", "--keep", keep)
        assert proc.returncode == 0, proc.stderr
        assert "good (reference)" in proc.stdout and "output ok" in proc.stdout
        for name in ("split", "upper", "combine"):
            assert f"stage {name}" in proc.stdout
        assert "split -> upper" in proc.stdout
        results = list(keep.rglob("result"))
        assert len(results) == 1 and results[0].read_bytes() == text_input.read_bytes().upper()

    @pytest.mark.parametrize("module,stages", [
        ("cyclic_app", ["ping", "pong"]),
        ("unknown_after", ["orphan", "missing_stage"]),
        ("bad_pattern_app", ["fan", "fanout"]),
        ("duplicate_app", ["twice"]),
        ("badsig_app", ["twoargs"]),
    ])
    def test_malformed_app(self, sonic_cli, text_input, module, stages):
        proc = sonic_cli("run", f"{module}:APP", "--input", text_input, "--local-reference", "--json")
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert f"stage '{stages[0]}'" in line, line
        for other in stages[1:]:
            assert other in line, line
        assert proc.stdout == ""

    def test_missing_input(self, sonic_cli, tmp_path):
        proc = sonic_cli("run", "good_app:APP", "--input", tmp_path / "absent.txt", "--local-reference", "--json")
        assert proc.returncode == 2
        line = one_error_line(proc)
        assert "absent.txt" in line and "does not exist" in line

    @pytest.mark.parametrize("spec,expected", [
        ("nosuchapp", "unknown app 'nosuchapp'"),
        ("no_such_module_xyz:APP", "cannot import module 'no_such_module_xyz'"),
        ("good_app:NOPE", "has no attribute 'NOPE'"),
        ("not_an_app:APP", "not a sonic.App"),
    ])
    def test_unknown_app(self, sonic_cli, text_input, spec, expected):
        proc = sonic_cli("run", spec, "--input", text_input, "--local-reference")
        assert proc.returncode == 2
        assert expected in one_error_line(proc)

    def test_stage_failure_is_runtime_error(self, sonic_cli, text_input):
        proc = sonic_cli("run", "crash_app:APP", "--input", text_input, "--local-reference", "--json")
        assert proc.returncode == 1
        line = one_error_line(proc)
        assert "stage 'explode' instance 0" in line and "boom in explode" in line

    def test_usage_error(self, sonic_cli):
        proc = sonic_cli("run", "good_app:APP", "--local-reference")
        assert proc.returncode == 2
        assert "--input" in one_error_line(proc)

    def test_local_reference_with_strategy(self, sonic_cli, text_input):
        proc = sonic_cli("run", "good_app:APP", "--input", text_input, "--local-reference", "--strategy", "vm")
        assert proc.returncode == 2
        assert "--local-reference" in one_error_line(proc)

    def test_stage_prints_do_not_corrupt_json(self, sonic_cli, text_input):
        proc = sonic_cli("run", "noisy_app:APP", "--input", text_input, "--local-reference", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["output_ok"] is True


# --------------------------------------------------------------------------- sonic workloads gen
class TestWorkloadsGen:
    def test_generates_with_fixture_generator(self, sonic_cli, tmp_path):
        out = tmp_path / "gen.txt"
        proc = sonic_cli("workloads", "gen", "good_app:APP", "--size", "2KB", "-o", out)
        assert proc.returncode == 0, proc.stderr
        assert out.stat().st_size == 2000
        assert str(out) in proc.stdout
        assert [p.name for p in tmp_path.iterdir()] == ["gen.txt"]  # no partial file left

    def test_bad_size(self, sonic_cli, tmp_path):
        out = tmp_path / "gen.txt"
        proc = sonic_cli("workloads", "gen", "good_app:APP", "--size", "50XB", "-o", out)
        assert proc.returncode == 2
        assert "50XB" in one_error_line(proc)
        assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- shared options, progress
def test_a_short_run_without_a_terminal_prints_only_its_results(sonic_cli, text_input):
    proc = sonic_cli("run", "good_app:APP", "--input", text_input, "--local-reference")
    assert proc.returncode == 0, proc.stderr
    assert "good (reference)" in proc.stdout  # the results: stdout, whatever stdout is
    assert proc.stderr == ""  # progress lines come only once work has run LINE_INTERVAL_S


def test_progress_without_a_terminal_is_an_occasional_plain_line():
    from sonic.progress import InstanceProgress, ProgressMode

    now = [0.0]
    lines: list[str] = []
    progress = InstanceProgress(ProgressMode.LINES, interval_s=10.0, clock=lambda: now[0], echo=lines.append)
    for second, (stage, done, total) in enumerate([("split", 1, 1), ("work", 1, 100), ("work", 2, 100)]):
        now[0] = float(second)
        progress(stage, done, total)
    assert lines == []  # nothing in the first interval
    for done in range(3, 101):
        now[0] = 2.0 + done * 0.5  # one instance every half second: 49 s in all
        progress("work", done, 100)
    assert lines == [f"work: {done}/100 instances" for done in (16, 36, 56, 76, 96)]  # at 10, 20, ... 50 s
    assert all("\r" not in line for line in lines)


@pytest.mark.parametrize("verb", [("plan",), ("run",)])
def test_strategy_and_objective_choices_come_from_the_plan_module(verb):
    from sonic.plan import OBJECTIVES, STRATEGIES

    command = cli_module.cli
    for name in verb:
        command = command.commands[name]  # type: ignore[attr-defined]
    params = {p.name: p for p in command.params}
    assert tuple(params["strategy"].type.choices) == STRATEGIES
    assert tuple(params["objective"].type.choices) == OBJECTIVES


def test_every_option_has_help():
    def walk(command, path):
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])
        else:
            for param in command.params:
                if isinstance(param, click.Option) and not param.hidden:
                    yield " ".join(path), param

    missing = [f"{verb} {param.opts[0]}" for verb, param in walk(cli_module.cli, []) if not param.help]
    assert missing == []


def test_bad_strategy_is_one_line_exit_2(sonic_cli):
    proc = sonic_cli("plan", "good_app:APP", "--input-size", "1MB", "--strategy", "fastest")
    assert proc.returncode == 2 and "fastest" in one_error_line(proc)


def test_profile_honours_sonic_cluster(sonic_cli, tmp_path):
    missing = tmp_path / "no-cluster.yaml"
    proc = sonic_cli("profile", "good_app:APP", "--sizes", "1KB", "--runs", "1", "--root", tmp_path / "store",
                     env={"SONIC_CLUSTER": str(missing)})
    assert proc.returncode == 2 and str(missing) in one_error_line(proc)


class TestBenchObjectSizes:
    def test_both_names_is_bad_input(self, sonic_cli):
        proc = sonic_cli("bench", "dataplane", "--object-sizes", "1MB", "--sizes", "1MB")
        assert proc.returncode == 2 and "--object-sizes" in one_error_line(proc)

    def test_old_name_still_works_with_a_warning(self, sonic_cli, tmp_path):
        proc = sonic_cli("bench", "dataplane", "--sizes", "1MB", "--cluster", tmp_path / "none.yaml")
        assert proc.returncode == 2  # no cluster there: the size list itself was accepted
        warning, error = proc.stderr.strip().splitlines()
        assert "deprecated" in warning and "--object-sizes" in warning and error.startswith("error: ")

    def test_bad_object_size_is_one_line(self, sonic_cli):
        proc = sonic_cli("bench", "dataplane", "--object-sizes", "1ZB")
        assert proc.returncode == 2 and "1ZB" in one_error_line(proc)


# --------------------------------------------------------------------------- verb registry (in-process)
VERBS = [
    ("cluster", "up"), ("cluster", "status"), ("cluster", "calibrate"), ("cluster", "down"),
    ("profile",), ("models",), ("plan",), ("run",), ("demo",), ("bench", "dataplane"),
    ("workloads", "list"), ("workloads", "gen"),
]

OPTIONS = {
    ("cluster", "up"): ["--local", "--mode", "--vm-mbps", "--s3-mbps", "--s3-latency-ms", "--cluster"],
    ("cluster", "status"): ["--cluster"],
    ("cluster", "calibrate"): ["--cluster"],
    ("cluster", "down"): ["--cluster"],
    ("profile",): ["--sizes", "--runs", "--cluster", "--root"],
    ("models",): ["--json"],
    ("plan",): ["--input", "--input-size", "--objective", "--budget", "--deadline", "--strategy", "--json", "--dot"],
    ("run",): ["--input", "--plan", "--strategy", "--objective", "--json", "--root", "--cluster"],
    ("demo",): ["--json"],
    ("bench", "dataplane"): ["--json", "--object-sizes", "--cluster"],
    ("workloads", "gen"): ["--size", "--output"],
}


@pytest.mark.parametrize("verb", VERBS, ids=" ".join)
def test_every_design_verb_is_registered(verb):
    result = CliRunner().invoke(cli_module.cli, [*verb, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output
    for option in OPTIONS.get(verb, []):
        assert option in result.output, f"sonic {' '.join(verb)} lacks {option}"


def test_top_level_help_lists_groups():
    result = CliRunner().invoke(cli_module.cli, ["--help"])
    assert result.exit_code == 0
    for name in ("cluster", "profile", "models", "plan", "run", "demo", "bench", "workloads"):
        assert name in result.output


def test_help_subprocess(sonic_cli):
    proc = sonic_cli("plan", "--help")
    assert proc.returncode == 0 and "--objective" in proc.stdout


# --------------------------------------------------------------------------- main(): error plumbing (in-process)
class TestMain:
    def run_main(self, capsys, argv: list[str]) -> tuple[int, str]:
        with pytest.raises(SystemExit) as exc:
            cli_module.main(argv)
        err = capsys.readouterr().err
        assert "Traceback" not in err
        return exc.value.code, err

    def test_missing_third_party_dependency(self, monkeypatch, capsys):
        monkeypatch.delenv("SONIC_DEBUG", raising=False)

        def boom(*a, **k):
            raise ModuleNotFoundError("No module named 'somedep'", name="somedep")

        monkeypatch.setattr("sonic.app.load_app", boom)
        code, err = self.run_main(capsys, ["workloads", "list"])
        assert code == 1 and err.startswith("error: missing dependency somedep") and err.count("\n") == 1

    def test_user_input_error_exit_2(self, monkeypatch, capsys):
        monkeypatch.delenv("SONIC_DEBUG", raising=False)

        def bad(*a, **k):
            raise UserInputError("something is wrong; do this")

        monkeypatch.setattr("sonic.app.load_app", bad)
        code, err = self.run_main(capsys, ["workloads", "gen", "x", "--size", "1MB", "-o", "out"])
        assert (code, err) == (2, "error: something is wrong; do this\n")

    def test_unexpected_exception_is_one_line(self, monkeypatch, capsys):
        monkeypatch.delenv("SONIC_DEBUG", raising=False)

        def crash(*a, **k):
            raise RuntimeError("kaput")

        monkeypatch.setattr("sonic.app.load_app", crash)
        code, err = self.run_main(capsys, ["workloads", "list"])
        assert code == 1
        assert err.startswith("internal error: RuntimeError: kaput") and "SONIC_DEBUG=1" in err
        assert err.count("\n") == 1

    def test_debug_reraises(self, monkeypatch):
        monkeypatch.setenv("SONIC_DEBUG", "1")

        def crash(*a, **k):
            raise RuntimeError("kaput")

        monkeypatch.setattr("sonic.app.load_app", crash)
        with pytest.raises(RuntimeError, match="kaput"):
            cli_module.main(["workloads", "list"])

    def test_click_usage_error(self, capsys):
        code, err = self.run_main(capsys, ["cluster", "up", "--local", "0"])
        assert code == 2 and err.startswith("error: ") and "--local" in err

    def test_unknown_verb(self, capsys):
        code, err = self.run_main(capsys, ["frobnicate"])
        assert code == 2 and err.startswith("error: ") and "frobnicate" in err
