"""Where a stage's instances run: VM groups, placements and the canonical placement space.

A :class:`Placement` is an instance count per VM. The optimiser does not search every count
vector: VMs with the same cores, memory, price and warm workers are interchangeable, so a
stage's placement is described by *how many VMs of each group* it uses (always the first ones
of the group, in cluster order) with its instances spread over them in proportion to their
cores (largest remainder, earlier VMs first). Using the same prefix of every group for every
stage maximises co-location (local reads) and minimises the number of VMs billed, which is
why the symmetry reduction loses nothing the cost model can see.

If a heterogeneous cluster has too many group combinations (more than
:data:`MAX_MIXED_COMBINATIONS`), a stage uses either VMs of one group only or the first k VMs
of a global order (warm groups first, then cheapest per core); the plan notes it.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from sonic.app import Pattern
from sonic.planner.problem import VMInfo

MAX_MIXED_COMBINATIONS = 256


@dataclass(frozen=True, eq=False)
class Placement:
    """Instances per VM. Interned by :class:`PlacementSpace`: equal counts -> same object."""

    id: int
    counts: tuple[int, ...]                  # per VM, cluster order
    items: tuple[tuple[int, int], ...]       # (vm index, count) for count > 0
    vms: tuple[int, ...]                     # VMs used (count > 0)
    instances: int

    def __repr__(self) -> str:
        return "Placement(" + ", ".join(f"{v}:{c}" for v, c in self.items) + ")"


@dataclass(frozen=True)
class VMGroup:
    """Interchangeable VMs (same cores, memory, price and warm workers), in cluster order."""

    index: int
    members: tuple[int, ...]

    def __len__(self) -> int:
        return len(self.members)


class PlacementSpace:
    """Interns placements and enumerates the canonical placements of a stage."""

    def __init__(self, vms: Sequence[VMInfo]) -> None:
        self.vms = tuple(vms)
        # VMs are interchangeable when everything the cost model knows of them is equal.
        groups: dict[tuple[int, int, float, int, float], list[int]] = {}
        for i, vm in enumerate(self.vms):
            groups.setdefault((vm.cores, vm.memory_mb, vm.price_per_hour, vm.warm_workers, vm.compute_factor),
                              []).append(i)
        self.groups = tuple(VMGroup(g, tuple(members)) for g, members in enumerate(groups.values()))
        group_of = [0] * len(self.vms)
        for group in self.groups:
            for v in group.members:
                group_of[v] = group.index
        self.group_of = tuple(group_of)
        # The runtime numbers a stage's instances VM by VM in VM-name order (largest-remainder
        # apportioning in sonic.runtime.scheduler); one-to-one alignment follows that order.
        self.instance_order = tuple(sorted(range(len(self.vms)), key=lambda v: self.vms[v].name))
        self._interned: dict[tuple[int, ...], Placement] = {}
        mixed = 1
        for group in self.groups:
            mixed *= len(group) + 1
        self.mixed = mixed - 1 <= MAX_MIXED_COMBINATIONS

    # ------------------------------------------------------------------ interning
    def intern(self, counts: Sequence[int]) -> Placement:
        key = tuple(counts)
        found = self._interned.get(key)
        if found is None:
            items = tuple((v, c) for v, c in enumerate(key) if c > 0)
            found = Placement(len(self._interned), key, items, tuple(v for v, _ in items), sum(key))
            self._interned[key] = found
        return found

    def single(self, vm: int, n: int) -> Placement:
        counts = [0] * len(self.vms)
        counts[vm] = n
        return self.intern(counts)

    def spread(self, n: int, vms: Sequence[int]) -> Placement | None:
        """``n`` instances over ``vms`` in proportion to cores (largest remainder, earlier VMs
        first); ``None`` if a listed VM would get no instance (that placement is a smaller one)."""
        weights = [self.vms[v].cores for v in vms]
        total = sum(weights)
        base = [n * w // total for w in weights]
        rest = n - sum(base)
        by_remainder = sorted(range(len(vms)), key=lambda i: (-(n * weights[i] % total), i))
        for i in by_remainder[:rest]:
            base[i] += 1
        if any(c == 0 for c in base):
            return None
        counts = [0] * len(self.vms)
        for v, c in zip(vms, base):
            counts[v] = c
        return self.intern(counts)

    # ------------------------------------------------------------------ enumeration
    def canonical(self, n: int, groups: Sequence[int] | None = None) -> list[Placement]:
        """Every canonical placement of ``n`` instances on the given groups (default: all)."""
        usable = [self.groups[g] for g in (range(len(self.groups)) if groups is None else groups)]
        found: dict[int, Placement] = {}
        if self.mixed:
            ranges = [range(min(len(g), n) + 1) for g in usable]
            vectors: list[tuple[int, ...]] = [k for k in itertools.product(*ranges) if 0 < sum(k) <= n]
        else:
            vectors = []
            for gi, g in enumerate(usable):
                for k in range(1, min(len(g), n) + 1):
                    vectors.append(tuple(k if j == gi else 0 for j in range(len(usable))))
            # Prefixes of one global order: fill warm groups first, then the cheapest per core.
            ranked = sorted(range(len(usable)), key=lambda j: (-self.vms[usable[j].members[0]].warm_workers,
                                                             self._price_per_core(usable[j]), j))
            counts = [0] * len(usable)
            for j in ranked:
                for _ in usable[j].members:
                    if sum(counts) >= n:
                        break
                    counts[j] += 1
                    vectors.append(tuple(counts))
        for vector in vectors:
            chosen = [v for g, kg in zip(usable, vector) for v in g.members[:kg]]
            placement = self.spread(n, sorted(chosen))
            if placement is not None:
                found.setdefault(placement.id, placement)
        return list(found.values())

    def _price_per_core(self, group: VMGroup) -> float:
        vm = self.vms[group.members[0]]
        return vm.price_per_hour / vm.cores

    def follow(self, pattern: Pattern, producer: Placement, n_consumer: int) -> Placement | None:
        """Consumer placement of a ``vm`` edge: on the VMs holding its input, or ``None``.

        One-to-one: instance i runs where producer instance i ran. Scatter, broadcast and
        gather: every consumer instance needs files of every producer instance, so they can
        all read in place only if the producer ran on a single VM.
        """
        if pattern is Pattern.ONE_TO_ONE:
            return producer if producer.instances == n_consumer else None
        if len(producer.items) == 1:
            return self.single(producer.items[0][0], n_consumer)
        return None

    def first_vm(self, group: int) -> int:
        return self.groups[group].members[0]
