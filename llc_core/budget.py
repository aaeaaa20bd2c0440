"""One resource budget, checked before a run allocates anything.

A run's memory is estimated from its sizes (`Footprint`): the sampler's state (parameters × chains,
a few copies each: position, gradient, noise, preconditioner, the proposal), the activations of one
step (chains × batch × floats per sample), the data (n × floats per sample) and the loss trace
(steps × chains). `check` refuses a footprint over `memory_limit_bytes()` (defaults.MAX_MEMORY_GB,
or the environment variable LLC_MAX_MEMORY_GB on a bigger machine) with a message that names the
largest part and the setting that lowers it. `check_at_most` bounds a count that costs time, not
memory (layers, train_steps).

The estimate is deliberately coarse: it only has to tell a run that fits from one that would
allocate tens of gigabytes (`{"hidden": [10000000]}`, `"chains": 1e6`, `"steps": 1e12`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from llc_core import defaults
from llc_core.errors import LLCInputError

STATE_COPIES = 8  # position, gradient, noise, preconditioner, proposal, ... per chain and parameter
ACTIVATION_COPIES = 4  # forward values and their gradients, per chain, sample and float

# the setting that lowers each part of the estimate
ADVICE = {
    "parameters × chains": "the model's size or sampler.chains",
    "chains × batch": "sampler.chains or sampler.batch_size",
    "data": "data.n (or the data file's rows)",
    "loss trace": "sampler.steps or sampler.chains",
}


def memory_limit_bytes() -> int:
    """The memory budget: LLC_MAX_MEMORY_GB GiB when set, else defaults.MAX_MEMORY_GB."""
    raw = os.environ.get(defaults.MEMORY_LIMIT_ENV)
    if raw is None or not raw.strip():
        return int(defaults.MAX_MEMORY_GB * 2**30)
    try:
        gib = float(raw)
    except ValueError:
        gib = float("nan")
    if not math.isfinite(gib) or gib <= 0:
        raise LLCInputError(f"{defaults.MEMORY_LIMIT_ENV} = {raw!r} must be a number of GiB > 0, e.g. 32")
    return int(gib * 2**30)


@dataclass(frozen=True)
class Footprint:
    """The sizes that decide a run's memory; leave out what is not known yet."""

    num_params: int = 0
    chains: int = 1
    batch_size: int = 0
    n: int = 0
    sample_width: int = 1  # floats per sample of the data: inputs + targets
    activation_width: int | None = None  # floats per sample in one forward pass (default sample_width)
    steps: int = 0
    itemsize: int = 4  # bytes per float (float32)

    def parts(self) -> dict[str, int]:
        """Bytes of each part of the run (Python ints: no overflow whatever the sizes)."""
        return {
            "parameters × chains": self.num_params * max(self.chains, 1) * STATE_COPIES * self.itemsize,
            "chains × batch": max(self.chains, 1) * self.batch_size * (self.activation_width or self.sample_width) * ACTIVATION_COPIES * self.itemsize,
            "data": self.n * self.sample_width * 8,  # drawn in float64 before the cast
            "loss trace": self.steps * max(self.chains, 1) * self.itemsize,
        }

    def total(self) -> int:
        return sum(self.parts().values())


def check(footprint: Footprint) -> None:
    """Raise LLCInputError when the footprint exceeds the memory budget, naming what to lower."""
    limit = memory_limit_bytes()
    parts = footprint.parts()
    total = sum(parts.values())
    if total <= limit:
        return
    biggest = max(parts, key=parts.get)
    raise LLCInputError(
        f"this run would need about {gib_text(total)} of memory ({biggest}: {gib_text(parts[biggest])}), over the "
        f"{gib_text(limit)} budget: lower {ADVICE[biggest]}, or raise {defaults.MEMORY_LIMIT_ENV} on a bigger machine"
    )


def check_at_most(name: str, value: int, limit: int, advice: str) -> None:
    """Raise LLCInputError when a count that costs time (not memory) is over its limit."""
    if value > limit:
        raise LLCInputError(f"{name} = {value:,} is over the limit of {limit:,} (llc_core.defaults): {advice}")


def gib_text(size: int) -> str:
    gib = size / 2**30
    return f"{gib:.3g} GiB" if gib < 1e6 else f"{gib:.2e} GiB"
