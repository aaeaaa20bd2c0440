"""Validate page: run a validation suite of known-λ models and watch λ̂ against λ as cases finish.

The suite runs in a worker thread (llc_core.studies.validate.SuiteRun, which makes no Streamlit calls); a
fragment polls it twice a second and redraws the scatter (log axes, y = x line, the paper's
Figure 4) and the table beneath.
"""

from __future__ import annotations

from dataclasses import asdict

import altair as alt
import pandas as pd
import streamlit as st

from llc_core.execution import where_ran
from llc_core.studies import validate
from pages import common, live_runs, run_on

common.require_entry_point()

PAGE = "validate"
STATE = "validate.run"

st.title("Validate λ̂ against known learning coefficients")
st.caption(
    "Each suite runs the estimator with its default settings on random models whose true λ is known "
    "(deep linear networks: Aoyagi's formula; toy potentials: the exact finite-n target of a perfect "
    "sampler). `python -m llc_core validate SUITE` runs the same suites from the command line."
)

live_runs.reattach(PAGE, ("Run suite",))  # a reload during a run (pages/live_runs.py)
names = list(validate.SUITES)
executor, may_start = run_on.setting(PAGE)  # this machine, or a Ray cluster (pages/run_on.py)
with st.form("validate.form"):
    suite = st.selectbox("Suite", names, index=names.index("toy"), key="validate.suite",
                         format_func=lambda n: f"{n}: {validate.SUITES[n].description}")
    cases = st.number_input("Cases (0 = the suite's own number)", min_value=0, value=0, step=1, key="validate.cases")
    seed = st.number_input("Seed offset of the random cases", min_value=0, value=0, step=1, key="validate.seed")
    start = st.form_submit_button("Run suite", type="primary")

current: validate.SuiteRun | None = st.session_state.get(STATE)
if start and may_start:  # else the setting's message is shown beneath it
    if current is not None and current.alive:
        current.request_stop()
    current = validate.SuiteRun(suite, int(cases) or None, int(seed), executor=executor).start()
    st.session_state[STATE] = current
    live_runs.register(PAGE, "suite", current, lambda current=current: {STATE: current})


def frame(rows: list) -> pd.DataFrame:
    records = [asdict(r) for r in rows]
    return pd.DataFrame({
        "case": [r["name"] for r in records],
        "d": [r["d"] for r in records],
        "true λ": [r["llc"] for r in records],
        # a DLN's λ(w*) can exceed Aoyagi's global λ, its lower bound (README "Validation")
        "Aoyagi's global λ": [r["info"].get("global_llc") for r in records],
        "target": [r["target"] for r in records],
        "λ̂": [r["llc_hat"] for r in records],
        "se": [r["llc_se"] for r in records],
        "relative error": [r["rel_error"] for r in records],
        "acceptance": [r["acceptance"] for r in records],
        "s": [r["wall_s"] for r in records],
        "error": [r["error"] or "" for r in records],
    })


def shown_columns(table: pd.DataFrame) -> pd.DataFrame:
    """The table without the columns no case fills (Aoyagi's λ in a suite without deep linear networks, the
    error when none failed): eleven columns do not fit at 1024 px."""
    empty = [name for name in ("Aoyagi's global λ", "error") if not table[name].map(lambda v: pd.notna(v) and v != "").any()]
    return table.drop(columns=empty)


# How each number is shown; a missing one (no Aoyagi λ for a potential, no λ̂ for a failed case) is a dash,
# never Python's None or NaN.
FORMATS = {"d": "{:,.0f}", "true λ": "{:.4g}", "Aoyagi's global λ": "{:.4g}", "target": "{:.4g}", "λ̂": "{:.4g}",
           "se": "{:.2g}", "relative error": "{:+.1%}", "acceptance": "{:.3f}", "s": "{:.1f}"}
MISSING = "–"
COLUMNS_ABOUT = ("**s**: seconds; **target**: what λ̂ is judged against, the true λ or, for a toy potential, its finite-n target t·E[K]; "
                 "**Aoyagi's global λ**: for a deep linear network, the smallest λ over all weights that fit as well "
                 "(λ(w\\*) can be larger); **relative error**: (λ̂ − target) / target; **acceptance**: the MALA "
                 "acceptance. The Method page explains each; – means none.")


def styled(table: pd.DataFrame):
    """The table as shown: numbers formatted, a missing value (None, NaN) as a dash."""
    return table.style.format({name: FORMATS[name] for name in table.columns if name in FORMATS}, na_rep=MISSING)


def scatter(table: pd.DataFrame) -> alt.LayerChart:
    points = table.dropna(subset=["target", "λ̂"])
    points = points[(points["target"] > 0) & (points["λ̂"] > 0)]
    values = list(points["target"]) + list(points["λ̂"]) or [0.1, 10.0]
    lo, hi = min(values) / 1.5, max(values) * 1.5
    scale = alt.Scale(type="log", domain=[lo, hi])
    line = alt.Chart(pd.DataFrame({"x": [lo, hi], "y": [lo, hi]})).mark_line(color="gray", strokeDash=[4, 4]).encode(
        x=alt.X("x:Q", scale=scale, title="true λ (or finite-n target)"), y=alt.Y("y:Q", scale=scale, title="λ̂, the estimate"))
    dots = alt.Chart(points).mark_circle(size=70).encode(
        x=alt.X("target:Q", scale=scale), y=alt.Y("λ̂:Q", scale=scale),
        tooltip=["case", "d", "true λ", "target", "λ̂", "se", alt.Tooltip("relative error:Q", format="+.1%")])
    return (line + dots).properties(height=420)


@st.fragment(run_every=0.5)
def progress() -> None:
    run: validate.SuiteRun | None = st.session_state.get(STATE)
    if run is None:
        st.info("Pick a suite and press **Run suite**. `toy` and `dln-1k` take about five minutes on two CPU "
                "cores; `smoke` is two tiny cases. DLN cases are judged against the local λ(w*) at the drawn "
                "weights, which can be larger than Aoyagi's global λ (shown alongside).")
        return
    snap = run.snapshot()
    done, total = len(snap["rows"]), snap["total"]
    if not snap["running"]:
        live_runs.collected(PAGE, "suite")
    else:
        left, right = st.columns([4, 1])
        left.progress(done / total if total else 1.0, text=f"suite {run.name}: {done}/{total} cases done")
        if right.button("Stop", key="validate.stop"):
            run.request_stop()
    if snap["error"]:
        st.error(f"The suite stopped with an error: {common.escape_markdown(snap['error'])}")
    table = frame(snap["rows"])
    if len(table):
        st.altair_chart(scatter(table), width="stretch")
    if snap["summary"] is not None:
        st.markdown("**Summary** — " + validate.format_summary(snap["summary"]))
        if snap["summary"].get("executor"):
            st.caption(common.escape_markdown(where_ran(snap["summary"]["executor"])))
    if len(table):
        # a static table: every column and row in view at 1024 px (a data grid scrolled the last columns away)
        st.table(styled(shown_columns(table)), hide_index=True, border="horizontal")
        st.caption(COLUMNS_ABOUT)


progress()
