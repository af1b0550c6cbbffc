"""Eigenvalue classes of the IMP flow, the eigenvalue table, and the comparison of two flows.

Classes (:func:`classify`, :class:`ClassRule`): relevant if λ − 1 > k·std, irrelevant if
1 − λ > k·std, marginal otherwise (k = 1 in the paper), with an absolute tolerance of
1e-9 added to the threshold so that values published with two decimals on the boundary
(CIFAR-10's 1.01 ± 0.01 in Table 2) are marginal. The paper reads a small std (< 5 % of λ)
as evidence that M_i is an eigenfunction (``paper_criterion``); since the std mostly
measures a steady drift of λ_i(n) over the levels, the table calls a unit an
``eigenfunction`` only where that criterion holds *and* the trend test finds λ_i(n) steady
(:func:`lottery_rg.flow.uncertainty.trend_test`). Each table keeps λ_i(n) per level
(``ratios``) and the constraint Σ_i M_i(n) λ_i(n) = 1 (:meth:`EigenvalueTable.constraint`).

Comparisons (:func:`compare_units`) give three answers per unit — *different*,
*equivalent* (two one-sided tests against a stated margin) or *not resolved* (with the
minimal detectable difference) — and predict the transfer of winning tickets only when
every unit is equivalent.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..plotting import format_cell as _fmt
from ..plotting import markdown_table

__all__ = ["CLASSES", "UNDETERMINED", "RELATIONS", "ClassRule", "classify", "EigenvalueTable", "FlowComparison",
           "compare_units", "compare_stages", "eigenvalue_table", "window_levels"]

CLASSES = ("relevant", "marginal", "irrelevant")
UNDETERMINED = "undetermined"  # no usable pair of levels (λ is NaN)


# --------------------------------------------------------------------------- classes


@dataclass(frozen=True)
class ClassRule:
    """relevant if λ − 1 > t, irrelevant if 1 − λ > t, marginal otherwise; t = max(k·std, min_std) + tol.

    ``k = 1`` and ``min_std = 0`` is the paper's rule ("within a standard deviation of
    λ = 1 is marginal"). ``tol`` absorbs float rounding of values given with two
    decimals (1.01 − 1 is 0.010000000000000009 in binary floating point).
    """

    k: float = 1.0
    min_std: float = 0.0
    tol: float = 1e-9

    def threshold(self, std: float) -> float:
        return max(self.k * float(std), self.min_std) + self.tol

    def __call__(self, lam: float, std: float) -> str:
        lam, std = float(lam), float(std)
        if not math.isfinite(lam):
            return UNDETERMINED
        if not math.isfinite(std):
            std = 0.0
        t = self.threshold(std)
        if lam - 1.0 > t:
            return "relevant"
        if 1.0 - lam > t:
            return "irrelevant"
        return "marginal"


Rule = ClassRule | Callable[[float, float], str]


def _rule(rule) -> Rule:
    if rule is None:
        return ClassRule()
    if isinstance(rule, (int, float)) and not isinstance(rule, bool):
        return ClassRule(k=float(rule))
    if callable(rule):
        return rule
    raise TypeError(f"rule must be a ClassRule, a number k or a callable (lam, std) -> class, got {rule!r}")


def classify(lam: float, std: float, rule: Rule | float | None = None) -> str:
    """'relevant', 'marginal' or 'irrelevant' for an eigenvalue λ ± std ('undetermined' for NaN λ)."""
    return _rule(rule)(lam, std)


def _markdown(df: pd.DataFrame, digits: dict[str, int] | int = 4, index: bool = True) -> str:
    """A GitHub-markdown table of a DataFrame (pandas' to_markdown needs the optional 'tabulate')."""
    cols = list(df.columns)
    head = ([df.index.name or ""] if index else []) + [str(c) for c in cols]
    rows = []
    for idx, row in df.iterrows():
        cells = [_fmt(idx)] if index else []
        for c in cols:
            dg = digits.get(c, 4) if isinstance(digits, dict) else digits
            cells.append(_fmt(row[c], dg))
        rows.append(cells)
    return markdown_table(head, rows)


class _FrameLike:
    """Delegates attribute and item access to ``self.table`` (a DataFrame)."""

    table: pd.DataFrame

    def __getattr__(self, name: str):
        if name.startswith("__") or "table" not in self.__dict__:
            raise AttributeError(name)
        return getattr(self.__dict__["table"], name)

    def __getitem__(self, key):
        return self.table[key]

    def __len__(self) -> int:
        return len(self.table)

    def __iter__(self):
        return iter(self.table)

    def to_frame(self) -> pd.DataFrame:
        """The table with the unit names as an ordinary column."""
        return self.table.reset_index()


# --------------------------------------------------------------------------- eigenvalues


@dataclass(eq=False)
class EigenvalueTable(_FrameLike):
    """Eigenvalues of the IMP flow per unit; behaves like its DataFrame ``table``.

    ``table`` is indexed by unit name, with columns kind, stage, index, downsample,
    M_start (M_i at the first level of the window), lambda, std (spread of the per-level
    ratios), se (standard error of λ: across seeds for a pooled table; for one run a
    moving-block bootstrap over its ratios, *indicative only*), se_df (its degrees of
    freedom; ∞ for the bootstrap and for the closed-form null), lag1 (lag-1 autocorrelation
    of the ratios), n_pairs, n_skipped, collapsed, collapse_level, slope (change of
    λ_i(n) per level), drift (slope × (pairs − 1): the change over the window), trend
    (*steady*, *drifts*, *not resolved*, or *not tested (one seed)*), paper_criterion
    (std < eigen_tol · λ, the paper's eigenfunction criterion), eigenfunction
    (paper_criterion and a steady trend) and class. ``ratios`` holds λ_i(n) per level n
    (rows: the first level of each pair), ``M_window`` the M_i(n) of the window.
    ``normalize`` is "all" (M over every prunable weight, Eq. 13) or "stages" (M over the
    residual stages only, stem and head outside the denominator and the table).
    """

    table: pd.DataFrame
    granularity: str
    levels: tuple[int, ...]  # levels spanned by the window (n_pairs + 1 of them)
    start: int
    window: int | None
    ddof: int
    rule: Any
    eigen_tol: float = 0.05
    label: str = ""
    normalize: str = "all"
    se_method: str = "moving-block bootstrap over levels"
    ratios: pd.DataFrame | None = None
    M_window: pd.DataFrame | None = None
    single_run: bool = True  # the SE is a within-run bootstrap: indicative, never used for a verdict
    exact: bool = False  # a closed-form flow (the init-scale null): λ without sampling error

    @property
    def ses(self) -> pd.Series:
        return self.table["se"]

    @property
    def lambdas(self) -> pd.Series:
        return self.table["lambda"]

    @property
    def stds(self) -> pd.Series:
        return self.table["std"]

    @property
    def classes(self) -> pd.Series:
        return self.table["class"]

    def constraint(self) -> pd.Series:
        """Σ_i M_i(n) λ_i(n) per level n of the window: 1 by construction (Σ_i M_i(n+1) = 1).

        Global pruning ties the eigenvalues together: they cannot all be constant, and they
        are never independent. (Less than 1 only where a unit collapsed: its ratio is skipped.)
        """
        if self.ratios is None or self.M_window is None:
            raise ValueError("this table does not keep its per-level ratios")
        M = self.M_window.loc[list(self.ratios.index), list(self.ratios.columns)]
        return (M * self.ratios).fillna(0.0).sum(axis=1).rename("sum_M_lambda")

    def class_counts(self, by_stage: bool = False, exclude_entry: bool = False, kinds=("block",)) -> pd.DataFrame:
        """Counts of relevant / marginal / irrelevant (/ undetermined) units, optionally per stage.

        With ``by_stage`` only units of the given ``kinds`` that have a stage are counted;
        ``exclude_entry`` drops each stage's entry block (index 0), as the paper did for
        E-LTH (the down-sampling block is not transformed between depths).
        """
        t = self.table
        cols = list(CLASSES) + [UNDETERMINED]
        if by_stage:
            t = t[t["kind"].isin(kinds) & t["stage"].notna()]
            if exclude_entry:
                t = t[t["index"].fillna(-1) != 0]
            out = pd.crosstab(t["stage"].astype(int), t["class"]).reindex(columns=cols, fill_value=0)
            out.index.name = "stage"
        else:
            out = t["class"].value_counts().reindex(cols, fill_value=0).to_frame("count").T
        return out.astype(int)

    def _notes(self) -> list[str]:
        notes = []
        for _, r in self.table.iterrows():
            n = []
            if r["collapsed"]:
                n.append(f"M reached 0 at level {r['collapse_level']}; {r['n_skipped']} pair(s) skipped")
            if r["n_pairs"] and math.isfinite(r["lambda"]):
                if not r.get("paper_criterion", True):
                    n.append(f"std ≥ {100 * self.eigen_tol:.0f} % of λ")
                if r.get("eigenfunction", False):
                    n.append("eigenfunction (small std, steady λ(n))")
            notes.append("; ".join(n))
        return notes

    def _title(self, what: str = "IMP-flow eigenvalues") -> str:
        std_name = "population" if self.ddof == 0 else f"ddof={self.ddof}"
        lv = f"levels {self.levels[0]}–{self.levels[-1]}" if self.levels else "no levels"
        norm = ", M over the residual stages only" if self.normalize == "stages" else ""
        se = ("none: a closed form" if self.exact else
              self.se_method + (" — indicative only, not used for verdicts" if self.single_run else ""))
        return (f"{what}{' of ' + self.label if self.label else ''} ({self.granularity} granularity, {lv}, "
                f"{max(len(self.levels) - 1, 0)} IMP applications, {std_name} std of the ratios{norm}; "
                f"SE of λ: {se})")

    def to_markdown(self, digits: int = 4) -> str:
        t = self.table
        view = pd.DataFrame({
            "kind": t["kind"], "stage": t["stage"], "index": t["index"], "M(start)": t["M_start"],
            "λ": t["lambda"], "std": t["std"], "SE": t["se"] if "se" in t else np.nan,
            "drift": t["drift"] if "drift" in t else np.nan, "trend": t["trend"] if "trend" in t else "",
            "pairs": t["n_pairs"], "class": t["class"], "notes": self._notes(),
        }, index=t.index)
        return self._title() + "\n\n" + _markdown(view, {"M(start)": digits, "λ": digits, "std": digits,
                                                          "SE": digits, "drift": digits})

    def levels_frame(self) -> pd.DataFrame:
        """λ_i(n) per level (columns ``n→n+1``) and unit (rows), plus the row Σ_i M_i(n) λ_i(n)."""
        if self.ratios is None:
            raise ValueError("this table does not keep its per-level ratios")
        r = self.ratios.T.copy()
        r.columns = [f"{n}→{n + 1}" for n in self.ratios.index]
        total = self.constraint()
        total.index = r.columns
        r.loc["Σ M·λ"] = total
        r.index.name = "unit"
        return r

    def levels_markdown(self, digits: int = 4) -> str:
        """The per-level eigenvalues λ_i(n) as a table, with the constraint row Σ_i M_i(n) λ_i(n) = 1."""
        head = (f"λ_i(n) = M_i(n+1)/M_i(n) per level{' of ' + self.label if self.label else ''} "
                f"({self.granularity} granularity"
                + (", mean over seeds" if not self.single_run and not self.exact else "") + "). The last row is "
                "Σ_i M_i(n) λ_i(n) = Σ_i M_i(n+1) = 1: global pruning ties the λ together, so they cannot all be "
                "constant and are never independent.")
        return head + "\n\n" + _markdown(self.levels_frame(), digits)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"EigenvalueTable({self.granularity}, levels={list(self.levels)}, units={len(self.table)})"


def _trend_columns(slopes: np.ndarray, n_pairs: int, lam: np.ndarray, exact: bool, **margin_kw) -> dict:
    """Trend test of each unit's λ_i(n) (slopes: units × seeds); exact flows have no sampling error."""
    from .uncertainty import equivalence_margin, trend_test

    span = max(n_pairs - 1, 0)
    if exact:
        slope = slopes.mean(axis=1)
        drift = slope * span
        margin = equivalence_margin(lam, **margin_kw)
        verdict = np.where(~np.isfinite(drift), "not tested (one seed)",
                           np.where(np.abs(drift) < margin, "steady", "drifts")).astype(object)
        return {"slope": slope, "slope_se": np.zeros_like(slope), "drift": drift, "drift_se": np.zeros_like(slope),
                "trend_p_holm": np.full_like(slope, np.nan), "trend": verdict}
    tt = trend_test(slopes, span, lam, **margin_kw)
    return {"slope": tt["slope"], "slope_se": tt["slope_se"], "drift": tt["drift"], "drift_se": tt["drift_se"],
            "trend_p_holm": tt["p_holm"], "trend": tt["verdict"]}


def window_levels(levels: Sequence[int], start: int = 0, window: int | None = None) -> list[int]:
    """The consecutive levels of an eigenvalue window: ``start``, ``start + 1``, … (``window`` applications)."""
    if window is not None and int(window) < 1:
        raise ValueError(f"window must be at least 1 IMP application, got {window}")
    present = {int(n) for n in levels}
    start = int(start)
    if start not in present:
        raise ValueError(f"start level {start} is not recorded (levels: {sorted(present)})")
    used = [start]
    while used[-1] + 1 in present and (window is None or len(used) - 1 < int(window)):
        used.append(used[-1] + 1)
    n_apps = len(used) - 1
    if n_apps == 0:
        raise ValueError(f"no consecutive level after level {start}: eigenvalues need at least two levels "
                         f"(levels: {sorted(present)})")
    if window is not None and n_apps < int(window):
        warnings.warn(f"asked for {window} IMP applications from level {start}, only {n_apps} consecutive "
                      f"level pair(s) are recorded", stacklevel=3)
    if window is None and max(present) > used[-1]:
        warnings.warn(f"levels after {used[-1] + 1} are not used: level {used[-1] + 1} is missing", stacklevel=3)
    return used


def eigenvalue_table(M: pd.DataFrame, units, used: Sequence[int], *, granularity: str, start: int,
                     window: int | None, rule=None, ddof: int = 0, eigen_tol: float = 0.05, label: str = "",
                     normalize: str = "all", block_length: int | None = None, n_boot: int | None = None,
                     boot_seed: int | None = None, exact: bool = False) -> EigenvalueTable:
    """The eigenvalue table of one flow from its M_i(n) (rows: levels, columns: units).

    ``units`` are the :class:`~lottery_rg.families.Unit` objects of the columns (in order);
    ``used`` the consecutive levels of the window. ``exact`` marks a closed-form flow (the
    init-scale null): no bootstrap, SE 0, trend decided by the drift alone.
    """
    from .uncertainty import (
        BOOTSTRAP_SEED,
        N_BOOT,
        block_bootstrap_se,
        default_block_length,
        lag1_autocorrelation,
        ols_slope,
    )

    rule = _rule(rule)
    if exact and isinstance(rule, ClassRule):
        # a closed form has (almost) no spread over the levels: |λ − 1| within the equivalence floor is marginal
        from dataclasses import replace

        from .uncertainty import MARGIN_FLOOR

        rule = replace(rule, min_std=max(rule.min_std, MARGIN_FLOOR))
    n_boot = N_BOOT if n_boot is None else int(n_boot)
    boot_seed = BOOTSTRAP_SEED if boot_seed is None else int(boot_seed)
    used = list(used)
    Mw = M.loc[used]
    Mv = Mw.to_numpy(float)
    col = {c: i for i, c in enumerate(Mw.columns)}
    ratio_cols = {}
    rows, slopes = [], []
    for u in units:
        m = Mv[:, col[u.name]]
        ok = m[:-1] > 0
        r_all = np.full(m.size - 1, np.nan)
        r_all[ok] = m[1:][ok] / m[:-1][ok]
        ratio_cols[u.name] = r_all
        r = r_all[ok]
        n = int(r.size)
        lam = float(r.mean()) if n else float("nan")
        std = float(r.std(ddof=ddof)) if n > ddof else float("nan")
        zero = np.flatnonzero(m == 0)
        slopes.append(ols_slope(r)[0] if n >= 2 else float("nan"))
        paper = bool(n and math.isfinite(std) and std < eigen_tol * abs(lam))
        rows.append({
            "unit": u.name, "kind": u.kind, "stage": u.stage, "index": u.index, "downsample": u.downsample,
            "M_start": float(m[0]), "lambda": lam, "std": std,
            "se": 0.0 if exact else block_bootstrap_se(r, block_length, n_boot, boot_seed),
            "se_df": float("inf"), "lag1": lag1_autocorrelation(r), "n_pairs": n, "n_skipped": int((~ok).sum()),
            "collapsed": bool(zero.size), "collapse_level": int(used[zero[0]]) if zero.size else None,
            "paper_criterion": paper,
            "class": rule(lam, std if math.isfinite(std) else 0.0) if n else UNDETERMINED,
        })
    ratios = pd.DataFrame(ratio_cols, index=pd.Index(used[:-1], name="level"))
    n_apps = len(used) - 1
    slopes_arr = np.asarray(slopes, float)[:, None]
    lam_arr = np.array([r["lambda"] for r in rows], float)
    trend = _trend_columns(slopes_arr, n_apps, lam_arr, exact)
    if not exact:  # a constant series of ratios has no sampling question: its λ(n) is exactly flat
        flat = np.array([r["std"] <= 1e-12 and r["n_pairs"] >= 2 for r in rows], bool)
        if flat.any():
            exact_trend = _trend_columns(slopes_arr, n_apps, lam_arr, True)
            trend = {k: np.where(flat, exact_trend[k], v) for k, v in trend.items()}
    columns = {k: [r[k] for r in rows] for k in rows[0]} if rows else {"unit": []}
    columns.update(trend)
    columns["eigenfunction"] = np.array([r["paper_criterion"] for r in rows], bool) & (trend["trend"] == "steady")
    for c in ("stage", "index", "collapse_level"):
        columns[c] = pd.array(columns.get(c, []), dtype="Int64")
    table = pd.DataFrame(columns).set_index("unit")
    if exact:
        method = "closed form (no sampling error)"
    else:
        L = block_length if block_length is not None else default_block_length(n_apps)
        method = f"moving-block bootstrap over levels (block length {L}, {n_boot} resamples, seed {boot_seed})"
    return EigenvalueTable(table, granularity, tuple(used), start, window, ddof, rule, eigen_tol, label, normalize,
                           method, ratios=ratios, M_window=Mw.copy(), single_run=not exact, exact=exact)


# --------------------------------------------------------------------------- comparison


@dataclass(eq=False)
class FlowComparison(_FrameLike):
    """Two IMP flows side by side: unit by unit (same units) or stage by stage (same family).

    ``mode`` is "unit" or "stage"; ``table`` the per-unit or per-stage table; ``summary``
    the numbers behind ``verdict``. Unit by unit, each unit gets one of three answers in
    the ``verdict`` column — *different*, *equivalent* or *not resolved* — and the
    transfer of winning tickets is predicted only when every unit is equivalent.
    """

    mode: str
    table: pd.DataFrame
    summary: dict
    verdict: str
    labels: tuple[str, str]
    granularity: str

    @property
    def agree(self) -> bool:
        return bool(self.summary.get("all_agree", False))

    @property
    def equivalent(self) -> bool:
        """Every unit equivalent (two one-sided tests against the stated margins)."""
        return bool(self.summary.get("all_equivalent", False))

    def to_markdown(self, digits: int = 4) -> str:
        a, b = self.labels
        s = self.summary
        if self.mode == "unit":
            what = ("trained flow (a) against its untrained control (b)" if s.get("relation") == "control"
                    else "IMP flows")
            head = f"Unit-by-unit comparison of the {what}: {a} (a) and {b} (b), {self.granularity} granularity"
            t = self.table
            cols = {"λa": "lambda_a", "SEa": "se_a", "class a": "class_a", "λb": "lambda_b", "SEb": "se_b",
                    "class b": "class_b", "λa − λb": "diff", "SE": "se_diff", "t": "z", "p (Holm)": "p_holm",
                    "margin": "margin", f"{100 * (1 - 2 * s['alpha']):.0f} % CI": "ci", "MDD": "mdd",
                    "verdict": "verdict"}
            t = t.assign(ci=[f"[{lo:+.4f}, {hi:+.4f}]" if np.isfinite(lo) and np.isfinite(hi) else "–"
                             for lo, hi in zip(t["ci_low"], t["ci_high"])])
            view = pd.DataFrame({k: t[v] for k, v in cols.items()}, index=t.index)
            for side in ("a", "b"):
                if f"class_share_{side}" in t:
                    view.insert(list(view.columns).index(f"class {side}") + 1, f"seeds agreeing {side}",
                                t[f"class_share_{side}"])
            lines = [
                f"statistic: {s['statistic']}",
                f"equivalence: {s['equivalence']}",
                f"different: {_fmt_units(s['differing'])}; equivalent: {_fmt_units(s['equivalent'])}; "
                f"not resolved: {_fmt_units(s['not_resolved'])}",
                f"agreeing classes: {s['n_agree']}/{s['n_units']} units ({100 * s['agreement']:.1f} %); "
                f"relevant units: a = {_fmt_units(s['relevant_a'])}; b = {_fmt_units(s['relevant_b'])}",
                f"RMS t = {_fmt(s['distance'], 3)}, max |t| = {_fmt(s['max_abs_z'], 3)}; RMS of λa − λb = "
                f"{_fmt(s['rms_difference'], 4)}; RMS of (λa − λb)/sqrt(σa² + σb²) with σ the spread of the per-level "
                f"ratios, a descriptive effect size: {_fmt(s['spread_distance'], 3)}",
            ]
            parts = [head, _markdown(view, {"λa": digits, "λb": digits, "SEa": digits, "SEb": digits, "t": 3,
                                            "p (Holm)": 3, "seeds agreeing a": 2, "seeds agreeing b": 2,
                                            "λa − λb": digits, "SE": digits, "margin": digits, "MDD": digits}),
                     "\n".join(lines)]
        else:
            head = (f"Stage-by-stage comparison of the block classes of {a} (a) and {b} (b)"
                    + (" (each stage's entry block excluded)" if s.get("exclude_entry") else ""))
            parts = [head, _markdown(self.table, digits)]
        parts.append(f"Verdict: {self.verdict}")
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"FlowComparison(mode={self.mode!r}, {self.labels[0]} vs {self.labels[1]}: {self.verdict!r})"


RELATIONS = ("auto", "transfer", "control")


def _side_columns(t: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    se = t["se"].to_numpy(float) if "se" in t else np.full(len(t), np.nan)
    df = t["se_df"].to_numpy(float) if "se_df" in t else np.full(len(t), np.inf)
    return t["lambda"].to_numpy(float), se, df


def _se_method(t: EigenvalueTable) -> str:
    return getattr(t, "se_method", "block bootstrap")


def _is_single_run(t: EigenvalueTable) -> bool:
    return bool(getattr(t, "single_run", True)) and not getattr(t, "exact", False)


def _identical_units(ta: EigenvalueTable, tb: EigenvalueTable, units: list[str]) -> np.ndarray:
    """Units whose per-level ratios are the same numbers on both sides (a run compared with itself)."""
    ra, rb = getattr(ta, "ratios", None), getattr(tb, "ratios", None)
    if ra is None or rb is None or list(ra.index) != list(rb.index):
        return np.zeros(len(units), bool)
    pa, pb = getattr(ta, "per_seed", None), getattr(tb, "per_seed", None)
    if pa and pb:  # pooled: identical in every seed, in order
        if len(pa) != len(pb):
            return np.zeros(len(units), bool)
        out = np.ones(len(units), bool)
        for x, y in zip(pa, pb):
            out &= _identical_units(x, y, units)
        return out
    if bool(pa) != bool(pb):
        return np.zeros(len(units), bool)
    return np.array([np.array_equal(ra[u].to_numpy(float), rb[u].to_numpy(float), equal_nan=True) for u in units])


def _paired_difference(ta, tb, units) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-seed differences λa_s − λb_s (mean, SE across seeds, df) when both sides pool the same seeds."""
    from .uncertainty import seed_se

    pa, pb = getattr(ta, "per_seed", None), getattr(tb, "per_seed", None)
    if not pa or not pb or len(pa) != len(pb) or len(pa) < 2:
        return None
    d = np.stack([x.table.loc[units, "lambda"].to_numpy(float) - y.table.loc[units, "lambda"].to_numpy(float)
                  for x, y in zip(pa, pb)], axis=1)
    out = np.array([seed_se(row) for row in d], dtype=float)
    return out[:, 0], out[:, 1], np.where(out[:, 2] > 0, out[:, 2], np.nan)


def compare_units(ta: EigenvalueTable, tb: EigenvalueTable, labels, *, relation: str = "transfer",
                  alpha: float = 0.05, paired: bool | str = "auto", margin: float | None = None,
                  margin_fraction: float | None = None, margin_floor: float | None = None,
                  power: float | None = None) -> FlowComparison:
    """Unit-by-unit comparison with three answers; ``relation`` "transfer" (two trained flows) or "control".

    Per unit: d = λa − λb and its SE — *across seeds only*: paired per seed (``paired``:
    True, False or "auto" = when both sides pool the same seed labels, e.g. runs and their
    own controls; SE of the per-seed differences, S − 1 df) or Welch (SEa² + SEb², Welch–
    Satterthwaite df); a closed-form side (the init-scale null) contributes no variance.

    * *different*: two-sided p, Holm-adjusted over the units, < ``alpha`` (Holm is valid
      under any dependence; the λ of one flow are tied by Σ_i M_i(n) λ_i(n) = 1);
    * *equivalent*: the (1 − 2α) interval of d lies inside ± the margin (two one-sided
      tests; the margin is ``margin`` or max(``margin_fraction`` · |λ̄ − 1|,
      ``margin_floor``), defaults 0.25 and 0.005); "all units equivalent" is an
      intersection–union test at level α;
    * *not resolved*: neither; ``mdd`` is the minimal detectable difference (power 80 % at
      Holm's first-step level α/m).

    A single run's bootstrap SE is indicative and never used here: such units are *not
    resolved* unless both flows are identical (a run compared with itself: *equivalent*).
    The spread-scaled difference (λa − λb)/sqrt(σa² + σb²) is kept as ``spread_z`` (an
    effect size, not a test). Transfer is predicted only when every unit is equivalent.
    """
    if relation not in ("transfer", "control"):
        raise ValueError(f"relation must be 'transfer' or 'control', got {relation!r}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5), got {alpha}")
    from .uncertainty import (
        MARGIN_FLOOR,
        MARGIN_FRACTION,
        POWER,
        difference_test,
        equivalence_margin,
        holm,
        min_detectable_difference,
        three_way,
        tost,
    )

    units = list(ta.table.index)
    missing = [u for u in units if u not in tb.table.index]
    if missing:
        raise ValueError(f"units {missing[:5]} are missing from the second flow")
    A, B = ta.table, tb.table.loc[units]
    la, se_a, df_a = _side_columns(A)
    lb, se_b, df_b = _side_columns(B)
    sa, sb = A["std"].to_numpy(float), B["std"].to_numpy(float)
    pooled = np.sqrt(np.nan_to_num(sa) ** 2 + np.nan_to_num(sb) ** 2)
    diff = la - lb
    with np.errstate(divide="ignore", invalid="ignore"):
        spread_z = np.where(pooled > 0, diff / pooled, np.where(np.abs(diff) <= 1e-12, 0.0, np.inf * np.sign(diff)))
    single = _is_single_run(ta) or _is_single_run(tb)
    identical = _identical_units(ta, tb, units)
    indicative = difference_test(la, se_a, df_a, lb, se_b, df_b)  # single runs: descriptive only
    labels_a, labels_b = getattr(ta, "seed_labels", ()), getattr(tb, "seed_labels", ())
    if paired == "auto":
        paired = bool(labels_a) and tuple(labels_a) == tuple(labels_b)
    pair = _paired_difference(ta, tb, units) if paired else None
    if paired and pair is None:
        raise ValueError("a paired comparison needs two pools of the same seeds (at least two)")
    if single:
        d_se, d_df = np.full(len(units), np.nan), np.full(len(units), np.nan)
        test = {"t": indicative["t"], "p": np.full(len(units), np.nan), "se": indicative["se"],
                "df": indicative["df"]}
        how = ("one seed on at least one side: its moving-block-bootstrap SE is indicative only, so no unit is "
               "tested (t shown for orientation); identical flows are equivalent")
    elif pair is not None:
        mean_d, d_se, d_df = pair
        test = difference_test(mean_d, d_se, d_df, np.zeros(len(units)), np.zeros(len(units)),
                               np.full(len(units), np.inf))
        d_df = test["df"]
        how = (f"paired by seed (the same {len(labels_a)} seeds on both sides): t = mean(λa_s − λb_s) / SE of the "
               f"per-seed differences, {len(labels_a) - 1} df")
    else:
        test = difference_test(la, se_a, df_a, lb, se_b, df_b)
        d_se, d_df = test["se"], test["df"]
        how = (f"t = (λa − λb)/sqrt(SEa² + SEb²); SE of a: {_se_method(ta)}; SE of b: {_se_method(tb)}; "
               + ("normal reference" if np.all(np.isinf(d_df[np.isfinite(diff)])) else "Welch–Satterthwaite df"))
    d_se = np.where(identical, 0.0, d_se)
    p = np.where(identical, 1.0, test["p"])
    p_holm = holm(p)
    differs = np.nan_to_num(p_holm, nan=1.0) < alpha
    fraction = MARGIN_FRACTION if margin_fraction is None else float(margin_fraction)
    floor = MARGIN_FLOOR if margin_floor is None else float(margin_floor)
    margins = equivalence_margin(la, lb, fraction=fraction, floor=floor, margin=margin)
    eq = tost(diff, d_se, np.where(identical, np.inf, d_df), margins, alpha)
    m = int(np.isfinite(p).sum()) or len(units)
    mdd = np.where(identical, 0.0, min_detectable_difference(d_se, d_df, alpha, m, POWER if power is None else power))
    verdict = three_way(differs, eq["equivalent"])
    agree = (A["class"].to_numpy() == B["class"].to_numpy()) & (A["class"].to_numpy() != UNDETERMINED)
    table = pd.DataFrame({
        "kind": A["kind"], "stage": A["stage"], "index": A["index"],
        "lambda_a": la, "std_a": sa, "se_a": se_a, "class_a": A["class"],
        "lambda_b": lb, "std_b": sb, "se_b": se_b, "class_b": B["class"],
        "agree": agree, "diff": diff, "se_diff": d_se, "z": np.where(identical, 0.0, test["t"]), "df": d_df, "p": p,
        "p_holm": p_holm, "differs": differs, "margin": margins, "ci_low": eq["low"], "ci_high": eq["high"],
        "p_tost": eq["p"], "equivalent": eq["equivalent"], "mdd": mdd, "verdict": verdict, "spread_z": spread_z,
    }, index=pd.Index(units, name="unit"))
    for side, t in (("a", A), ("b", B)):
        if "class_share" in t:
            table[f"class_share_{side}"] = t["class_share"].to_numpy(float)
    finite = np.isfinite(la) & np.isfinite(lb)
    zf = np.abs(table["z"].to_numpy(float)[finite])
    zf = zf[np.isfinite(zf) | np.isinf(zf)]
    szf = np.abs(spread_z[finite])
    rel_a = [u for u in units if A.at[u, "class"] == "relevant"]
    rel_b = [u for u in units if B.at[u, "class"] == "relevant"]
    n_agree, n = int(agree.sum()), len(units)
    disagreeing = [u for u, g in zip(units, agree) if not g]
    by = {v: [u for u, x in zip(units, verdict) if x == v] for v in ("different", "equivalent", "not resolved")}
    small = [u for u, d, e in zip(units, differs, eq["equivalent"]) if d and e]
    statistic = (how + (f"; two-sided p, Holm-adjusted over {int(np.isfinite(p).sum())} units (valid under any "
                        f"dependence between the units' λ); a unit differs when p_holm < {alpha:g}"
                        if not single else ""))
    margin_text = (f"fixed margin ±{margin:g}" if margin is not None else
                   f"margin = max({fraction:g} · |λ̄ − 1|, {floor:g}) per unit, λ̄ the mean of the two λ (the class "
                   f"boundary is λ = 1)")
    equivalence = (f"two one-sided tests at α = {alpha:g}: equivalent when the {100 * (1 - 2 * alpha):.0f} % CI of "
                   f"λa − λb lies inside ± the margin ({margin_text}); every unit equivalent is an intersection–union "
                   f"test at level α; MDD = smallest |λa − λb| detected with {100 * (power or POWER):.0f} % power")
    summary = {
        "n_units": n, "n_agree": n_agree, "agreement": n_agree / n if n else float("nan"),
        "all_agree": n_agree == n and n > 0,
        "distance": float(np.sqrt(np.mean(zf ** 2))) if zf.size else float("nan"),
        "max_abs_z": float(zf.max()) if zf.size else float("nan"),
        "spread_distance": float(np.sqrt(np.mean(szf ** 2))) if szf.size else float("nan"),
        "rms_difference": float(np.sqrt(np.mean(diff[finite] ** 2))) if finite.any() else float("nan"),
        "relevant_a": rel_a, "relevant_b": rel_b, "same_relevant": rel_a == rel_b,
        "disagreeing": disagreeing, "differing": by["different"], "n_differ": len(by["different"]),
        "equivalent": by["equivalent"], "not_resolved": by["not resolved"],
        "significant_within_margin": small,
        "all_equivalent": len(by["equivalent"]) == n and n > 0,
        "class_flips_within_uncertainty": [u for u in disagreeing if u not in by["different"]],
        "alpha": alpha, "statistic": statistic, "equivalence": equivalence, "se_method_a": _se_method(ta),
        "se_method_b": _se_method(tb), "relation": relation, "paired": pair is not None, "single_run": single,
        "identical": bool(identical.all()) and n > 0,
        "max_mdd": float(np.nanmax(mdd)) if np.isfinite(mdd).any() else float("nan"),
        # no unit has a standard error on both sides (too few levels in the window): nothing can be tested
        "no_uncertainty": n > 0 and not bool(identical.all())
        and not bool((np.isfinite(np.asarray(se_a, float)) & np.isfinite(np.asarray(se_b, float))).any()),
    }
    summary["same"] = summary["all_equivalent"]
    summary["transfer_predicted"] = relation == "transfer" and summary["all_equivalent"]
    verdict_text = _unit_verdict(summary, table, relation)
    return FlowComparison("unit", table, summary, verdict_text, labels, ta.granularity)


def _fmt_units(units) -> str:
    return ", ".join(units) if units else "none"


def _fmt_mdd(table: pd.DataFrame, units) -> str:
    return ", ".join(f"{u} (MDD {table.at[u, 'mdd']:.4f})" if np.isfinite(table.at[u, "mdd"]) else u for u in units)


def _unit_verdict(s: dict, table: pd.DataFrame, relation: str) -> str:
    n = s["n_units"]
    diff, eqv, nr = s["differing"], s["equivalent"], s["not_resolved"]
    small = s["significant_within_margin"]
    small_text = (f" ({_fmt_units(small)}: a significant difference smaller than the margin)" if small else "")
    if s.get("no_uncertainty"):
        head = ("control vs trained (a trained flow against its untrained control; no transfer prediction): "
                if relation == "control" else "")
        return head + ("cannot be judged: no uncertainties — no unit's λ has a standard error on both sides (a "
                       "single run needs at least 3 level-to-level ratios in the fit window; a pool needs several "
                       "seeds), so no difference or equivalence can be tested" + (
                           "" if relation == "control" else "; no transfer is predicted"))
    if s["single_run"] and not s["identical"]:
        tail = ("one seed on at least one side, so nothing is resolved (the within-run bootstrap SE is indicative "
                "only); run 5 seeds of each configuration and compare the pools")
    else:
        tail = ""
    parts = []
    if diff:
        parts.append(f"λ differs significantly (Holm p < {s['alpha']:g}) in {_fmt_units(diff)}")
    if eqv:
        parts.append(f"equivalent in {len(eqv)}/{n} unit(s){small_text}" if len(eqv) < n else "")
    if nr and not (s["single_run"] and not s["identical"]):
        parts.append(f"not resolved in {_fmt_mdd(table, nr)}")
    detail = "; ".join(p for p in parts if p)
    if relation == "control":
        head = "control vs trained (a trained flow against its untrained control; no transfer prediction): "
        if s["all_equivalent"]:
            return head + ("equivalent: every unit's λ is within its margin of the untrained control's" + small_text
                           + " — this flow is reproduced without training")
        if tail:
            return head + tail
        moved = (f"λ differs significantly (Holm p < {s['alpha']:g}) in {_fmt_units(diff)}: training moved these "
                 f"units beyond the control" if diff
                 else "training moved no unit's λ beyond the control by a detectable amount")
        rest = []
        if eqv:
            rest.append(f"equivalent to the control: {_fmt_units(eqv)}{small_text}")
        if nr:
            rest.append(f"not resolved: {_fmt_mdd(table, nr)}")
        return head + moved + ("; " + "; ".join(rest) if rest else "")
    if s["all_equivalent"]:
        return ("equivalent: every unit's λ is equivalent (two one-sided tests against the stated margins)"
                + small_text + "; same universality class — winning tickets are predicted to transfer between the two")
    if tail:
        cls = ("the classes agree" if s["all_agree"] else
               f"the classes differ in {_fmt_units(s['disagreeing'])}")
        return (f"not resolved: {cls}, but {tail}. Transfer is predicted only on equivalence: winning tickets are "
                f"not predicted to transfer on this evidence")
    if diff:
        return (f"different: {detail}. Different eigenvalues; winning tickets are not predicted to transfer")
    return (f"not resolved: {detail}. Neither a difference nor equivalence is shown for every unit (more seeds "
            f"shrink the MDD); transfer is predicted only on equivalence, so no transfer is predicted")


def compare_stages(ta: EigenvalueTable, tb: EigenvalueTable, labels, exclude_entry: bool, *,
                   relation: str = "transfer") -> FlowComparison:
    ca = ta.class_counts(by_stage=True, exclude_entry=exclude_entry)
    cb = tb.class_counts(by_stage=True, exclude_entry=exclude_entry)
    stages = sorted(set(ca.index) | set(cb.index))
    ca, cb = ca.reindex(stages, fill_value=0), cb.reindex(stages, fill_value=0)
    rows = {}
    details, mismatch = [], []
    for s in stages:
        ra, rb = ca.loc[s], cb.loc[s]
        na, nb = int(ra.sum()), int(rb.sum())
        present_a = {c for c in CLASSES if ra[c] > 0}
        present_b = {c for c in CLASSES if rb[c] > 0}
        share_a = np.array([ra[c] / na if na else 0.0 for c in CLASSES])
        share_b = np.array([rb[c] / nb if nb else 0.0 for c in CLASSES])
        same_counts = all(ra[c] == rb[c] for c in list(CLASSES) + [UNDETERMINED])
        rows[s] = {
            "blocks_a": na, "relevant_a": int(ra["relevant"]), "marginal_a": int(ra["marginal"]),
            "irrelevant_a": int(ra["irrelevant"]),
            "blocks_b": nb, "relevant_b": int(rb["relevant"]), "marginal_b": int(rb["marginal"]),
            "irrelevant_b": int(rb["irrelevant"]),
            "same_counts": same_counts, "same_classes": present_a == present_b,
            "share_distance": float(0.5 * np.abs(share_a - share_b).sum()) if na and nb else float("nan"),
        }
        if present_a != present_b:
            mismatch.append(f"stage {s}: a has {_describe(ra)}, b has {_describe(rb)}")
        elif not same_counts:
            details.append(f"stage {s}: a {_describe(ra)} vs b {_describe(rb)}")
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "stage"
    summary = {
        "stages": stages, "exclude_entry": exclude_entry,
        "same_counts": bool(table["same_counts"].all()) if len(table) else False,
        "same_classes": bool(table["same_classes"].all()) if len(table) else False,
        "mean_share_distance": float(table["share_distance"].mean()) if len(table) else float("nan"),
    }
    summary["all_agree"] = summary["same_counts"]
    summary["relation"] = relation
    if relation == "control":
        verdict = ("control vs trained (class counts per stage; no transfer prediction): "
                   + ("same numbers of relevant / marginal / irrelevant blocks in every stage" if summary["same_counts"]
                      else "; ".join(details + mismatch) or "no residual blocks to compare"))
        return FlowComparison("stage", table, summary, verdict, labels, "block")
    if not stages:
        verdict = "no residual blocks to compare (after excluding the entry blocks)"
    elif summary["same_counts"]:
        verdict = ("same numbers of relevant / marginal / irrelevant blocks in every stage: a ticket transformed "
                   "between the two (E-LTH) is predicted to transfer (a comparison of class counts between depths; "
                   "the eigenvalues themselves are compared, with three answers, only between equal units)")
    elif summary["same_classes"]:
        verdict = ("the same classes occur in every stage but in different numbers (" + "; ".join(details)
                   + "); a transformed ticket is predicted to transfer when the transformation reproduces the "
                   "target's counts (replicate or drop blocks of the matching class)")
    else:
        verdict = ("the class structure differs (" + "; ".join(mismatch) + "); a transformed ticket cannot match "
                   "the target's blocks and is predicted to transfer poorly (cf. ResNet-14 in E-LTH)")
    return FlowComparison("stage", table, summary, verdict, labels, "block")


def _describe(counts: pd.Series) -> str:
    parts = [f"{int(counts[c])} {c}" for c in CLASSES if counts[c] > 0]
    return ", ".join(parts) if parts else "no blocks"
