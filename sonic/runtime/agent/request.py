"""A request that failed, and the checks of a request's fields (every op uses them).

A :class:`RequestError` becomes the reply ``{ok: false, kind, error[, cause, input, source]}``;
the dispatcher (:mod:`.server`) catches it by type, so no op answers a failure by hand.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sonic.errors import AgentRequestError
from sonic.runtime.client import Timeouts

#: A request that failed: the one error type of both ends of the wire (its client raises the
#: same class, rebuilt from the reply; see :class:`sonic.errors.AgentRequestError`).
RequestError = AgentRequestError


@dataclass(frozen=True)
class Connection:
    """The authenticated connection a request came on: streamed ops (get, put) use its socket,
    ``run`` watches it (a requester that hangs up cancels the instance)."""

    sock: socket.socket
    peer: str


#: An op: the request and its connection in, the reply out (``None``: the op answered on the
#: connection itself, as streamed ops do).
Handler = Callable[[dict[str, Any], Connection], "dict[str, Any] | None"]


def text_field(req: dict[str, Any], key: str) -> str:
    value = req.get(key)
    if not isinstance(value, str) or not value:
        raise RequestError(f"field {key!r} must be a non-empty string")
    return value


def count_field(req: dict[str, Any], key: str) -> int:
    value = req.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise RequestError(f"field {key!r} must be a non-negative integer")
    return value


def partitions_field(req: dict[str, Any]) -> dict[str, int]:
    """Optional ``partitions``: elastic consumer stage -> chosen instance count."""
    value = req.get("partitions") or {}
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 100_000
            for k, v in value.items()):
        raise RequestError("field 'partitions' must map stage names to instance counts from 1 to 100000")
    return value


def seconds_field(req: dict[str, Any], key: str) -> float | None:
    """Optional positive seconds (``None`` when absent)."""
    value = req.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise RequestError(f"field {key!r} must be a positive number of seconds")
    return float(value)


def peer_timeouts_field(doc: Any) -> Timeouts:
    """Timeouts for pulling from peers, as the coordinator configured them (else the defaults)."""
    if doc is None:
        return Timeouts()
    if not isinstance(doc, dict):
        raise RequestError("field 'peer_timeouts' must be a map")
    values = {k: seconds_field(doc, k) for k in ("connect_s", "control_s", "transfer_idle_s") if k in doc}
    return Timeouts(**{k: v for k, v in values.items() if v is not None})
