"""execution: where long work runs while a user interface polls it.

`background` (one estimate in a worker process or thread, streaming snapshots) and `jobs` (a worker
thread for sweeps, validation suites and comparisons). No Streamlit here: the app only polls.
"""

from llc_core.execution.background import BackgroundRun, Progress, worker_limit, worker_threads
from llc_core.execution.jobs import Job

__all__ = ["BackgroundRun", "Job", "Progress", "worker_limit", "worker_threads"]
