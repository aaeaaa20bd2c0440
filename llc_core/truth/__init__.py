"""truth: models whose λ is known, and the closed forms that give it.

`theory` (every closed-form λ, the single home of ground truth), `zoo` (the model kinds the tool
builds itself: potentials, deep linear networks, reduced-rank regression, tanh and ReLU nets, each a
Problem with its truth when theory has one) and `classroom` (2-D potentials, sublevel-set volumes and
a live SGLD cloud for the Learn page).
"""

from llc_core.truth.classroom import (MAX_EXPONENT, MENU, CloudSampler, CloudSettings, Potential2D, finite_target,
                                      potential_grid, sublevel_band, sublevel_volume, volume_scaling)
from llc_core.truth.zoo import KINDS

__all__ = ["KINDS", "MAX_EXPONENT", "MENU", "CloudSampler", "CloudSettings", "Potential2D", "finite_target",
           "potential_grid", "sublevel_band", "sublevel_volume", "volume_scaling"]
