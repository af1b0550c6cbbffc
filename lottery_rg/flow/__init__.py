"""The IMP flow M_i(n) and its renormalization-group reading (Redman et al. 2022, Eq. 13–14).

``core``: :class:`IMPFlow` (counts per level, M_i(n) over all prunable weights or over the
residual stages only, eigenvalues, persistence, the untrained control from θ_0 or θ_k) and
:func:`compare_flows`; ``pool``: :class:`FlowPool`, several seeds of one configuration
pooled (λ as mean ± standard error across seeds, class per seed); ``uncertainty``: the
standard errors of λ (across seeds, or a moving-block bootstrap over one run's levels) and
the tests behind comparisons; ``eigen``: classes, eigenvalue tables and flow comparisons;
``scaling``: the critical-exponent fit (Eq. 14); ``plots``: the paper's figures.
``lottery-rg flow`` (or ``python -m lottery_rg flow``) is the command line.
"""

from .core import CONTROL_STARTS, FLOW_FILE, NORMALIZATIONS, SCHEMA_VERSION, IMPFlow, compare_flows
from .eigen import CLASSES, UNDETERMINED, ClassRule, EigenvalueTable, FlowComparison, classify
from .pool import FlowPool, PooledEigenvalueTable

__all__ = ["IMPFlow", "FlowPool", "PooledEigenvalueTable", "compare_flows", "ClassRule", "classify",
           "EigenvalueTable", "FlowComparison", "CLASSES", "UNDETERMINED", "FLOW_FILE", "SCHEMA_VERSION",
           "NORMALIZATIONS", "CONTROL_STARTS"]
