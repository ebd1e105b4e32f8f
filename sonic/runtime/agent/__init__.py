"""The agent: one per VM. Runs stage instances in warm workers, stores and serves objects.

Modules, one job each (imports point down this list, never up):

- :mod:`.main` (and ``__main__``): the command line, ``python -m sonic.runtime.agent ...``;
- :mod:`.server`: connections, authentication, the op table (built once) and dispatch;
- :mod:`.ops`: the control and data ops; :mod:`.bench_ops`: the three benchmark ops;
- :mod:`.state`: the agent's state (store, pool, fetch cache, jobs' leases and cancellation);
- :mod:`.fetch`: the fetch cache, an input made local by its passing method and verified;
- :mod:`.pool`: warm worker processes and their pool;
- :mod:`.request`, :mod:`.config`: the failed-request error and the connection a request came
  on; the settings (the requests themselves are typed in :mod:`sonic.runtime.messages`).

Every connection must pass the HMAC handshake of :mod:`sonic.runtime.protocol` before a
single request is read.

Requests (msgpack maps, ``op`` selects):

- ``ping``: version, name, slots, pid, worker pids (the coordinator's heartbeat).
- ``warm {app}``: start the app's workers now (imports done once, ahead of the first run).
- ``run {job, app, stage, index, num_instances, key, inputs[], upload, [timeout_s],
  [peer_timeouts], [partitions]}``: fetch inputs by their method (``local``: already on this VM, read in
  place; ``direct``: pull from the producer's agent; ``remote``: download from S3), verifying
  every one against its checksum, run in a warm worker writing straight into the object store
  (killed after ``timeout_s``), checksum outputs, upload them to S3 if asked. An input that
  cannot be had fails the run with ``kind: fetch`` and says why (``cause``: corrupt, missing,
  unreachable, local), which object (``input``) and from where (``source``). With ``pack``
  true the instance's outputs are stored as one packed object (``_packed`` + index; see
  ``objects.pack_outputs``) and its reply lists it with ``partitions [[name, offset, length,
  checksum]]``; an input item with ``pack``/``offset`` is one partition of such an object,
  fetched by range (local: copied out of the pack in the kernel; direct: ranged ``get``;
  remote: ranged GET) and verified against the partition's checksum.
- ``get {job, key, [offset, length]}``: header then the raw bytes via ``sendfile`` (zero-copy);
  with ``offset``/``length`` only that range (one partition of a packed output, with its own
  checksum in the header).
- ``put {job, key, size, checksum}`` + raw bytes: store an object.
- ``drop {job}``: delete the job's objects.

Run as ``python -m sonic.runtime.agent --name vm0 --bind 127.0.0.1 --port 0 --data-dir DIR
--secret-file FILE --slots 2 [--s3-endpoint URL --s3-bucket B --s3-region R]``; it writes
``DIR/agent.json`` (name, pid, host, port, version, started) once it listens. It binds the
cluster interface given by ``--bind`` and refuses a wildcard address (0.0.0.0, ::) unless
``--allow-any-interface`` says so explicitly.
"""

from sonic.runtime.agent.config import AgentConfig
from sonic.runtime.agent.fetch import Fetcher
from sonic.runtime.agent.main import check_bind, main, parse_args
from sonic.runtime.agent.pool import Worker, WorkerPool
from sonic.runtime.agent.request import RequestError
from sonic.runtime.agent.server import Dispatcher, serve
from sonic.runtime.agent.state import Agent

__all__ = ["Agent", "AgentConfig", "Dispatcher", "Fetcher", "RequestError", "Worker", "WorkerPool", "check_bind",
           "main", "parse_args", "serve"]
