"""The agent's benchmark ops: yardsticks of `sonic bench dataplane` and `sonic cluster
calibrate` (raw TCP with no protocol at all, the data disk's write/read bandwidth)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Mapping

from sonic.runtime.agent.config import AgentConfig
from sonic.runtime.agent.request import Connection, Handler, RequestError
from sonic.runtime.messages import (
    AgentRequest,
    DiskbenchReply,
    DiskbenchRequest,
    RawTcpPullRequest,
    RawTcpServeReply,
    RawTcpServeRequest,
    SecondsReply,
)

log = logging.getLogger("sonic.agent")


class BenchOps:
    """``rawtcp_serve``, ``rawtcp_pull`` and ``diskbench``: they touch no job state."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config

    def handlers(self) -> Mapping[type[AgentRequest], Handler]:
        return {RawTcpServeRequest: self.rawtcp_serve, RawTcpPullRequest: self.rawtcp_pull,
                DiskbenchRequest: self.diskbench}

    def rawtcp_serve(self, req: RawTcpServeRequest, conn: Connection) -> RawTcpServeReply:
        """Yardstick: serve SIZE bytes once on a fresh port with sendfile, no protocol at all."""
        size = req.size
        listener = socket.create_server((self.config.bind, 0))
        listener.settimeout(self.config.handshake_timeout_s)
        blob = self.config.data_dir / "rawtcp.bin"
        if not blob.exists() or blob.stat().st_size < size:
            with open(blob, "wb") as fh:
                fh.truncate(size)  # sparse zeros: the page cache serves them, no disk in the way

        def serve_once() -> None:
            try:
                link, _ = listener.accept()
                with link, open(blob, "rb") as fh:
                    link.sendfile(fh, 0, size)
            except OSError as exc:
                log.warning("raw TCP yardstick: %s", exc)
            finally:
                listener.close()

        threading.Thread(target=serve_once, daemon=True).start()
        return RawTcpServeReply(port=listener.getsockname()[1])

    def rawtcp_pull(self, req: RawTcpPullRequest, conn: Connection) -> SecondsReply:
        """Yardstick: receive SIZE raw bytes from HOST:PORT into memory; return seconds."""
        size, host, port = req.size, req.host, req.port
        sink = self.config.data_dir / f"rawtcp-{threading.get_ident()}.bin" if req.to_file else None
        buf = bytearray(4 << 20)
        view = memoryview(buf)
        t0 = time.perf_counter()
        with socket.create_connection((host, port), timeout=self.config.handshake_timeout_s) as link, \
                open(sink or os.devnull, "wb") as fh:
            got = 0
            while got < size:
                n = link.recv_into(view)
                if n == 0:
                    raise RequestError(f"raw TCP peer {host}:{port} closed after {got} bytes")
                if sink is not None:
                    fh.write(view[:n])
                got += n
        seconds = time.perf_counter() - t0
        if sink is not None:
            sink.unlink(missing_ok=True)
        return SecondsReply(seconds=seconds)

    def diskbench(self, req: DiskbenchRequest, conn: Connection) -> DiskbenchReply:
        """Calibration: write SIZE bytes to this VM's data disk (fsync'd) and read them back."""
        size = req.size
        path = self.config.data_dir / f"diskbench-{threading.get_ident()}"
        block = os.urandom(1 << 20)
        try:
            t0 = time.perf_counter()
            with open(path, "wb") as fh:
                for offset in range(0, size, len(block)):
                    fh.write(block[: min(len(block), size - offset)])
                fh.flush()
                os.fsync(fh.fileno())
            write_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            with open(path, "rb") as fh:
                while fh.read(4 << 20):
                    pass
            read_s = time.perf_counter() - t0
        finally:
            path.unlink(missing_ok=True)
        return DiskbenchReply(write_s=write_s, read_s=read_s)
