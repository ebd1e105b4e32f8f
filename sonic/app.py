"""The application model: an :class:`App` is a DAG of stages joined by patterned edges.

A stage is one Python function ``fn(ctx: Context) -> None`` that runs as N instances. Each
instance reads its input files (``ctx.inputs``) and writes named output files
(``ctx.output(name)``). How a producer's files reach consumer instances is fixed by the edge
pattern (see :class:`Pattern`); how the bytes travel (VM-Storage, Direct, Remote) is chosen
per edge by the planner and is invisible to the function.

The DAG is a :class:`networkx.DiGraph` (``app.graph``) whose nodes are stage names; each edge
carries its :class:`Edge` under the ``"edge"`` attribute.
"""

from __future__ import annotations

import enum
import fnmatch
import importlib
import inspect
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import networkx as nx

from sonic.appversion import activate_code, split_spec
from sonic.errors import AppDefinitionError

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$")
OUTPUT_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,199}$")

#: Workload names that ``load_app`` resolves without a ``module:attr``.
BUILTIN_WORKLOADS: Mapping[str, str] = {
    "video": "workloads.video:APP",
    "lightgbm": "workloads.lightgbm:APP",
    "sort": "workloads.sort:APP",
}


class Pattern(str, enum.Enum):
    """How the files of producer stage P are routed to the instances of consumer stage C.

    ``SCATTER``: every distinct output *name* written by P becomes one C instance, whose
    inputs are all P files of that name (one file for a single-instance producer; one file
    per producer instance for a shuffle, as in MapReduce sort). The fanout is decided at run
    time by how many names P writes.
    ``BROADCAST``: every C instance receives all P files (bytes moved grow with fanout).
    ``GATHER``: a single C instance receives all P files.
    ``ONE_TO_ONE``: C instance i receives the files of P instance i.
    """

    SCATTER = "scatter"
    BROADCAST = "broadcast"
    GATHER = "gather"
    ONE_TO_ONE = "one-to-one"

    @classmethod
    def parse(cls, value: str | Pattern, *, stage: str) -> Pattern:
        try:
            return cls(value)
        except ValueError:
            allowed = " | ".join(p.value for p in cls)
            raise AppDefinitionError(
                f"stage {stage!r}: unknown edge pattern {value!r}; use one of {allowed}"
            ) from None


#: Patterns that decide how many instances the consumer stage has.
DRIVING_PATTERNS = frozenset({Pattern.SCATTER, Pattern.ONE_TO_ONE})

#: Upper bound of a declared parallelism: far beyond any real fanout; more is a typo.
MAX_PARALLELISM = 100_000


@dataclass(frozen=True)
class Parallelism:
    """An elastic instance count: the planner chooses it in ``[min, max]`` (see ``App.stage``).

    Only a stage whose count a scatter edge decides can be elastic: its producer writes one
    output name per consumer instance, and learns the chosen count from
    :meth:`Context.partitions_for`.
    """

    min: int
    max: int

    @classmethod
    def parse(cls, value: object, *, stage: str) -> Parallelism:
        """``(lo, hi)`` or a :class:`Parallelism`; one clear error line for anything else."""
        if isinstance(value, Parallelism):
            lo, hi = value.min, value.max
        elif isinstance(value, (tuple, list)) and len(value) == 2:
            lo, hi = value
        else:
            raise AppDefinitionError(f"stage {stage!r}: parallelism must be (min, max) instance counts, "
                                     f"e.g. parallelism=(2, 64), got {_short(value)}")
        for what, v in (("min", lo), ("max", hi)):
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= MAX_PARALLELISM:
                raise AppDefinitionError(f"stage {stage!r}: parallelism {what} must be an integer from 1 to "
                                         f"{MAX_PARALLELISM}, got {_short(v)}")
        if lo > hi:
            raise AppDefinitionError(f"stage {stage!r}: parallelism min {lo} is above max {hi}; "
                                     f"give (min, max) with min <= max, e.g. ({hi}, {lo})")
        return cls(lo, hi)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class StageFunction(Protocol):
    def __call__(self, ctx: Context, /) -> None: ...


