"""``python -m lottery_rg flow RUN ...`` / ``python -m lottery_rg stability RUN ...``: the ``lottery-rg`` command."""

import sys

from .cli import main

sys.exit(main())
