"""The application model (sonic.app): building, querying, validating and loading App DAGs."""

from __future__ import annotations

import functools
import sys
import uuid
from pathlib import Path

import networkx as nx
import pytest

import sonic
from sonic.app import APP_INPUT, BUILTIN_WORKLOADS, App, Context, Edge, Pattern, Stage, load_app
from sonic.errors import AppDefinitionError, SonicError, UserInputError


def noop(ctx):
    pass


def chain(*names: str, patterns: list[str] | None = None) -> App:
    """A linear app ``names[0] -> names[1] -> ...`` (scatter edges unless given)."""
    app = App("chain")
    app.add_stage(noop, name=names[0])
    for i, name in enumerate(names[1:]):
        pattern = patterns[i] if patterns else "scatter"
        app.add_stage(noop, name=name, after=names[i], pattern=pattern)
    return app


def assert_names(exc: pytest.ExceptionInfo[BaseException], *stages: str) -> str:
    """The error is one line and names every given stage (quoted)."""
    message = str(exc.value)
    assert "\n" not in message
    for stage in stages:
        assert repr(stage) in message or stage in message, f"{stage!r} not named in: {message}"
    return message


# --------------------------------------------------------------------------- the model
class TestModel:
    def test_decorator_registers_and_returns_function(self):
        app = App("demo")

        @app.stage()
        def first(ctx):
            pass

        assert callable(first) and first.__name__ == "first"
        assert isinstance(app.stages["first"], Stage)
        assert app.stages["first"].fn is first
        assert app.stages["first"].instances == 1
        assert app.stages["first"].qualname.endswith("first")

    def test_queries_on_a_diamond(self):
        app = App("diamond")
        app.add_stage(noop, name="src", instances=2)
        app.add_stage(noop, name="left", after="src", pattern="one-to-one")
        app.add_stage(noop, name="right", after="src", pattern="broadcast", instances=4)
        app.add_stage(noop, name="sink", after={"left": "gather", "right": "gather"})
        assert app.validate() is app
        assert app.topological_order() == ["src", "left", "right", "sink"]
        assert app.sources() == ["src"]
        assert app.sinks() == ["sink"]
        assert [(e.src, e.dst, e.pattern) for e in app.edges()] == [
            ("src", "left", Pattern.ONE_TO_ONE),
            ("src", "right", Pattern.BROADCAST),
            ("left", "sink", Pattern.GATHER),
            ("right", "sink", Pattern.GATHER),
        ]
        assert [e.src for e in app.in_edges("sink")] == ["left", "right"]
        assert [e.dst for e in app.out_edges("src")] == ["left", "right"]
        assert isinstance(app.graph, nx.DiGraph)
        assert app.graph.edges["src", "right"]["edge"] == Edge("src", "right", Pattern.BROADCAST)
        assert app.stages["right"].instances == 4
        assert "diamond" in repr(app)

    def test_after_list_applies_one_pattern_to_all(self):
        app = App("join")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="scatter")
        app.add_stage(noop, name="c", after=["a", "b"], pattern="gather")
        assert {(e.src, e.pattern) for e in app.in_edges("c")} == {("a", Pattern.GATHER), ("b", Pattern.GATHER)}

    def test_default_pattern_is_one_to_one(self):
        app = chain("a", "b", patterns=[Pattern.ONE_TO_ONE])
        app2 = App("x")
        app2.add_stage(noop, name="a")
        app2.add_stage(noop, name="b", after="a")
        assert app2.edges()[0].pattern is Pattern.ONE_TO_ONE
        assert app.edges()[0].pattern is Pattern.ONE_TO_ONE

    def test_topological_order_is_lexicographic_among_ties(self):
        app = App("ties")
        app.add_stage(noop, name="root")
        for name in ("zeta", "alpha", "mid"):
            app.add_stage(noop, name=name, after="root", pattern="broadcast")
        assert app.topological_order() == ["root", "alpha", "mid", "zeta"]

    def test_validate_after_adding_stage_revalidates(self):
        app = chain("a", "b")
        app.validate()
        app.add_stage(noop, name="c", after="nope")
        with pytest.raises(AppDefinitionError):
            app.validate()

    def test_multiple_connected_sources_are_allowed(self):
        app = App("two_sources")
        app.add_stage(noop, name="left")
        app.add_stage(noop, name="right")
        app.add_stage(noop, name="join", after={"left": "scatter", "right": "broadcast"})
        assert app.sources() == ["left", "right"]

    def test_pattern_parse(self):
        assert Pattern.parse("scatter", stage="s") is Pattern.SCATTER
        assert Pattern.parse(Pattern.GATHER, stage="s") is Pattern.GATHER
        assert {p.value for p in Pattern} == {"scatter", "broadcast", "gather", "one-to-one"}

    def test_package_exports(self):
        assert sonic.App is App and sonic.load_app is load_app
        assert set(BUILTIN_WORKLOADS) == {"video", "lightgbm", "sort"}


