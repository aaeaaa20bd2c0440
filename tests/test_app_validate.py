"""The Validate page's table under streamlit's AppTest, drawn from a finished suite held in the session (no
sampling): a missing number shows as a dash, never as Python's None or NaN."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from streamlit.testing.v1 import AppTest

from llc_core.studies.validate import CaseResult

APP = str(Path(__file__).resolve().parents[1] / "app.py")

pytestmark = pytest.mark.usefixtures("navigation_mode")  # tests/conftest.py


class FinishedSuite:
    """What the page polls (llc_core.studies.validate.SuiteRun), finished."""

    name = "smoke"
    alive = False

    def __init__(self, rows: list[CaseResult]):
        self.rows = rows

    def snapshot(self) -> dict:
        return {"rows": self.rows, "total": len(self.rows), "summary": None, "error": None, "running": False}


def rows() -> list[CaseResult]:
    potential = CaseResult("potential [1]", "1-D potential", d=1, llc=0.5, target=0.48, target_kind="t·E[K]",
                           llc_hat=0.47, llc_se=0.01, rel_error=-0.021, acceptance=0.93, wall_s=1.2)
    dln = CaseResult("dln 3-3-3", "DLN", d=18, llc=4.5, target=4.5, llc_hat=4.4, llc_se=0.2, rel_error=-0.022,
                     acceptance=0.91, wall_s=2.5, info={"global_llc": 3.5})
    failed = CaseResult("broken case", "DLN", d=None, llc=None, error="model and data do not fit")
    return [potential, dln, failed]


def shown_table(at: AppTest):
    """The table's cells as the browser shows them: the Styler's display values."""
    assert not at.dataframe  # a data grid scrolled its last columns away at 1024 px
    proto = at.table[0].proto
    assert proto.arrow_data.styler.display_values, "the table is sent without display values"
    return pa.ipc.open_stream(proto.arrow_data.styler.display_values).read_all().to_pandas()


def test_missing_numbers_show_as_a_dash_not_none():
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/validate.py")
    at.session_state["validate.run"] = FinishedSuite(rows())
    at.run()
    assert not at.exception, at.exception
    table = shown_table(at)
    cells = [str(v) for v in table.to_numpy().ravel()]
    assert not any(text in ("None", "nan", "NaN", "<NA>") for text in cells), cells
    assert list(table["Aoyagi's global λ"]) == ["–", "3.5", "–"]  # only a DLN case has Aoyagi's global λ
    assert list(table["λ̂"]) == ["0.47", "4.4", "–"]
    assert list(table["relative error"]) == ["-2.1%", "-2.2%", "–"]


def test_columns_no_case_fills_are_left_out():
    """Eleven columns do not fit at 1024 px: a suite of potentials that all ran has no Aoyagi λ and no error."""
    at = AppTest.from_file(APP, default_timeout=30)
    at.run()
    at.switch_page("pages/validate.py")
    at.session_state["validate.run"] = FinishedSuite(rows()[:1])
    at.run()
    assert not at.exception
    table = shown_table(at)
    assert "Aoyagi's global λ" not in table.columns and "error" not in table.columns
    assert list(table.columns) == ["case", "d", "true λ", "target", "λ̂", "se", "relative error", "acceptance", "s"]
