"""Child of :class:`profiler.cold.ColdReferenceExecutor`: run one instance, print one JSON line.

Reads the request (app spec, instance spec, paths) on stdin. Exit code 1 with
``{"error": ...}`` on failure so the parent can name the stage and input size.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sonic.app import load_app
from sonic.execution import format_failure, one_core_per_instance, run_instance
from sonic.routing import InstanceSpec, ObjectRef


def main() -> int:
    request = json.loads(sys.stdin.read())
    raw = request["spec"]
    spec = InstanceSpec(raw["stage"], raw["index"], raw["num_instances"], raw["key"],
                        tuple(ObjectRef(**ref) for ref in raw["inputs"]))
    try:
        app = load_app(request["app"])
        with one_core_per_instance():
            outcome = run_instance(app, spec, [Path(p) for p in request["inputs"]],
                                   Path(request["out_dir"]), Path(request["scratch"]), cold=True)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises
        print(json.dumps({"error": format_failure(spec, exc)}))
        return 1
    print(json.dumps({"metrics": outcome.metrics.__dict__, "outputs": outcome.outputs}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
