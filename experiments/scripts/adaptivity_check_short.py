"""Short issue-10 check: skewed and topk at 8 MB, up to 10 rounds in a 9-minute budget.

    python experiments/scripts/adaptivity_check_short.py [OUT]
"""
import sys
from pathlib import Path
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from experiments import adaptivity, common
common.set_output(Path(sys.argv[1] if len(sys.argv) > 1 else "/tmp/sonic-adaptivity-short"))
MB = common.MB
cfg = {"sizes": {"examples.skewed:app": [8 * MB], "examples.topk:app": [8 * MB]}, "rounds": 10, "budget_s": 9 * 60}
print(adaptivity.run(cfg=cfg), flush=True)
