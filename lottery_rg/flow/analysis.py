"""The flow report a referee accepts: the trained eigenvalues next to their null models, and what training changed.

:func:`null_report` puts, per unit, side by side:

* the trained λ (pooled over seeds: mean ± SE across seeds),
* the untrained controls — the run's own θ_k and θ_0 pruned by the same schedule without
  training (:meth:`~lottery_rg.flow.IMPFlow.untrained_control`), when the run's weight files
  are at hand or the flow carries them,
* the analytic init-scale null (:class:`~lottery_rg.flow.null.InitScaleNull`: each tensor's
  initial law pruned by the same global rule in closed form — no data, no training),
* the **training effect** λ_trained − λ_null with its SE across seeds and one of three
  answers (:func:`~lottery_rg.flow.eigen.compare_units`): *different* (training moved the
  unit beyond the null; Holm-adjusted), *equivalent* (two one-sided tests against the unit's
  margin) or *not resolved* (with the minimal detectable difference),
* the trend of λ_i(n) over the window (steady / drifts / not resolved).

Its verdict names the units training moved beyond the null, and says plainly when none.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..plotting import markdown_table
from .eigen import EigenvalueTable, FlowComparison, _FrameLike, compare_units
from .null import InitScaleNull
from .pooled import pool_tables

__all__ = ["NullReport", "null_report", "FlowReport", "flow_report", "CONTROL_NAMES"]

logger = logging.getLogger(__name__)

#: control key -> how the tables name it
CONTROL_NAMES = {"rewind": "θ_k control", "init": "θ_0 control"}


def _pm(value: float, se: float, digits: int = 4) -> str:
    if not np.isfinite(value):
        return "–"
    if np.isfinite(se) and se > 0:
        return f"{value:.{digits}f} ± {se:.{digits}f}"
    return f"{value:.{digits}f}"


def _spm(value: float, se: float, digits: int = 4) -> str:
    if not np.isfinite(value):
        return "–"
    return f"{value:+.{digits}f} ± {se:.{digits}f}" if np.isfinite(se) else f"{value:+.{digits}f}"


@dataclass(eq=False)
class NullReport(_FrameLike):
    """Trained eigenvalues against the untrained controls and the init-scale null; behaves like ``table``.

    ``table`` (one row per unit): kind, stage, lambda, se, class, lambda_rewind / se_rewind
    (θ_k control), lambda_init / se_init (θ_0 control), lambda_null, class_null, effect
    (trained − null), effect_se, effect_df, ci_low / ci_high (95 % interval of the effect),
    p_holm, margin, mdd, verdict (vs the null: different / equivalent / not resolved), trend.
    ``effect`` is the full trained-vs-null :class:`~lottery_rg.flow.eigen.FlowComparison`,
    ``control_effects`` the comparisons with each control.
    """

    table: pd.DataFrame
    trained: EigenvalueTable
    null: EigenvalueTable
    effect: FlowComparison
    controls: dict[str, EigenvalueTable] = field(default_factory=dict)
    control_effects: dict[str, FlowComparison] = field(default_factory=dict)
    label: str = ""
    null_source: str = ""

    @property
    def moved(self) -> list[str]:
        """Units whose λ training moved beyond the init-scale null (significant, beyond the margin)."""
        return [u for u, v in self.table["verdict"].items() if v == "different"]

    @property
    def verdict(self) -> str:
        t = self.table
        eq = [u for u, v in t["verdict"].items() if v == "equivalent"]
        nr = [u for u, v in t["verdict"].items() if v == "not resolved"]
        if self.effect.summary.get("single_run"):
            return ("one seed: no unit can be tested against the null (a single run's bootstrap SE is indicative "
                    "only); the effects above are descriptive. Run 5 seeds and pool them to resolve them.")
        moved = self.moved
        parts = []
        if moved:
            parts.append("training moved λ beyond the init-scale null in " + ", ".join(
                f"{u} ({t.at[u, 'effect']:+.4f} ± {t.at[u, 'effect_se']:.4f})" for u in moved))
        elif eq:
            parts.append("training moved no unit's λ beyond the init-scale null: every resolved unit's eigenvalue "
                         "is what pruning untrained weights of the same per-layer scale gives")
        else:  # nothing resolved either way: say so instead of implying the null explains the flow
            parts.append("no unit is resolved against the init-scale null: the seeds can neither show that "
                         "training moved a λ nor that it did not")
        if eq:
            small = [u for u in eq if u in self.effect.summary.get("significant_within_margin", [])]
            parts.append(f"equivalent to the null (within its margin): {', '.join(eq)}"
                         + (f" — of which {', '.join(small)} differ significantly but by less than the margin"
                            if small else ""))
        if nr:
            parts.append("not resolved: " + ", ".join(f"{u} (MDD {t.at[u, 'mdd']:.4f})" for u in nr))
        classes_null = (t["class"] == t["class_null"]).all()
        parts.append("every unit has the init-scale null's class" if classes_null else
                     "the class differs from the null's in "
                     + ", ".join(u for u in t.index if t.at[u, "class"] != t.at[u, "class_null"]))
        return "; ".join(parts) + "."

    def to_markdown(self, digits: int = 4) -> str:
        t = self.table
        head = ["unit", "λ trained", "class"]
        have = [k for k in ("rewind", "init") if f"lambda_{k}" in t]
        head += [f"λ {CONTROL_NAMES[k]}" for k in have]
        head += ["λ init-scale null", "class (null)", "training effect (trained − null)", "95 % CI", "margin",
                 "MDD", "vs null", "trend"]
        rows = []
        for u, r in t.iterrows():
            row = [u, _pm(r["lambda"], r["se"], digits), r["class"]]
            row += [_pm(r[f"lambda_{k}"], r[f"se_{k}"], digits) for k in have]
            ci = (f"[{r['ci_low']:+.{digits}f}, {r['ci_high']:+.{digits}f}]"
                  if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]) else "–")
            row += [f"{r['lambda_null']:.{digits}f}", r["class_null"], _spm(r["effect"], r["effect_se"], digits), ci,
                    f"{r['margin']:.{digits}f}", f"{r['mdd']:.{digits}f}" if np.isfinite(r["mdd"]) else "–",
                    r["verdict"], r["trend"]]
            rows.append(row)
        trained = self.trained
        seeds = getattr(trained, "n_seeds", 1) if getattr(trained, "per_seed", None) else 1
        lv = trained.levels
        title = (f"Null models of the IMP flow of {self.label} ({trained.granularity} granularity, levels "
                 f"{lv[0]}–{lv[-1]}, {seeds} seed{'s' if seeds > 1 else ''}). λ ± SE across seeds"
                 + (" (one seed: the SE shown is the within-run bootstrap, indicative only)" if seeds == 1 else "")
                 + f". Init-scale null: each prunable tensor's initial law ({self.null_source}) pruned by the same "
                 f"global rule in closed form — no data, no training. "
                 + ("Controls: the run's own weights pruned by the same schedule without training. "
                    if have else "Controls θ_k / θ_0: not available (they need the run's weight files). "))
        lines = [title, "", markdown_table(head, rows), "",
                 f"Effect test: {self.effect.summary['statistic']}.",
                 f"Equivalence: {self.effect.summary['equivalence']}.",
                 ("trend: steady / drifts / not resolved from the seeds' slopes of λ_i(n) (drift = change over the "
                  "window; steady = within ± the unit's margin); 'eigenfunction' is used only for steady units."),
                 "", f"Verdict (trained vs init-scale null): {self.verdict}"]
        for k, cmp in self.control_effects.items():
            lines += ["", f"Trained vs {CONTROL_NAMES[k]}: {cmp.verdict}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"NullReport({self.label}, {len(self.table)} units, moved: {self.moved})"


def null_report(subject, granularity: str = "block", *, controls: Mapping | None = None,
                null: InitScaleNull | None = None, alpha: float = 0.05, margin: float | None = None,
                margin_fraction: float | None = None, margin_floor: float | None = None,
                **eigen_kwargs) -> NullReport:
    """The trained flow (an IMPFlow or a FlowPool) against its controls and its init-scale null.

    ``controls``: {"rewind": flow or pool, "init": flow or pool} (θ_k and θ_0 pruned without
    training; default: those the flow carries, :attr:`IMPFlow.controls`). ``null``: the
    init-scale null (default: :class:`InitScaleNull` of ``subject``, from a fresh
    initialisation of the recorded architecture). ``eigen_kwargs`` (window, start, rule,
    ddof, normalize, …) apply to every flow alike; ``margin*`` and ``alpha`` to the tests.
    """
    null = null if null is not None else InitScaleNull(subject)
    if controls is None:
        controls = _carried_controls(subject)
    trained = subject.eigenvalues(granularity, **eigen_kwargs)
    null_table = null.eigenvalues(granularity, **eigen_kwargs)
    label = subject.label
    mkw = dict(alpha=alpha, margin=margin, margin_fraction=margin_fraction, margin_floor=margin_floor)
    effect = compare_units(trained, null_table, (label, null.label), relation="control", paired=False, **mkw)
    units = list(trained.table.index)
    T = trained.table
    table = pd.DataFrame({"kind": T["kind"], "stage": T["stage"], "lambda": T["lambda"], "se": T["se"],
                          "class": T["class"]}, index=trained.table.index)
    control_tables, control_effects = {}, {}
    for key, ctrl in (controls or {}).items():
        if key not in CONTROL_NAMES or ctrl is None:
            continue
        ct = ctrl.eigenvalues(granularity, **eigen_kwargs)
        control_tables[key] = ct
        table[f"lambda_{key}"] = ct.table.loc[units, "lambda"].to_numpy(float)
        table[f"se_{key}"] = ct.table.loc[units, "se"].to_numpy(float)
        control_effects[key] = compare_units(trained, ct, (label, ctrl.label), relation="control", **mkw)
    E = effect.table
    from .uncertainty import _t_quantile

    q = _t_quantile(0.975, E["df"].to_numpy(float))
    half = q * E["se_diff"].to_numpy(float)
    table["lambda_null"] = null_table.table.loc[units, "lambda"].to_numpy(float)
    table["class_null"] = null_table.table.loc[units, "class"].to_numpy(object)
    table["effect"] = E["diff"].to_numpy(float)
    table["effect_se"] = E["se_diff"].to_numpy(float)
    table["effect_df"] = E["df"].to_numpy(float)
    table["ci_low"] = table["effect"] - half
    table["ci_high"] = table["effect"] + half
    table["p_holm"] = E["p_holm"].to_numpy(float)
    table["margin"] = E["margin"].to_numpy(float)
    table["mdd"] = E["mdd"].to_numpy(float)
    table["verdict"] = E["verdict"].to_numpy(object)
    table["trend"] = T["trend"].to_numpy(object) if "trend" in T else "–"
    return NullReport(table, trained, null_table, effect, control_tables, control_effects, label, null.source)


class _CarriedControls:
    """The controls the seeds of a pool carry, with the pool's seed labels (so comparisons pair them)."""

    def __init__(self, flows, labels):
        self.flows, self.labels = list(flows), list(labels)
        self.label = f"{self.flows[0].label} ({len(self.flows)} seeds)"

    def eigenvalues(self, granularity: str = "block", *args, **kwargs) -> EigenvalueTable:
        tables = [f.eigenvalues(granularity, *args, **kwargs) for f in self.flows]
        return pool_tables(tables, self.labels, rule=kwargs.get("rule"), label=self.label)


