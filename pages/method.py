"""Method page: what every symbol, setting and diagnostic of the app means (docs/GLOSSARY.md), and the
method notes with the formulas (docs/METHOD.md)."""

import streamlit as st

from pages import common, glossary

common.require_entry_point()

st.title("Method and glossary")
st.markdown(
    "What the app measures and every symbol, setting and diagnostic it shows, in words, for a reader who "
    "knows calculus but not singular learning theory. The hover help (the **?** beside a setting) quotes the "
    "first paragraph of these entries; the formulas and their sources are in the method notes at the end "
    "(docs/METHOD.md in the repository; the code's comments cite its sections as §1-§7). The grey name under "
    "each term is what the settings, the result JSON and the command line call it."
)
query = st.text_input("Find a term", key="method.find", placeholder="e.g. R-hat, burn-in, still_climbing",
                      help="Searches the titles, names and text of the entries below.").strip().lower()

shown = 0
for group, entries in glossary.groups().items():
    matching = [e for e in entries if not query or query in f"{e.title} {e.name} {e.text}".lower()]
    if not matching:
        continue
    st.header(group, divider="gray")
    intro = glossary.glossary().intro.get(group)
    if intro and not query:
        st.markdown(intro)
    for item in matching:
        st.markdown(f"#### {item.title}")
        st.caption(f"`{item.name}`" + (" · verdict" if group == glossary.VERDICTS else ""))
        st.markdown(item.text)
        shown += 1
if query and not shown:
    st.info(f"No entry mentions “{common.escape_markdown(query)}”.")

st.header("Method notes", divider="gray")
with st.expander("The formulas and their sources (docs/METHOD.md)", expanded=bool(query and not shown)):
    st.markdown(glossary.method_notes())
