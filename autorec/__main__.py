"""``python -m autorec``: the command line (see :mod:`autorec.cli`)."""
import sys

from .cli import main

sys.exit(main())