class TestContext:
    def make(self, tmp_path: Path) -> Context:
        a, b = tmp_path / "a", tmp_path / "b"
        return Context(app="x", stage="s", instance=0, num_instances=1, inputs=[a, b],
                       output_dir=tmp_path / "out", scratch_dir=tmp_path / "scratch",
                       inputs_by_stage={APP_INPUT: [a], "p": [b]})

    def test_output_paths_are_recorded(self, tmp_path):
        ctx = self.make(tmp_path)
        assert ctx.output("chunk-07") == tmp_path / "out" / "chunk-07"
        assert ctx.output("part_1.bin") == tmp_path / "out" / "part_1.bin"
        assert ctx.declared_outputs == {"chunk-07": tmp_path / "out" / "chunk-07",
                                        "part_1.bin": tmp_path / "out" / "part_1.bin"}

    @pytest.mark.parametrize("name", ["", ".", "..", "a/b", "../escape", ".hidden", "sp ace", "x" * 201, "a\\b"])
    def test_bad_output_names_are_refused(self, tmp_path, name):
        ctx = self.make(tmp_path)
        with pytest.raises(ValueError, match="stage 's'"):
            ctx.output(name)
        assert ctx.declared_outputs == {}

    def test_inputs_from(self, tmp_path):
        ctx = self.make(tmp_path)
        assert ctx.inputs_from(APP_INPUT) == [tmp_path / "a"]
        assert ctx.inputs_from("p") == [tmp_path / "b"]
        assert ctx.inputs_from("other") == []


