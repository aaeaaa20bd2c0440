"""LLC Explorer: the Streamlit entry point. Run with `streamlit run app.py`.

The pages live in pages/ and are listed in pages/common.py (PAGES, and OPTIONAL_PAGES that join the
navigation once another issue adds their file); the modules they share sit beside them (common.py,
settings.py, charts.py, runs.py).
"""

import streamlit as st

from pages import common, runs

# Once per process, now that the heavy imports are done (torch, pandas, Altair, through pages.runs):
# keep Streamlit's garbage collection after every script run off them, and leave a core to the page.
common.set_up_process()

st.set_page_config(page_title="LLC Explorer", page_icon=":material/blur_on:", layout="wide")

page = st.navigation(common.navigation_pages())
if page.url_path != "estimate":
    # A run goes on while the user reads another page; polling it here says "still watched".
    runs.keep_runs_alive("est", "Estimate")
with common.entry_point():
    page.run()
