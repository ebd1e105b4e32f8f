"""A VM whose scratch/object directory is full: its instances fail with ENOSPC (writing
outputs, or storing a fetched input) and are retried on other VMs; the job completes with
validated output. With every VM full, completion is impossible: the job fails with one
precise line (stage, instance, VM, "No space left on device") and leaves nothing behind.

As root the directory is covered by a tiny tmpfs (a real ENOSPC); otherwise it is made
read-only for its owner (EACCES), which exercises the same paths.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
from reliability_helpers import make_coordinator

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.errors import ExecutionError
from sonic.plan import PassingMethod, fixed_plan

TINY_TMPFS = "size=256k"


@contextmanager
def full_disk(directory: Path) -> Iterator[str]:
    """Make writes under ``directory`` fail; yield the errno text to expect."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        subprocess.run(["mount", "-t", "tmpfs", "-o", TINY_TMPFS, "tmpfs", str(directory)], check=True)
        try:
            yield "No space left on device"
        finally:
            subprocess.run(["umount", str(directory)], check=True)
    else:
        mode = directory.stat().st_mode
        directory.chmod(0o500)
        try:
            yield "Permission denied"
        finally:
            directory.chmod(mode)


def objects_dir(spec: ClusterSpec, vm: str) -> Path:
    return Path(spec.vm(vm).data_dir) / "objects"


def test_full_vm_disk_moves_work_elsewhere(shared_cluster: ClusterSpec, sort_input: Path) -> None:
    app = load_app("sort")
    plan = fixed_plan(app, PassingMethod.DIRECT, shared_cluster.vm_names)
    plan.stages["split"].placement = {"vm1": 1}   # the first instance goes straight to the full VM
    coordinator = make_coordinator(shared_cluster)
    try:
        with full_disk(objects_dir(shared_cluster, "vm1")):
            result = coordinator.execute(app, "sort", sort_input, plan)
    finally:
        coordinator.close()
    assert result.output_ok, result.output_detail
    assert all(m.vm != "vm1" for m in result.instances), "nothing can complete on the full VM"
    split = [m for m in result.instances if m.stage == "split"]
    assert split[0].attempt == 2, "split failed once on vm1, then ran elsewhere"


def test_every_disk_full_fails_cleanly(shared_cluster: ClusterSpec, sort_input: Path) -> None:
    app = load_app("sort")
    coordinator = make_coordinator(shared_cluster)
    try:
        with ExitStack() as stack:
            reasons = {stack.enter_context(full_disk(objects_dir(shared_cluster, vm))) for vm in shared_cluster.vm_names}
            with pytest.raises(ExecutionError) as info:
                coordinator.execute(app, "sort", sort_input,
                                    fixed_plan(app, PassingMethod.DIRECT, shared_cluster.vm_names))
            for vm in shared_cluster.vm_names:   # nothing of the failed job is left on any VM
                assert not any(objects_dir(shared_cluster, vm).iterdir())
    finally:
        coordinator.close()
    message = str(info.value)
    print(message)
    assert "\n" not in message
    assert "stage 'split' instance 0 failed 3 times, last on VM vm" in message
    assert reasons.pop() in message
