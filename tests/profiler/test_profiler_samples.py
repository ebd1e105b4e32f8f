"""`sonic profile APP --inputs DIR`: profiling on the user's own sample inputs, no generator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.inputs import generate_input

REPO = Path(__file__).resolve().parents[2]

NO_GENERATOR_APP = '''
import sonic

app = sonic.App("linecount")


@app.stage()
def split(ctx):
    lines = ctx.inputs[0].read_text().splitlines()
    for i in range(0, len(lines), 2000):
        ctx.output(f"part-{i // 2000:04d}").write_text("\\n".join(lines[i:i + 2000]))


@app.stage(after="split", pattern="scatter")
def count(ctx):
    ctx.output("n").write_text(str(len(ctx.inputs[0].read_text().splitlines())))


@app.stage(after="count", pattern="gather")
def total(ctx):
    ctx.output("total").write_text(str(sum(int(p.read_text()) for p in ctx.inputs)))
'''


def _sonic(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *args], cwd=cwd, text=True, capture_output=True,
                          timeout=300, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_an_app_without_a_generator_profiles_on_sample_files(tmp_path: Path) -> None:
    (tmp_path / "linecount.py").write_text(NO_GENERATOR_APP)
    samples = tmp_path / "samples"
    samples.mkdir()
    for n in (3000, 6000, 12000, 24000):
        (samples / f"s{n}.txt").write_text("".join(f"line {i}\n" for i in range(n)))
    without = _sonic(tmp_path, "profile", "linecount:app", "--root", "store")
    assert without.returncode == 2 and "--inputs" in without.stderr and "internal error" not in without.stderr
    proc = _sonic(tmp_path, "profile", "linecount:app", "--inputs", "samples", "--runs", "1", "--root", "store")
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads((tmp_path / "store" / "models" / "linecount" / "manifest.json").read_text())
    assert manifest["training"]["runs"] == 4 and len(manifest["training"]["sizes"]) == 4
    plan = _sonic(tmp_path, "plan", "linecount:app", "--input", "samples/s24000.txt", "--root", "store", "--json")
    assert plan.returncode == 0, plan.stderr
    assert json.loads(plan.stdout)["stages"]["count"]["instances"] == 12


def test_samples_of_too_few_sizes_are_profiled_with_a_warning(tmp_path: Path) -> None:
    app = load_app("examples.topk:app")
    samples = tmp_path / "samples"
    samples.mkdir()
    for seed in (1, 2):
        generate_input(app, samples / f"in-{seed}", 2_000_000, seed=seed)
    proc = subprocess.run([sys.executable, "-m", "sonic.cli", "profile", "examples.topk:app", "--inputs",
                           str(samples), "--runs", "1", "--root", str(tmp_path / "store")], cwd=REPO, text=True,
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "1 distinct size(s)" in proc.stdout + proc.stderr


@pytest.mark.parametrize("flags", [["--inputs", "nowhere"], ["--inputs", "samples", "--sizes", "2MB"]])
def test_bad_sample_flags_exit_2(tmp_path: Path, flags: list[str]) -> None:
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "a").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "sonic.cli", "profile", "examples.topk:app", *flags, "--root",
                           str(tmp_path / "store")], cwd=tmp_path if flags[1] == "samples" else REPO, text=True,
                          capture_output=True, timeout=120, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2, proc.stderr
    assert "internal error" not in proc.stderr
