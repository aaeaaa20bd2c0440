"""llc_core: estimate the local learning coefficient λ(w*) of a model with batched SGLD chains.

No Streamlit here: the app, the CLI and user code all go through this API.
"""

from llc_core.config import DataConfig, ModelConfig, RunConfig, SamplerConfig
from llc_core.errors import LLCInputError
from llc_core.estimator import available_devices, default_nbeta, estimate_llc, resolve_device
from llc_core.result import RunResult, Snapshot, Verdict
from llc_core.problem import Problem, Theory
from llc_core.runner import build_problem, run

__all__ = [
    "DataConfig", "LLCInputError", "ModelConfig", "Problem", "RunConfig", "RunResult", "SamplerConfig",
    "Snapshot", "Theory", "Verdict", "available_devices", "build_problem", "default_nbeta", "estimate_llc",
    "resolve_device", "run",
]
