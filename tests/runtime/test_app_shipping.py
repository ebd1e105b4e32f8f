"""The user's own module:attr app shipped to the agents (sonic.runtime.appcode / appship).

Unit tests build and install bundles; the cluster tests drive the real ``sonic`` CLI from a
temporary directory outside the repository, with no PYTHONPATH, on a loopback cluster.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from sonic.app import load_app
from sonic.errors import AppDefinitionError
from sonic.runtime import appcode
from sonic.runtime.appcode import AppCodeError, build_app_bundle, install_bundle, split_spec, unsatisfied

REPO = Path(__file__).resolve().parents[2]

WORDCOUNT = '''
import sonic
from sonic.app import Validation

FACTOR = {factor}
app = sonic.App("wordcount")

@app.stage()
def split(ctx):
    for i, part in enumerate(ctx.inputs[0].read_text().split("\\n\\n")):
        ctx.output(f"part-{{i:04d}}").write_text(part)

@app.stage(after="split", pattern="scatter")
def count(ctx):
    ctx.output("count").write_text(str(FACTOR * len(ctx.inputs[0].read_text().split())))

@app.stage(after="count", pattern="gather")
def total(ctx):
    ctx.output("total").write_text(str(sum(int(p.read_text()) for p in ctx.inputs)))

@app.generate_input
def generate(path, size, seed):
    path.write_text("\\n\\n".join("word " * 20 for _ in range(max(2, size // 100))))

@app.validate_output
def check(input_path, outputs):
    want = FACTOR * len(input_path.read_text().split())
    got = int(outputs[0].read_text())
    return Validation(got == want, f"total {{got}}, expected {{want}} (factor {{FACTOR}})")
'''


def write_app(where: Path, factor: int, name: str = "mymodule") -> Path:
    path = where / f"{name}.py"
    path.write_text(textwrap.dedent(WORDCOUNT.format(factor=factor)))
    return path


@pytest.fixture
def fresh_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A cwd outside the repo, and the user's modules forgotten afterwards."""
    monkeypatch.chdir(tmp_path)
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        if name.startswith(("mymodule", "mypkg")):
            del sys.modules[name]


# ---------------------------------------------------------------------------- bundles

def test_builtin_and_project_apps_are_not_bundled() -> None:
    assert build_app_bundle("sort", load_app("sort")) is None
    assert build_app_bundle("workloads.sort:APP", load_app("workloads.sort:APP")) is None


def test_module_bundle_is_content_addressed(fresh_import: Path) -> None:
    write_app(fresh_import, 1)
    first = build_app_bundle("mymodule:app", load_app("mymodule:app"))
    again = build_app_bundle("mymodule:app", load_app("mymodule:app"))
    assert first is not None and again is not None
    assert first.digest == again.digest and first.archive == again.archive
    assert first.files == ("mymodule.py",)
    assert split_spec(first.versioned_spec) == ("mymodule:app", first.digest)
    write_app(fresh_import, 2)
    del sys.modules["mymodule"]
    changed = build_app_bundle("mymodule:app", load_app("mymodule:app"))
    assert changed is not None and changed.digest != first.digest


def test_package_with_extra_files_and_requirements(fresh_import: Path) -> None:
    pkg = fresh_import / "mypkg"
    (pkg / "__pycache__").mkdir(parents=True)
    (pkg / "__pycache__" / "x.pyc").write_bytes(b"junk")
    (pkg / "__init__.py").write_text("")
    write_app(pkg, 1, name="jobs")
    (fresh_import / "lookup.csv").write_text("a,1\n")
    (fresh_import / "unrelated.txt").write_text("not shipped\n")
    app = load_app("mypkg.jobs:app")
    app.files = ["lookup.csv"]
    app.requirements = ["msgpack>=1.0"]
    bundle = build_app_bundle("mypkg.jobs:app", app)
    assert bundle is not None
    assert bundle.files == ("lookup.csv", "mypkg/__init__.py", "mypkg/jobs.py")
    assert bundle.requirements == ("msgpack>=1.0",)
    app.files = ["../etc/passwd"]
    with pytest.raises(AppDefinitionError, match="app.files entry '../etc/passwd'"):
        build_app_bundle("mypkg.jobs:app", app)


def test_install_is_verified_atomic_and_importable(fresh_import: Path, tmp_path: Path) -> None:
    write_app(fresh_import, 3)
    bundle = build_app_bundle("mymodule:app", load_app("mymodule:app"))
    assert bundle is not None
    apps = tmp_path / "apps"
    with pytest.raises(AppCodeError, match="arrived corrupt"):
        install_bundle(apps, bundle.digest, bundle.archive[:-1] + b"x", "vm0")
    assert not appcode.is_installed(apps, bundle.digest)
    where = install_bundle(apps, bundle.digest, bundle.archive, "vm0")
    assert (where / "mymodule.py").read_text() == (fresh_import / "mymodule.py").read_text()
    assert [p.name for p in apps.iterdir()] == [bundle.digest]   # no temp dirs left


