"""The agent's control and data ops: ping, warm, lease, cancel, gc, drop, run, get, put, fetch,
push, app_install, coldstart (wire format: :mod:`sonic.runtime.agent`)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
from collections.abc import Mapping

from sonic import __version__
from sonic.errors import TransportError
from sonic.runtime import appcode, protocol
from sonic.runtime.agent.pool import Worker
from sonic.runtime.agent.request import Connection, Handler, RequestError
from sonic.runtime.agent.state import Agent
from sonic.runtime.client import Timeouts
from sonic.runtime.messages import (
    AgentReply,
    AgentRequest,
    AppInstallReply,
    AppInstallRequest,
    CancelReply,
    CancelRequest,
    ColdstartRequest,
    DropRequest,
    FetchInputRequest,
    FetchReply,
    GcReply,
    GcRequest,
    GetRequest,
    LeaseRequest,
    OutputRecord,
    PeerTimeouts,
    PingReply,
    PingRequest,
    PushRequest,
    PutRequest,
    RunReply,
    RunRequest,
    SecondsReply,
    WarmReply,
    WarmRequest,
)
from sonic.runtime.objects import check_job, check_key, file_checksum, pack_outputs, range_checksum


class DataOps:
    """The ops a coordinator (or a peer agent) drives jobs with."""

    def __init__(self, agent: Agent) -> None:
        self.agent = agent
        self.config = agent.config

    def handlers(self) -> Mapping[type[AgentRequest], Handler]:
        return {PingRequest: self.ping, WarmRequest: self.warm, LeaseRequest: self.lease, CancelRequest: self.cancel,
                GcRequest: self.gc, DropRequest: self.drop, RunRequest: self.run, GetRequest: self.get,
                PutRequest: self.put, FetchInputRequest: self.fetch, PushRequest: self.push,
                AppInstallRequest: self.app_install, ColdstartRequest: self.coldstart}

    def ping(self, req: PingRequest, conn: Connection) -> PingReply:
        agent = self.agent
        return PingReply(version=__version__, name=self.config.name, slots=self.config.slots,
                         memory_mb=self.config.memory_mb, pid=os.getpid(), busy=agent.busy,
                         workers=agent.pool.pids(), idle_workers=agent.pool.idle_count(), leases=agent.leases())

    def warm(self, req: WarmRequest, conn: Connection) -> WarmReply:
        return WarmReply(workers=self.agent.pool.warm(req.app))

    def lease(self, req: LeaseRequest, conn: Connection) -> AgentReply:
        job = check_job(req.job)
        self.agent.check_live(job)
        self.agent.renew(job, req.ttl_s)
        return AgentReply()

    def cancel(self, req: CancelRequest, conn: Connection) -> CancelReply:
        job = check_job(req.job)
        return CancelReply(killed=self.agent.end_job(job, req.reason[:200], remote=False))

    def gc(self, req: GcRequest, conn: Connection) -> GcReply:
        """Delete the objects of every job with no live lease and nothing running here."""
        keep = self.agent.live_jobs()
        root = self.agent.store.root
        removed = []
        for entry in sorted(root.iterdir()) if root.exists() else []:
            if entry.name not in keep and entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
                self.agent.checksums.forget_job(entry.name)
                removed.append(entry.name)
        return GcReply(removed=removed, live=sorted(keep))

    def drop(self, req: DropRequest, conn: Connection) -> AgentReply:
        self.agent.drop_job(check_job(req.job))
        return AgentReply()

    def run(self, req: RunRequest, conn: Connection) -> RunReply:
        agent, name = self.agent, self.config.name
        job = check_job(req.job)
        agent.check_live(job)
        if req.lease_s is not None:
            agent.renew(job, req.lease_s)
        app, stage, index = req.app, req.stage, req.index
        inputs = [item.as_doc() for item in req.inputs]
        timeout_s = req.timeout_s or self.config.stage_timeout_s
        peer_timeouts = _peer_timeouts(req.peer_timeouts)
        out_dir = agent.store.instance_dir(job, stage, index)  # validates stage before any work
        fetch_by_stage: dict[str, float] = {}
        paths: list[str] = []
        for item in inputs:
            path, seconds = agent.fetcher.ensure_local(job, item, peer_timeouts)
            paths.append(str(path))
            src = str(item["stage"])
            fetch_by_stage[src] = fetch_by_stage.get(src, 0.0) + seconds
        if out_dir.exists():  # a retry on this VM starts clean
            for entry in out_dir.iterdir():
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        scratch = self.config.data_dir / "scratch" / f"{job}-{stage}-{index}-{threading.get_ident()}"
        worker, cold_s = agent.pool.acquire(app, self.config.slot_wait_s)
        try:
            with agent.running(job, worker):
                agent.check_live(job)  # cancelled while its inputs were fetched or it waited for a slot
                reply = worker.run({
                    "stage": stage, "index": index, "num_instances": req.num_instances,
                    "key": req.key, "inputs": inputs, "paths": paths, "partitions": req.partitions or {},
                    "output_dir": str(out_dir), "scratch_dir": str(scratch), "vm": name,
                }, timeout_s, conn.sock)
        except RequestError as exc:
            raise RequestError(f"{exc} on VM {name}", exc.kind) from None
        finally:
            ended = agent.is_ended(job)
            agent.pool.release(worker)
            if ended:  # inputs fetched or outputs written after the job was dropped: drop them too
                agent.store.drop_job(job)
        if not reply.ok:
            raise (RequestError(reply.error, "input") if reply.bad_input
                   else RequestError(f"{reply.error} on VM {name}", "instance"))
        assert reply.metrics is not None  # decode_run_reply: a successful run carries its metrics
        outputs: list[OutputRecord] = []
        upload_s = 0.0
        written = reply.outputs
        if req.pack and written:
            try:
                packed = pack_outputs(out_dir, [out for out, _ in written])
            except ValueError as exc:
                raise RequestError(f"{exc} (stage {stage!r})", "instance") from None
            key = f"{stage}/{index}/{packed.name}"
            agent.fetcher.remember(job, key, out_dir / packed.name, packed.size, packed.checksum)
            agent.checksums.remember_pack(job, key, packed)
            outputs.append(OutputRecord(packed.name, packed.size, packed.checksum,
                                        [(p.name, p.offset, p.length, p.checksum) for p in packed.partitions]))
        else:
            for out, size in written:
                checksum = file_checksum(out_dir / out)
                agent.fetcher.remember(job, f"{stage}/{index}/{out}", out_dir / out, size, checksum)
                outputs.append(OutputRecord(out, size, checksum))
        for output in outputs:
            key, checksum = f"{stage}/{index}/{output.name}", output.checksum
            if req.upload:
                if agent.remote is None:
                    raise RequestError("plan needs remote storage but this agent has none configured")
                try:
                    upload_s += agent.remote.upload(out_dir / output.name, f"{job}/{key}", checksum)
                except TransportError as exc:
                    # The instance ran but its output did not reach S3: run it again (the
                    # remote layer already retried with backoff).
                    raise RequestError(f"{exc} on VM {name}", "instance") from None
        metrics = dataclasses.replace(reply.metrics, cold=cold_s is not None,
                                      passing_s=sum(fetch_by_stage.values()) + upload_s)
        return RunReply(metrics=metrics, outputs=outputs, fetch_by_stage=fetch_by_stage, upload_s=upload_s,
                        cold_start_s=cold_s or 0.0)

    def get(self, req: GetRequest, conn: Connection) -> None:
        """A header, then the raw bytes via ``sendfile`` (zero-copy); answers on ``conn`` itself."""
        sock = conn.sock
        job, key = check_job(req.job), check_key(req.key)
        path = self.agent.store.path(job, key)
        record = self.agent.checksums.get(job, key)
        if not path.is_file() or path.is_symlink():
            protocol.send_frame(sock, {"ok": False, "kind": "fetch", "cause": "missing",
                                       "error": f"no object {key} on {self.config.name}"})
            return
        offset = 0
        if req.offset is not None and req.length is not None:
            # One partition of a packed object: exactly that range, with the partition's own
            # checksum as recorded when it was packed.
            offset, length = req.offset, req.length
            if offset + length > path.stat().st_size:
                protocol.send_frame(sock, {"ok": False, "kind": "fetch", "cause": "missing",
                                           "error": f"range {offset}+{length} is beyond {key} on {self.config.name}"})
                return
            known = self.agent.checksums.range_record(job, key, offset)
            size = length
            checksum = known[1] if known and known[0] == length else range_checksum(path, offset, length)
        else:
            # The size and checksum recorded when the object was made: the receiver checks the
            # bytes against them, so damage on this disk since then is caught there.
            size, checksum = (record.size, record.checksum) if record else (path.stat().st_size, file_checksum(path))
        protocol.send_frame(sock, {"ok": True, "size": size, "checksum": checksum})
        with open(path, "rb") as fh:
            if size:
                sock.sendfile(fh, offset, size)

    def put(self, req: PutRequest, conn: Connection) -> None:
        """Raw bytes follow the request; stored under a temporary name until they verify."""
        sock = conn.sock
        job, key = check_job(req.job), check_key(req.key)
        size, checksum = req.size, req.checksum
        path = self.agent.store.path(job, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".part")
        remaining = size
        with open(tmp, "wb") as fh:
            while remaining:
                chunk = sock.recv(min(remaining, 4 << 20))
                if not chunk:
                    tmp.unlink(missing_ok=True)
                    raise TransportError(f"{conn.peer} closed the connection during put of {key}")
                fh.write(chunk)
                remaining -= len(chunk)
        if file_checksum(tmp) != checksum:
            tmp.unlink(missing_ok=True)
            protocol.send_frame(sock, {"ok": False, "kind": "fetch", "error": f"put of {key}: checksum mismatch"})
            return
        tmp.rename(path)
        self.agent.fetcher.remember(job, key, path, size, checksum)
        protocol.send_frame(sock, {"ok": True})

    def fetch(self, req: FetchInputRequest, conn: Connection) -> FetchReply:
        """Make one object local by its method (data-plane benchmark and calibration)."""
        path, seconds = self.agent.fetcher.ensure_local(check_job(req.job), req.item.as_doc())
        return FetchReply(seconds=seconds, path=str(path), inode=path.stat().st_ino)

    def push(self, req: PushRequest, conn: Connection) -> SecondsReply:
        """Upload one local object to remote storage (data-plane benchmark and calibration)."""
        job, key = check_job(req.job), check_key(req.key)
        remote = self.agent.remote
        if remote is None:
            raise RequestError("this agent has no remote storage configured")
        record = self.agent.checksums.get(job, key)
        stored = self.agent.store.describe(job, key, record.checksum if record else None)
        try:
            return SecondsReply(seconds=remote.upload(stored.path, f"{job}/{key}", stored.checksum))
        except TransportError as exc:  # S3's failure, not the requester's: answer, keep the connection
            raise RequestError(str(exc), "fetch") from None

    def app_install(self, req: AppInstallRequest, conn: Connection) -> AppInstallReply:
        """Install a version of the user's app code (sonic.runtime.appcode); idle workers of
        the app's other versions are retired, as no job will ask for them again."""
        try:
            reply = appcode.handle_install(self.config.data_dir / "apps", {"digest": req.digest, "archive": req.archive},
                                           self.config.name)
        except appcode.AppCodeError as exc:
            raise RequestError(str(exc)) from None
        base = appcode.split_spec(req.app)[0]
        current = f"{base}{appcode.VERSION_SEP}{req.digest}"
        self.agent.pool.retire(lambda key: appcode.split_spec(key)[0] == base and key != current)
        return AppInstallReply(python=str(reply["python"]), installed=bool(reply.get("installed")),
                               missing=bool(reply.get("missing")))

    def coldstart(self, req: ColdstartRequest, conn: Connection) -> SecondsReply:
        """Calibration: seconds to start a fresh worker for APP (process start + imports)."""
        worker = Worker(req.app, self.config.data_dir / "workers.log",
                        self.config.worker_start_timeout_s)
        worker.stop()
        return SecondsReply(seconds=worker.start_s)


def _peer_timeouts(doc: PeerTimeouts | None) -> Timeouts:
    """Timeouts for pulling from peers, as the coordinator configured them (else the defaults)."""
    if doc is None:
        return Timeouts()
    given = {"connect_s": doc.connect_s, "control_s": doc.control_s, "transfer_idle_s": doc.transfer_idle_s}
    return Timeouts(**{k: v for k, v in given.items() if v is not None})
