"""Typed requests and replies of the agent's ops: one frozen msgspec Struct each, keys as on
the wire.

Clients still send plain msgpack maps (``{"op": "lease", "job": ..., "ttl_s": ...}``); the
agent's dispatcher converts the map into the op's Struct with ``msgspec.convert(...,
strict=True)`` before the op runs, so a malformed request is answered with one line naming
the field path (``$.inputs[0].size``) and the ops see checked, typed fields. ``op`` is each
Struct's tag; a request's unknown keys are refused (an input item's are ignored: it is handed
to the passing methods). Job ids and object keys are plain strings here; the agent checks
them against its object store's rules (``check_job`` / ``check_key``) after decoding.

Replies go the other way the same way: every op returns its reply Struct (:data:`REPLY_TYPES`),
the dispatcher sends it as a plain map, and :class:`sonic.runtime.client.AgentClient` converts
the map back into that Struct (strictly), so a reply missing a field or carrying one of the
wrong type is refused with one line naming the agent, the op and the field's path, instead of
failing later as a ``KeyError`` deep in the coordinator. A failure is not a reply Struct: it is
``{ok: false, kind, error, ...}`` (:class:`sonic.errors.AgentRequestError`). ``get`` and ``put``
answer on the connection itself (a header, then raw bytes) and have no reply Struct.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from sonic.metrics import InstanceMetrics

#: A non-empty string (app spec, stage name, checksum, host).
Text = Annotated[str, msgspec.Meta(min_length=1)]
#: A non-negative integer (index, count, size, offset).
Count = Annotated[int, msgspec.Meta(ge=0)]
#: A positive, finite number of seconds (about 31 years at most: NaN and infinity are refused).
Seconds = Annotated[float, msgspec.Meta(gt=0, le=1e9)]
#: Instances chosen for an elastic consumer stage.
Partitions = Annotated[int, msgspec.Meta(ge=1, le=100_000)]
#: A TCP port.
Port = Annotated[int, msgspec.Meta(ge=0, le=65_535)]


class AgentRequest(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="op"):
    """Base of every op's request; the subclass's ``tag`` is its ``op``."""


def op_name(request_type: type[AgentRequest]) -> str:
    """The ``op`` a request type answers to (its Struct tag)."""
    return str(request_type.__struct_config__.tag)


class InputItem(msgspec.Struct, frozen=True, omit_defaults=True):
    """One input of a run (or a ``fetch``): the object ``stage/instance/name`` and how to get it.
    ``pack``/``offset``: a partition of that packed object; ``vm``/``host``/``port``: the
    producer's agent (``direct``). Unknown keys are ignored."""

    stage: Text
    instance: Count
    name: Text
    size: Count
    checksum: str = ""
    method: Text = "local"
    vm: str | None = None
    host: str | None = None
    port: Port | None = None
    pack: str | None = None
    offset: Count | None = None

    def as_doc(self) -> dict[str, Any]:
        """The item as a map with the keys it was sent with (fetcher, methods and worker read maps)."""
        doc: dict[str, Any] = msgspec.to_builtins(self)
        return doc


class PeerTimeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Deadlines for pulling inputs from peers (absent: the agent's defaults)."""

    connect_s: Seconds | None = None
    control_s: Seconds | None = None
    transfer_idle_s: Seconds | None = None


class PingRequest(AgentRequest, frozen=True, tag="ping"):
    pass


class WarmRequest(AgentRequest, frozen=True, tag="warm"):
    app: Text


class LeaseRequest(AgentRequest, frozen=True, tag="lease"):
    job: str
    ttl_s: Seconds


class CancelRequest(AgentRequest, frozen=True, tag="cancel"):
    job: str
    reason: str = "cancelled by its coordinator"


class GcRequest(AgentRequest, frozen=True, tag="gc"):
    pass


class DropRequest(AgentRequest, frozen=True, tag="drop"):
    job: str


class RunRequest(AgentRequest, frozen=True, tag="run"):
    job: str
    app: Text
    stage: Text
    index: Count
    num_instances: Count
    inputs: list[InputItem]
    key: str | None = None
    upload: bool = False
    pack: bool = False
    partitions: dict[str, Partitions] | None = None
    timeout_s: Seconds | None = None
    lease_s: Seconds | None = None
    peer_timeouts: PeerTimeouts | None = None


class GetRequest(AgentRequest, frozen=True, tag="get"):
    """``offset`` and ``length`` together: one range (a partition of a packed object)."""

    job: str
    key: str
    offset: Count | None = None
    length: Count | None = None

    def __post_init__(self) -> None:
        if (self.offset is None) != (self.length is None):
            raise ValueError("fields `offset` and `length` go together")


class PutRequest(AgentRequest, frozen=True, tag="put"):
    job: str
    key: str
    size: Count
    checksum: Text


class FetchInputRequest(AgentRequest, frozen=True, tag="fetch"):
    job: str
    item: InputItem


class PushRequest(AgentRequest, frozen=True, tag="push"):
    job: str
    key: str


class AppInstallRequest(AgentRequest, frozen=True, tag="app_install"):
    digest: str
    app: str = ""
    archive: bytes | None = None


class ColdstartRequest(AgentRequest, frozen=True, tag="coldstart"):
    app: Text


class RawTcpServeRequest(AgentRequest, frozen=True, tag="rawtcp_serve"):
    size: Count


class RawTcpPullRequest(AgentRequest, frozen=True, tag="rawtcp_pull"):
    size: Count
    host: Text
    port: Port
    to_file: bool = False


class DiskbenchRequest(AgentRequest, frozen=True, tag="diskbench"):
    size: Count


#: Every op's request type, by op.
REQUEST_TYPES: dict[str, type[AgentRequest]] = {op_name(t): t for t in (
    PingRequest, WarmRequest, LeaseRequest, CancelRequest, GcRequest, DropRequest, RunRequest, GetRequest,
    PutRequest, FetchInputRequest, PushRequest, AppInstallRequest, ColdstartRequest, RawTcpServeRequest,
    RawTcpPullRequest, DiskbenchRequest)}


# ----------------------------------------------------------------------------- replies
class AgentReply(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every op's success reply (``ok`` is always true: failures are error maps)."""

    ok: bool = True


class PingReply(AgentReply, frozen=True, kw_only=True):
    version: str
    name: str
    slots: Count
    memory_mb: Count
    pid: int
    busy: Count
    workers: list[int]          # pids of the warm workers
    idle_workers: Count
    leases: list[str]           # jobs with a live lease here


class WarmReply(AgentReply, frozen=True, kw_only=True):
    workers: Count              # warm workers of the app after warming


class CancelReply(AgentReply, frozen=True, kw_only=True):
    killed: Count               # running instances the cancel killed


class GcReply(AgentReply, frozen=True, kw_only=True):
    removed: list[str]          # jobs whose objects were deleted
    live: list[str]             # jobs kept (a lease or a running instance)


#: One partition of a packed output: (name, offset, length, checksum).
Partition = tuple[str, Count, Count, str]


class OutputRecord(msgspec.Struct, frozen=True, omit_defaults=True):
    """One output object of a run; a packed one lists its partitions."""

    name: Text
    size: Count
    checksum: Text
    partitions: list[Partition] | None = None


class RunReply(AgentReply, frozen=True, kw_only=True):
    metrics: InstanceMetrics    # the instance as measured (sonic.execution), plus cold / passing_s
    outputs: list[OutputRecord]
    fetch_by_stage: dict[str, float]   # seconds spent fetching inputs, by producer stage
    upload_s: float
    cold_start_s: float


class FetchReply(AgentReply, frozen=True, kw_only=True):
    seconds: float
    path: str
    inode: int


class SecondsReply(AgentReply, frozen=True, kw_only=True):
    """``push``, ``coldstart`` and ``rawtcp_pull``: how long the op's work took."""

    seconds: float


class AppInstallReply(AgentReply, frozen=True, kw_only=True):
    python: str                 # the VM's Python version, checked against the client's
    installed: bool = False     # this request installed the archive
    missing: bool = False       # not installed and no archive sent: send it


class RawTcpServeReply(AgentReply, frozen=True, kw_only=True):
    port: Port


class DiskbenchReply(AgentReply, frozen=True, kw_only=True):
    write_s: float
    read_s: float


#: Every op's reply type, by op (``get`` and ``put`` answer with a header and raw bytes).
REPLY_TYPES: dict[str, type[AgentReply]] = {
    "ping": PingReply, "warm": WarmReply, "lease": AgentReply, "cancel": CancelReply, "gc": GcReply,
    "drop": AgentReply, "run": RunReply, "fetch": FetchReply, "push": SecondsReply, "app_install": AppInstallReply,
    "coldstart": SecondsReply, "rawtcp_serve": RawTcpServeReply, "rawtcp_pull": SecondsReply,
    "diskbench": DiskbenchReply}
