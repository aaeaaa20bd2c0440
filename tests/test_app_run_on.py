"""The "Run on" setting (pages/run_on.py) under streamlit's AppTest, on the pages that run studies: this
machine by default, with no Ray imported; a Ray cluster's address checked at once with one message (a
malformed address, Ray not installed) and nothing started. A study on Ray from a page: tests/test_ray.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from apptest_helpers import run_until, shown
from streamlit.testing.v1 import AppTest

from llc_core.execution import ray_backend

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


def open_page(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page(page).run()
    assert not at.exception, at.exception
    return at


def errors(at: AppTest) -> list[str]:
    return [shown(e.value) for e in at.error]


def test_this_machine_is_the_default_and_a_suite_runs_without_ray(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # any `import ray` now fails: a study here must not try one
    at = open_page("pages/validate.py")
    assert at.radio(key="validate.run_on").value == "here" and not at.text_input
    at.selectbox(key="validate.suite").set_value("smoke")
    at.number_input(key="validate.cases").set_value(1)
    at.button[0].click().run()
    run_until(at, lambda at: any(m.value.startswith("**Summary**") for m in at.markdown), timeout=120)
    assert not at.error and not any("Ray" in c.value for c in at.caption)


@pytest.mark.parametrize("page, prefix", [("pages/validate.py", "validate"), ("pages/calibrate.py", "cal.sweep")])
def test_a_malformed_address_is_one_message_and_starts_nothing(page, prefix):
    at = open_page(page)
    at.radio(key=f"{prefix}.run_on").set_value("ray").run()
    assert at.text_input(key=f"{prefix}.ray_address").value == "auto" and not at.error
    at.text_input(key=f"{prefix}.ray_address").set_value("head.example.org").run()
    assert errors(at) == ["Ray address 'head.example.org': give auto, local or a Ray head's host:port, e.g. 10.0.0.1:6379"]
    [run] = [b for b in at.button if b.label in ("Run suite", "Run sweep")]
    run.click().run()
    assert not at.exception and len(at.error) == 1  # the one message; nothing started
    assert ("validate.run" if prefix == "validate" else "cal.sweep_job") not in at.session_state


def test_ray_not_installed_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(ray_backend, "ray_installed", lambda: False)
    at = open_page("pages/validate.py")
    at.radio(key="validate.run_on").set_value("ray").run()
    assert errors(at) == ["Ray is not installed here: install it with `pip install -r requirements-ray.txt`"]
    at.button[0].click().run()
    assert "validate.run" not in at.session_state


def test_addresses_are_checked_by_their_form_without_contacting_anything(monkeypatch):
    monkeypatch.setattr(ray_backend, "ray_installed", lambda: True)
    for good in ("auto", "local", " 10.0.0.1:6379 ", "head-node:6379"):
        assert ray_backend.address_problem(good) is None
    assert "ray://" in ray_backend.address_problem("ray://10.0.0.1:10001")
    for bad in ("10.0.0.1:0", "10.0.0.1", "", "a b:1"):
        assert "give auto, local or a Ray head's host:port" in ray_backend.address_problem(bad)


def test_training_run_page_puts_the_setting_into_the_config(monkeypatch):
    import llc_core.studies

    started = []

    class Captured:
        alive = False

        def __init__(self, config):
            started.append(config)

        def start(self):
            return self

        def poll(self):
            return llc_core.studies.TrajectoryProgress(status="starting")

        def request_stop(self):
            pass

    monkeypatch.setattr(llc_core.studies, "TrajectoryRun", Captured)
    monkeypatch.setattr(ray_backend, "ray_installed", lambda: True)
    at = open_page("pages/trajectory.py")
    assert at.radio(key="traj.run_on").value == "here"
    at.radio(key="traj.run_on").set_value("ray").run()
    at.text_input(key="traj.ray_address").set_value("10.0.0.1:port").run()
    assert errors(at) == ["Ray address '10.0.0.1:port': give auto, local or a Ray head's host:port, e.g. 10.0.0.1:6379"]
    assert at.button(key="traj.start").disabled
    at.text_input(key="traj.ray_address").set_value("10.0.0.1:6379").run()
    assert not at.error and not at.button(key="traj.start").disabled
    at.button(key="traj.start").click().run()
    assert not at.exception, at.exception
    assert started and started[0].executor.ray == "10.0.0.1:6379"
