"""Pure routing: which files each consumer instance receives, given producer outputs.

Shared by the reference executor and the distributed coordinator so both route the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from sonic.app import APP_INPUT, App, Edge, Pattern
from sonic.errors import SelectionError


@dataclass(frozen=True)
class ObjectRef:
    """One file produced by a stage instance (or the app input, stage ``_input``)."""

    stage: str
    instance: int
    name: str
    size: int
    checksum: str = ""
    #: A partition of a packed output: the object that holds it (``""``: its own object) and
    #: where it starts there; ``size`` and ``checksum`` are the partition's.
    pack: str = ""
    offset: int = 0

    @property
    def key(self) -> str:
        """The logical key (routing, lineage, the consumer's copy): one per partition."""
        return f"{self.stage}/{self.instance}/{self.name}"

    @property
    def stored_key(self) -> str:
        """The key of the object that holds the bytes (the pack for a partition)."""
        return f"{self.stage}/{self.instance}/{self.pack or self.name}"


@dataclass(frozen=True)
class InstanceSpec:
    """One instance to run: its stage, index, scatter key and ordered inputs."""

    stage: str
    index: int
    num_instances: int
    key: str | None
    inputs: tuple[ObjectRef, ...]
    #: Elastic scatter consumer -> instance count the plan chose (``Context.partitions_for``).
    partitions: Mapping[str, int] = field(default_factory=dict)

    @property
    def input_bytes(self) -> int:
        return sum(ref.size for ref in self.inputs)

    @property
    def id(self) -> str:
        return f"{self.stage}[{self.index}]"


def route_instances(
    app: App,
    stage: str,
    produced: Mapping[str, Sequence[Sequence[ObjectRef]]],
    app_inputs: Sequence[ObjectRef],
    chosen: Mapping[str, int] | None = None,
) -> list[InstanceSpec]:
    """Return the instances of ``stage``.

    ``produced[p][i]`` lists the files written by instance ``i`` of producer stage ``p``;
    every producer of ``stage`` must be present. Source stages receive ``app_inputs``.
    ``chosen`` maps elastic stages to the instance count a plan chose; the instances of
    ``stage`` are told those of its scatter consumers (``InstanceSpec.partitions``).
    """
    in_edges = app.in_edges(stage)
    parts = partitions_of(app, stage, chosen or {})
    if not in_edges:
        count = app.stages[stage].instances
        return [InstanceSpec(stage, i, count, None, tuple(app_inputs), parts) for i in range(count)]

    driving = next((e for e in in_edges if e.pattern in (Pattern.SCATTER, Pattern.ONE_TO_ONE)), None)
    shared: list[ObjectRef] = []
    for edge in in_edges:
        if edge.pattern in (Pattern.BROADCAST, Pattern.GATHER):
            shared.extend(ref for refs in selected(edge, produced[edge.src]) for ref in refs)

    if driving is None:
        count = app.stages[stage].instances
        return [InstanceSpec(stage, i, count, None, tuple(_ordered(app, shared)), parts) for i in range(count)]

    per_instance: list[tuple[str | None, list[ObjectRef]]] = []
    outputs = selected(driving, produced[driving.src])
    if driving.pattern is Pattern.SCATTER:
        names = sorted({ref.name for refs in outputs for ref in refs})
        by_name: dict[str, list[ObjectRef]] = {n: [] for n in names}
        for refs in outputs:
            for ref in refs:
                by_name[ref.name].append(ref)
        per_instance = [(n, by_name[n]) for n in names]
    else:  # one-to-one
        per_instance = [(None, list(refs)) for refs in outputs]
    count = len(per_instance)
    return [
        InstanceSpec(stage, i, count, key, tuple(_ordered(app, own + shared)), parts)
        for i, (key, own) in enumerate(per_instance)
    ]


def packs_outputs(app: App, stage: str) -> bool:
    """Does ``stage`` store one packed object per instance (partitions read by range)? Yes when
    every out-edge is an unselected scatter: each output name then goes to exactly one consumer
    instance per edge, so consumers need only their range. Broadcast, gather, one-to-one and
    selected edges, and final outputs, keep one object per file."""
    edges = app.out_edges(stage)
    return bool(edges) and all(e.pattern is Pattern.SCATTER and e.select is None for e in edges)


def partitions_of(app: App, stage: str, chosen: Mapping[str, int]) -> dict[str, int]:
    """The chosen counts of ``stage``'s elastic scatter consumers (what its instances must write)."""
    return {e.dst: int(chosen[e.dst]) for e in app.out_edges(stage)
            if e.pattern is Pattern.SCATTER and e.dst in chosen and app.stages[e.dst].parallelism is not None}


def selected(edge: Edge, outputs: Sequence[Sequence[ObjectRef]]) -> list[list[ObjectRef]]:
    """The producer files (per producer instance) that travel over ``edge``. A selection that
    matches nothing the producer wrote is an error naming the edge (a typo would otherwise
    silently starve the consumer)."""
    if edge.select is None:
        return [list(refs) for refs in outputs]
    kept = [[ref for ref in refs if edge.takes(ref.name)] for refs in outputs]
    written = sorted({ref.name for refs in outputs for ref in refs})
    if written and not any(kept):
        shown = ", ".join(written[:5]) + (", ..." if len(written) > 5 else "")
        raise SelectionError(
            f"edge {edge.src} -> {edge.dst}: selection {edge.select!r} matches none of the {len(written)} outputs "
            f"{edge.src} wrote ({shown}); fix the glob in after= / select="
        )
    return kept


def _ordered(app: App, refs: list[ObjectRef]) -> list[ObjectRef]:
    order = {n: i for i, n in enumerate(app.topological_order())}
    order[APP_INPUT] = -1
    return sorted(refs, key=lambda r: (order[r.stage], r.instance, r.name))


def edge_bytes(instances: Sequence[InstanceSpec], src: str) -> int:
    """Bytes delivered over edge ``src -> instances' stage`` (broadcast counts every copy)."""
    return sum(ref.size for spec in instances for ref in spec.inputs if ref.stage == src)
