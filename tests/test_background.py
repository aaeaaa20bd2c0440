"""BackgroundRun: a worker thread that a UI polls, stops, or abandons."""

import time

import numpy as np

from llc_core import LLCInputError, RunConfig
from llc_core.background import MAX_HISTORY_ROWS, BackgroundRun


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


def test_run_to_completion_with_history():
    job = BackgroundRun(config(400)).start()
    progress = wait(job)
    assert progress.status == "done" and progress.error is None
    assert progress.result.steps_completed == 400
    assert len(progress.history_step) == 20 and progress.history_loss.shape == (20, 2)
    np.testing.assert_allclose(progress.history_llc[-1], progress.result.llc_per_chain)


def test_stop_keeps_a_partial_result():
    job = BackgroundRun(config(1_000_000)).start()
    while (p := job.poll()).latest is None or p.latest.step < 300:
        time.sleep(0.05)
    job.request_stop()
    progress = wait(job)
    assert progress.status == "stopped" and progress.result.partial
    assert 300 <= progress.result.steps_completed < 1_000_000


def test_abandoned_run_stops_itself():
    job = BackgroundRun(config(1_000_000), abandon_after=0.5).start()
    job.poll()
    job.join(timeout=60)  # join does not count as a poll until the thread has ended
    assert not job.alive
    assert job.poll().status == "stopped"


def test_bad_input_and_internal_errors_become_messages():
    bad = config(100)
    bad.sampler.chains = 0
    progress = wait(BackgroundRun(bad).start())
    assert progress.status == "failed" and "chains" in progress.error

    def broken(config, **_):
        raise RuntimeError("boom")

    progress = wait(BackgroundRun(config(10), run_fn=broken).start())
    assert progress.status == "failed" and "boom" in progress.error and "internal error" in progress.error

    def refuses(config, **_):
        raise LLCInputError("nope, change X")

    assert wait(BackgroundRun(config(10), run_fn=refuses).start()).error == "nope, change X"


def test_history_is_thinned_to_a_bounded_size():
    many = config(1500)
    many.sampler.snapshot_every = 1
    progress = wait(BackgroundRun(many).start(), timeout=300)
    assert len(progress.history_step) <= MAX_HISTORY_ROWS
    assert progress.history_step[-1] == 1500
    assert np.all(np.diff(progress.history_step) > 0)
