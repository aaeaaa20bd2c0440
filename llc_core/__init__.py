"""llc_core: estimate the local learning coefficient λ(w*) of a model with batched SGLD chains.

No Streamlit here: the app, the CLI and user code all go through this API.
"""

from .config import DataConfig, ModelConfig, RunConfig, SamplerConfig
from .errors import LLCInputError
from .estimator import available_devices, default_nbeta, estimate_llc, resolve_device
from .result import RunResult, Snapshot, Verdict
from .runner import run
from .zoo import Problem, build_problem

__all__ = [
    "DataConfig", "LLCInputError", "ModelConfig", "Problem", "RunConfig", "RunResult", "SamplerConfig",
    "Snapshot", "Verdict", "available_devices", "build_problem", "default_nbeta", "estimate_llc",
    "resolve_device", "run",
]
