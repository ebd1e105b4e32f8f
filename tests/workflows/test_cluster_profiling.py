"""--cluster: the profiler drives the distributed runtime through an Executor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from profiler import ProfileStore, profile_app
from profiler.synthetic import CHAIN, chain_behaviour, simulate_run
from sonic.app import App
from sonic.metrics import RunResult
from sonic.workflows.cluster_profiling import ClusterExecutor


class FakeCoordinator:
    def __init__(self) -> None:
        self.plans: list[str] = []
        self.closed = False

    def execute(self, app: App, app_spec: str, input_path: Path, plan: Any) -> RunResult:
        self.plans.append(plan)
        result = simulate_run(app, chain_behaviour(), input_path.stat().st_size)
        result.strategy = "remote"
        return result

    def close(self) -> None:
        self.closed = True


def test_cluster_runs_are_planned_remote_and_stored_as_cluster(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    coordinator = FakeCoordinator()
    strategies: list[str] = []

    def plan_for(app: App, input_bytes: int, cluster: object, *, strategy: str, root: Path) -> tuple[str, None]:
        strategies.append(strategy)
        return f"plan-{input_bytes}", None

    monkeypatch.setattr("sonic.workflows.cluster_profiling.load_cluster", lambda path: object())
    monkeypatch.setattr("sonic.workflows.cluster_profiling.open_coordinator", lambda cluster: coordinator)
    monkeypatch.setattr("sonic.workflows.cluster_profiling.plan_for", plan_for)
    store = ProfileStore(tmp_path)
    with ClusterExecutor(tmp_path / "cluster.yaml", "profiler.synthetic:CHAIN", tmp_path) as executor:
        profile_app(CHAIN, [64_000, 128_000], 1, store=store, executor_factory=executor)
    assert strategies == ["remote", "remote"] and coordinator.plans == ["plan-64000", "plan-128000"]
    assert coordinator.closed
    assert (store.load("chain")["source"] == "cluster").all()
