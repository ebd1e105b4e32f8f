"""The agent's server: connections, authentication, and dispatch of requests to the ops.

A threaded TCP server (one thread per connection: the work is blocking I/O, S3 calls through
boto3 and waiting on worker pipes, so threads are the simple fit). Every connection must pass
the HMAC handshake of :mod:`sonic.runtime.protocol` before a single request is read; failures
are logged with the peer address and the connection is closed. The op table is built once,
when the server starts; each request is decoded into its op's typed Struct
(:mod:`sonic.runtime.messages`) before the op runs; a failure is answered according to its
exception's type.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Mapping
from typing import Any

import msgspec

from sonic import __version__
from sonic.errors import AuthenticationError, PeerClosedError, TransportError
from sonic.runtime import protocol
from sonic.runtime.agent.bench_ops import BenchOps
from sonic.runtime.agent.config import AgentConfig
from sonic.runtime.agent.ops import DataOps
from sonic.runtime.agent.request import Connection, Handler, RequestError
from sonic.runtime.agent.state import Agent
from sonic.runtime.messages import AgentRequest, op_name
from sonic.runtime.objects import BadKeyError

log = logging.getLogger("sonic.agent")


class Dispatcher:
    """Serves the requests of one agent's connections from a table of ops built once."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config
        handlers = {**DataOps(agent).handlers(), **BenchOps(agent.config).handlers()}
        #: op -> (its request's type, its handler)
        self.ops: Mapping[str, tuple[type[AgentRequest], Handler]] = {
            op_name(request_type): (request_type, handler) for request_type, handler in handlers.items()}

    def answer(self, req: dict[str, Any], conn: Connection) -> dict[str, Any] | None:
        """The reply to one request (``None``: the op answered on the connection itself).
        The request is decoded into its op's typed Struct first: a malformed one is answered
        with one line naming the field's path. Raises OSError / TransportError when the
        connection broke under the request."""
        op = req.get("op")
        entry = self.ops.get(op) if isinstance(op, str) else None
        if entry is None:
            return {"ok": False, "kind": "request", "error": f"unknown op {op!r}"}
        request_type, handler = entry
        try:
            request = msgspec.convert(req, type=request_type, strict=True)
        except msgspec.ValidationError as exc:
            return {"ok": False, "kind": "request", "error": f"malformed {op!r} request: {exc}"}
        try:
            reply = handler(request, conn)
            # Bytes stay bytes (msgpack carries them; to_builtins would base64 them into str).
            return None if reply is None else msgspec.to_builtins(reply, builtin_types=(bytes, bytearray, memoryview))
        except BadKeyError as exc:
            log.warning("bad key from %s: %s", conn.peer, exc)
            return {"ok": False, "kind": "request", "error": str(exc)}
        except RequestError as exc:
            return exc.reply()
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return {"ok": False, "kind": "request", "error": f"malformed {op!r} request: {exc!r}"}
        except (OSError, TransportError):
            raise  # the connection (or our disk under a transfer) failed: the caller drops it
        except Exception as exc:  # noqa: BLE001 - a bug must cost one request, not the agent's answer
            log.exception("internal error serving %r for %s", op, conn.peer)
            return {"ok": False, "kind": "request", "error": f"agent internal error on {op!r}: {exc!r}"}

    def serve_connection(self, sock: socket.socket, peer: str) -> None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        # The handshake must be quick (an idle unauthenticated peer must not hold a thread);
        # afterwards requests may be far apart.
        sock.settimeout(self.config.handshake_timeout_s)
        try:
            protocol.server_handshake(sock, self.config.secret, self.config.name, peer)
        except (AuthenticationError, TransportError, OSError) as exc:
            log.warning("rejected connection from %s: %s", peer, exc)
            return
        # Between requests a connection may idle (clients pool them) but not for ever.
        sock.settimeout(self.config.connection_idle_s)
        conn = Connection(sock, peer)
        while True:
            try:
                req = protocol.recv_frame(sock, peer)
            except PeerClosedError:
                return  # the client closed a pooled connection: the normal end
            except TransportError as exc:
                log.warning("dropping %s: %s", peer, exc)
                return
            except OSError:
                return
            try:
                reply = self.answer(req, conn)
            except (OSError, TransportError) as exc:
                # The peer vanished mid-request (or our disk failed under a transfer): this
                # connection is unusable, the agent is fine.
                log.warning("I/O error serving %s for %s: %s", req.get("op"), peer, exc)
                return
            if reply is None:
                continue
            try:
                protocol.send_frame(sock, reply)
            except OSError:
                return


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], dispatcher: Dispatcher) -> None:
        self.dispatcher = dispatcher
        super().__init__(address, _Handler)


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        host, port = self.client_address[:2]
        self.server.dispatcher.serve_connection(self.request, f"{host}:{port}")


def serve(config: AgentConfig) -> None:
    """Run the agent until SIGTERM / SIGINT; ``DATA_DIR/agent.json`` says where it listens."""
    # Job data is private to the agent's user: objects 0600, directories 0700 (workers inherit it).
    os.umask(0o077)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    agent = Agent(config).start()
    server = _Server((config.bind, config.port), Dispatcher(agent))
    host, port = server.server_address[:2]
    info = {"name": config.name, "pid": os.getpid(), "host": host, "port": port, "version": __version__,
            "started": time.time()}
    tmp = config.data_dir / "agent.json.tmp"
    tmp.write_text(json.dumps(info))
    os.replace(tmp, config.data_dir / "agent.json")
    log.info("agent %s listening on %s:%s (pid %s)", config.name, host, port, os.getpid())

    def on_signal(signum: int, _frame: Any) -> None:
        log.info("signal %s: stopping", signum)
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        agent.stop()
        (config.data_dir / "agent.json").unlink(missing_ok=True)
        log.info("agent %s stopped", config.name)
