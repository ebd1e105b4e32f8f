"""Typed requests of the agent's ops: one frozen msgspec Struct per op, keys as on the wire.

Clients still send plain msgpack maps (``{"op": "lease", "job": ..., "ttl_s": ...}``); the
agent's dispatcher converts the map into the op's Struct with ``msgspec.convert(...,
strict=True)`` before the op runs, so a malformed request is answered with one line naming
the field path (``$.inputs[0].size``) and the ops see checked, typed fields. ``op`` is each
Struct's tag; a request's unknown keys are refused (an input item's are ignored: it is handed
to the passing methods). Job ids and object keys are plain strings here; the agent checks
them against its object store's rules (``check_job`` / ``check_key``) after decoding.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

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