def test_install_refuses_path_escapes(tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("../evil.py")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    archive = buf.getvalue()
    import hashlib

    digest = hashlib.sha256(archive).hexdigest()[: appcode.HASH_DIGITS]
    with pytest.raises(AppCodeError, match="not a plain relative file"):
        install_bundle(tmp_path / "apps", digest, archive, "vm0")
    assert not (tmp_path / "evil.py").exists()


def test_requirements_already_satisfied_are_not_installed() -> None:
    assert unsatisfied(["msgpack>=1.0", "PyYAML"]) == []
    assert unsatisfied(["msgpack>=999", "no-such-package-sonic-test"]) == ["msgpack>=999", "no-such-package-sonic-test"]
    with pytest.raises(AppCodeError, match="is not a pip requirement"):
        unsatisfied(["not a requirement !"])


# ---------------------------------------------------------------------------- real cluster, real CLI

def user_env(tmp: Path) -> dict[str, str]:
    """What a user's shell has: no PYTHONPATH; pip must not reach any index from a test."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SONIC_CLUSTER")}
    env.update(PIP_NO_INDEX="1", HOME=str(tmp / "home"))
    return env


def sonic_cli(args: list[str], cwd: Path, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sonic.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def user_dir(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    """A directory outside the repository with a loopback cluster brought up by the CLI."""
    where = tmp_path / "work"
    where.mkdir()
    assert not where.resolve().is_relative_to(REPO)
    env = user_env(tmp_path)
    up = sonic_cli(["cluster", "up", "--local", "2"], where, env)
    assert up.returncode == 0, up.stderr
    try:
        yield where, env
    finally:
        down = sonic_cli(["cluster", "down"], where, env)
        assert down.returncode == 0, down.stderr


def test_user_app_runs_then_its_change_runs(user_dir: tuple[Path, dict[str, str]]) -> None:
    where, env = user_dir
    write_app(where, 1)
    (where / "notes.txt").write_text("one two three\n\nfour five\n\nsix\n")
    first = sonic_cli(["run", "mymodule:app", "--input", "notes.txt", "--json"], where, env)
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["output_ok"] and "factor 1" in report["output_detail"]
    # The validator of version 2 expects 17 x the words: it passes only if version 2 ran. (The
    # source changes size too, so this process never reuses a stale .pyc of the same second.)
    write_app(where, 17)
    second = sonic_cli(["run", "mymodule:app", "--input", "notes.txt", "-o", "out"], where, env)
    assert second.returncode == 0, second.stderr
    assert "output ok (total 102, expected 102 (factor 17))" in second.stdout
    assert (where / "out" / "total" / "0" / "total").read_text() == "102"   # collected from the cluster
    again = sonic_cli(["run", "mymodule:app", "--input", "notes.txt"], where, env)
    assert again.returncode == 0, again.stderr
    assert "outputs:\n  total/0/total: 102" in again.stdout                  # small result shown without -o
    vms = sorted((where / ".sonic").glob("cluster-*/vms/vm*"))
    assert len(vms) == 2
    for vm in vms:
        assert len(list((vm / "apps").iterdir())) == 2        # one directory per version


def test_missing_package_on_the_vms_is_one_line(user_dir: tuple[Path, dict[str, str]]) -> None:
    where, env = user_dir
    # Imported only where the code runs on an agent, so the local load succeeds.
    (where / "needy.py").write_text(textwrap.dedent('''
        import os
        import sonic
        if os.environ.get("SONIC_APPS_DIR"):
            import no_such_package_sonic_test  # noqa: F401
        app = sonic.App("needy")

        @app.stage()
        def only(ctx):
            ctx.output("x").write_text("x")
    '''))
    (where / "in.txt").write_text("x")
    run = sonic_cli(["run", "needy:app", "--input", "in.txt"], where, env)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert "imports 'no_such_package_sonic_test', which is not installed" in errors[0]
    assert "app.requirements" in errors[0]


def test_unsatisfiable_requirement_is_one_line(user_dir: tuple[Path, dict[str, str]]) -> None:
    where, env = user_dir
    (where / "reqs.py").write_text(textwrap.dedent('''
        import sonic
        app = sonic.App("reqs", requirements=["no-such-package-sonic-test==1.0"])

        @app.stage()
        def only(ctx):
            ctx.output("x").write_text("x")
    '''))
    (where / "in.txt").write_text("x")
    run = sonic_cli(["run", "reqs:app", "--input", "in.txt"], where, env)
    assert run.returncode != 0
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, run.stderr
    assert "cannot install app.requirements no-such-package-sonic-test==1.0" in errors[0]
    assert "pip install" in errors[0]


def test_readme_wordcount_example_runs_on_a_cluster_as_written(user_dir: tuple[Path, dict[str, str]]) -> None:
    where, env = user_dir
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("Your own application"):]
    code = section[section.index("```python\n") + len("```python\n"):]
    (where / "mymodule.py").write_text(code[: code.index("```")])
    (where / "notes.txt").write_text("one two three\n\nfour five\n\nsix\n")
    run = sonic_cli(["run", "mymodule:app", "--input", "notes.txt"], where, env)
    assert run.returncode == 0, run.stderr
    assert "outputs:\n  total/0/total: 6" in run.stdout
