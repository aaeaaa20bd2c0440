"""The glossary: every symbol, setting and diagnostic the app shows, in words, read from docs/GLOSSARY.md.

The file is the one place the text lives. The Method page (pages/method.py) shows it whole; other
pages take an entry's first paragraph as hover help (`help_text`) and a verdict's short label for
tables (`verdict_label`). An entry is a `### Title (`name`)` heading and the paragraphs under it, inside
a `## Group` section; `name` is the one the settings, the result JSON and the command line use.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from pages import common

GLOSSARY_FILE = common.APP_DIR / "docs" / "GLOSSARY.md"
METHOD_FILE = common.APP_DIR / "docs" / "METHOD.md"
VERDICTS = "Verdicts"  # the group whose entries are the engine's verdicts (llc_core/diagnostics.py)
HEADING = re.compile(r"^### (?P<title>.+) \(`(?P<name>[a-z_]+)`\)\s*$")


@dataclass(frozen=True)
class Entry:
    name: str  # as in the settings, the result JSON and the CLI: "rhat", "step_size", "still_climbing"
    title: str  # Markdown: "R-hat", "ε, the step size"; a verdict's short label: "still climbing"
    group: str
    text: str  # the paragraphs, Markdown

    @property
    def short(self) -> str:
        """The first paragraph: what hover help shows."""
        return self.text.split("\n\n")[0].replace("\n", " ")


@dataclass(frozen=True)
class Glossary:
    intro: dict[str, str]  # a group's text before its first entry
    entries: dict[str, Entry]


@functools.cache
def glossary() -> Glossary:
    """docs/GLOSSARY.md, parsed once per process."""
    intro: dict[str, list[str]] = {}
    found: dict[str, tuple[str, str, list[str]]] = {}
    group, current = "", None
    for line in GLOSSARY_FILE.read_text(encoding="utf-8").splitlines():
        if line.startswith("## "):
            group, current = line[3:].strip(), None
            intro[group] = []
        elif (match := HEADING.match(line)) is not None:
            current = match["name"]
            found[current] = (match["title"], group, [])
        elif current is not None:
            found[current][2].append(line)
        elif group:
            intro[group].append(line)
    entries = {name: Entry(name, title, where, "\n".join(lines).strip()) for name, (title, where, lines) in found.items()}
    return Glossary({g: "\n".join(lines).strip() for g, lines in intro.items()}, entries)


def entry(name: str) -> Entry:
    return glossary().entries[name]


def help_text(name: str) -> str:
    """Hover help for a symbol or setting: its entry's first paragraph, and where the whole entry is."""
    return f"{entry(name).short} (More on the Method page.)"


def verdict_label(code: str) -> str:
    """A verdict's short label ("still climbing"), or the code in words when the glossary lacks it."""
    found = glossary().entries.get(code)
    return found.title if found is not None and found.group == VERDICTS else code.replace("_", " ")


def verdict_labels(codes: list[str]) -> str:
    return ", ".join(verdict_label(code) for code in codes)


def groups() -> dict[str, list[Entry]]:
    """The entries by group, in the file's order."""
    by_group: dict[str, list[Entry]] = {group: [] for group in glossary().intro}
    for item in glossary().entries.values():
        by_group[item.group].append(item)
    return by_group


def method_notes() -> str:
    """docs/METHOD.md without its title line (the page gives its own)."""
    text = METHOD_FILE.read_text(encoding="utf-8")
    return text.split("\n", 1)[1].strip() if text.startswith("# ") else text
