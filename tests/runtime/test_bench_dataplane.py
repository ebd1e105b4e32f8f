"""``sonic bench dataplane`` on a real loopback cluster: its table reaches stdout without a
terminal, and the S3 capacity row stands next to its local-file yardstick."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from sonic.emulation.local import HarnessOptions, local_cluster


def test_bench_dataplane_table_to_redirected_stdout(
    tmp_path: Path, sonic_cli: Callable[..., CompletedProcess[str]]
) -> None:
    with local_cluster(2, "loopback", tmp_path, options=HarnessOptions(ssh_config_path=None)):
        # capture_output: stdout and stderr are pipes, as with `sonic bench dataplane > out.txt`.
        proc = sonic_cli("bench", "dataplane", "--object-sizes", "1MB", "--cluster", tmp_path / "cluster.yaml",
                         timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert any(line.lstrip().startswith("1MB") for line in lines), proc.stdout
    assert "warm invocation overhead" in proc.stdout
    capacity = [line for line in lines if line.strip().startswith(("S3 (boto3)", "yardstick: local files"))]
    assert len(capacity) == 2, proc.stdout
    for line in capacity:
        put = float(line.split("put")[1].split()[0])
        get = float(line.split("get")[1].split()[0])
        assert put > 0 and get > 0, line
    assert "S3 / yardstick" in proc.stdout
