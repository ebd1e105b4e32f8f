"""Passing-method identity and the explicit registry shape both sides use (issue 15).

A passing method is a :class:`MethodId` (its plan name and its wire name). The three built-ins
are also the members of :class:`PassingMethod` (re-exported by :mod:`sonic.plan`), the plan's,
JSON's and wire's names of them; a new method needs no enum edit. The planner
(``sonic.planner.methods``) and the runtime (``sonic.runtime.methods``) each keep a
:class:`MethodRegistry` of their own hooks keyed by the method's name: looked up explicitly,
never found by ``hasattr``. A plan holds a :data:`PlanMethod`: a built-in's enum member, or a
registered extra method's :class:`MethodId`; a plan file may name an extra method only while
it is registered (:func:`plan_method`). See docs/architecture.md, "Passing methods".
"""

from __future__ import annotations

import enum
import weakref
from dataclasses import dataclass
from typing import Any, Generic, TypeAlias, TypeVar

from sonic.errors import PlanError

Hooks = TypeVar("Hooks")


class PassingMethod(str, enum.Enum):
    """How the bytes of one edge travel: the built-in methods."""

    VM = "vm"          # consumer on the producer's VM, reads the file in place
    DIRECT = "direct"  # consumer's agent pulls from the producer's agent over TCP
    REMOTE = "remote"  # producer uploads to S3, consumer downloads

    @classmethod
    def parse(cls, value: Any, *, where: str) -> PassingMethod:
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(m.value for m in cls)
            raise PlanError(f"{where}: method {value!r} is not allowed; use one of {allowed}") from None

    @classmethod
    def from_wire(cls, name: str) -> PassingMethod:
        """The method a message names: its plan name (``vm``, ``direct``, ``remote``, what new
        code sends) or the runtime's old name of VM-Storage, ``local`` (still accepted). The
        one place that maps the two names; see docs/architecture.md, "One name per method"."""
        method = WIRE_ALIASES.get(name)
        if method is not None:
            return method
        try:
            return cls(name)
        except ValueError:
            known = ", ".join([*(m.value for m in cls), *WIRE_ALIASES])
            raise ValueError(f"unknown passing method {name!r} (known: {known})") from None


#: Old names of passing methods on the agent protocol, accepted when decoding a message:
#: the runtime called VM-Storage (read the object in place on this VM) "local".
WIRE_ALIASES: dict[str, PassingMethod] = {"local": PassingMethod.VM}


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

    @property
    def value(self) -> str:
        """The plan name, as :attr:`PassingMethod.value` is a built-in's: code that writes or
        shows a plan's method (``edge.method.value``) reads any :data:`PlanMethod` alike."""
        return self.name

    @property
    def in_plan(self) -> PlanMethod:
        """How a plan holds this method: a built-in as its enum member (what existing plans,
        the planner's tests and the runtime compare with ``is``), an extra one as itself."""
        builtin = self.builtin
        return self if builtin is None else builtin


#: A method as a plan (and the planner's search) holds it: see :attr:`MethodId.in_plan`.
PlanMethod: TypeAlias = PassingMethod | MethodId

VM = MethodId("vm", "local")        # VM-Storage: "local" on the wire (see "One name per method")
DIRECT = MethodId("direct", "direct")
REMOTE = MethodId("remote", "remote")
BUILTINS: dict[PassingMethod, MethodId] = {PassingMethod.VM: VM, PassingMethod.DIRECT: DIRECT,
                                           PassingMethod.REMOTE: REMOTE}


def method_id(method: PlanMethod) -> MethodId:
    """The identity of a built-in enum member (or of an identity already)."""
    return method if isinstance(method, MethodId) else BUILTINS[method]


#: Every registry (planner's and runtime's): what makes a name "registered" for a plan file.
_REGISTRIES: weakref.WeakSet[MethodRegistry[Any]] = weakref.WeakSet()


class MethodRegistry(Generic[Hooks]):
    """Hooks of one side (planner or runtime) per method, keyed by plan name."""

    def __init__(self, side: str) -> None:
        self.side = side
        self._hooks: dict[str, tuple[MethodId, Hooks]] = {}
        self._fast: dict[object, Hooks] = {}
        _REGISTRIES.add(self)

    def register(self, method: PlanMethod, hooks: Hooks, *, replace: bool = False) -> None:
        ident = method_id(method)
        if ident.name in self._hooks and not replace:
            raise ValueError(f"{self.side}: passing method {ident.name!r} is already registered")
        self._hooks[ident.name] = (ident, hooks)
        # The planner's hot loop looks methods up by enum member: one dict lookup, any key.
        self._fast[ident.name] = self._fast[ident] = hooks
        if ident.builtin is not None:
            self._fast[ident.builtin] = hooks

    def unregister(self, method: PlanMethod) -> None:
        ident = method_id(method)
        self._hooks.pop(ident.name, None)
        for key in (ident.name, ident, ident.builtin):
            self._fast.pop(key, None)

    def get(self, method: PlanMethod | str) -> Hooks:
        try:
            return self._fast[method]
        except KeyError:
            raise KeyError(f"{self.side}: no passing method {method!r} registered") from None

    def by_wire(self, wire: str) -> tuple[MethodId, Hooks]:
        for ident, hooks in self._hooks.values():
            if ident.wire == wire:
                return ident, hooks
        raise KeyError(f"{self.side}: no passing method with wire name {wire!r} registered")

    def ident(self, name: str) -> MethodId | None:
        """The identity registered under plan name ``name`` (``None``: none)."""
        found = self._hooks.get(name)
        return None if found is None else found[0]

    def methods(self) -> list[MethodId]:
        return [ident for ident, _ in self._hooks.values()]


def plan_method(value: Any, *, where: str) -> PlanMethod:
    """The method a plan document names: a built-in, or an extra method registered (with the
    planner's or the runtime's registry) under that plan name; else a one-line
    :class:`PlanError` naming the methods allowed."""
    try:
        return PassingMethod(value)
    except ValueError:
        pass
    if isinstance(value, str):
        for registry in list(_REGISTRIES):
            ident = registry.ident(value)
            if ident is not None:
                return ident.in_plan
    builtins = [m.value for m in PassingMethod]
    extras = sorted({i.name for r in list(_REGISTRIES) for i in r.methods()} - set(builtins))
    raise PlanError(f"{where}: method {value!r} is not allowed; use one of {', '.join(builtins + extras)}")
