"""Job leases: the coordinator renews its job on every agent; an agent drops a job whose lease ran out.

A coordinator that dies (kill -9, lost machine, partition) stops renewing. Each agent then
expires the job on its own after ``ttl_s``: it kills the job's running instances and deletes
its objects, local and in S3 (see ``Agent.end_job``). Renewals go every ``ttl_s / 3`` on
connections of their own with short deadlines, so one slow agent delays nobody, and two
renewals may fail in a row before a healthy job is at risk. A renewal the agent refuses
because it already ended the job (its lease expired during a partition) is reported through
``on_ended``: that VM lost the job's objects and must be treated as lost for this job.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from sonic.errors import SonicError
from sonic.runtime.client import AgentClient, RemoteCallError, Timeouts
from sonic.runtime.heartbeat import Target
from sonic.runtime.transport import Transport

log = logging.getLogger("sonic.lease")


class LeaseKeeper:
    """Renews ``job`` on every target from one thread until :meth:`stop`."""

    def __init__(self, job: str, targets: Mapping[str, Target], secret: bytes, ttl_s: float,
                 on_ended: Callable[[str, str], None], transport: Transport | None = None) -> None:
        self.job = job
        self.ttl_s = ttl_s
        self.on_ended = on_ended
        deadline = max(0.5, min(5.0, ttl_s / 3))
        self._clients = {name: AgentClient(t.host, t.port, secret, name,
                                           Timeouts(connect_s=deadline, control_s=deadline),
                                           transport.session() if transport is not None else None)
                         for name, t in targets.items()}
        self._ended: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"sonic-lease-{job}", daemon=True)

    @property
    def ended(self) -> set[str]:
        """VMs that refused a renewal because they had already ended the job."""
        return set(self._ended)

    def start(self) -> LeaseKeeper:
        self.renew_all()
        self._thread.start()
        return self

    def renew_all(self) -> None:
        for name, client in self._clients.items():
            if name in self._ended:
                continue
            try:
                client.lease(self.job, self.ttl_s)
            except RemoteCallError as exc:
                if exc.kind == "cancelled":
                    self._ended.add(name)
                    self.on_ended(name, f"the agent already ended job {self.job}: {exc}")
                else:
                    log.warning("lease renewal of %s on %s refused: %s", self.job, name, exc)
            except SonicError as exc:  # unreachable now: the heartbeat decides whether it is lost
                log.warning("lease renewal of %s on %s failed: %s", self.job, name, exc)

    def _loop(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew_all()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.ttl_s)
        for client in self._clients.values():
            client.close()
