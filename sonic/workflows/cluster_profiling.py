"""Profile on a cluster: an :data:`profiler.sweep.Executor` backed by the distributed runtime.

Every run is planned with the ``remote`` strategy (all edges through remote storage): it
needs no prediction, so it works before any model exists, and it measures each stage's
compute without co-location effects. Measurements are stored with ``source="cluster"``.
"""

from __future__ import annotations

from pathlib import Path
from types import TracebackType

from sonic.app import App
from sonic.cluster.spec import load_cluster
from sonic.metrics import RunResult
from sonic.reference import input_refs
from sonic.workflows.planning import plan_for
from sonic.workflows.session import open_coordinator


class ClusterExecutor:
    """Runs the app on the cluster of ``cluster_path``; use as a context manager."""

    def __init__(self, cluster_path: Path, app_spec: str, root: Path) -> None:
        self.cluster = load_cluster(cluster_path)
        self.app_spec = app_spec
        self.root = Path(root)
        self.coordinator = open_coordinator(self.cluster)

    def __call__(self, app: App, input_path: Path) -> RunResult:
        refs, _ = input_refs(Path(input_path))
        plan, _ = plan_for(app, sum(r.size for r in refs), self.cluster, strategy="remote", root=self.root)
        return self.coordinator.execute(app, self.app_spec, Path(input_path), plan)

    def close(self) -> None:
        self.coordinator.close()

    def __enter__(self) -> ClusterExecutor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
