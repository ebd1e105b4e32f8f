"""Runtime side of the passing methods: each method's source selection (scheduler) and fetch
(agent), one hook object per method in an explicit registry keyed by method name (see
``sonic.passing`` and docs/architecture.md, "Passing methods").

The agent's :class:`~sonic.runtime.agent.fetch.Fetcher` owns what every method shares (the
lock per object, reuse of a verified copy, error classification, remembering the checksum);
the method owns how bytes get here: :meth:`RuntimeMethod.fetch` for a whole object and for
one partition of a packed object alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from sonic.errors import CorruptObjectError, MissingObjectError
from sonic.passing import MethodRegistry
from sonic.plan import PassingMethod
from sonic.runtime.objects import ObjectStore, copy_range, file_checksum

if TYPE_CHECKING:
    from sonic.runtime.client import AgentClient, Timeouts
    from sonic.runtime.remote import RemoteStore


@dataclass(frozen=True)
class Held:
    """Where the scheduler knows an object is: the VM that wrote it, and whether S3 has it."""

    vm: str
    remote: bool


@dataclass(frozen=True)
class FetchRequest:
    """One input to make a verified file at ``path`` on this VM.

    ``key`` is the object to read: the input itself, or with ``offset`` set the packed object
    holding it as the partition ``[offset, offset + size)``. ``item`` is the input as the
    coordinator sent it (its ``vm``, ``host`` and ``port`` name the producer's agent)."""

    job: str
    key: str
    path: Path
    size: int
    checksum: str | None
    offset: int | None
    item: Mapping[str, Any]
    timeouts: Timeouts


class FetchContext(Protocol):
    """What a method's fetch may use of the agent: its objects, its S3 and its peers."""

    name: str
    store: ObjectStore
    remote: RemoteStore | None

    def peer(self, name: str, host: str, port: int, timeouts: Timeouts) -> AgentClient: ...


class RuntimeMethod(Protocol):
    @property
    def in_place(self) -> bool:
        """Inputs are read where the producer wrote them (only a partition is copied out of its pack)."""
        ...

    @property
    def verifies_in_transit(self) -> bool:
        """Fetch checks size and checksum on the way in; otherwise the agent checks the file after it."""
        ...

    @property
    def needs_remote(self) -> bool:
        """Fetching needs the agent's remote storage (an agent without one refuses the request),
        so the producer of an edge with this method uploads its outputs there."""
        ...

    def choose_source(self, held: Held, consumer_vm: str, alive: AbstractSet[str]) -> tuple[str, str | None] | None:
        """(wire method, VM to fetch from) for an input of an edge planned with this method,
        or ``None`` when this method cannot serve it now (the scheduler then waits)."""
        ...

    def fetch(self, ctx: FetchContext, req: FetchRequest) -> None:
        """Make the input a file at ``req.path``; raise :class:`CorruptObjectError` for bytes
        that do not verify, :class:`MissingObjectError` for an object not there."""
        ...


@dataclass(frozen=True)
class BuiltinRuntimeMethod:
    """Source selection shared by the built-ins: the consumer's own VM first, then the planned
    method's preference, then whatever copy survives."""

    method: PassingMethod
    in_place: bool = False
    verifies_in_transit: bool = True
    needs_remote: bool = False

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


@dataclass(frozen=True)
class VMStorage(BuiltinRuntimeMethod):
    """VM-Storage: read in place; a partition is copied out of its pack inside the kernel."""

    method: PassingMethod = PassingMethod.VM
    in_place: bool = True

    def fetch(self, ctx: FetchContext, req: FetchRequest) -> None:
        if req.offset is None:
            raise MissingObjectError(f"{req.key} is read in place; there is nothing to fetch")
        pack = ctx.store.path(req.job, req.key)
        if not pack.is_file() or pack.is_symlink():
            raise MissingObjectError(f"pack {req.key} is not on this VM")
        tmp = req.path.with_name(req.path.name + ".part")
        copy_range(pack, req.offset, req.size, tmp)
        if tmp.stat().st_size != req.size or (req.checksum and file_checksum(tmp) != req.checksum):
            tmp.unlink(missing_ok=True)
            raise CorruptObjectError(f"partition at {req.offset} of {req.key} does not match its checksum")
        tmp.rename(req.path)


@dataclass(frozen=True)
class DirectPassing(BuiltinRuntimeMethod):
    """Direct-Passing: pulled from the producer's agent (a byte range of its pack with ``sendfile``)."""

    method: PassingMethod = PassingMethod.DIRECT

    def fetch(self, ctx: FetchContext, req: FetchRequest) -> None:
        item = req.item
        peer = ctx.peer(str(item["vm"]), str(item["host"]), int(item["port"]), req.timeouts)
        peer.get_to_file(req.job, req.key, req.path, size=req.size, checksum=req.checksum, offset=req.offset)


@dataclass(frozen=True)
class RemoteStorage(BuiltinRuntimeMethod):
    """Remote-Storage: downloaded from S3 (one ranged GET for a partition)."""

    method: PassingMethod = PassingMethod.REMOTE
    needs_remote: bool = True

    def fetch(self, ctx: FetchContext, req: FetchRequest) -> None:
        assert ctx.remote is not None  # the agent refuses a needs_remote method without remote storage
        ctx.remote.download(f"{req.job}/{req.key}", req.path, size=req.size, checksum=req.checksum,
                            offset=req.offset)


RUNTIME_METHODS: MethodRegistry[RuntimeMethod] = MethodRegistry("runtime")
for _hooks in (VMStorage(), DirectPassing(), RemoteStorage()):
    RUNTIME_METHODS.register(_hooks.method, _hooks)