@dataclass(frozen=True)
class Edge:
    """A dependency ``src -> dst`` with its routing pattern.

    ``select`` is an optional glob (``fnmatch``, e.g. ``"dim"`` or ``"part-*"``) on the names of
    the producer's output files: only matching files travel over this edge. ``None`` takes all.
    """

    src: str
    dst: str
    pattern: Pattern
    select: str | None = None

    def takes(self, name: str) -> bool:
        """Does an output file called ``name`` travel over this edge?"""
        return self.select is None or fnmatch.fnmatchcase(name, self.select)


@dataclass(frozen=True)
class Stage:
    """One function of the application.

    ``instances`` fixes the instance count of a stage that no scatter / one-to-one edge
    drives (source stages and broadcast-only consumers); it is ignored otherwise.
    """

    name: str
    fn: StageFunction
    instances: int = 1
    timeout_s: float | None = None   # None: the run's default stage timeout
    #: Elastic instance count chosen by the planner (``None``: decided by the data as usual).
    parallelism: Parallelism | None = None

    @property
    def qualname(self) -> str:
        # A Protocol-typed callable: any callable object is accepted, so __qualname__ may be absent.
        return f"{self.fn.__module__}.{getattr(self.fn, '__qualname__', type(self.fn).__qualname__)}"


@dataclass
class Context:
    """What a stage instance sees: its input files and a place to write outputs.

    ``inputs`` are absolute paths, ordered by (producer stage, producer instance, name). With
    VM-Storage they point at the producer's files in place, so functions must treat inputs as
    read-only. ``key`` is the scatter name that created this instance (``None`` otherwise).
    """

    app: str
    stage: str
    instance: int
    num_instances: int
    inputs: list[Path]
    output_dir: Path
    scratch_dir: Path
    key: str | None = None
    inputs_by_stage: dict[str, list[Path]] = field(default_factory=dict)
    #: Elastic consumer stage -> the instance count the plan chose for it (see partitions_for).
    partitions: dict[str, int] = field(default_factory=dict)
    _outputs: dict[str, Path] = field(default_factory=dict, repr=False)

    def output(self, name: str) -> Path:
        """Return the path where output file ``name`` must be written.

        Names are plain file names (letters, digits, ``._-``; no directories), unique per
        instance. With a scatter edge downstream, each distinct name becomes one consumer.
        """
        if not OUTPUT_NAME_RE.match(name) or name in {".", ".."}:
            raise ValueError(
                f"stage {self.stage!r}: output name {name!r} is not a plain file name; "
                "use letters, digits, '.', '_' or '-' (max 200 chars, no '/')"
            )
        path = self.output_dir / name
        self._outputs[name] = path
        return path

    def inputs_from(self, stage: str) -> list[Path]:
        """Inputs that came from producer ``stage`` (``[]`` for the app's own input: ``"_input"``)."""
        return list(self.inputs_by_stage.get(stage, []))

    def partitions_for(self, stage: str) -> int | None:
        """How many instances the plan chose for ``stage``, an elastic scatter consumer of this
        stage: write that many distinct output names. ``None`` when no count was chosen (no
        plan, or a plan without models): the function then decides its fanout itself."""
        return self.partitions.get(stage)

    @property
    def declared_outputs(self) -> dict[str, Path]:
        return dict(self._outputs)


#: Producer name under which a source stage's inputs (the application input) are listed.
APP_INPUT = "_input"

Generator = Callable[[Path, int, int], None]
Validator = Callable[[Path, list[Path]], "Validation"]
FeatureExtractor = Callable[[Path], dict[str, float]]


@dataclass(frozen=True)
class Validation:
    """Result of a workload validator: ``ok`` and a one-line reason."""

    ok: bool
    detail: str


