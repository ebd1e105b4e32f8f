"""A request that failed, and what an op is (its fields are typed: :mod:`sonic.runtime.messages`).

A :class:`RequestError` becomes the reply ``{ok: false, kind, error[, cause, input, source]}``;
the dispatcher (:mod:`.server`) catches it by type, so no op answers a failure by hand.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sonic.errors import AgentRequestError
from sonic.runtime.messages import AgentReply

#: A request that failed: the one error type of both ends of the wire (its client raises the
#: same class, rebuilt from the reply; see :class:`sonic.errors.AgentRequestError`).
RequestError = AgentRequestError


@dataclass(frozen=True)
class Connection:
    """The authenticated connection a request came on: streamed ops (get, put) use its socket,
    ``run`` watches it (a requester that hangs up cancels the instance)."""

    sock: socket.socket
    peer: str


#: An op: its typed request (the :mod:`sonic.runtime.messages` Struct it is registered with) and
#: the connection in, its typed reply out (``None``: the op answered on the connection itself,
#: as streamed ops do).
Handler = Callable[[Any, Connection], "AgentReply | None"]

