"""Stage hints: where λ̂ across a training run plateaus and where it moves to a new level.

Developmental interpretability reads a training run as a sequence of stages separated by changes of
the LLC (a deep linear network learning one mode at a time steps λ up from plateau to plateau,
saddle to saddle). The rule here is simple and documented:

0. A checkpoint with a negative λ̂ is not a local minimum: the chains found lower loss nearby, as on
   a saddle between two plateaus. It is reported as "in transition" and left out of the fit.
1. Model λ̂(checkpoint) as piecewise constant, each point weighted by 1/se² (se floored at
   SE_FLOOR·|λ̂| so that one tiny error bar cannot dominate).
2. Binary segmentation: split the series where the weighted squared error drops most; keep a split
   only if both sides have at least MIN_POINTS checkpoints and their weighted means differ by more
   than SIGMAS combined standard errors *and* by more than MIN_JUMP of the spread of λ̂ over the
   run (both: a statistically clear and a practically visible step). Recurse into both sides.
3. Each segment is a stage: its checkpoints, its mean λ̂ ± se, and whether λ̂ is flat within it
   (a plateau) or still moving (a slope: its first and last thirds differ by more than SIGMAS se).

`find_stages` works on plain lists, so a trajectory of the full λ̂ or of one refined group's λ̂ can
use it alike; `describe` puts the result in words.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SIGMAS = 3.0
MIN_JUMP = 0.10
MIN_POINTS = 2
SE_FLOOR = 0.02


@dataclass(frozen=True)
class Stage:
    """Checkpoints first..last (indices into the series), their mean λ̂ ± se, plateau or slope."""

    first: int
    last: int
    first_step: int
    last_step: int
    llc: float
    llc_se: float
    plateau: bool


def transitions(steps: list[int], llc: list[float | None]) -> list[int]:
    """The steps whose λ̂ is negative: not a local minimum, typically on a saddle between stages."""
    return [s for s, v in zip(steps, llc) if v is not None and math.isfinite(v) and v < 0]


def find_stages(steps: list[int], llc: list[float | None], llc_se: list[float | None]) -> list[Stage]:
    """The stages of a λ̂ curve (points without an estimate, or with a negative one, are left out)."""
    points = [(s, v, e) for s, v, e in zip(steps, llc, llc_se) if v is not None and math.isfinite(v) and v >= 0]
    if not points:
        return []
    values = [v for _, v, _ in points]
    spread = max(values) - min(values)
    weights = [1.0 / max(e or 0.0, SE_FLOOR * abs(v), 1e-12) ** 2 for _, v, e in points]
    cuts = sorted(_split(values, weights, 0, len(points), spread))
    bounds = [0, *cuts, len(points)]
    stages = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        mean, se = _weighted_mean(values[lo:hi], weights[lo:hi])
        stages.append(Stage(lo, hi - 1, points[lo][0], points[hi - 1][0], mean, se,
                            _flat(values[lo:hi], weights[lo:hi])))
    return stages


def describe(stages: list[Stage], moving: list[int] | None = None) -> str:
    """The stages in words, e.g. "3 stages: λ̂ ≈ 4.5 ± 0.3 (steps 40-120, a plateau), then rises to …",
    and the checkpoints in transition (`moving`: their steps)."""
    if not stages:
        return "No checkpoint has a positive estimate yet."
    if len(stages) == 1:
        only = stages[0]
        text = (f"One stage: λ̂ ≈ {only.llc:.3g} ± {only.llc_se:.2g} over steps {only.first_step}-{only.last_step}"
                + (", flat." if only.plateau else ", still moving without a clear step."))
    else:
        parts = [_stage_words(stages[0], None)] + [_stage_words(s, p) for p, s in zip(stages, stages[1:])]
        text = f"{len(stages)} stages: " + "; ".join(parts) + "."
    if moving:
        text += (f" In transition (negative λ̂: not a local minimum, as on a saddle) at step"
                 f"{'s' if len(moving) > 1 else ''} {', '.join(map(str, moving))}.")
    return text


def _stage_words(stage: Stage, previous: Stage | None) -> str:
    where = f"steps {stage.first_step}-{stage.last_step}" if stage.last > stage.first else f"step {stage.first_step}"
    kind = "a plateau" if stage.plateau else "moving"
    level = f"λ̂ ≈ {stage.llc:.3g} ± {stage.llc_se:.2g} ({where}, {kind})"
    if previous is None:
        return level
    return ("then rises to " if stage.llc > previous.llc else "then falls to ") + level


def _split(values: list[float], weights: list[float], lo: int, hi: int, spread: float) -> list[int]:
    """Cut points (start indices of new segments) inside values[lo:hi], recursively."""
    best, best_gain = None, 0.0
    total = _sse(values[lo:hi], weights[lo:hi])
    for cut in range(lo + MIN_POINTS, hi - MIN_POINTS + 1):
        gain = total - _sse(values[lo:cut], weights[lo:cut]) - _sse(values[cut:hi], weights[cut:hi])
        if gain > best_gain:
            best, best_gain = cut, gain
    if best is None or not _clear_step(values, weights, (lo, best, hi), spread):
        return []
    return [*_split(values, weights, lo, best, spread), best, *_split(values, weights, best, hi, spread)]


def _clear_step(values: list[float], weights: list[float], cut: tuple[int, int, int], spread: float) -> bool:
    lo, mid, hi = cut
    left, left_se = _weighted_mean(values[lo:mid], weights[lo:mid])
    right, right_se = _weighted_mean(values[mid:hi], weights[mid:hi])
    jump = abs(right - left)
    return jump > SIGMAS * math.hypot(left_se, right_se) and jump > MIN_JUMP * spread


def _flat(values: list[float], weights: list[float]) -> bool:
    """No clear difference between the segment's first and last thirds (fewer than 3 points: flat)."""
    third = len(values) // 3
    if third < 1:
        return True
    start, start_se = _weighted_mean(values[:third], weights[:third])
    end, end_se = _weighted_mean(values[-third:], weights[-third:])
    return abs(end - start) <= SIGMAS * math.hypot(start_se, end_se)


def _weighted_mean(values: list[float], weights: list[float]) -> tuple[float, float]:
    total = sum(weights)
    mean = sum(w * v for w, v in zip(weights, values)) / total
    return mean, 1.0 / math.sqrt(total)


def _sse(values: list[float], weights: list[float]) -> float:
    if not values:
        return 0.0
    mean, _ = _weighted_mean(values, weights)
    return sum(w * (v - mean) ** 2 for w, v in zip(weights, values))
