"""files: a user's checkpoints and data, read safely.

`safe_read` (bounded reads, file kinds told apart by their bytes, loaders that run no code),
`checkpoint` (weights → a module whose parameters are w*; the "checkpoint" model kind's Problem),
`huggingface` (Hugging Face model folders and zips of an allow-listed architecture; transformers is
imported only when one is loaded) and `datafiles` (inputs and targets from .npz, .safetensors, .pt or
.csv, token ids kept as integers, or drawn from a zoo teacher).
"""

from llc_core.files.checkpoint import checkpoint_problem, load_checkpoint
from llc_core.files.datafiles import Dataset, load_dataset
from llc_core.files.safe_read import MAX_FILE_BYTES

__all__ = ["MAX_FILE_BYTES", "Dataset", "checkpoint_problem", "load_checkpoint", "load_dataset"]
