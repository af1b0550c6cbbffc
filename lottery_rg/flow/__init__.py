"""The IMP flow M_i(n) and its renormalization-group reading (SCIENCE §2–3).

``core``: :class:`IMPFlow` (counts per level, M_i(n), eigenvalues, persistence, control);
``eigen``: classes, eigenvalue tables and flow comparisons; ``scaling``: the critical-exponent
fit (Eq. 14); ``plots``: the paper's figures. ``python -m lottery_rg.flow`` is the command line.
"""

from .core import FLOW_FILE, SCHEMA_VERSION, IMPFlow
from .eigen import CLASSES, UNDETERMINED, ClassRule, EigenvalueTable, FlowComparison, classify

__all__ = ["IMPFlow", "ClassRule", "classify", "EigenvalueTable", "FlowComparison", "CLASSES", "UNDETERMINED",
           "FLOW_FILE", "SCHEMA_VERSION"]