# --------------------------------------------------------------------------- validation errors
class TestValidationErrors:
    def test_self_loop(self):
        app = App("loop")
        app.add_stage(noop, name="start")
        app.add_stage(noop, name="selfish", after="selfish")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert "cycle" in assert_names(exc, "selfish")

    def test_two_cycle(self):
        app = App("cyc2")
        app.add_stage(noop, name="ping", after="pong")
        app.add_stage(noop, name="pong", after="ping")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert "cycle" in assert_names(exc, "ping", "pong")

    def test_two_cycle_below_a_source(self):
        app = App("cyc2src")
        app.add_stage(noop, name="src")
        app.add_stage(noop, name="a", after={"src": "scatter", "b": "broadcast"})
        app.add_stage(noop, name="b", after="a")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        message = assert_names(exc, "a", "b")
        assert "cycle" in message and "src" not in message.split("(")[1]

    def test_three_cycle(self):
        app = App("cyc3")
        app.add_stage(noop, name="src")
        app.add_stage(noop, name="one", after={"src": "scatter", "three": "broadcast"})
        app.add_stage(noop, name="two", after="one", pattern="one-to-one")
        app.add_stage(noop, name="three", after="two", pattern="one-to-one")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        message = assert_names(exc, "one", "two", "three")
        assert "cycle" in message and "DAG" in message

    def test_unknown_after(self):
        app = App("ua")
        app.add_stage(noop, name="start")
        app.add_stage(noop, name="orphan", after="missing_stage", pattern="scatter")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        message = assert_names(exc, "orphan", "missing_stage")
        assert "start" in message  # lists the known stages

    def test_unknown_after_in_list(self):
        app = App("ua2")
        app.add_stage(noop, name="start")
        app.add_stage(noop, name="join", after=["start", "ghost"], pattern="broadcast")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert_names(exc, "join", "ghost")

    def test_unreachable_single_stage(self):
        app = chain("src", "work")
        app.add_stage(noop, name="lonely")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert "unreachable" in assert_names(exc, "lonely")

    def test_disconnected_component(self):
        app = chain("src", "mid", "end")
        app.add_stage(noop, name="island")
        app.add_stage(noop, name="island_tail", after="island", pattern="scatter")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert "unreachable" in assert_names(exc, "island")

    @pytest.mark.parametrize("after", ["start", ["start"], {"start": "fanout"}])
    def test_unknown_pattern(self, after):
        app = App("bp")
        app.add_stage(noop, name="start")
        with pytest.raises(AppDefinitionError) as exc:
            app.add_stage(noop, name="fan", after=after, pattern="fanout")
        message = assert_names(exc, "fan", "fanout")
        assert "scatter" in message and "one-to-one" in message  # lists the valid ones
        assert "fan" not in app.stages  # nothing half-registered

    def test_duplicate_name(self):
        app = App("dup")
        app.add_stage(noop, name="twice")
        with pytest.raises(AppDefinitionError) as exc:
            app.add_stage(noop, name="twice", after="twice")
        assert "twice" in assert_names(exc, "twice").split("defined")[1]

    def test_duplicate_name_by_decorator(self):
        app = App("dup2")

        @app.stage()
        def same(ctx):
            pass

        with pytest.raises(AppDefinitionError) as exc:
            @app.stage(name="same", after="same")
            def other(ctx):
                pass
        assert_names(exc, "same")

    def test_no_stages(self):
        with pytest.raises(AppDefinitionError, match="no stages"):
            App("empty").validate()

    def test_several_driving_edges(self):
        app = App("mixed")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="scatter")
        app.add_stage(noop, name="join", after={"a": "scatter", "b": "one-to-one"})
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        message = assert_names(exc, "join", "a", "b")
        assert "instance count" in message

    def test_two_scatter_edges(self):
        app = App("mixed2")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="broadcast")
        app.add_stage(noop, name="join", after=["a", "b"], pattern="scatter")
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert_names(exc, "join")

    def test_gather_with_several_instances(self):
        app = App("g")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="collect", after="a", pattern="gather", instances=3)
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        message = assert_names(exc, "collect")
        assert "instances=3" in message and "broadcast" in message

    def test_gather_mixed_with_scatter(self):
        app = App("g2")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="scatter")
        app.add_stage(noop, name="c", after={"a": "gather", "b": "scatter"})
        with pytest.raises(AppDefinitionError) as exc:
            app.validate()
        assert "gather" in assert_names(exc, "c")

    def test_broadcast_with_gather_and_one_instance_is_fine(self):
        app = App("g3")
        app.add_stage(noop, name="a")
        app.add_stage(noop, name="b", after="a", pattern="scatter")
        app.add_stage(noop, name="c", after={"a": "broadcast", "b": "gather"})
        app.validate()

    # ------------------------------------------------------------------ signatures
    def test_signature_no_argument(self):
        app = App("sig")
        with pytest.raises(AppDefinitionError) as exc:
            @app.stage()
            def nothing():
                pass
        message = assert_names(exc, "nothing")
        assert "def nothing(ctx)" in message

    def test_signature_two_required(self):
        app = App("sig")
        with pytest.raises(AppDefinitionError) as exc:
            @app.stage()
            def twoargs(ctx, extra):
                pass
        assert_names(exc, "twoargs")

    def test_signature_required_keyword_only(self):
        app = App("sig")
        with pytest.raises(AppDefinitionError) as exc:
            @app.stage()
            def kwonly(ctx, *, flag):
                pass
        assert_names(exc, "kwonly")

    def test_signature_only_kwargs(self):
        app = App("sig")
        with pytest.raises(AppDefinitionError) as exc:
            app.add_stage(lambda **kw: None, name="kwargs_only")
        assert_names(exc, "kwargs_only")

    def test_signature_named_stage_reports_stage_name(self):
        app = App("sig")
        with pytest.raises(AppDefinitionError) as exc:
            app.add_stage(lambda a, b: None, name="renamed")
        assert_names(exc, "renamed")

    def test_accepted_signatures(self):
        class Callable:
            def __call__(self, ctx):
                pass

        def with_default(ctx, extra=1):
            pass

        def with_optional_kw(ctx, *, flag=False):
            pass

        def varargs(*args):
            pass

        def two_with_default(a, b=2, /):
            pass

        app = App("ok")
        app.add_stage(with_default, name="s1")
        app.add_stage(with_optional_kw, name="s2", after="s1")
        app.add_stage(varargs, name="s3", after="s2")
        app.add_stage(lambda ctx: None, name="s4", after="s3")
        app.add_stage(Callable(), name="s5", after="s4")
        app.add_stage(functools.partial(lambda ctx, k: None, k=1), name="s6", after="s5")
        app.add_stage(two_with_default, name="s7", after="s6")
        assert app.validate().topological_order() == [f"s{i}" for i in range(1, 8)]

    def test_not_callable(self):
        with pytest.raises(AppDefinitionError) as exc:
            App("nc").add_stage(42, name="number")  # type: ignore[arg-type]
        assert "not callable" in assert_names(exc, "number")

    # ------------------------------------------------------------------ names and arguments
    @pytest.mark.parametrize("name", ["1starts_with_digit", "has space", "a/b", "dot.ted", "x" * 65, "-dash"])
    def test_invalid_stage_name(self, name):
        with pytest.raises(AppDefinitionError) as exc:
            App("names").add_stage(noop, name=name)
        assert "invalid" in assert_names(exc, name)

    def test_lambda_needs_a_name(self):
        with pytest.raises(AppDefinitionError, match="<lambda>"):
            App("names").add_stage(lambda ctx: None)

    @pytest.mark.parametrize("name", ["", "bad name", "a/b", "9lives", 5, None])
    def test_invalid_app_name(self, name):
        with pytest.raises(AppDefinitionError, match="app name"):
            App(name)  # type: ignore[arg-type]

    @pytest.mark.parametrize("instances", [0, -1, True, "2", 1.5])
    def test_bad_instances(self, instances):
        with pytest.raises(AppDefinitionError) as exc:
            App("inst").add_stage(noop, name="counted", instances=instances)
        assert "instances" in assert_names(exc, "counted")

    @pytest.mark.parametrize("after", [5, {3: "scatter"}])
    def test_bad_after_type(self, after):
        app = App("after")
        app.add_stage(noop, name="first")
        with pytest.raises(AppDefinitionError) as exc:
            app.add_stage(noop, name="second", after=after)
        assert_names(exc, "second")

    def test_errors_are_user_input_errors(self):
        assert issubclass(AppDefinitionError, UserInputError)
        assert issubclass(AppDefinitionError, SonicError)
        assert AppDefinitionError.exit_code == 2

    def test_reserved_stage_name_input(self):
        with pytest.raises(AppDefinitionError, match="_input"):
            App("reserved").add_stage(noop, name=APP_INPUT)


