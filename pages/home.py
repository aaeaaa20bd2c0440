"""Home page: what the local learning coefficient is, and where to start."""

import streamlit as st

from pages import common

common.require_entry_point()

# In Markdown a "*" opens emphasis: the trained weights w* are written w\* so that the star shows.
st.title("LLC Explorer")
st.markdown(
    r"""
The **local learning coefficient** λ(w\*) measures how complex a trained network really is near its
weights w\*. For a regular model it is half the number of parameters, d/2; for neural networks,
which are *singular* (many weight settings give the same function), it is smaller, and it says how
fast the loss basin around w\* shrinks: the volume of {w : L(w) − L(w\*) < ε} scales like ε^λ.

This app estimates it as **λ̂ = nβ · (E[L_n(w)] − L_n(w\*))**, where the expectation is over SGLD draws
from a posterior tempered at nβ = n / log n and localized around w\* (Lau et al., *The Local Learning
Coefficient*; the method notes are in docs/METHOD.md, and the **Method** page explains every symbol).

**Where to start**
"""
)
st.page_link("pages/learn.py", label="Learn: see λ as a volume exponent and watch SGLD sample a 2-D potential",
             icon=":material/school:")
st.page_link("pages/estimate.py",
             label="Estimate: measure λ̂ of a toy model with known λ, tune SGLD, read the diagnostics",
             icon=":material/query_stats:")
if (common.APP_DIR / "pages" / "method.py").is_file():
    st.page_link("pages/method.py", label="Method: what λ, nβ, γ, ε, R-hat, ESS and every verdict mean, in words",
                 icon=":material/menu_book:")
st.markdown(
    """
New to singular learning theory? Start with **Learn**. To estimate: open **Estimate** and press
**Run** — the default model, x·w1·w2², has λ = 1/4, and the run takes a few seconds. The address
bar keeps every setting, so you can share a run as a link.
"""
)
