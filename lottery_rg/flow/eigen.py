"""Eigenvalue classes of the IMP flow, the eigenvalue table, and the comparison of two flows.

Classes (:func:`classify`, :class:`ClassRule`): relevant if λ − 1 > k·std, irrelevant if
1 − λ > k·std, marginal otherwise (k = 1 in the paper), with an absolute tolerance of
1e-9 added to the threshold so that values published with two decimals on the boundary
(CIFAR-10's 1.01 ± 0.01 in Table 2) are marginal. The paper also reads a small std
(< 5 % of λ) as evidence that M_i is an eigenfunction; the table reports that flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..plotting import format_cell as _fmt
from ..plotting import markdown_table

__all__ = ["CLASSES", "UNDETERMINED", "RELATIONS", "ClassRule", "classify", "EigenvalueTable", "FlowComparison",
           "compare_units", "compare_stages"]

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
    ratios), se (standard error of λ: moving-block bootstrap over the ratios for one run,
    across seeds for a pooled table), se_df (its degrees of freedom; ∞ for the bootstrap),
    lag1 (lag-1 autocorrelation of the ratios), n_pairs, n_skipped, collapsed,
    collapse_level, eigenfunction (std < eigen_tol · λ) and class. ``normalize`` is "all"
    (M over every prunable weight, Eq. 13) or "stages" (M over the residual stages only,
    stem and head outside the denominator and the table, as in the paper's Table 2).
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

    def to_markdown(self, digits: int = 4) -> str:
        t = self.table
        notes = []
        for _, r in t.iterrows():
            n = []
            if r["collapsed"]:
                n.append(f"M reached 0 at level {r['collapse_level']}; {r['n_skipped']} pair(s) skipped")
            if r["n_pairs"] and not r["eigenfunction"] and math.isfinite(r["lambda"]):
                n.append(f"std ≥ {100 * self.eigen_tol:.0f} % of λ")
            notes.append("; ".join(n))
        view = pd.DataFrame({
            "kind": t["kind"], "stage": t["stage"], "index": t["index"], "M(start)": t["M_start"],
            "λ": t["lambda"], "std": t["std"], "SE": t["se"] if "se" in t else np.nan, "pairs": t["n_pairs"],
            "class": t["class"], "notes": notes,
        }, index=t.index)
        std_name = "population" if self.ddof == 0 else f"ddof={self.ddof}"
        lv = f"levels {self.levels[0]}–{self.levels[-1]}" if self.levels else "no levels"
        norm = ", M over the residual stages only" if self.normalize == "stages" else ""
        title = f"IMP-flow eigenvalues{' of ' + self.label if self.label else ''} ({self.granularity} granularity, " \
                f"{lv}, {max(len(self.levels) - 1, 0)} IMP applications, {std_name} std of the ratios{norm}; " \
                f"SE of λ: {self.se_method})"
        return title + "\n\n" + _markdown(view, {"M(start)": digits, "λ": digits, "std": digits, "SE": digits})

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"EigenvalueTable({self.granularity}, levels={list(self.levels)}, units={len(self.table)})"


# --------------------------------------------------------------------------- comparison


@dataclass(eq=False)
class FlowComparison(_FrameLike):
    """Two IMP flows side by side: unit by unit (same units) or stage by stage (same family).

    ``mode`` is "unit" or "stage"; ``table`` the per-unit or per-stage table; ``summary``
    the numbers behind ``verdict`` (the predicted transfer of winning tickets).
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

    def to_markdown(self, digits: int = 4) -> str:
        a, b = self.labels
        s = self.summary
        if self.mode == "unit":
            what = ("trained flow (a) against its untrained control (b)" if s.get("relation") == "control"
                    else "IMP flows")
            head = f"Unit-by-unit comparison of the {what}: {a} (a) and {b} (b), {self.granularity} granularity"
            t = self.table
            cols = {"λa": "lambda_a", "SEa": "se_a", "class a": "class_a", "λb": "lambda_b", "SEb": "se_b",
                    "class b": "class_b", "agree": "agree", "t": "z", "p (Holm)": "p_holm", "differs": "differs"}
            view = pd.DataFrame({k: t[v] for k, v in cols.items()}, index=t.index)
            for side in ("a", "b"):
                if f"class_share_{side}" in t:
                    view.insert(list(view.columns).index(f"class {side}") + 1, f"seeds agreeing {side}",
                                t[f"class_share_{side}"])
            lines = [
                f"agreeing classes: {s['n_agree']}/{s['n_units']} units ({100 * s['agreement']:.1f} %)",
                f"statistic: {s['statistic']}",
                f"eigenvalues differing significantly: {_fmt_units(s['differing'])} "
                f"(RMS t = {_fmt(s['distance'], 3)}, max |t| = {_fmt(s['max_abs_z'], 3)}; RMS of λa − λb = "
                f"{_fmt(s['rms_difference'], 4)}; RMS of (λa − λb)/sqrt(σa² + σb²) with σ the spread of the per-level "
                f"ratios, a descriptive effect size: {_fmt(s['spread_distance'], 3)})",
                f"relevant units: a = {_fmt_units(s['relevant_a'])}; b = {_fmt_units(s['relevant_b'])}",
            ]
            parts = [head, _markdown(view, {"λa": digits, "λb": digits, "SEa": digits, "SEb": digits, "t": 3,
                                            "p (Holm)": 3, "seeds agreeing a": 2, "seeds agreeing b": 2}),
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


def compare_units(ta: EigenvalueTable, tb: EigenvalueTable, labels, *, relation: str = "transfer",
                  alpha: float = 0.05) -> FlowComparison:
    """Unit-by-unit comparison; ``relation`` "transfer" (two trained flows) or "control" (b is a's control).

    The statistic per unit is t = (λa − λb)/sqrt(SEa² + SEb²) with the tables' ``se``
    (across seeds when the table pools seeds, otherwise the moving-block bootstrap of one
    run's ratios; see :mod:`lottery_rg.flow.uncertainty`), Welch–Satterthwaite degrees of
    freedom (normal when both SEs are bootstrap ones), a two-sided p value and Holm's
    adjustment over the units compared. A unit "differs" when its Holm-adjusted p < alpha.
    The old spread-scaled difference (λa − λb)/sqrt(σa² + σb²) with σ the spread of the
    per-level ratios is kept as ``spread_z`` (an effect size, not a test).
    """
    if relation not in ("transfer", "control"):
        raise ValueError(f"relation must be 'transfer' or 'control', got {relation!r}")
    from .uncertainty import difference_test, holm

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
    test = difference_test(la, se_a, df_a, lb, se_b, df_b)
    p_holm = holm(test["p"])
    differs = np.nan_to_num(p_holm, nan=1.0) < alpha
    agree = (A["class"].to_numpy() == B["class"].to_numpy()) & (A["class"].to_numpy() != UNDETERMINED)
    table = pd.DataFrame({
        "kind": A["kind"], "stage": A["stage"], "index": A["index"],
        "lambda_a": la, "std_a": sa, "se_a": se_a, "class_a": A["class"],
        "lambda_b": lb, "std_b": sb, "se_b": se_b, "class_b": B["class"],
        "agree": agree, "diff": diff, "se_diff": test["se"], "z": test["t"], "df": test["df"], "p": test["p"],
        "p_holm": p_holm, "differs": differs, "spread_z": spread_z,
    }, index=pd.Index(units, name="unit"))
    for side, t in (("a", A), ("b", B)):
        if "class_share" in t:
            table[f"class_share_{side}"] = t["class_share"].to_numpy(float)
    finite = np.isfinite(la) & np.isfinite(lb)
    zf = np.abs(test["t"][finite])
    szf = np.abs(spread_z[finite])
    rel_a = [u for u in units if A.at[u, "class"] == "relevant"]
    rel_b = [u for u in units if B.at[u, "class"] == "relevant"]
    n_agree, n = int(agree.sum()), len(units)
    method_a, method_b = _se_method(ta), _se_method(tb)
    dfs = test["df"][finite]
    statistic = (f"per unit t = (λa − λb)/sqrt(SEa² + SEb²); SE of a: {method_a}; SE of b: {method_b}; "
                 + ("normal reference" if dfs.size and np.all(np.isinf(dfs)) else "Welch–Satterthwaite df")
                 + f"; two-sided p, Holm-adjusted over {int(np.isfinite(test['p']).sum())} units; "
                 f"a unit differs when p_holm < {alpha:g}")
    disagreeing = [u for u, g in zip(units, agree) if not g]
    differing = [u for u, d in zip(units, differs) if d]
    # no standard error on a side (fewer than 3 levels in the window, one seed of a pool…): no test of λa = λb
    judged = np.isfinite(np.asarray(se_a, float)) & np.isfinite(np.asarray(se_b, float))
    unjudged = [u for u, j, f in zip(units, judged, finite) if f and not j]
    summary = {
        "n_units": n, "n_agree": n_agree, "agreement": n_agree / n if n else float("nan"),
        "all_agree": n_agree == n and n > 0,
        "distance": float(np.sqrt(np.mean(zf ** 2))) if zf.size else float("nan"),
        "max_abs_z": float(zf.max()) if zf.size else float("nan"),
        "spread_distance": float(np.sqrt(np.mean(szf ** 2))) if szf.size else float("nan"),
        "rms_difference": float(np.sqrt(np.mean(diff[finite] ** 2))) if finite.any() else float("nan"),
        "relevant_a": rel_a, "relevant_b": rel_b, "same_relevant": rel_a == rel_b,
        "disagreeing": disagreeing, "differing": differing, "n_differ": len(differing),
        "class_flips_within_uncertainty": [u for u in disagreeing if u not in differing],
        "alpha": alpha, "statistic": statistic, "se_method_a": method_a, "se_method_b": method_b,
        "relation": relation, "no_uncertainty": unjudged, "n_finite": int(finite.sum()),
    }
    summary["same"] = summary["all_agree"] and not differing and not unjudged
    verdict = _unit_verdict(summary, labels, relation)
    return FlowComparison("unit", table, summary, verdict, labels, ta.granularity)


def _fmt_units(units) -> str:
    return ", ".join(units) if units else "none"


_CONTROL_HEAD = "control vs trained (a trained flow against its untrained control; no transfer prediction): "


def _unit_verdict(s: dict, labels, relation: str) -> str:
    unjudged = s.get("no_uncertainty") or []
    if unjudged and len(unjudged) == s.get("n_finite", s["n_units"]):
        head = _CONTROL_HEAD if relation == "control" else ""
        return head + ("cannot be judged: no uncertainties — no eigenvalue has a standard error on both sides "
                       "(a single run needs at least 3 level-to-level ratios in the fit window for its bootstrap "
                       "SE; a pool needs several seeds), so whether the eigenvalues differ cannot be tested; the "
                       "classes agree in "
                       f"{s['n_agree']}/{s['n_units']} units")
    verdict = _judged_verdict(s, labels, relation)
    if unjudged:
        verdict += (f"; cannot be judged for {_fmt_units(unjudged)}: no uncertainties (no standard error on both "
                    f"sides), these units are left out of the test")
    return verdict


def _judged_verdict(s: dict, labels, relation: str) -> str:
    n, n_agree = s["n_units"], s["n_agree"]
    differ = s["differing"]
    soft = s["class_flips_within_uncertainty"]
    soft_text = (f"; the class changes in {_fmt_units(soft)} are within the eigenvalues' uncertainty "
                 f"(no significant difference of λ): boundary cases, not evidence of different flows") if soft else ""
    if relation == "control":
        head = _CONTROL_HEAD
        if s["same"]:
            return head + ("same: every unit has the same class and no eigenvalue differs beyond its uncertainty, "
                           "so this flow's classes are reproduced without training")
        cls = ("every unit has the same class" if s["all_agree"]
               else f"training changes the class of {n - n_agree}/{n} unit(s) ({_fmt_units(s['disagreeing'])})")
        lam = (f"λ differs significantly (Holm p < {s['alpha']:g}) in {_fmt_units(differ)}" if differ
               else "no eigenvalue differs significantly")
        tail = (" — the class pattern is reproduced without training" + ("; training shifts only the eigenvalues "
                "listed" if differ else "") if s["all_agree"] else "")
        return head + cls + "; " + lam + tail + soft_text
    if s["same"]:
        return ("same: every unit carries the same class and no eigenvalue differs beyond its uncertainty; "
                "same universality class, winning tickets are predicted to transfer between the two")
    lam = (f"; λ differs significantly (Holm p < {s['alpha']:g}) in {_fmt_units(differ)}" if differ
           else "; no eigenvalue differs significantly")
    if s["all_agree"]:
        return ("universal: every unit carries the same class (same relevant, marginal and irrelevant directions); "
                "winning tickets are predicted to transfer between the two" + lam)
    if s["same_relevant"]:
        return (f"same relevant units, {n - n_agree} unit(s) differ between marginal and irrelevant "
                f"({_fmt_units(s['disagreeing'])}); same universality class by its relevant directions: transfer "
                f"predicted, less firmly than with full agreement" + lam + soft_text)
    if soft and set(s["disagreeing"]) == set(soft):
        return ("classes differ only where the eigenvalues are statistically indistinguishable ("
                + _fmt_units(soft) + "): no evidence of different universality classes; transfer predicted, "
                "less firmly than with full agreement" + lam)
    only_a = [u for u in s["relevant_a"] if u not in s["relevant_b"]]
    only_b = [u for u in s["relevant_b"] if u not in s["relevant_a"]]
    return ("different relevant units (relevant only in a: " + _fmt_units(only_a) + "; only in b: "
            + _fmt_units(only_b) + "): different universality classes; winning tickets are not predicted to "
            "transfer" + lam + soft_text)


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
                   "between the two (E-LTH) is predicted to transfer")
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