class App:
    """An application DAG.

    >>> app = App("demo")
    >>> @app.stage()
    ... def first(ctx): ctx.output("a").write_bytes(b"x")
    >>> @app.stage(after="first", pattern="scatter")
    ... def second(ctx): pass
    >>> app.validate(); app.topological_order()
    ['first', 'second']
    """

    def __init__(self, name: str, *, requirements: list[str] | None = None, files: list[str] | None = None) -> None:
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise AppDefinitionError(
                f"app name {name!r} is invalid: use letters, digits, '_' or '-' (max 64 chars)"
            )
        self.name = name
        self.graph: nx.DiGraph = nx.DiGraph()
        self._stages: dict[str, Stage] = {}
        self._pending_edges: list[tuple[str, str, Pattern, str | None]] = []
        # What the app needs on every VM besides its own module or package (see
        # docs/own-app.md): pip requirement strings, and extra files or directories given
        # relative to the directory that holds the app's module or package.
        self.requirements: list[str] = list(requirements or [])
        self.files: list[str] = list(files or [])
        self.generator: Generator | None = None
        self.validator: Validator | None = None
        self.feature_extractor: FeatureExtractor | None = None
        self._validated = False

    # ------------------------------------------------------------------ definition
    def stage(
        self,
        name: str | None = None,
        *,
        after: str | list[str] | Mapping[str, EdgeSpec] | None = None,
        pattern: str | Pattern = Pattern.ONE_TO_ONE,
        instances: int = 1,
        select: str | None = None,
        timeout_s: float | None = None,
        parallelism: tuple[int, int] | Parallelism | None = None,
    ) -> Callable[[StageFunction], StageFunction]:
        """Register a stage function.

        ``after`` names the producer stage(s). Give a single stage or a list (all with
        ``pattern``), or a mapping ``{producer: pattern}`` for joins with mixed patterns, where
        a value may also be ``(pattern, glob)`` to take only the producer's outputs whose names
        match ``glob``. ``select`` is that glob for every producer named by a string or list.
        ``parallelism=(min, max)`` makes the instance count of a scatter consumer a plan
        decision: the planner picks it in that range and the producer reads it with
        ``ctx.partitions_for(stage)``.
        """

        def register(fn: StageFunction) -> StageFunction:
            self.add_stage(fn, name=name, after=after, pattern=pattern, instances=instances, select=select,
                           timeout_s=timeout_s, parallelism=parallelism)
            return fn

        return register

    def add_stage(
        self,
        fn: StageFunction,
        *,
        name: str | None = None,
        after: str | list[str] | Mapping[str, EdgeSpec] | None = None,
        pattern: str | Pattern = Pattern.ONE_TO_ONE,
        instances: int = 1,
        select: str | None = None,
        timeout_s: float | None = None,
        parallelism: tuple[int, int] | Parallelism | None = None,
    ) -> Stage:
        stage_name = name or getattr(fn, "__name__", "")
        if not isinstance(stage_name, str) or not _NAME_RE.match(stage_name):
            raise AppDefinitionError(
                f"stage name {stage_name!r} is invalid: use letters, digits, '_' or '-' (max 64 chars)"
            )
        if stage_name == APP_INPUT:
            raise AppDefinitionError(f"stage name {APP_INPUT!r} is reserved for the application input; rename the stage")
        if stage_name in self._stages:
            raise AppDefinitionError(f"stage {stage_name!r} is defined twice in app {self.name!r}; rename one")
        if not callable(fn):
            raise AppDefinitionError(f"stage {stage_name!r}: {fn!r} is not callable")
        _check_signature(stage_name, fn)
        if not isinstance(instances, int) or isinstance(instances, bool) or instances < 1:
            raise AppDefinitionError(f"stage {stage_name!r}: instances must be a positive integer, got {instances!r}")
        Pattern.parse(pattern, stage=stage_name)  # a typo is an error even on a source stage
        _check_glob(stage_name, "select", select)
        producers: dict[str, tuple[Pattern, str | None]]
        if after is None:
            if select is not None:
                raise AppDefinitionError(f"stage {stage_name!r}: select= needs after=; a source stage gets the app input")
            producers = {}
        elif isinstance(after, str):
            producers = {after: (Pattern.parse(pattern, stage=stage_name), select)}
        elif isinstance(after, Mapping):
            if select is not None:
                raise AppDefinitionError(
                    f"stage {stage_name!r}: with an after= mapping give the selection per producer, "
                    "e.g. after={'load': ('broadcast', 'dim')}, not select="
                )
            producers = {src: _edge_spec(stage_name, src, p) for src, p in after.items()}
        elif isinstance(after, (list, tuple)):
            producers = {src: (Pattern.parse(pattern, stage=stage_name), select) for src in after}
        else:
            raise AppDefinitionError(
                f"stage {stage_name!r}: after= must be a stage name, a list of names or a mapping, got {after!r}"
            )
        if timeout_s is not None and (isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float))
                                      or not 0 < timeout_s <= 7 * 86400):
            raise AppDefinitionError(f"stage {stage_name!r}: timeout_s must be a number of seconds in (0, 604800], "
                                     f"got {timeout_s!r}")
        elastic = None if parallelism is None else Parallelism.parse(parallelism, stage=stage_name)
        stage = Stage(stage_name, fn, instances, float(timeout_s) if timeout_s is not None else None, elastic)
        self._stages[stage_name] = stage
        self.graph.add_node(stage_name, stage=stage)
        for src, (pat, glob) in producers.items():
            if not isinstance(src, str):
                raise AppDefinitionError(f"stage {stage_name!r}: after= entries must be stage names, got {src!r}")
            self._pending_edges.append((src, stage_name, pat, glob))
        self._validated = False
        return stage

    def generate_input(self, fn: Generator) -> Generator:
        """Decorator registering ``fn(path, size_bytes, seed)`` that writes an input of ~size bytes."""
        self.generator = fn
        return fn

    def validate_output(self, fn: Validator) -> Validator:
        """Decorator registering ``fn(input_path, output_files) -> Validation``."""
        self.validator = fn
        return fn

    def input_features(self, fn: FeatureExtractor) -> FeatureExtractor:
        """Decorator registering ``fn(input_path) -> {feature: value}`` used by the models."""
        self.feature_extractor = fn
        return fn

    def check_output(self, input_path: Path, outputs: list[Path]) -> Validation:
        """Run the workload validator on a run's final outputs (ok with a note if there is none)."""
        if self.validator is None:
            return Validation(True, "no validator defined; outputs not checked")
        return self.validator(input_path, outputs)

    def features_of(self, input_path: Path) -> dict[str, float]:
        """The app's declared input features of ``input_path`` (empty without a feature hook)."""
        return dict(self.feature_extractor(input_path)) if self.feature_extractor else {}

    # ------------------------------------------------------------------ validation
    def validate(self) -> App:
        """Check the DAG; raise :class:`AppDefinitionError` naming the offending stage."""
        if self._validated:
            return self
        if not self._stages:
            raise AppDefinitionError(f"app {self.name!r} has no stages; add one with @app.stage()")
        graph = nx.DiGraph()
        for name, stage in self._stages.items():
            graph.add_node(name, stage=stage)
        for src, dst, pat, glob in self._pending_edges:
            if src not in self._stages:
                known = ", ".join(sorted(self._stages))
                raise AppDefinitionError(
                    f"stage {dst!r}: after={src!r} names no stage of app {self.name!r} (stages: {known})"
                )
            if src == dst:
                raise AppDefinitionError(f"stage {dst!r} depends on itself (cycle); remove after={src!r}")
            graph.add_edge(src, dst, edge=Edge(src, dst, pat, glob))
        try:
            cycle = nx.find_cycle(graph)
        except nx.NetworkXNoCycle:
            cycle = None
        if cycle:
            path = " -> ".join([u for u, _ in cycle] + [cycle[0][0]])
            raise AppDefinitionError(f"stage {cycle[0][0]!r} is part of a cycle ({path}); the app must be a DAG")
        sources = [n for n in graph if graph.in_degree(n) == 0]
        if len(sources) > 1 and not nx.is_weakly_connected(graph):
            components = sorted((sorted(c) for c in nx.weakly_connected_components(graph)), key=len)
            stray = components[0][0]
            raise AppDefinitionError(
                f"stage {stray!r} is unreachable from the rest of app {self.name!r}; "
                "connect it with after= or remove it"
            )
        for name in graph:
            in_edges: list[Edge] = [graph.edges[u, name]["edge"] for u in graph.predecessors(name)]
            driving = [e for e in in_edges if e.pattern in DRIVING_PATTERNS]
            if len(driving) > 1:
                srcs = ", ".join(e.src for e in driving)
                raise AppDefinitionError(
                    f"stage {name!r} has several edges deciding its instance count ({srcs}); "
                    "keep one scatter/one-to-one edge and make the others broadcast or gather"
                )
            stage = self._stages[name]
            if not driving and any(e.pattern is Pattern.GATHER for e in in_edges) and stage.instances != 1:
                raise AppDefinitionError(
                    f"stage {name!r} has a gather edge but instances={stage.instances}; "
                    "a gather consumer has exactly one instance, use broadcast for several"
                )
            if stage.parallelism is not None and not (driving and driving[0].pattern is Pattern.SCATTER):
                raise AppDefinitionError(
                    f"stage {name!r} declares parallelism but no scatter edge decides its instance count; "
                    "only a scatter consumer can be elastic: use after=PRODUCER, pattern='scatter'"
                )
            if driving and any(e.pattern is Pattern.GATHER for e in in_edges):
                raise AppDefinitionError(
                    f"stage {name!r} mixes a gather edge with a {driving[0].pattern.value} edge; "
                    "a gather consumer has exactly one instance, use broadcast instead"
                )
        self.graph = graph
        self._validated = True
        return self

    # ------------------------------------------------------------------ queries
    @property
    def stages(self) -> dict[str, Stage]:
        return dict(self._stages)

    def topological_order(self) -> list[str]:
        self.validate()
        # Lexicographic tie-break keeps every consumer (CLI tables, plans, tests) stable.
        return list(nx.lexicographical_topological_sort(self.graph))

    def edges(self) -> list[Edge]:
        self.validate()
        order = {n: i for i, n in enumerate(self.topological_order())}
        found = [d["edge"] for _, _, d in self.graph.edges(data=True)]
        return sorted(found, key=lambda e: (order[e.src], order[e.dst]))

    def in_edges(self, stage: str) -> list[Edge]:
        self.validate()
        return sorted((self.graph.edges[u, stage]["edge"] for u in self.graph.predecessors(stage)), key=lambda e: e.src)

    def out_edges(self, stage: str) -> list[Edge]:
        self.validate()
        return sorted((self.graph.edges[stage, v]["edge"] for v in self.graph.successors(stage)), key=lambda e: e.dst)

    def elastic_stages(self) -> dict[str, Parallelism]:
        """Stages whose instance count the planner chooses, with their bounds (topological order)."""
        return {n: p for n in self.topological_order() if (p := self._stages[n].parallelism) is not None}

    def sources(self) -> list[str]:
        return [n for n in self.topological_order() if self.graph.in_degree(n) == 0]

    def sinks(self) -> list[str]:
        return [n for n in self.topological_order() if self.graph.out_degree(n) == 0]

    def __repr__(self) -> str:
        return f"App({self.name!r}, stages={list(self._stages)})"


