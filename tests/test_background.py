"""BackgroundRun: a worker process (or thread) that a UI polls, stops, or abandons."""

import os
import signal
import sys
import time

import numpy as np
import pytest
import torch

from llc_core import LLCInputError, RunConfig
from llc_core.execution.background import MAX_HISTORY_ROWS, BackgroundRun, worker_threads

WORKERS = ["process", "thread"]


def config(steps):
    return RunConfig.from_dict({"model": {"kind": "potential", "powers": [2]}, "data": {"n": 1000},
                                "sampler": {"step_size": 2e-3, "steps": steps, "chains": 2, "batch_size": 100}})


def wait(job, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        progress = job.poll()
        if progress.finished:
            return progress
        time.sleep(0.05)
    raise AssertionError("run did not finish")


def wait_for_step(job, step, timeout=120):
    deadline = time.monotonic() + timeout
    while (p := job.poll()).latest is None or p.latest.step < step:
        assert time.monotonic() < deadline and not p.finished, p.error
        time.sleep(0.05)


# Run functions for a worker process must be picklable: module-level, found by name in the child.


def broken(config, **_):
    raise RuntimeError("boom")


def refuses(config, **_):
    raise LLCInputError("nope, change X")


def reports_where_it_runs(config, **_):
    raise LLCInputError(f"pid {os.getpid()}, torch threads {torch.get_num_threads()}, "
                        f"streamlit imported {'streamlit' in sys.modules}")


def sleeps(config, **_):
    time.sleep(600)


@pytest.mark.parametrize("worker", WORKERS)
def test_run_to_completion_with_history(worker):
    job = BackgroundRun(config(400), worker=worker).start()
    assert job.worker == worker
    progress = wait(job)
    assert progress.status == "done" and progress.error is None
    assert progress.result.steps_completed == 400
    assert len(progress.history_step) == 20 and progress.history_loss.shape == (20, 2)
    np.testing.assert_allclose(progress.history_step, np.arange(20, 401, 20))
    np.testing.assert_allclose(progress.history_llc[-1], progress.result.llc_per_chain)
    assert progress.latest.step == 400
    job.join(30)
    assert not job.alive


@pytest.mark.parametrize("worker", WORKERS)
def test_stop_keeps_a_partial_result(worker):
    job = BackgroundRun(config(1_000_000), worker=worker).start()
    wait_for_step(job, 300)
    job.request_stop()
    progress = wait(job)
    assert progress.status == "stopped" and progress.result.partial
    assert 300 <= progress.result.steps_completed < 1_000_000


@pytest.mark.parametrize("worker", WORKERS)
def test_abandoned_run_stops_itself(worker):
    job = BackgroundRun(config(1_000_000), abandon_after=0.5, worker=worker).start()
    job.poll()
    job.join(timeout=60)  # join does not count as a poll until the worker has ended
    assert not job.alive
    assert job.poll().status == "stopped"


@pytest.mark.parametrize("worker", WORKERS)
def test_bad_input_and_internal_errors_become_messages(worker):
    bad = config(100)
    bad.sampler.chains = 0
    progress = wait(BackgroundRun(bad, worker=worker).start())
    assert progress.status == "failed" and "chains" in progress.error

    progress = wait(BackgroundRun(config(10), run_fn=broken, worker=worker).start())
    assert progress.status == "failed" and "boom" in progress.error and "internal error" in progress.error

    assert wait(BackgroundRun(config(10), run_fn=refuses, worker=worker).start()).error == "nope, change X"


def test_the_process_worker_runs_elsewhere_with_its_own_torch_threads_and_no_streamlit():
    job = BackgroundRun(config(10), run_fn=reports_where_it_runs, threads=3).start()
    assert job.worker == "process" and job.pid != os.getpid()
    assert wait(job).error == f"pid {job.pid}, torch threads 3, streamlit imported False"


def test_worker_threads_leave_a_core_unless_omp_num_threads_is_set(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [worker_threads(n) for n in (1, 2, 8)] == [1, 1, 7]
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert worker_threads(2) == 2


def test_a_killed_worker_process_fails_quickly_with_a_message():
    job = BackgroundRun(config(10), run_fn=sleeps).start()
    time.sleep(0.5)
    os.kill(job.pid, signal.SIGKILL)
    progress = wait(job, timeout=15)
    assert progress.status == "failed" and "SIGKILL" in progress.error and "unexpectedly" in progress.error
    job.join(15)
    assert not job.alive


def test_run_functions_that_cannot_be_pickled_run_in_a_thread(monkeypatch):
    job = BackgroundRun(config(10), run_fn=lambda config, **_: broken(config)).start()
    assert job.worker == "thread" and job.pid is None
    assert "boom" in wait(job).error
    monkeypatch.setenv("LLC_WORKER", "thread")
    assert BackgroundRun(config(10)).worker == "thread"
    monkeypatch.setenv("LLC_WORKER", "threads")
    with pytest.raises(ValueError, match="LLC_WORKER"):
        BackgroundRun(config(10))


def test_history_is_thinned_to_a_bounded_size():
    many = config(1500)
    many.sampler.snapshot_every = 1
    progress = wait(BackgroundRun(many).start(), timeout=300)
    assert len(progress.history_step) <= MAX_HISTORY_ROWS
    assert progress.history_step[-1] == 1500
    assert np.all(np.diff(progress.history_step) > 0)
    np.testing.assert_allclose(progress.history_llc[-1], progress.result.llc_per_chain)
