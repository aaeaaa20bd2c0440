"""sampling: the Markov kernels and their step-size machinery, each an `init` and a pure `step`.

`sgld` (SGLD with optional preconditioning, and its MALA acceptance), `mala` (full-batch MALA, the
exact baseline), `adaptation` (dual averaging of ε towards a target acceptance) and `curvature` (ε
from the Hessian at w*). Tensors in, tensors out: nothing here knows about models, configs or files.
"""

from llc_core.sampling.mala import MALA, MALAState
from llc_core.sampling.sgld import SGLD, RMSprop, SGLDInfo, SGLDState

__all__ = ["MALA", "MALAState", "RMSprop", "SGLD", "SGLDInfo", "SGLDState"]