# --------------------------------------------------------------------------- load_app
class TestLoadApp:
    def test_module_attr(self, fixture_apps):
        app = load_app("good_app:APP")
        assert app.name == "good"
        assert app.topological_order() == ["split", "upper", "combine"]
        assert app.generator is not None and app.validator is not None

    def test_factory_is_called(self, fixture_apps):
        assert load_app("good_app:make_app").name == "good"

    def test_relative_to_working_directory(self, tmp_cwd, monkeypatch):
        monkeypatch.setattr(sys, "path", list(sys.path))  # load_app prepends the cwd
        module = f"cwd_app_{uuid.uuid4().hex[:8]}"
        (tmp_cwd / f"{module}.py").write_text(
            "import sonic\nAPP = sonic.App('cwd')\n@APP.stage()\ndef only(ctx):\n    pass\n"
        )
        try:
            assert load_app(f"{module}:APP").name == "cwd"
        finally:
            sys.modules.pop(module, None)

    def test_cycle(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("cyclic_app:APP")
        assert "cycle" in assert_names(exc, "ping", "pong")

    def test_unknown_after(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("unknown_after:APP")
        assert_names(exc, "orphan", "missing_stage")

    def test_bad_signature(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("badsig_app:APP")
        assert_names(exc, "twoargs")

    def test_bad_pattern(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("bad_pattern_app:APP")
        assert_names(exc, "fan", "fanout")

    def test_duplicate(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("duplicate_app:APP")
        assert_names(exc, "twice")

    def test_missing_module(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("no_such_module_xyz:APP")
        assert "cannot import module 'no_such_module_xyz'" in assert_names(exc)

    def test_missing_attribute(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("good_app:NOPE")
        assert "has no attribute 'NOPE'" in assert_names(exc)

    def test_not_an_app(self, fixture_apps):
        with pytest.raises(AppDefinitionError) as exc:
            load_app("not_an_app:APP")
        assert "not a sonic.App" in assert_names(exc) and "int" in str(exc.value)

    def test_syntax_error(self, tmp_cwd, monkeypatch):
        monkeypatch.setattr(sys, "path", list(sys.path))
        module = f"broken_{uuid.uuid4().hex[:8]}"
        (tmp_cwd / f"{module}.py").write_text("def oops(:\n")
        with pytest.raises(AppDefinitionError, match="syntax error"):
            load_app(f"{module}:APP")

    @pytest.mark.parametrize("spec", ["nosuchworkload", "", "video2"])
    def test_unknown_name(self, spec):
        with pytest.raises(AppDefinitionError) as exc:
            load_app(spec)
        message = assert_names(exc)
        assert "unknown app" in message and "module:attr" in message and "sort" in message

    def test_callable_needing_arguments(self, fixture_apps):
        with pytest.raises(AppDefinitionError):
            load_app("not_an_app:needs_args")

    def test_empty_module_name(self):
        with pytest.raises(AppDefinitionError):
            load_app(":APP")

    def test_relative_module_name(self):
        with pytest.raises(AppDefinitionError):
            load_app(".relative:APP")
