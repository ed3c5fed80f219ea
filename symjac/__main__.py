"""``python -m symjac``: the command line (see ``symjac.cli``)."""

import sys

from .cli import main

sys.exit(main())
