"""The dispatch cycle that calibration charges per instance, measured through a real job."""

from __future__ import annotations

from pathlib import Path

from sonic.emulation.local import HarnessOptions, local_cluster
from sonic.runtime.bench import invocation_overhead
from sonic.runtime.client import AgentClient
from sonic.runtime.dispatch_cycle import dispatch_gap_s
from sonic.runtime.protocol import read_secret


def test_a_job_pays_at_least_the_bare_round_trip_per_instance(tmp_path: Path) -> None:
    with local_cluster(1, "loopback", tmp_path, cores_per_vm=1, options=HarnessOptions(ssh_config_path=None)) as spec:
        assert spec.secret_file
        secret = read_secret(spec.secret_file)
        vm = spec.vms[0]
        client = AgentClient(vm.host, vm.agent_port, secret, vm.name)
        try:
            bare_s = invocation_overhead(client, 20)["median_ms"] / 1000
        finally:
            client.close()
        gap_s = dispatch_gap_s(spec, secret, instances_per_slot=8)
    # The job's cycle contains the bare request/reply and then the coordinator's own work.
    assert bare_s * 0.8 <= gap_s < 1.0
