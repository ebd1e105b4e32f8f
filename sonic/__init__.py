"""Sonic: per-edge choice of data passing for chained serverless analytics on VM pools."""

from sonic.app import App, Context, Edge, Parallelism, Pattern, Stage, Validation, load_app
from sonic.errors import SonicError

__version__ = "0.1.0"

__all__ = ["App", "Context", "Edge", "Parallelism", "Pattern", "Stage", "Validation", "SonicError", "load_app", "__version__"]
