"""LLC Explorer: the Streamlit entry point. Run with `streamlit run app.py`.

The pages live in pages/ and are listed in pages/common.py (PAGES, and OPTIONAL_PAGES that join the
navigation once another issue adds their file); the modules they share sit beside them (common.py,
settings.py, charts.py, runs.py).
"""

import streamlit as st

from llc_core.execution import background
from pages import common, runs

# Once per process, now that the heavy imports are done (torch, pandas, Altair, through pages.runs):
# keep Streamlit's garbage collection after every script run off them, and leave a core to the page.
common.set_up_process()
# Runs sample in worker processes (llc_core.execution.background) that take this process's torch threads and
# come from a fork server: start it now, so that the first Run does not wait for it to import torch.
background.start_worker_server()

st.set_page_config(page_title="LLC Explorer", page_icon=":material/blur_on:", layout="wide")

page = st.navigation(common.navigation_pages())
if page.url_path != "estimate":
    # A run goes on while the user reads another page; polling it here says "still watched".
    runs.keep_runs_alive("est", "Estimate")
with common.entry_point():
    page.run()
