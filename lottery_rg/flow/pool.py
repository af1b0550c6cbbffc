"""Several seeds of one IMP configuration, pooled: λ per unit as mean ± standard error across seeds.

A :class:`FlowPool` holds the flows of S runs that differ only in ``--seed`` (same model,
prunable set, schedule and data split). Its :meth:`FlowPool.eigenvalues` computes each
run's :class:`~lottery_rg.flow.EigenvalueTable` with the same window and rule and pools
them per unit:

* ``lambda``: mean over the seeds of the per-run λ; ``se``: their sample standard
  deviation (ddof=1) over √S, with ``se_df`` = S − 1 degrees of freedom (the uncertainty
  of λ as an estimate of the configuration's eigenvalue); ``sd_seeds``: the sample std
  across seeds;
* ``std``: the mean over seeds of the within-run spread of the per-level ratios (the
  paper's "std", which enters the class rule);
* ``class``: the rule applied to (mean λ, mean within-run std); ``classes``: each seed's
  class; ``class_share``: the share of seeds whose class equals ``class``; ``stable``: all
  seeds agree;
* ``slope`` / ``drift`` / ``trend``: each seed's OLS slope of λ_i(n) against n, averaged,
  with its SE across seeds and the three-way trend test
  (:func:`lottery_rg.flow.uncertainty.trend_test`); ``ratios``: λ_i(n) per level, mean over
  seeds (``ratios_se``: its SE).

``FlowPool`` quacks like an :class:`~lottery_rg.flow.IMPFlow` where the comparison and the
plots need it (``eigenvalues``, ``get_units``, ``model``, ``schedule``, ``label``,
``densities``, ``metrics``), so ``flow.compare(pool)``, ``pool.compare(other_pool)`` and
``compare_flows`` take either.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from .core import IMPFlow, compare_flows
from .eigen import FlowComparison
from .pooled import PooledEigenvalueTable, pool_tables

__all__ = ["FlowPool", "PooledEigenvalueTable", "pool_tables"]

#: schedule keys that may differ between the seeds of one configuration
_SEED_KEYS = ("seed", "data_seed", "output_dir", "run_name", "logging_dir")


class FlowPool:
    """The flows of several seeds of one IMP configuration."""

    def __init__(self, flows: Sequence[IMPFlow], labels: Sequence[str] | None = None, *, label: str | None = None,
                 check: bool = True):
        flows = list(flows)
        if not flows:
            raise ValueError("a FlowPool needs at least one flow")
        if not all(isinstance(f, IMPFlow) for f in flows):
            raise TypeError("a FlowPool holds IMPFlow objects")
        self.flows = flows
        self.labels = [str(x) for x in (labels or [f"seed{i}" for i in range(len(flows))])]
        if len(self.labels) != len(flows):
            raise ValueError("one label per flow")
        if check:
            self._check_same_configuration()
        base = flows[0]
        self.model = dict(base.model)
        self.units = base.units
        self.tensors = base.tensors
        self.schedule = {k: v for k, v in base.schedule.items() if k not in _SEED_KEYS}
        self._label = label or f"{base.label} ({len(flows)} seeds)"

    def _check_same_configuration(self) -> None:
        base = self.flows[0]
        for f, lab in zip(self.flows[1:], self.labels[1:]):
            if f.tensors != base.tensors or f.units != base.units:
                raise ValueError(f"{lab}: a different prunable set or unit layout than {self.labels[0]}; "
                                 f"pool only seeds of one configuration")
            sa = {k: v for k, v in base.schedule.items() if k not in _SEED_KEYS}
            sb = {k: v for k, v in f.schedule.items() if k not in _SEED_KEYS}
            if sa != sb:
                diff = sorted(k for k in set(sa) | set(sb) if sa.get(k) != sb.get(k))
                raise ValueError(f"{lab}: schedule differs from {self.labels[0]} in {diff}; pool only seeds of one "
                                 f"configuration (or pass check=False)")

    @classmethod
    def from_runs(cls, paths: Sequence[str | os.PathLike], labels: Sequence[str] | None = None,
                  **kwargs) -> FlowPool:
        """The pool of several run directories / flow.json files / Hub ids."""
        flows = [IMPFlow.from_pretrained(p) for p in paths]
        return cls(flows, labels or [os.fspath(p) for p in paths], **kwargs)

    @classmethod
    def untrained_controls(cls, run_dirs: Sequence[str | os.PathLike], start: str = "rewind",
                           labels: Sequence[str] | None = None) -> FlowPool:
        """The pool of the runs' untrained controls (see :meth:`IMPFlow.untrained_control`)."""
        flows = [IMPFlow.untrained_control(p, start=start) for p in run_dirs]
        return cls(flows, labels or [os.fspath(p) for p in run_dirs], label=f"{flows[0].label} ({len(flows)} seeds)")

    # ------------------------------------------------------------------ IMPFlow-like views

    def __len__(self) -> int:
        return len(self.flows)

    def __iter__(self):
        return iter(self.flows)

    def __repr__(self) -> str:
        return f"FlowPool({self.label}, {len(self.flows)} flows)"

    @property
    def label(self) -> str:
        return self._label

    @property
    def level_numbers(self) -> list[int]:
        """Levels recorded by every seed."""
        common = set(self.flows[0].level_numbers)
        for f in self.flows[1:]:
            common &= set(f.level_numbers)
        return sorted(common)

    def get_units(self, granularity: str = "block"):
        return self.flows[0].get_units(granularity)

    def M(self, granularity: str = "block", normalize: str = "all") -> tuple[pd.DataFrame, pd.DataFrame]:
        """(mean, standard error) of M_i(n) across seeds over the common levels."""
        levels = self.level_numbers
        stack = np.stack([f.M(granularity, normalize).loc[levels].to_numpy(float) for f in self.flows])
        cols = self.flows[0].M(granularity, normalize).columns
        idx = pd.Index(levels, name="level")
        mean = pd.DataFrame(stack.mean(axis=0), index=idx, columns=cols)
        se = pd.DataFrame(stack.std(axis=0, ddof=1) / np.sqrt(len(self.flows)) if len(self.flows) > 1
                          else np.full(stack.shape[1:], np.nan), index=idx, columns=cols)
        return mean, se

    def densities(self) -> pd.Series:
        return self.flows[0].densities().loc[self.level_numbers]

    def eigenvalues(self, granularity: str = "block", window: int | None = None, start: int = 0, *,
                    rule=None, ddof: int = 0, **kwargs) -> PooledEigenvalueTable:
        """Each seed's eigenvalues with the same settings, pooled (see :func:`pool_tables`)."""
        tables = [f.eigenvalues(granularity, window, start, rule=rule, ddof=ddof, **kwargs) for f in self.flows]
        return pool_tables(tables, self.labels, rule=rule, label=self.label)

    def compare(self, other, granularity: str = "block", **kwargs) -> FlowComparison:
        """Compare with another pool or a single flow (see :func:`lottery_rg.flow.core.compare_flows`)."""
        return compare_flows(self, other, granularity, **kwargs)

    def critical_exponent(self, metric: str = "eval_accuracy", *, accuracy_in_percent: bool = False, **fit_kwargs):
        """Fit Eq. 14 to the (density, error) points of every seed together."""
        from .scaling import fit_critical_exponent, points_from_flows

        d, e = points_from_flows(self.flows, metric, accuracy_in_percent=accuracy_in_percent)
        return fit_critical_exponent(d, e, **fit_kwargs)
