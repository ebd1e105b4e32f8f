"""The emulated S3 answers 10% of all requests with ``503 SlowDown`` (as S3 does under load):
``sort`` through Remote-Storage still completes with validated output, every time.

Retries happen per request (botocore standard mode: jittered exponential backoff on
throttling and 5xx); an operation is tried again (``RemoteStore._retrying``) only for what
botocore did not retry to the end (a drained retry quota, a transfer broken half-way).
``experiments/reliability_s3.py`` measures completion and latency over more runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import botocore.retries.quota
import pytest
from reliability_helpers import all_pids, assert_gone, make_coordinator, options, s3_control

from sonic.app import load_app
from sonic.cluster.spec import ClusterSpec
from sonic.emulation.local import local_cluster
from sonic.errors import TransportError
from sonic.plan import PassingMethod, fixed_plan
from sonic.runtime.remote import RemoteSettings, RemoteStore

FAIL_RATE = 0.1
RUNS = 2


@pytest.fixture(scope="module")
def throttled_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterSpec]:
    root = tmp_path_factory.mktemp("throttled")
    with local_cluster(3, "loopback", root, options=options(s3_fail_rate=FAIL_RATE)) as spec:
        yield spec
    assert_gone(all_pids(spec))


def test_sort_completes_with_ten_percent_s3_failures(throttled_cluster: ClusterSpec, sort_input: Path) -> None:
    app = load_app("sort")
    before = s3_control(throttled_cluster, "stats")
    assert before["fail_rate"] == pytest.approx(FAIL_RATE)
    coordinator = make_coordinator(throttled_cluster)
    try:
        for _ in range(RUNS):
            result = coordinator.execute(app, "sort", sort_input,
                                         fixed_plan(app, PassingMethod.REMOTE, throttled_cluster.vm_names))
            assert result.output_ok, result.output_detail
            assert all(e.method == "remote" for e in result.edges)
    finally:
        coordinator.close()
    after = s3_control(throttled_cluster, "stats")
    injected = int(after["failed"]) - int(before["failed"])  # type: ignore[call-overload]
    requests = int(after["requests"]) - int(before["requests"])  # type: ignore[call-overload]
    assert injected > 0, "no 503 was injected: the test proves nothing"
    assert 0.02 < injected / requests < 0.3, (injected, requests)


def test_operation_retry_outlasts_a_drained_request_retry_budget(throttled_cluster: ClusterSpec,
                                                                 tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """With botocore's retry quota drained (as after a burst of throttling), botocore retries
    nothing and every 503 surfaces as an error: the operation-level retry (jittered backoff)
    alone must carry uploads and downloads."""
    monkeypatch.setattr(botocore.retries.quota.RetryQuota, "acquire", lambda self, capacity_amount: False)
    settings = RemoteSettings.for_cluster(throttled_cluster)
    store = RemoteStore(RemoteSettings(**{**settings.__dict__, "operation_attempts": 12,
                                          "backoff_base_s": 0.01, "backoff_cap_s": 0.05}))
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 50_000)
    s3_control(throttled_cluster, "faults", {"fail_rate": 0.3})
    try:
        for i in range(10):
            store.upload(blob, f"retry-test/{i}")
            store.download(f"retry-test/{i}", tmp_path / f"copy-{i}", size=blob.stat().st_size)
        assert store.delete_prefix("retry-test/") == 10
    finally:
        s3_control(throttled_cluster, "faults", {"fail_rate": FAIL_RATE})


def test_attempts_do_not_multiply(throttled_cluster: ClusterSpec, tmp_path: Path) -> None:
    """A request botocore already tried max_attempts times is not tried again by the operation
    layer: an S3 that always answers 503 sees one request and max_attempts retries for one upload."""
    settings = RemoteSettings.for_cluster(throttled_cluster)
    store = RemoteStore(RemoteSettings(**{**settings.__dict__, "max_attempts": 3, "operation_attempts": 4,
                                          "backoff_base_s": 0.01, "backoff_cap_s": 0.05}))
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 50_000)
    s3_control(throttled_cluster, "faults", {"fail_rate": 1.0})
    try:
        before = s3_control(throttled_cluster, "stats")
        with pytest.raises(TransportError):
            store.upload(blob, "never/stored")
        after = s3_control(throttled_cluster, "stats")
    finally:
        s3_control(throttled_cluster, "faults", {"fail_rate": FAIL_RATE})
    assert int(after["requests"]) - int(before["requests"]) == 1 + 3  # type: ignore[call-overload]


def test_best_effort_cleanup_tries_each_request_once_when_the_store_is_gone() -> None:
    """After a job, its scratch objects are deleted best-effort: with the S3 server gone (a
    Ctrl-C stops it with the run) the retrying client held `sonic run` in backoff for minutes."""
    import socket

    with socket.socket() as sock:  # a loopback port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    store = RemoteStore(RemoteSettings("scratch", endpoint_url=f"http://127.0.0.1:{port}",
                                       access_key="k", secret_key="s", connect_timeout_s=1.0))
    sent: list[str] = []
    store._once.meta.events.register("before-send.s3", lambda request, **_: sent.append(request.url))
    with pytest.raises(TransportError, match="cleaning job-1/"):
        store.delete_prefix("job-1/", best_effort=True)
    assert len(sent) == 1
