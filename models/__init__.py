"""Parameter models: per stage, input size (and features) -> memory, time, output bytes,
fanout; form chosen by leave-larger-sizes-out CV; predictions with an upper bound."""

from models.app_model import METRICS, AppModel
from models.evaluation import HoldoutScore, holdout_score
from models.forms import ConstantForm, IsotonicForm, LinearForm, PowerLawForm, QuadraticForm
from models.metric import MetricModel
from models.persist import CorruptModelError
from models.refit import LearnOutcome, learn, refit
from sonic.errors import NotFittedError

__all__ = [
    "METRICS", "AppModel", "ConstantForm", "CorruptModelError", "HoldoutScore", "IsotonicForm", "LinearForm",
    "LearnOutcome", "MetricModel", "NotFittedError", "PowerLawForm", "QuadraticForm", "holdout_score", "learn",
    "refit",
]
