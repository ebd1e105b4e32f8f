"""Passing-method identity and the explicit registry shape both sides use (issue 15).

A passing method is a :class:`MethodId` (its plan name and its wire name). The three built-ins
map one to one onto :class:`sonic.plan.PassingMethod`, which stays the plan/JSON/wire format;
a new method needs no enum edit. The planner (``sonic.planner.methods``) and the runtime
(``sonic.runtime.methods``) each keep a :class:`MethodRegistry` of their own hooks keyed by
the method's name: looked up explicitly, never found by ``hasattr``. See docs/architecture.md,
"Passing methods".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sonic.plan import PassingMethod

Hooks = TypeVar("Hooks")


@dataclass(frozen=True)
class MethodId:
    """One passing method: ``name`` in plans, ``wire`` in agent messages."""

    name: str
    wire: str

    @property
    def builtin(self) -> PassingMethod | None:
        """The plan enum member of a built-in method, ``None`` for a registered extra one."""
        try:
            return PassingMethod(self.name)
        except ValueError:
            return None


VM = MethodId("vm", "local")        # VM-Storage: "local" on the wire (see "One name per method")
DIRECT = MethodId("direct", "direct")
REMOTE = MethodId("remote", "remote")
BUILTINS: dict[PassingMethod, MethodId] = {PassingMethod.VM: VM, PassingMethod.DIRECT: DIRECT,
                                           PassingMethod.REMOTE: REMOTE}


def method_id(method: PassingMethod | MethodId) -> MethodId:
    """The identity of a built-in enum member (or of an identity already)."""
    return method if isinstance(method, MethodId) else BUILTINS[method]


class MethodRegistry(Generic[Hooks]):
    """Hooks of one side (planner or runtime) per method, keyed by plan name."""

    def __init__(self, side: str) -> None:
        self.side = side
        self._hooks: dict[str, tuple[MethodId, Hooks]] = {}
        self._fast: dict[object, Hooks] = {}

    def register(self, method: PassingMethod | MethodId, hooks: Hooks, *, replace: bool = False) -> None:
        ident = method_id(method)
        if ident.name in self._hooks and not replace:
            raise ValueError(f"{self.side}: passing method {ident.name!r} is already registered")
        self._hooks[ident.name] = (ident, hooks)
        # The planner's hot loop looks methods up by enum member: one dict lookup, any key.
        self._fast[ident.name] = self._fast[ident] = hooks
        if ident.builtin is not None:
            self._fast[ident.builtin] = hooks

    def unregister(self, method: PassingMethod | MethodId) -> None:
        ident = method_id(method)
        self._hooks.pop(ident.name, None)
        for key in (ident.name, ident, ident.builtin):
            self._fast.pop(key, None)

    def get(self, method: PassingMethod | MethodId | str) -> Hooks:
        try:
            return self._fast[method]
        except KeyError:
            raise KeyError(f"{self.side}: no passing method {method!r} registered") from None

    def by_wire(self, wire: str) -> tuple[MethodId, Hooks]:
        for ident, hooks in self._hooks.values():
            if ident.wire == wire:
                return ident, hooks
        raise KeyError(f"{self.side}: no passing method with wire name {wire!r} registered")

    def methods(self) -> list[MethodId]:
        return [ident for ident, _ in self._hooks.values()]
