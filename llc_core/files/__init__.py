"""files: a user's checkpoints and data, read safely.

`safe_read` (bounded reads, file kinds told apart by their bytes, loaders that run no code),
`checkpoint` (weights → a module whose parameters are w*; the "checkpoint" model kind's Problem) and
`datafiles` (inputs and targets from .npz, .safetensors, .pt or .csv, or drawn from a zoo teacher).
"""

from llc_core.files.checkpoint import checkpoint_problem, load_checkpoint
from llc_core.files.datafiles import Dataset, load_dataset
from llc_core.files.safe_read import MAX_FILE_BYTES

__all__ = ["MAX_FILE_BYTES", "Dataset", "checkpoint_problem", "load_checkpoint", "load_dataset"]
