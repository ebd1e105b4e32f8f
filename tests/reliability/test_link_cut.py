"""Cut a VM's link (``ip link set eth0 down`` inside its namespace) while another VM is pulling
objects from it: the transfers stall (no reset, packets just vanish), the heartbeat declares
the VM lost, the stalled fetches time out, the objects that lived only there are
regenerated elsewhere, and the job completes with validated output. Root only (netns mode).

The cut is placed by the coordinator's event observer (first ``map`` done), and the plan makes
sure consumers still need the cut VM's objects at that point: no timing is guessed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from reliability_helpers import all_pids, assert_gone, make_coordinator, options

from sonic.app import load_app
from sonic.emulation.local import local_cluster
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.scheduler import Event, InstanceFinished, VMLost

pytestmark = pytest.mark.root


def netns_unusable() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if not Path("/usr/sbin/sshd").exists():
        return "needs openssh-server"
    from sonic.emulation.netns import netns_unusable_reason

    return netns_unusable_reason()


@pytest.mark.skipif(netns_unusable() is not None, reason=str(netns_unusable()))
def test_cut_link_mid_transfer(tmp_path: Path, sort_input: Path) -> None:
    app = load_app("sort")
    cut: list[str] = []
    lost: list[VMLost] = []
    # 100 Mbit/s links: a 4 MB chunk takes ~0.3 s to cross, so pulls are in flight when we cut.
    with local_cluster(3, "netns", tmp_path / "cluster", options=options(), vm_mbps=100.0) as spec:
        plan = fixed_plan(app, PassingMethod.DIRECT, spec.vm_names)
        # Every chunk lives on vm1 and is pulled by mappers on vm0, two at a time (2 slots), so
        # when the first mapper is done, the next ones have yet to pull (or are pulling) from vm1.
        plan.stages["split"].placement = {"vm1": 1}
        plan.stages["map"].placement = {"vm0": 1}

        def observer(event: Event) -> None:
            if isinstance(event, VMLost):
                lost.append(event)
            if not cut and isinstance(event, InstanceFinished) and event.stage == "map":
                netns = spec.vm("vm1").netns
                assert netns and netns.startswith("sonic-")   # only a namespace our harness made
                subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "eth0", "down"], check=True)
                cut.append("vm1")

        coordinator = make_coordinator(spec, observer=observer)
        try:
            result = coordinator.execute(app, "sort", sort_input, plan)
        finally:
            coordinator.close()
        pids = all_pids(spec)
    assert_gone(pids)
    assert cut == ["vm1"]
    assert result.output_ok, result.output_detail
    assert [e.vm for e in lost][:1] == ["vm1"]
    splits = [m for m in result.instances if m.stage == "split"]
    assert len(splits) == 2 and splits[1].vm != "vm1", "split's chunks were regenerated on a reachable VM"
