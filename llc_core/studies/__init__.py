"""studies: many runs answering one question.

`sweep` (a grid of ε × γ × nβ and a recommended cell), `validate` (suites of known-λ models scored
against their truth), `trajectory` (λ̂ of every checkpoint of a training run) and `experiments`
(the paper's rescaling-invariance and SGLD-vs-MALA experiments), `refined` (the refined LLC of every
group of a partition: per layer, per attention head; and the data-refined LLC of every data subset).
"""

from llc_core.studies.refined import GroupLLC, RefinedResult, data_subsets, partition, run_groups
from llc_core.studies.sweep import SweepConfig, SweepResult, run_sweep
from llc_core.studies.trajectory import (StageHints, TrainingConfig, TrajectoryConfig, TrajectoryProgress, TrajectoryRun,
                                         run_trajectory, stage_hints, step_from_name)

__all__ = ["GroupLLC", "RefinedResult", "StageHints", "SweepConfig", "SweepResult", "TrainingConfig", "TrajectoryConfig", "TrajectoryProgress", "TrajectoryRun",
           "data_subsets", "partition", "run_groups", "run_sweep", "run_trajectory", "stage_hints",
           "step_from_name"]
