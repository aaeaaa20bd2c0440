"""The README's table of what each model kind recommends is the engine's own (one set of defaults)."""

from __future__ import annotations

from pathlib import Path

import pytest

from llc_core import defaults
from llc_core.truth import zoo

README = (Path(__file__).parent.parent / "README.md").read_text()


def readme_rows() -> dict[str, list[str]]:
    rows = {}
    for line in README.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 7 and cells[0].startswith("`") and cells[1] not in ("ε", "symbol"):
            rows[cells[0].strip("`")] = cells[1:]
    return rows


@pytest.mark.parametrize("kind", [*zoo.KINDS, "checkpoint"])
def test_readme_gives_the_kinds_own_defaults(kind):
    engine = dict(defaults.CHECKPOINT_SAMPLER) if kind == "checkpoint" else zoo.recommended_sampler(kind)
    expected = [engine.get("chains", defaults.CHAINS), engine.get("steps", defaults.STEPS),
                engine.get("burnin", defaults.BURNIN), engine.get("batch_size", defaults.BATCH_SIZE),
                engine.get("localization", defaults.LOCALIZATION)]
    _, chains, steps, burnin, batch, gamma = readme_rows()[kind]
    if kind in ("dln", "rrr"):  # steps by model size, then the kind's own for larger models
        assert steps == ", ".join([f"{s} (d ≤ {limit})" for limit, s in zoo.SINGULAR_STEPS] + [str(expected[1])])
        steps = expected[1]
        assert [zoo.singular_steps(d) for d in (30, 200, 201, 2000, 2001)] == [48000, 48000, 24000, 24000, 6000]
    assert [int(chains), int(steps), float(burnin), int(batch), float(gamma)] == expected
