"""cli: `python -m llc_core COMMAND ...`, one module per subcommand, registered in `commands.COMMANDS`.

`run` (one estimate), `validate` (a known-λ suite), `trajectory` (every checkpoint of a training
run), `sweep` (an ε × γ grid) and `compare` (SGLD against MALA across n); `common` holds what they
share. Each parses its options into the configs of the layers below and prints their results.
"""

from llc_core.cli.commands import main

__all__ = ["main"]
