"""The IMP flow M_i(n) and its renormalization-group reading (Redman et al. 2022, Eq. 13–14).

``core``: :class:`IMPFlow` (counts per level, M_i(n) over all prunable weights or over the
residual stages only, eigenvalues, persistence, the untrained controls from θ_0 or θ_k) and
:func:`compare_flows`; ``pool``: :class:`FlowPool`, several seeds of one configuration
pooled (λ as mean ± standard error across seeds — the uncertainty every verdict uses);
``null``: :class:`InitScaleNull`, the closed-form init-scale null (each tensor's initial law
pruned by the same rule, no data, no training); ``analysis``: :func:`null_report`, the trained
λ next to the controls and the null with the training effect and its verdict;
``uncertainty``: standard errors, Holm, two one-sided tests, minimal detectable
differences and the trend test; ``eigen``: classes, eigenvalue tables (λ_i(n) per level)
and comparisons with three answers; ``scaling``: the critical-exponent fit (Eq. 14) with
its profile-likelihood interval; ``plots``: the paper's figures and the null models.
``lottery-rg flow`` (or ``python -m lottery_rg flow``) is the command line.
"""

from .analysis import NullReport, null_report
from .core import CONTROL_STARTS, FLOW_FILE, NORMALIZATIONS, SCHEMA_VERSION, IMPFlow, compare_flows
from .eigen import CLASSES, UNDETERMINED, ClassRule, EigenvalueTable, FlowComparison, classify
from .null import InitLaw, InitScaleNull, init_scale_null
from .pool import FlowPool, PooledEigenvalueTable

__all__ = ["IMPFlow", "FlowPool", "PooledEigenvalueTable", "compare_flows", "ClassRule", "classify",
           "EigenvalueTable", "FlowComparison", "CLASSES", "UNDETERMINED", "FLOW_FILE", "SCHEMA_VERSION",
           "NORMALIZATIONS", "CONTROL_STARTS", "InitScaleNull", "InitLaw", "init_scale_null", "null_report",
           "NullReport"]
