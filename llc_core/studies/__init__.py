"""studies: many runs answering one question.

`sweep` (a grid of ε × γ × nβ and a recommended cell), `validate` (suites of known-λ models scored
against their truth), `trajectory` (λ̂ of every checkpoint of a training run) and `experiments`
(the paper's rescaling-invariance and SGLD-vs-MALA experiments).
"""

from llc_core.studies.sweep import SweepConfig, SweepResult, run_sweep
from llc_core.studies.trajectory import (TrainingConfig, TrajectoryConfig, TrajectoryProgress, TrajectoryRun,
                                         run_trajectory, step_from_name)

__all__ = ["SweepConfig", "SweepResult", "TrainingConfig", "TrajectoryConfig", "TrajectoryProgress", "TrajectoryRun",
           "run_sweep", "run_trajectory", "step_from_name"]
