"""LLC Explorer: the Streamlit entry point. Run with `streamlit run app.py`.

The pages live in pages/ and are listed in pages/common.py (PAGES, and OPTIONAL_PAGES that join the
navigation once another issue adds their file).
"""

import streamlit as st

from pages import common

st.set_page_config(page_title="LLC Explorer", page_icon=":material/blur_on:", layout="wide")

page = st.navigation(common.navigation_pages())
if page.url_path != "estimate":
    # A run goes on while the user reads another page; polling it here says "still watched".
    common.keep_runs_alive("est", "Estimate")
with common.entry_point():
    page.run()
