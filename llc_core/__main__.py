import sys

from llc_core.cli.commands import main

sys.exit(main())
