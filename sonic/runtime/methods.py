"""Runtime side of the passing methods: each method's source selection (scheduler) and fetch
(agent), one hook object per method in an explicit registry keyed by method name (see
``sonic.passing`` and docs/architecture.md, "Passing methods")."""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from sonic.passing import MethodRegistry
from sonic.plan import PassingMethod


@dataclass(frozen=True)
class Held:
    """Where the scheduler knows an object is: the VM that wrote it, and whether S3 has it."""

    vm: str
    remote: bool


class RuntimeMethod(Protocol):
    def choose_source(self, held: Held, consumer_vm: str, alive: AbstractSet[str]) -> tuple[str, str | None] | None:
        """(wire method, VM to fetch from) for an input of an edge planned with this method,
        or ``None`` when this method cannot serve it now (the scheduler then waits)."""
        ...

    def fetch(self, job: str, key: str, item: dict[str, Any], path: Path) -> float:
        """Make the input a verified file at ``path`` on this VM; return the seconds spent."""
        ...


@dataclass(frozen=True)
class BuiltinRuntimeMethod:
    """Source selection of a built-in method (the agent's fetch of the built-ins is
    ``sonic.runtime.agent.fetch.Fetcher``): the consumer's own VM first, then the planned
    method's preference, then whatever copy survives."""

    method: PassingMethod

    def choose_source(self, held: Held, consumer_vm: str, alive: AbstractSet[str]) -> tuple[str, str | None] | None:
        if held.vm == consumer_vm and consumer_vm in alive:
            return "local", consumer_vm
        if self.method is PassingMethod.REMOTE and held.remote:
            return "remote", None
        if held.vm in alive:
            return "direct", held.vm
        if held.remote:
            return "remote", None
        return None

    def fetch(self, job: str, key: str, item: dict[str, Any], path: Path) -> float:
        raise NotImplementedError("built-in methods are fetched by sonic.runtime.agent.fetch.Fetcher")


RUNTIME_METHODS: MethodRegistry[RuntimeMethod] = MethodRegistry("runtime")
for _method in PassingMethod:
    RUNTIME_METHODS.register(_method, BuiltinRuntimeMethod(_method))
