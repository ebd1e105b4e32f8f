"""Per-edge selection of a producer's outputs (``after={"load": ("broadcast", "dim")}``)."""

from __future__ import annotations

from pathlib import Path

import pytest

import sonic
from sonic.app import Pattern
from sonic.errors import AppDefinitionError
from sonic.reference import ReferenceExecutor
from sonic.routing import ObjectRef, SelectionError, route_instances


def star_join(dim_glob: str = "dim") -> sonic.App:
    """load writes one small dimension file and three fact partitions; the join takes the
    dimension by broadcast and one partition per instance by scatter."""
    app = sonic.App("starjoin")

    @app.stage()
    def load(ctx: sonic.Context) -> None:
        rows = ctx.inputs[0].read_text().split()
        ctx.output("dim").write_text("x=10\ny=20\n")
        for i in range(3):
            ctx.output(f"part-{i}").write_text("\n".join(rows[i::3]))

    @app.stage(after={"load": ("scatter", "part-*")})
    def scan(ctx: sonic.Context) -> None:
        ctx.output("keys").write_text(ctx.inputs[0].read_text())

    @app.stage(after={"scan": "one-to-one", "load": ("broadcast", dim_glob)})
    def join(ctx: sonic.Context) -> None:
        dims = ctx.inputs_from("load")
        assert [p.name for p in dims] == ["dim"], dims   # only the selected file arrives
        table = dict(line.split("=") for line in dims[0].read_text().split())
        keys = ctx.inputs_from("scan")[0].read_text().split()
        ctx.output("sum").write_text(str(sum(int(table[k]) for k in keys)))

    @app.stage(after="join", pattern="gather")
    def total(ctx: sonic.Context) -> None:
        ctx.output("total").write_text(str(sum(int(p.read_text()) for p in ctx.inputs)))

    return app


def test_edges_carry_their_selection() -> None:
    app = star_join().validate()
    by_pair = {(e.src, e.dst): e for e in app.edges()}
    assert by_pair[("load", "scan")].select == "part-*"
    assert by_pair[("load", "join")].select == "dim"
    assert by_pair[("load", "join")].pattern is Pattern.BROADCAST
    assert by_pair[("scan", "join")].select is None


def test_reference_run_routes_only_selected_files(tmp_path: Path) -> None:
    inp = tmp_path / "in.txt"
    inp.write_text(" ".join(["x", "y", "x", "y", "x", "x"]))
    executor = ReferenceExecutor(star_join(), workdir=tmp_path / "work")
    result = executor.run(inp)
    stages = {s.name: s.instances for s in result.stages}
    assert stages["scan"] == 3 and stages["join"] == 3     # fanout from part-* only, not dim
    totals = [p for p in (tmp_path / "work").rglob("total") if p.is_file()]
    assert totals and totals[0].read_text() == str(4 * 10 + 2 * 20)
    edge = next(e for e in result.edges if e.src == "load" and e.dst == "join")
    assert edge.bytes == 3 * len("x=10\ny=20\n")            # one dim copy per join instance


def test_selection_matching_nothing_names_the_edge() -> None:
    app = star_join(dim_glob="dims").validate()
    produced = {
        "load": [[ObjectRef("load", 0, n, 5) for n in ("dim", "part-0", "part-1")]],
        "scan": [[ObjectRef("scan", i, "keys", 3)] for i in range(2)],
    }
    with pytest.raises(SelectionError, match=r"edge load -> join: selection 'dims' matches none of the 3 outputs"):
        route_instances(app, "join", produced, [])


@pytest.mark.parametrize("after, select, message", [
    ({"a": ("broadcast", "x/y")}, None, "glob on output file names"),
    ({"a": ("broadcast",)}, None, r"must be a pattern or \(pattern, glob\)"),
    ({"a": "broadcast"}, "x*", "give the selection per producer"),
    (None, "x*", "select= needs after="),
])
def test_bad_selections_fail_at_definition(after: object, select: str | None, message: str) -> None:
    app = sonic.App("bad")

    @app.stage()
    def a(ctx: sonic.Context) -> None: ...

    with pytest.raises(AppDefinitionError, match=message):
        app.add_stage(lambda ctx: None, name="b", after=after, select=select)  # type: ignore[arg-type]


def test_select_keyword_for_a_single_producer() -> None:
    app = sonic.App("kw")

    @app.stage()
    def a(ctx: sonic.Context) -> None: ...

    @app.stage(after="a", pattern="scatter", select="part-*")
    def b(ctx: sonic.Context) -> None: ...

    assert app.validate().edges()[0].select == "part-*"