#: One value of an ``after=`` mapping: a pattern, or ``(pattern, glob)`` selecting outputs by name.
EdgeSpec = str | Pattern | tuple[str | Pattern, str]


def _check_glob(stage: str, what: str, glob: object) -> None:
    if glob is None:
        return
    if not isinstance(glob, str) or not glob or "/" in glob:
        raise AppDefinitionError(
            f"stage {stage!r}: {what} must be a glob on output file names such as 'part-*' or 'dim', got {glob!r}"
        )


def _edge_spec(stage: str, src: object, value: object) -> tuple[Pattern, str | None]:
    if isinstance(value, tuple):
        if len(value) != 2:
            raise AppDefinitionError(
                f"stage {stage!r}: after[{src!r}] must be a pattern or (pattern, glob), got {value!r}"
            )
        pattern, glob = value
        _check_glob(stage, f"the glob of after[{src!r}]", glob)
        return Pattern.parse(pattern, stage=stage), glob
    if not isinstance(value, (str, Pattern)):
        raise AppDefinitionError(f"stage {stage!r}: after[{src!r}] must be a pattern or (pattern, glob), got {value!r}")
    return Pattern.parse(value, stage=stage), None


def _check_signature(stage: str, fn: Callable[..., Any]) -> None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # builtins without signatures: trust the caller
    params = list(sig.parameters.values())
    positional = [
        p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    required_other = [
        p for p in params
        if p.default is p.empty and p.kind is p.KEYWORD_ONLY
    ]
    has_varargs = any(p.kind is p.VAR_POSITIONAL for p in params)
    required_positional = [p for p in positional if p.default is p.empty]
    if required_other or len(required_positional) > 1 or (not positional and not has_varargs):
        raise AppDefinitionError(
            f"stage {stage!r}: function {getattr(fn, '__name__', fn)!s}{sig} must take exactly one "
            "argument, the context: def {stage}(ctx): ...".replace("{stage}", stage)
        )


# Import names whose pip distribution is called differently (for the "pip install X" hint).
_PIP_NAMES: Mapping[str, str] = {
    "cv2": "opencv-python-headless", "yaml": "PyYAML", "sklearn": "scikit-learn", "PIL": "Pillow",
    "skimage": "scikit-image", "bs4": "beautifulsoup4",
}


def load_app(spec: str) -> App:
    """Load an application by workload name (``video``) or ``module:attr``.

    The app is validated before it is returned. A spec ``module:attr@DIGEST`` (what agents
    hand their workers) loads that version of the app's shipped code, see
    :mod:`sonic.runtime.appcode`.
    """
    if "@" in spec:
        spec, digest = split_spec(spec)
        if digest is not None:
            activate_code(digest)
    target = BUILTIN_WORKLOADS.get(spec, spec)
    if ":" not in target:
        names = ", ".join(BUILTIN_WORKLOADS)
        raise AppDefinitionError(f"unknown app {spec!r}: use a workload name ({names}) or module:attr")
    module_name, _, attr = target.partition(":")
    if not module_name or module_name.startswith(".") or not attr:
        raise AppDefinitionError(f"app {spec!r} must be module:attr with an absolute module name, e.g. mypkg.jobs:app")
    # Like uvicorn/gunicorn: a user's module:attr is found relative to the working directory.
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing and not module_name.startswith(missing) and not missing.startswith(module_name.split(".")[0]):
            # The app was found but imports a package this Python lacks: say which, and the fix.
            raise AppDefinitionError(
                f"app {spec!r} imports {missing!r}, which is not installed for {sys.executable}; "
                f"install it (pip install {_PIP_NAMES.get(missing.split('.')[0], missing.split('.')[0])}) "
                "or, on a cluster, add it to app.requirements"
            ) from exc
        raise AppDefinitionError(
            f"cannot import module {module_name!r} for app {spec!r}: {exc} (looked in {cwd} and on sys.path; "
            "run sonic from the directory that holds the module)"
        ) from exc
    except ImportError as exc:
        raise AppDefinitionError(f"cannot import module {module_name!r} for app {spec!r}: {exc}") from exc
    except SyntaxError as exc:
        raise AppDefinitionError(f"module {module_name!r} for app {spec!r} has a syntax error: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing: their bug, one line
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise AppDefinitionError(
            f"importing module {module_name!r} for app {spec!r} raised {type(exc).__name__}: {first}; fix the module"
        ) from None
    try:
        app = getattr(module, attr)
    except AttributeError:
        raise AppDefinitionError(f"module {module_name!r} has no attribute {attr!r}; expected an App") from None
    if callable(app) and not isinstance(app, App):
        try:
            app = app()
        except TypeError as exc:
            raise AppDefinitionError(f"{target} is a callable that could not build an App without arguments: {exc}") from None
    if not isinstance(app, App):
        raise AppDefinitionError(f"{target} is a {type(app).__name__}, not a sonic.App")
    return app.validate()