def _carried_controls(subject) -> dict:
    """The controls a flow carries (``flow.controls``), pooled for a pool when every seed carries one."""
    flows = list(getattr(subject, "flows", [subject]))
    out = {}
    for key in CONTROL_NAMES:
        got = [f.control(key) if hasattr(f, "control") else None for f in flows]
        if all(c is not None for c in got):
            out[key] = _CarriedControls(got, subject.labels) if hasattr(subject, "flows") else got[0]
    return out


class FlowReport(NamedTuple):
    """What a run summary, a card and the plots show of one granularity, computed once for all of them: the trained
    eigenvalue table and its null report, or why no null could be built."""

    table: EigenvalueTable
    report: NullReport | None
    missing: str = ""

    @property
    def shown(self):
        """What the plots draw: the null report (trained λ beside the nulls), else the plain table."""
        return self.report if self.report is not None else self.table

    def null_markdown(self) -> str:
        return self.report.to_markdown() if self.report is not None else \
            f"(no init-scale null for this flow: {self.missing})"


def flow_report(flow, granularity: str) -> FlowReport:
    """:func:`null_report` of ``flow`` at ``granularity`` with default settings, or the plain table and the reason
    when the flow records no buildable architecture."""
    try:
        report = null_report(flow, granularity)
    except (ValueError, KeyError, TypeError) as e:  # e.g. a flow without a buildable architecture
        logger.info("no init-scale null for %s: %s", getattr(flow, "label", "the flow"), e)
        return FlowReport(flow.eigenvalues(granularity), None, str(e))
    return FlowReport(report.trained, report)
