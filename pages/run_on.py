"""The "Run on" setting of the pages that run studies (Validate, Calibrate's sweep, Training run).

"this machine" (the default) runs a study's runs here, one after another, and imports no Ray; "a Ray
cluster at …" runs each as a Ray task on the cluster whose address is given (auto, local or a head's
host:port; docs/CLUSTER.md). The address's form and whether Ray is installed are checked at once,
with one message; whether a head answers there is found out when the study starts (the study then
stops with that one line). Stop cancels the remote runs and keeps the finished ones.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import streamlit as st

from llc_core import LLCInputError
from llc_core.config import ExecutorConfig
from llc_core.execution import address_problem
from pages import common

CHOICES = {"here": "this machine", "ray": "a Ray cluster at …"}
ADDRESS_HELP = ("auto: the Ray cluster started on the machine running this app (`ray start --head`, or the one in "
                "RAY_ADDRESS), else Ray on this machine alone; local: Ray on this machine alone; or the head's "
                "host:port, e.g. 10.0.0.1:6379. Every node needs this project and Ray installed (docs/CLUSTER.md).")


def choose(page: str) -> ExecutorConfig | None:
    """Draw the setting: None for this machine, else the executor for the cluster at the address given.
    LLCInputError, in one line, when the address is malformed or Ray is not installed here."""
    where = st.radio("Run on", list(CHOICES), format_func=CHOICES.get, horizontal=True, key=f"{page}.run_on",
                     help="Where the study's runs go. On a Ray cluster each run is a task, with the same numbers "
                          "as here; Stop cancels the runs not finished and keeps the rest.")
    if where != "ray":
        return None
    address = st.text_input("Ray cluster address", value="auto", key=f"{page}.ray_address", help=ADDRESS_HELP)
    problem = address_problem(address)
    if problem is not None:
        raise LLCInputError(problem)
    return ExecutorConfig(ray=address.strip())


def setting(page: str) -> tuple[ExecutorConfig | None, bool]:
    """`choose`, with its message shown beneath it: (the executor, whether a study may start)."""
    try:
        return choose(page), True
    except LLCInputError as err:
        common.show_error(err)
        return None, False


def attach(config: Any, page: str) -> Any:
    """A study config (a dataclass with an `executor` field) with the setting's executor; the setting is
    drawn even when there is no config yet (None stays None)."""
    executor = choose(page)
    return None if config is None else dataclasses.replace(config, executor=executor)
