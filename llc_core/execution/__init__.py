"""execution: where long work runs while a user interface polls it, and where a study's runs go.

`background` (one estimate in a worker process or thread, streaming snapshots) and `jobs` (a worker
thread for sweeps, validation suites and comparisons). No Streamlit here: the app only polls.
`units` (a study's independent runs, their results directory and resuming), `ray_backend` (those runs
as Ray tasks or actors, imported only when asked for: Ray itself is imported only when a study runs on
it) and `chain_groups` (one estimate's chains split into groups, run apart and merged).
"""

from llc_core.execution.background import BackgroundRun, Progress, worker_limit, worker_threads
from llc_core.execution.chain_groups import SplitRun, run_chain_groups
from llc_core.execution.jobs import Job
from llc_core.execution.ray_backend import INSTALL_HINT, address_problem
from llc_core.execution.units import Journal, where_ran

__all__ = ["INSTALL_HINT", "BackgroundRun", "Job", "Journal", "Progress", "SplitRun", "address_problem",
           "run_chain_groups", "where_ran", "worker_limit", "worker_threads"]
