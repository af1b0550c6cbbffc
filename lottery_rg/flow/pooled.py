"""Eigenvalue tables of several seeds pooled into one (mean ± standard error across seeds); see :mod:`.pool`.

Kept apart from :mod:`lottery_rg.flow.pool` (which holds :class:`~lottery_rg.flow.FlowPool`, a
collection of flows) so that the analyses built on tables — the null report — need no flow class.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .eigen import UNDETERMINED, EigenvalueTable, _markdown, _rule
from .uncertainty import seed_se, trend_test

__all__ = ["PooledEigenvalueTable", "pool_tables"]


@dataclass(eq=False)
class PooledEigenvalueTable(EigenvalueTable):
    """An :class:`EigenvalueTable` pooled over seeds; ``per_seed`` holds each run's table.

    Extra columns: sd_seeds, n_seeds, class_share, stable, classes (each seed's class,
    joined with "/"), and lambda_<label> per seed.
    """

    per_seed: list[EigenvalueTable] = field(default_factory=list)
    seed_labels: tuple[str, ...] = ()
    ratios_se: pd.DataFrame | None = None

    @property
    def n_seeds(self) -> int:
        return len(self.per_seed)

    def constraint(self) -> pd.Series:
        """Σ_i M_i(n) λ_i(n) per level, averaged over the seeds (1 in every seed)."""
        return pd.concat([t.constraint() for t in self.per_seed], axis=1).mean(axis=1).rename("sum_M_lambda")

    def stable_units(self) -> list[str]:
        """Units whose class is the same in every seed."""
        return [u for u, s in self.table["stable"].items() if s]

    def to_markdown(self, digits: int = 4) -> str:
        t = self.table
        view = pd.DataFrame({
            "kind": t["kind"], "stage": t["stage"], "λ (mean)": t["lambda"], "SE (seeds)": t["se"],
            "sd (seeds)": t["sd_seeds"], "std (within run)": t["std"], "drift ± SE": [
                _pm(d, e) for d, e in zip(t["drift"], t["drift_se"])], "trend": t["trend"], "class": t["class"],
            "seeds agreeing": t["class_share"], "per seed": t["classes"],
        }, index=t.index)
        lv = f"levels {self.levels[0]}–{self.levels[-1]}" if self.levels else "no levels"
        norm = ", M over the residual stages only" if self.normalize == "stages" else ""
        std_name = "population" if self.ddof == 0 else f"ddof={self.ddof}"
        title = (f"IMP-flow eigenvalues pooled over {self.n_seeds} seeds{' of ' + self.label if self.label else ''} "
                 f"({self.granularity} granularity, {lv}{norm}; λ = mean over seeds, SE = sample std across seeds "
                 f"/ √{self.n_seeds}; class from the mean λ and the mean within-run {std_name} std)")
        stable = self.stable_units()
        unstable = [u for u in t.index if u not in stable]
        foot = (f"classes stable across all {self.n_seeds} seeds: {', '.join(stable) or 'none'}; "
                f"not stable: {', '.join(unstable) or 'none'}. drift = change of λ_i(n) over the window (mean OLS "
                f"slope per level × {max(len(self.levels) - 2, 0)}); trend: steady (drift within ± the unit's "
                f"equivalence margin, two one-sided tests), drifts (Holm p < 0.05) or not resolved. Eigenfunction "
                f"(steady and std < {100 * self.eigen_tol:.0f} % of λ): "
                f"{', '.join(u for u, e in t['eigenfunction'].items() if e) or 'none'}")
        return title + "\n\n" + _markdown(view, {"λ (mean)": digits, "SE (seeds)": digits, "sd (seeds)": digits,
                                                  "std (within run)": digits, "seeds agreeing": 2}) + "\n\n" + foot


def pool_tables(tables: Sequence[EigenvalueTable], labels: Sequence[str] | None = None,
                rule=None, label: str = "") -> PooledEigenvalueTable:
    """Pool per-seed eigenvalue tables (same units, window and normalisation) into one."""
    tables = list(tables)
    if not tables:
        raise ValueError("pool_tables needs at least one table")
    labels = [str(x) for x in (labels or [f"seed{i}" for i in range(len(tables))])]
    if len(labels) != len(tables):
        raise ValueError("one label per table")
    units = list(tables[0].table.index)
    for t in tables[1:]:
        if list(t.table.index) != units:
            raise ValueError("the seeds' tables have different units; are they runs of one configuration?")
        if t.levels != tables[0].levels or t.granularity != tables[0].granularity:
            raise ValueError(f"the seeds' tables span different levels ({t.levels} vs {tables[0].levels}) or "
                             f"granularities; use one window that every run covers")
    rule = _rule(rule if rule is not None else tables[0].rule)
    first = tables[0].table
    lam = np.stack([t.table["lambda"].to_numpy(float) for t in tables], axis=1)  # units × seeds
    std = np.stack([t.table["std"].to_numpy(float) for t in tables], axis=1)
    m0 = np.stack([t.table["M_start"].to_numpy(float) for t in tables], axis=1)
    classes = np.stack([t.table["class"].to_numpy(object) for t in tables], axis=1)
    slopes = np.stack([t.table["slope"].to_numpy(float) if "slope" in t.table else np.full(len(units), np.nan)
                       for t in tables], axis=1)
    paper = np.stack([t.table["paper_criterion"].to_numpy(bool) if "paper_criterion" in t.table
                      else t.table["eigenfunction"].to_numpy(bool) for t in tables], axis=1)
    n_pairs = first["n_pairs"].to_numpy()
    n_skipped = np.sum([t.table["n_skipped"].to_numpy(int) for t in tables], axis=0)
    collapsed = np.any([t.table["collapsed"].to_numpy(bool) for t in tables], axis=0)
    rows = []
    for j in range(len(units)):
        mean, se, df = seed_se(lam[j])
        finite_std = std[j][np.isfinite(std[j])]
        mstd = float(finite_std.mean()) if finite_std.size else float("nan")
        cls = rule(mean, mstd if np.isfinite(mstd) else 0.0) if np.isfinite(mean) else UNDETERMINED
        share = float(np.mean(classes[j] == cls))
        rows.append({
            "lambda": mean, "se": se, "se_df": float(df) if df else float("nan"),
            "sd_seeds": float(np.std(lam[j][np.isfinite(lam[j])], ddof=1)) if np.isfinite(lam[j]).sum() > 1
            else float("nan"),
            "std": mstd, "M_start": float(np.nanmean(m0[j])), "n_seeds": int(np.isfinite(lam[j]).sum()),
            "class": cls, "class_share": share, "stable": bool(share == 1.0),
            "classes": "/".join(str(c) for c in classes[j]),
            "n_pairs": int(n_pairs[j]), "n_skipped": int(n_skipped[j]), "collapsed": bool(collapsed[j]),
            "paper_criterion": bool(paper[j].all()),
            **{f"lambda_{lab}": float(lam[j, i]) for i, lab in enumerate(labels)},
        })
    table = pd.DataFrame(rows, index=pd.Index(units, name="unit"))
    table = pd.concat([first[["kind", "stage", "index", "downsample"]], table], axis=1)
    n_apps = len(tables[0].levels) - 1
    tt = trend_test(slopes, max(n_apps - 1, 0), table["lambda"].to_numpy(float))
    for k, col in (("slope", "slope"), ("slope_se", "slope_se"), ("drift", "drift"), ("drift_se", "drift_se"),
                   ("p_holm", "trend_p_holm"), ("verdict", "trend")):
        table[col] = tt[k]
    table["eigenfunction"] = table["paper_criterion"] & (table["trend"] == "steady")
    t0 = tables[0]
    ratios = ratios_se = M_window = None
    if all(t.ratios is not None for t in tables):
        stack = np.stack([t.ratios.to_numpy(float) for t in tables])
        with warnings.catch_warnings():  # a collapsed unit has no ratio in any seed: NaN, not a warning
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = np.nanmean(stack, axis=0)
            spread = (np.nanstd(stack, axis=0, ddof=1) / np.sqrt(len(tables)) if len(tables) > 1
                      else np.full(stack.shape[1:], np.nan))
        ratios = pd.DataFrame(mean, index=t0.ratios.index, columns=t0.ratios.columns)
        ratios_se = pd.DataFrame(spread, index=t0.ratios.index, columns=t0.ratios.columns)
        M_window = pd.DataFrame(np.mean([t.M_window.to_numpy(float) for t in tables], axis=0),
                                index=t0.M_window.index, columns=t0.M_window.columns)
    return PooledEigenvalueTable(table, t0.granularity, t0.levels, t0.start, t0.window, t0.ddof, rule, t0.eigen_tol,
                                 label or t0.label, t0.normalize,
                                 f"across {len(tables)} seeds (sample std / √{len(tables)}, {len(tables) - 1} df)",
                                 ratios=ratios, M_window=M_window, single_run=False, per_seed=tables,
                                 seed_labels=tuple(labels), ratios_se=ratios_se)


def _pm(value, se) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:+.4f} ± {se:.4f}" if np.isfinite(se) else f"{value:+.4f}"
