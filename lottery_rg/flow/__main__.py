"""``python -m lottery_rg.flow RUN_DIR ...``: the same as ``lottery-rg flow RUN_DIR ...``."""

from ..cli import flow_main

raise SystemExit(flow_main())
