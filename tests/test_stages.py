"""Stage hints on a λ̂ curve (llc_core/studies/stages.py).

The DLN saddle-to-saddle run (trajectory --train dln: widths 6-4-4-6, teacher singular values 3, 1.5,
0.75, small initialisation) learns one mode at a time, so the rank of the student's product is a known
stage label at every checkpoint; the stages found on λ̂ must start where the rank changes (within one
checkpoint: the checkpoint on the step itself is in between).
"""

from __future__ import annotations

import random

import pytest
import torch

from llc_core.studies.stages import describe, find_stages, transitions

# λ̂ ± se of the 21 checkpoints of the default DLN training run (4 chains × 1000 steps each), measured
# with `python -m llc_core trajectory --train dln` on this project's machine; the rank of the product
# at each checkpoint (singular values above 0.3) is 0 ×3, 1 ×6, 2 ×4, 3 ×8.
RECORDED = [(0, -3.37, 2.7), (25, -9.18, 6.49), (50, -302.4, 44.67), (75, 3.78, 0.44), (100, 4.69, 0.44),
            (125, 4.46, 0.53), (150, 3.87, 0.92), (175, 1.66, 2.22), (200, -13.33, 7.2), (225, -53.63, 2.7),
            (250, 7.76, 0.85), (275, 8.38, 0.77), (300, 5.09, 0.78), (325, 6.73, 0.32), (350, 11.14, 0.17),
            (375, 11.34, 0.19), (400, 11.4, 0.2), (425, 11.43, 0.2), (450, 11.43, 0.2), (475, 11.44, 0.2),
            (500, 11.44, 0.2)]
RANKS = [0, 0, 0, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3]


def columns(points):
    return [p[0] for p in points], [p[1] for p in points], [p[2] for p in points]


def assert_stages_start_where_the_rank_changes(steps, stages, ranks):
    changes = [steps[i] for i in range(1, len(ranks)) if ranks[i] != ranks[i - 1]]
    gap = steps[1] - steps[0]
    for stage in stages[1:]:
        assert any(abs(stage.first_step - c) <= gap for c in changes), (stage, changes)


def test_three_plateaus_of_the_recorded_saddle_to_saddle_run():
    steps, llc, se = columns(RECORDED)
    stages = find_stages(steps, llc, se)
    assert len(stages) == 3 and all(s.plateau for s in stages)
    assert [round(s.llc) for s in stages] == [4, 7, 11]
    assert_stages_start_where_the_rank_changes(steps, stages, RANKS)
    assert transitions(steps, llc) == [0, 25, 50, 200, 225]
    text = describe(stages, transitions(steps, llc))
    assert text.startswith("3 stages:") and "then rises to" in text and "saddle" in text


def test_noise_alone_makes_one_stage_and_a_clear_step_makes_two():
    rng = random.Random(0)
    steps = list(range(0, 400, 20))
    flat = [10 + rng.gauss(0, 0.3) for _ in steps]
    assert len(find_stages(steps, flat, [0.3] * len(steps))) == 1  # 3σ: noise of 0.3 is no step
    stepped = [v + (5 if i >= 10 else 0) for i, v in enumerate(flat)]
    two = find_stages(steps, stepped, [0.3] * len(steps))
    assert [s.first_step for s in two] == [0, 200] and two[1].llc == pytest.approx(15, abs=0.3)
    # a steady climb is one stage that is not a plateau, or several; never a plateau throughout
    climb = [1 + 0.5 * i for i in range(len(steps))]
    assert not all(s.plateau for s in find_stages(steps, climb, [0.1] * len(steps)))
    assert find_stages([], [], []) == [] and describe([]).startswith("No checkpoint")


@pytest.mark.slow
def test_stages_of_a_fresh_saddle_to_saddle_run_match_the_rank_of_the_product():
    from llc_core.studies.trajectory import TrajectoryConfig, prepare, run_trajectory

    config = TrajectoryConfig.from_dict({"training": {"task": "dln"}})
    _, checkpoints, _, _ = prepare(config)
    ranks = []
    for checkpoint in checkpoints:
        weights = [checkpoint.weights[name].double() for name in sorted(checkpoint.weights)]
        product = weights[0]
        for w in weights[1:]:
            product = w @ product
        ranks.append(int((torch.linalg.svdvals(product) > 0.3).sum()))
    result = run_trajectory(config)
    steps, llc, se = columns([(p.step, p.llc_mean, p.llc_se) for p in result.points])
    stages = find_stages(steps, llc, se)
    assert len(stages) == len({r for r, v in zip(ranks, llc) if v >= 0})
    assert_stages_start_where_the_rank_changes(steps, stages, ranks)
