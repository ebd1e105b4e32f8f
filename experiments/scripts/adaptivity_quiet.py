"""Issue 10 check on a quiet machine: the adaptivity experiment on the four example apps at
8 MB, 30 rounds (~27 min). Results in OUT/results, figures in OUT/figures; the committed copy is
``experiments/results/adaptivity_quiet/``.

    python experiments/scripts/adaptivity_quiet.py [OUT]     # default /tmp/sonic-adaptivity-quiet
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from experiments import adaptivity, common  # noqa: E402

common.set_output(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sonic-adaptivity-quiet"))
MB = common.MB
cfg = {"sizes": {"examples.topk:app": [8 * MB], "examples.starjoin:app": [8 * MB], "examples.skewed:app": [8 * MB],
                 "examples.forkjoin:app": [8 * MB]},
       "rounds": 30, "budget_s": 35 * 60}
print(adaptivity.run(cfg=cfg), flush=True)
