"""The IMP flow and its renormalization-group reading (SCIENCE §2, seed 001 Eq. 13).

Prunable weights are grouped into units i (a tensor, a residual block / encoder layer, or
a stage; the grouping comes from :meth:`lottery_rg.families.Layout.units`). After IMP
level n::

    M_i(n) = surviving weights in unit i / surviving prunable weights in the whole model

so that Σ_i M_i(n) = 1. :class:`IMPFlow` records, level by level, the number of
surviving weights of every prunable tensor (and the level's evaluation metrics); every
granularity's M_i(n) follows from those counts.

Eigenvalues. For each consecutive pair of levels (n, n+1) inside the window with
M_i(n) > 0, λ_i(n) = M_i(n+1) / M_i(n). The reported λ_i is the mean over the pairs and
``std`` their standard deviation. **Convention: population standard deviation**
(``ddof=0``, numpy's default) unless ``ddof=1`` is passed; the paper does not say which
it used. Pairs with M_i(n) = 0 are skipped and counted (``n_skipped``); units whose M
reached 0 inside the window are flagged ``collapsed``. Only pairs of *consecutive* level
numbers count as one IMP application; the window stops at the first missing level.

Classes (:func:`classify`, :class:`ClassRule`): relevant if λ − 1 > k·std, irrelevant if
1 − λ > k·std, marginal otherwise (k = 1 in the paper), with an absolute tolerance of
1e-9 added to the threshold so that values published with two decimals on the boundary
(CIFAR-10's 1.01 ± 0.01 in Table 2) are marginal. The paper also reads a small std
(< 5 % of λ) as evidence that M_i is an eigenfunction; the table reports that flag.

Command line::

    python -m lottery_rg.flow RUN_DIR [--granularity block] [--window N] [--start 0]
        [--compare OTHER] [--fit] [--plots OUT_DIR] [--x UNIT --y UNIT]

RUN_DIR may also be a ``flow.json`` file or a Hub repository id.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .io import json_path, read_json
from .families import GRANULARITIES, Layout, Unit, family_of, get_family

__all__ = [
    "SCHEMA_VERSION", "FLOW_FILE", "CLASSES", "UNDETERMINED", "ClassRule", "classify", "IMPFlow",
    "EigenvalueTable", "FlowComparison", "main",
]

SCHEMA_VERSION = 1
FLOW_FILE = "flow.json"
CONFIG_FILE = "lottery_config.json"
MASK_FILE = "mask.safetensors"
METRICS_FILE = "metrics.json"
CLASSES = ("relevant", "marginal", "irrelevant")
UNDETERMINED = "undetermined"  # no usable pair of levels (λ is NaN)
_LEVEL_DIR = re.compile(r"^level_(\d+)$")


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


# --------------------------------------------------------------------------- helpers


def _jsonable(x: Any) -> Any:
    """Plain JSON types: numpy / torch scalars to Python numbers, non-finite floats to None."""
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        x = float(x)
        return x if math.isfinite(x) else None
    if x is None or isinstance(x, str):
        return x
    if hasattr(x, "item") and getattr(x, "ndim", 1) == 0:  # torch / numpy 0-d
        return _jsonable(x.item())
    if hasattr(x, "tolist"):
        return _jsonable(x.tolist())
    return str(x)


def _unit_to_dict(u: Unit) -> dict:
    d = dataclasses.asdict(u)
    d["params"] = list(u.params)
    return d


def _unit_from(u: Unit | Mapping) -> Unit:
    if isinstance(u, Unit):
        return u
    return Unit(name=str(u["name"]), kind=str(u["kind"]), stage=u.get("stage"), index=u.get("index"),
                downsample=bool(u.get("downsample", False)), params=tuple(u["params"]))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or v is pd.NA:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def _markdown(df: pd.DataFrame, digits: dict[str, int] | int = 4, index: bool = True) -> str:
    """A GitHub-markdown table (pandas' to_markdown needs the optional 'tabulate')."""
    cols = list(df.columns)
    head = ([df.index.name or ""] if index else []) + [str(c) for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for idx, row in df.iterrows():
        cells = [_fmt(idx)] if index else []
        for c in cols:
            dg = digits.get(c, 4) if isinstance(digits, dict) else digits
            cells.append(_fmt(row[c], dg))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


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
    M_start (M_i at the first level of the window), lambda, std, n_pairs, n_skipped,
    collapsed, collapse_level, eigenfunction (std < eigen_tol · λ) and class.
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
        for name, r in t.iterrows():
            n = []
            if r["collapsed"]:
                n.append(f"M reached 0 at level {r['collapse_level']}; {r['n_skipped']} pair(s) skipped")
            if r["n_pairs"] and not r["eigenfunction"] and math.isfinite(r["lambda"]):
                n.append(f"std ≥ {100 * self.eigen_tol:.0f} % of λ")
            notes.append("; ".join(n))
        view = pd.DataFrame({
            "kind": t["kind"], "stage": t["stage"], "index": t["index"], "M(start)": t["M_start"],
            "λ": t["lambda"], "std": t["std"], "pairs": t["n_pairs"], "class": t["class"], "notes": notes,
        }, index=t.index)
        std_name = "population" if self.ddof == 0 else f"ddof={self.ddof}"
        lv = f"levels {self.levels[0]}–{self.levels[-1]}" if self.levels else "no levels"
        title = f"IMP-flow eigenvalues{' of ' + self.label if self.label else ''} ({self.granularity} granularity, " \
                f"{lv}, {max(len(self.levels) - 1, 0)} IMP applications, {std_name} std)"
        return title + "\n\n" + _markdown(view, {"M(start)": digits, "λ": digits, "std": digits})

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
        if self.mode == "unit":
            head = f"Unit-by-unit comparison of the IMP flows of {a} (a) and {b} (b), {self.granularity} granularity"
            s = self.summary
            lines = [
                f"agreeing classes: {s['n_agree']}/{s['n_units']} units ({100 * s['agreement']:.1f} %)",
                f"distance between the eigenvalue vectors: RMS of (λa − λb)/sqrt(σa² + σb²) = {_fmt(s['distance'], 3)}"
                f" (max |z| = {_fmt(s['max_abs_z'], 3)}; RMS of λa − λb = {_fmt(s['rms_difference'], 4)})",
                f"relevant units: a = {s['relevant_a'] or 'none'}; b = {s['relevant_b'] or 'none'}",
            ]
        else:
            head = (f"Stage-by-stage comparison of the block classes of {a} (a) and {b} (b)"
                    + (" (each stage's entry block excluded)" if self.summary.get("exclude_entry") else ""))
            lines = []
        parts = [head, _markdown(self.table, digits)]
        if lines:
            parts.append("\n".join(lines))
        parts.append(f"Verdict: {self.verdict}")
        return "\n\n".join(parts)

    def __str__(self) -> str:
        return self.to_markdown()

    def __repr__(self) -> str:
        return f"FlowComparison(mode={self.mode!r}, {self.labels[0]} vs {self.labels[1]}: {self.verdict!r})"


def _compare_units(ta: EigenvalueTable, tb: EigenvalueTable, labels) -> FlowComparison:
    units = list(ta.table.index)
    A, B = ta.table, tb.table.loc[units]
    la, lb = A["lambda"].to_numpy(float), B["lambda"].to_numpy(float)
    sa, sb = A["std"].to_numpy(float), B["std"].to_numpy(float)
    pooled = np.sqrt(np.nan_to_num(sa) ** 2 + np.nan_to_num(sb) ** 2)
    diff = la - lb
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(pooled > 0, diff / pooled, np.where(np.abs(diff) <= 1e-12, 0.0, np.inf * np.sign(diff)))
    agree = (A["class"].to_numpy() == B["class"].to_numpy()) & (A["class"].to_numpy() != UNDETERMINED)
    table = pd.DataFrame({
        "kind": A["kind"], "stage": A["stage"], "index": A["index"],
        "lambda_a": la, "std_a": sa, "class_a": A["class"], "lambda_b": lb, "std_b": sb, "class_b": B["class"],
        "agree": agree, "z": z,
    }, index=pd.Index(units, name="unit"))
    finite = np.isfinite(la) & np.isfinite(lb)
    zf = np.abs(z[finite])
    rel_a = [u for u in units if A.at[u, "class"] == "relevant"]
    rel_b = [u for u in units if B.at[u, "class"] == "relevant"]
    n_agree, n = int(agree.sum()), len(units)
    summary = {
        "n_units": n, "n_agree": n_agree, "agreement": n_agree / n if n else float("nan"),
        "all_agree": n_agree == n and n > 0,
        "distance": float(np.sqrt(np.mean(zf ** 2))) if zf.size else float("nan"),
        "max_abs_z": float(zf.max()) if zf.size else float("nan"),
        "rms_difference": float(np.sqrt(np.mean(diff[finite] ** 2))) if finite.any() else float("nan"),
        "relevant_a": rel_a, "relevant_b": rel_b, "same_relevant": rel_a == rel_b,
        "disagreeing": [u for u, g in zip(units, agree) if not g],
    }
    if summary["all_agree"]:
        verdict = ("universal: every unit carries the same class (same relevant, marginal and irrelevant "
                   "directions); winning tickets are predicted to transfer between the two")
        if summary["distance"] > 2:
            verdict += (f", although the eigenvalues differ by {summary['distance']:.2g} pooled standard "
                        f"deviations (RMS)")
    elif summary["same_relevant"]:
        verdict = (f"same relevant units, {n - n_agree} unit(s) differ between marginal and irrelevant "
                   f"({', '.join(summary['disagreeing'])}); same universality class by its relevant directions: "
                   f"transfer predicted, less firmly than with full agreement")
    else:
        only_a = [u for u in rel_a if u not in rel_b]
        only_b = [u for u in rel_b if u not in rel_a]
        verdict = ("different relevant units (relevant only in a: " + (", ".join(only_a) or "none")
                   + "; only in b: " + (", ".join(only_b) or "none")
                   + "): different universality classes; winning tickets are not predicted to transfer")
    return FlowComparison("unit", table, summary, verdict, labels, ta.granularity)


def _compare_stages(ta: EigenvalueTable, tb: EigenvalueTable, labels, exclude_entry: bool) -> FlowComparison:
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


# --------------------------------------------------------------------------- the flow


@dataclass(eq=False)
class IMPFlow:
    """Surviving-weight counts of every prunable tensor at every IMP level, plus metrics.

    ``model``: JSON description of the model (at least ``family`` and ``architecture``);
    ``tensors``: prunable tensor name -> number of elements (ordered); ``units``:
    granularity -> list of :class:`~lottery_rg.families.Unit`; ``schedule``: the pruning
    schedule (prune_fraction, schedule, pruning, rewind_steps, ...); ``levels``: records
    ``{"level": n, "surviving": {tensor: count}, "metrics": {...}}`` sorted by level.
    Equality compares the JSON form (:meth:`to_dict`).
    """

    model: dict
    tensors: dict[str, int]
    units: dict[str, list[Unit]]
    schedule: dict = field(default_factory=dict)
    levels: list[dict] = field(default_factory=list)

    def __post_init__(self):
        self.model = _jsonable(dict(self.model or {}))
        self.schedule = _jsonable(dict(self.schedule or {}))
        self.tensors = {str(k): int(v) for k, v in self.tensors.items()}
        if not self.tensors:
            raise ValueError("an IMP flow needs at least one prunable tensor")
        if any(v <= 0 for v in self.tensors.values()):
            raise ValueError("every prunable tensor must have at least one element")
        self.units = {str(g): [_unit_from(u) for u in us] for g, us in self.units.items()}
        for g, us in self.units.items():
            seen: dict[str, str] = {}
            for u in us:
                for p in u.params:
                    if p not in self.tensors:
                        raise ValueError(f"{g} unit {u.name!r} holds {p!r}, which is not a prunable tensor of this flow")
                    if p in seen:
                        raise ValueError(f"{p!r} belongs to two {g} units ({seen[p]!r} and {u.name!r})")
                    seen[p] = u.name
            missing = [t for t in self.tensors if t not in seen]
            if missing:
                raise ValueError(f"the {g} units do not cover the prunable tensors {missing[:5]}; M would not sum to 1")
            names = [u.name for u in us]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {g} unit names")
        records = [self._record(r["level"], r["surviving"], r.get("metrics")) for r in self.levels]
        numbers = [r["level"] for r in records]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"duplicate level numbers in {numbers}")
        self.levels = sorted(records, key=lambda r: r["level"])

    def _record(self, level: int, surviving: Mapping[str, int], metrics: Mapping | None) -> dict:
        level = int(level)
        if level < 0:
            raise ValueError(f"level numbers start at 0, got {level}")
        surviving = {str(k): int(v) for k, v in surviving.items()}
        extra = [k for k in surviving if k not in self.tensors]
        missing = [k for k in self.tensors if k not in surviving]
        if extra or missing:
            raise ValueError(f"level {level}: counts for unknown tensors {extra[:5]} / missing tensors {missing[:5]}")
        for k, v in surviving.items():
            if not 0 <= v <= self.tensors[k]:
                raise ValueError(f"level {level}: {v} surviving weights in {k!r}, which has {self.tensors[k]}")
        if sum(surviving.values()) == 0:
            raise ValueError(f"level {level}: no weight survives")
        return {"level": level, "surviving": {k: surviving[k] for k in self.tensors},
                "metrics": _jsonable(dict(metrics or {}))}

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_layout(cls, layout: Layout, tensors: Mapping[str, int], *, model_info: dict | None = None,
                    schedule: dict | None = None) -> "IMPFlow":
        """A flow without levels for ``tensors`` (name -> numel) grouped by ``layout``."""
        names = list(tensors)
        units = {g: layout.units(names, g) for g in GRANULARITIES}
        info = dict(model_info or {})
        info.setdefault("family", layout.family)
        return cls(model=info, tensors=dict(tensors), units=units, schedule=dict(schedule or {}))

    @classmethod
    def from_model(cls, model, prunable: Sequence[str], *, model_info: dict | None = None,
                   schedule: dict | None = None) -> "IMPFlow":
        """A flow without levels for ``model``'s ``prunable`` tensors (works on the meta device)."""
        model = getattr(model, "module", model)  # DDP
        family = family_of(model)
        params = dict(model.named_parameters())
        missing = [p for p in prunable if p not in params]
        if missing:
            raise ValueError(f"the model has no parameters named {missing[:5]}")
        if model_info is None:
            try:
                model_info = family.architecture(model)
            except ValueError:
                model_info = {"architecture": type(model).__name__}
        model_info = {"family": family.name, **dict(model_info)}
        return cls.from_layout(family.layout(model), {p: params[p].numel() for p in prunable},
                               model_info=model_info, schedule=schedule)

    def add_level(self, level: int, mask: Mapping[str, Any], metrics: dict | None = None) -> dict:
        """Record level ``level`` from its bool mask (or from counts); replaces an existing record."""
        surviving = {}
        for name, m in mask.items():
            if isinstance(m, (int, np.integer)):
                surviving[name] = int(m)
                continue
            numel = int(m.numel()) if hasattr(m, "numel") else int(np.size(m))
            if name in self.tensors and numel != self.tensors[name]:
                raise ValueError(f"mask entry {name!r} has {numel} elements, the flow's tensor has {self.tensors[name]}")
            dtype = str(getattr(m, "dtype", ""))
            if "bool" not in dtype:
                raise ValueError(f"mask entry {name!r} is {dtype or type(m).__name__}; masks must be boolean")
            surviving[name] = int(m.sum())
        rec = self._record(level, surviving, metrics)
        self.levels = sorted([r for r in self.levels if r["level"] != rec["level"]] + [rec], key=lambda r: r["level"])
        return rec

    def set_metrics(self, level: int, metrics: dict, *, update: bool = True) -> None:
        """Attach (merge, or with ``update=False`` replace) the metrics of a recorded level."""
        rec = self._level(level)
        rec["metrics"] = {**rec["metrics"], **_jsonable(dict(metrics))} if update else _jsonable(dict(metrics))

    def _level(self, level: int) -> dict:
        for r in self.levels:
            if r["level"] == int(level):
                return r
        raise KeyError(f"level {level} is not recorded (levels: {self.level_numbers})")

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "library": "lottery_rg",
            "model": copy.deepcopy(self.model),
            "schedule": copy.deepcopy(self.schedule),
            "tensors": dict(self.tensors),
            "units": {g: [_unit_to_dict(u) for u in us] for g, us in self.units.items()},
            "levels": copy.deepcopy(self.levels),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "IMPFlow":
        version = data.get("schema_version")
        if version is None:
            raise ValueError("not an IMP flow: no 'schema_version' (expected a lottery_rg flow.json)")
        if int(version) > SCHEMA_VERSION:
            raise ValueError(f"flow schema version {version} is newer than this lottery_rg understands "
                             f"({SCHEMA_VERSION}); upgrade lottery_rg")
        for key in ("model", "tensors", "units"):
            if key not in data:
                raise ValueError(f"not an IMP flow: missing {key!r}")
        return cls(model=data["model"], tensors=data["tensors"], units=data["units"],
                   schedule=data.get("schedule") or {}, levels=data.get("levels") or [])

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``flow.json`` atomically (temp file, then ``os.replace``); ``path`` is a file or a directory."""
        path = json_path(path, FLOW_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():
                tmp.unlink()
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "IMPFlow":
        """Read a ``flow.json`` (or a directory holding one)."""
        path = json_path(path, FLOW_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no flow file at {path}")
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not an IMP flow file")
        return cls.from_dict(data)

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike) -> "IMPFlow":
        """The flow of an IMP run directory.

        Reads ``run_dir/flow.json`` when present and adds any ``level_XX`` whose mask is on
        disk but missing from it (a run interrupted between writing a level and the flow).
        Otherwise rebuilds the flow from ``lottery_config.json`` (model, prunable, lottery)
        and the ``level_XX/mask.safetensors`` + ``metrics.json`` files; the model is built
        on the meta device only to learn its layout. ``metrics.json`` is either the
        trainer's level record (metrics under its ``"metrics"`` key) or a flat object.
        """
        from .masks import load_mask

        run_dir = Path(run_dir)
        if not run_dir.is_dir():
            raise FileNotFoundError(f"no run directory at {run_dir}")
        level_dirs = sorted(
            (int(m.group(1)), p) for p in run_dir.iterdir() if p.is_dir() and (m := _LEVEL_DIR.match(p.name))
        )
        level_dirs = [(n, p) for n, p in level_dirs if (p / MASK_FILE).is_file()]
        if (run_dir / FLOW_FILE).is_file():
            flow = cls.load(run_dir / FLOW_FILE)
            for n, p in level_dirs:
                if n not in flow.level_numbers:
                    flow.add_level(n, load_mask(p / MASK_FILE), _read_metrics(p))
            return flow
        config_path = run_dir / CONFIG_FILE
        if not config_path.is_file():
            raise FileNotFoundError(f"{run_dir} holds neither {FLOW_FILE} nor {CONFIG_FILE}; is it an IMP run directory?")
        config = read_json(config_path)
        for key in ("model", "prunable"):
            if key not in config:
                raise ValueError(f"{config_path} has no {key!r} entry")
        model_info = dict(config["model"])
        if "family" not in model_info:
            raise ValueError(f"{config_path}: the 'model' entry names no 'family'")
        import torch

        with torch.device("meta"):
            model = get_family(model_info["family"]).build(model_info)
        flow = cls.from_model(model, list(config["prunable"]), model_info=model_info,
                              schedule=config.get("lottery") or {})
        for n, p in level_dirs:
            flow.add_level(n, load_mask(p / MASK_FILE, model), _read_metrics(p))
        return flow

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, revision: str | None = None, *,
                        filename: str = FLOW_FILE, subfolder: str | None = None, **hub_kwargs) -> "IMPFlow":
        """A flow from a run directory, a ticket directory, a ``flow.json`` file, or a Hub repository.

        Local paths win; anything else is treated as a repository id and ``filename`` is
        fetched with :func:`huggingface_hub.hf_hub_download` (``revision``, ``subfolder``
        and further keyword arguments such as ``cache_dir`` or ``token`` are passed on).
        """
        path = Path(os.path.expanduser(os.fspath(path_or_repo_id)))
        if path.is_dir():
            if subfolder:
                path = path / subfolder
            if filename != FLOW_FILE:
                return cls.load(path / filename)
            return cls.from_run_dir(path)
        if path.is_file():
            return cls.load(path)
        text = os.fspath(path_or_repo_id)
        if text.startswith((".", "/", "~")) or text.endswith(".json") or text.count("/") > 1 or "\\" in text:
            raise FileNotFoundError(f"no flow at {text} (not a local file or directory, nor a Hub repository id)")
        from huggingface_hub import hf_hub_download

        kwargs = dict(hub_kwargs)
        if subfolder:
            kwargs["subfolder"] = subfolder
        file = hf_hub_download(repo_id=text, filename=filename, revision=revision, **kwargs)
        return cls.load(file)

    @classmethod
    def untrained_control(cls, run_dir: str | os.PathLike) -> "IMPFlow":
        """The flow the run's schedule would follow *without training*: its rewind weights pruned again and again.

        A control for the RG reading: with unchanged weights, global magnitude pruning only
        sees the initialisation's per-layer scales (e.g. Kaiming's fan-out scaling), so
        eigenvalue patterns it reproduces are not evidence about what training learned.
        """
        from .io import state_from_file
        from .masks import next_mask

        run_dir = Path(run_dir)
        trained = cls.from_run_dir(run_dir)
        weights = state_from_file(run_dir / "rewind.safetensors", list(trained.tensors))
        sched = trained.schedule
        control = cls(model=dict(trained.model, name=f"{trained.label} (untrained control)"),
                      tensors=dict(trained.tensors), units=trained.units, schedule=dict(sched, control="untrained"))
        mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
        for level in range(max(trained.level_numbers) + 1):
            control.add_level(level, mask)
            mask = next_mask(weights, mask, sched.get("prune_fraction", 0.2), scope=sched.get("pruning", "global"),
                             schedule=sched.get("schedule", "geometric"))
        return control

    # ----------------------------------------------------------------- sharing

    def save_pretrained(self, save_directory: str | os.PathLike, repo_id: str | None = None) -> Path:
        """A folder for the Hub: ``flow.json``, ``flow_table.csv``, the plots and a model card."""
        from huggingface_hub import ModelCard, ModelCardData

        from .io import card_template
        from .summary import write_plots

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.save(out / FLOW_FILE)
        self.save_table(out / "flow_table.csv")

        plots = write_plots(out, [], self, ("block",))
        eigen, stages = "(fewer than 3 levels)", "(fewer than 3 levels)"
        if len(self.levels) >= 3:
            eigen, stages = self.eigenvalues("block").to_markdown(), self.eigenvalues("stage").to_markdown()
        family = self.model.get("family", "")
        arch = self.model.get("architecture", self.label)
        data = ModelCardData(library_name="lottery_rg", tags=["imp-flow", "lottery-ticket", "pruning", family],
                             model_name=f"{arch}-imp-flow")
        sched = self.schedule
        card = ModelCard.from_template(
            data, template_path=card_template("flow_card.md"), model_name=data.model_name, architecture=arch,
            family=family, levels=len(self.levels), density=float(self.densities().iloc[-1]) if self.levels else 1.0,
            schedule=f"{sched.get('pruning', '?')}, {sched.get('schedule', '?')}, {sched.get('prune_fraction', '?')} "
                     f"per level, rewind step {sched.get('rewind_steps', '?')}",
            eigen_table=eigen, stage_table=stages, plots=plots, schema_version=SCHEMA_VERSION,
            repo_id=repo_id or "<repo id>")
        card.save(out / "README.md")
        return out

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    branch: str | None = None, commit_message: str = "IMP flow") -> str:
        """Upload the flow on its own (``save_pretrained`` folder) with the real ``huggingface_hub`` client."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=branch, commit_message=commit_message)
        return getattr(info, "commit_url", str(info))

    # ----------------------------------------------------------------- basic views

    def __eq__(self, other) -> bool:
        if not isinstance(other, IMPFlow):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        lv = self.level_numbers
        lv_text = f"{lv[0]}..{lv[-1]}" if lv else "none"
        return (f"IMPFlow({self.label}, {len(self.tensors)} prunable tensors, levels {lv_text}, "
                f"granularities {list(self.units)})")

    @property
    def label(self) -> str:
        m = self.model
        return str(m.get("name") or m.get("architecture") or m.get("family") or "IMP flow")

    @property
    def level_numbers(self) -> list[int]:
        return [r["level"] for r in self.levels]

    @property
    def granularities(self) -> list[str]:
        return list(self.units)

    @property
    def total(self) -> int:
        """Number of prunable weights."""
        return sum(self.tensors.values())

    def get_units(self, granularity: str = "block") -> list[Unit]:
        try:
            return self.units[granularity]
        except KeyError:
            raise ValueError(f"this flow has no {granularity!r} units; it has {list(self.units)}") from None

    def unit(self, name: str, granularity: str = "block") -> Unit:
        for u in self.get_units(granularity):
            if u.name == name:
                return u
        raise KeyError(f"no {granularity} unit named {name!r}; units: {[u.name for u in self.get_units(granularity)]}")

    def surviving(self, granularity: str | None = None) -> pd.DataFrame:
        """Surviving weights per level (rows) and tensor, or per unit of ``granularity`` (columns)."""
        if not self.levels:
            raise ValueError("the flow has no levels yet")
        tensors = list(self.tensors)
        counts = pd.DataFrame([[r["surviving"][t] for t in tensors] for r in self.levels],
                              index=pd.Index(self.level_numbers, name="level"), columns=tensors, dtype="int64")
        if granularity is None:
            counts.columns.name = "tensor"
            return counts
        units = self.get_units(granularity)
        out = pd.DataFrame({u.name: counts[list(u.params)].sum(axis=1) for u in units}, index=counts.index)
        out.columns.name = "unit"
        return out

    def totals(self, granularity: str = "block") -> pd.Series:
        """Number of prunable weights per unit."""
        units = self.get_units(granularity)
        return pd.Series({u.name: sum(self.tensors[p] for p in u.params) for u in units}, name="total", dtype="int64")

    def M(self, granularity: str = "block") -> pd.DataFrame:
        """M_i(n) (Eq. 13): rows = levels, columns = units; every row sums to 1."""
        counts = self.surviving(granularity)
        return counts.div(counts.sum(axis=1), axis=0).astype(float)

    def densities(self) -> pd.Series:
        """Surviving fraction of the prunable weights at each level."""
        counts = self.surviving()
        return (counts.sum(axis=1) / self.total).rename("density")

    def metrics(self) -> pd.DataFrame:
        """The recorded metrics, one row per level."""
        return pd.DataFrame([r["metrics"] for r in self.levels], index=pd.Index(self.level_numbers, name="level"))

    # ----------------------------------------------------------------- analysis

    def eigenvalues(self, granularity: str = "block", window: int | None = None, start: int = 0, *,
                    rule: Rule | float | None = None, ddof: int = 0, eigen_tol: float = 0.05) -> EigenvalueTable:
        """λ_i ± std per unit from ``window`` consecutive IMP applications starting at level ``start``.

        ``window=None`` uses every consecutive pair from ``start`` on (the paper used the
        first 17 applications for VGG-16). ``rule`` is a :class:`ClassRule`, a number k
        (ClassRule(k=k)) or a callable (λ, std) -> class name. ``ddof=0`` (default) gives
        the population standard deviation, ``ddof=1`` the sample one.
        """
        if window is not None and int(window) < 1:
            raise ValueError(f"window must be at least 1 IMP application, got {window}")
        if ddof not in (0, 1):
            raise ValueError("ddof must be 0 (population std) or 1 (sample std)")
        rule = _rule(rule)
        M = self.M(granularity)
        present = set(M.index)
        start = int(start)
        if start not in present:
            raise ValueError(f"start level {start} is not recorded (levels: {self.level_numbers})")
        used = [start]
        while used[-1] + 1 in present and (window is None or len(used) - 1 < int(window)):
            used.append(used[-1] + 1)
        n_apps = len(used) - 1
        if n_apps == 0:
            raise ValueError(f"no consecutive level after level {start}: eigenvalues need at least two levels "
                             f"(levels: {self.level_numbers})")
        if window is not None and n_apps < int(window):
            warnings.warn(f"asked for {window} IMP applications from level {start}, only {n_apps} consecutive "
                          f"level pair(s) are recorded", stacklevel=2)
        if window is None and max(present) > used[-1]:
            warnings.warn(f"levels after {used[-1] + 1} are not used: level {used[-1] + 1} is missing", stacklevel=2)
        Mw = M.loc[used].to_numpy(float)
        rows = []
        for j, u in enumerate(self.get_units(granularity)):
            m = Mw[:, j]
            ok = m[:-1] > 0
            ratios = m[1:][ok] / m[:-1][ok]
            n = int(ratios.size)
            lam = float(ratios.mean()) if n else float("nan")
            std = float(ratios.std(ddof=ddof)) if n > ddof else float("nan")
            zero = np.flatnonzero(m == 0)
            rows.append({
                "unit": u.name, "kind": u.kind, "stage": u.stage, "index": u.index, "downsample": u.downsample,
                "M_start": float(m[0]), "lambda": lam, "std": std, "n_pairs": n, "n_skipped": int((~ok).sum()),
                "collapsed": bool(zero.size), "collapse_level": int(used[zero[0]]) if zero.size else None,
                "eigenfunction": bool(n and math.isfinite(std) and std < eigen_tol * abs(lam)),
                "class": rule(lam, std if math.isfinite(std) else 0.0) if n else UNDETERMINED,
            })
        table = pd.DataFrame(rows).set_index("unit")
        for c in ("stage", "index", "collapse_level"):
            table[c] = table[c].astype("Int64")
        return EigenvalueTable(table, granularity, tuple(used), start, window, ddof, rule, eigen_tol, self.label)

    def compare(self, other: "IMPFlow", granularity: str = "block", *, window: int | None = None, start: int = 0,
                rule: Rule | float | None = None, ddof: int = 0, by: str = "auto", exclude_entry: bool = True,
                labels: tuple[str, str] | None = None) -> FlowComparison:
        """Compare two flows: predicted transfer of winning tickets (universality).

        ``by="unit"`` (automatic when both flows have the same unit names): per unit both
        λ ± std and classes, whether the classes agree, z = (λa − λb)/sqrt(σa² + σb²); the
        summary holds the share of agreeing units and the RMS of z. ``by="stage"``
        (automatic when the units differ but the family is the same, e.g. ResNet-20 vs
        ResNet-56): per stage the numbers of relevant / marginal / irrelevant residual
        blocks, each stage's entry block (index 0) excluded when ``exclude_entry`` (the
        paper's E-LTH analysis). Both flows use the same window, start, rule and ddof.
        """
        if not isinstance(other, IMPFlow):
            raise TypeError(f"compare needs another IMPFlow, got {type(other).__name__}")
        if by not in ("auto", "unit", "stage"):
            raise ValueError("by must be 'auto', 'unit' or 'stage'")
        la, lb = labels or (self.label, other.label)
        names_a = [u.name for u in self.get_units(granularity)]
        names_b = [u.name for u in other.get_units(granularity)]
        fa, fb = self.model.get("family"), other.model.get("family")
        kw = dict(window=window, start=start, rule=rule, ddof=ddof)
        if by == "auto":
            if names_a == names_b or sorted(names_a) == sorted(names_b):
                by = "unit"
            elif fa and fb and fa != fb:
                raise ValueError(f"cannot compare a {fa} flow with a {fb} flow: different units and families")
            else:
                by = "stage"
        if by == "unit":
            if sorted(names_a) != sorted(names_b):
                raise ValueError(f"unit-by-unit comparison needs the same {granularity} units in both flows; "
                                 f"use by='stage' for different depths")
            return _compare_units(self.eigenvalues(granularity, **kw), other.eigenvalues(granularity, **kw), (la, lb))
        if fa and fb and fa != fb:
            raise ValueError(f"stage-by-stage comparison needs one model family, got {fa} and {fb}")
        return _compare_stages(self.eigenvalues("block", **kw), other.eigenvalues("block", **kw), (la, lb),
                               exclude_entry)

    def critical_exponent(self, metric: str = "eval_accuracy", *, accuracy_in_percent: bool = False, **fit_kwargs):
        """Fit Eq. 14 to this flow's levels (see :func:`lottery_rg.scaling.fit_critical_exponent`)."""
        from .scaling import fit_critical_exponent, points_from_flows

        d, e = points_from_flows([self], metric, accuracy_in_percent=accuracy_in_percent)
        return fit_critical_exponent(d, e, **fit_kwargs)

    # ----------------------------------------------------------------- tables

    def to_dataframe(self, granularities: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per (granularity, unit, level).

        Columns: granularity, unit, kind, stage, index, downsample, level, surviving, total,
        density (the unit's surviving fraction), M, model_density (the whole model's
        surviving fraction), then one column per scalar metric (prefixed ``metric_`` when
        the name clashes with a column above).
        """
        granularities = list(granularities or self.units)
        dens = self.densities() if self.levels else pd.Series(dtype=float)
        rows = []
        for g in granularities:
            counts = self.surviving(g) if self.levels else None
            Mg = self.M(g) if self.levels else None
            totals = self.totals(g)
            for u in self.get_units(g):
                for r in self.levels:
                    n = r["level"]
                    s = int(counts.at[n, u.name])
                    rows.append({
                        "granularity": g, "unit": u.name, "kind": u.kind, "stage": u.stage, "index": u.index,
                        "downsample": u.downsample, "level": n, "surviving": s, "total": int(totals[u.name]),
                        "density": s / int(totals[u.name]), "M": float(Mg.at[n, u.name]),
                        "model_density": float(dens.loc[n]),
                    })
        base = ["granularity", "unit", "kind", "stage", "index", "downsample", "level", "surviving", "total",
                "density", "M", "model_density"]
        df = pd.DataFrame(rows, columns=base)
        scalar_keys: list[str] = []
        for r in self.levels:
            for k, v in r["metrics"].items():
                if (v is None or isinstance(v, (int, float, str, bool))) and k not in scalar_keys:
                    scalar_keys.append(k)
        for k in scalar_keys:
            col = f"metric_{k}" if k in base else k
            values = {r["level"]: r["metrics"].get(k) for r in self.levels}
            df[col] = df["level"].map(values)
        for c in ("stage", "index"):
            df[c] = df[c].astype("Int64")
        for c in ("level", "surviving", "total"):
            df[c] = df[c].astype("int64")
        return df

    def to_dataset(self, granularities: Sequence[str] | None = None):
        """The :meth:`to_dataframe` table as a ``datasets.Dataset``."""
        import datasets

        return datasets.Dataset.from_pandas(self.to_dataframe(granularities), preserve_index=False)

    def save_table(self, path: str | os.PathLike, granularities: Sequence[str] | None = None) -> Path:
        """Write :meth:`to_dataframe` as CSV (``.csv``) or Parquet (``.parquet`` / ``.pq``)."""
        path = Path(path)
        df = self.to_dataframe(granularities)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"save_table writes .csv or .parquet files, got {path.name!r}")
        return path


def _read_metrics(level_dir: Path) -> dict:
    path = level_dir / METRICS_FILE
    if not path.is_file():
        return {}
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object of metrics")
    if isinstance(data.get("metrics"), dict):  # the trainer's level record: {"level", "density", "metrics": {...}}
        return data["metrics"]
    return data


# --------------------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lottery_rg.flow",
        description="RG analysis of an IMP run: IMP-flow eigenvalues and classes, comparison with another run, "
                    "critical-exponent fit (Eq. 14) and plots.",
    )
    p.add_argument("run", help="IMP run directory, flow.json file, or Hub repository id")
    p.add_argument("--revision", default=None, help="Hub revision when RUN is a repository id")
    p.add_argument("--granularity", default="block", choices=GRANULARITIES)
    p.add_argument("--window", type=int, default=None, help="number of IMP applications used (default: all)")
    p.add_argument("--start", type=int, default=0, help="first level of the window (default 0)")
    p.add_argument("--ddof", type=int, default=0, choices=(0, 1), help="0: population std (default), 1: sample std")
    p.add_argument("--k", type=float, default=1.0, help="class rule: marginal when |λ−1| ≤ k·std (default 1)")
    p.add_argument("--compare", metavar="OTHER", default=None, help="another run directory / flow.json / repo id")
    p.add_argument("--by", choices=("auto", "unit", "stage"), default="auto", help="comparison mode")
    p.add_argument("--include-entry", action="store_true",
                   help="stage comparison: count each stage's entry block too (excluded by default, as in the paper)")
    p.add_argument("--fit", action="store_true", help="fit the critical exponent (Eq. 14) to error vs density")
    p.add_argument("--metric", default="eval_accuracy", help="accuracy metric for --fit (a fraction in [0, 1])")
    p.add_argument("--plots", metavar="OUT_DIR", default=None, help="write PNG plots to this directory")
    p.add_argument("--x", dest="x_unit", default=None, help="x unit of the flow projection plot")
    p.add_argument("--y", dest="y_unit", default=None, help="y unit of the flow projection plot")
    p.add_argument("--table", metavar="PATH", default=None, help="write the flat flow table (.csv or .parquet)")
    p.add_argument("--control", action="store_true",
                   help="also compute the untrained control flow (the rewind weights pruned without training) "
                        "and compare the run against it")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    rc = 0
    try:
        flow = IMPFlow.from_pretrained(args.run, revision=args.revision)
        other = IMPFlow.from_pretrained(args.compare) if args.compare else None
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not flow.levels:
        print(f"{args.run}: the flow has no levels yet", file=sys.stderr)
        return 1
    rule = ClassRule(k=args.k)
    dens = flow.densities()
    print(f"IMP flow of {flow.label} from {args.run}: levels {flow.level_numbers[0]}–{flow.level_numbers[-1]}, "
          f"density {100 * dens.iloc[0]:.2f} % → {100 * dens.iloc[-1]:.2f} %, schedule {flow.schedule or 'unrecorded'}")
    print()
    table = flow.eigenvalues(args.granularity, window=args.window, start=args.start, rule=rule, ddof=args.ddof)
    print(table.to_markdown())
    if args.control:
        try:
            control = IMPFlow.untrained_control(args.run)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: the control needs a run directory with rewind.safetensors: {e}", file=sys.stderr)
            return 2
        print("\nUntrained control (rewind weights pruned by the same schedule, no training):\n")
        print(control.eigenvalues(args.granularity, window=args.window, start=args.start, rule=rule,
                                  ddof=args.ddof).to_markdown())
        print()
        print(flow.compare(control, args.granularity, window=args.window, start=args.start, rule=rule, ddof=args.ddof,
                           by="unit", labels=("trained IMP", "untrained control")).to_markdown())
    if other is not None:
        print()
        cmp = flow.compare(other, args.granularity, window=args.window, start=args.start, rule=rule,
                           ddof=args.ddof, by=args.by, exclude_entry=not args.include_entry,
                           labels=(f"{flow.label} [{args.run}]", f"{other.label} [{args.compare}]"))
        print(cmp.to_markdown())
    fit = None
    if args.fit:
        print()
        try:
            fit = flow.critical_exponent(args.metric)
            print(f"Critical exponent (Eq. 14, {args.metric}):\n")
            print(fit.to_markdown())
        except (ValueError, RuntimeError) as e:
            print(f"critical-exponent fit failed: {e}", file=sys.stderr)
            rc = 1
    if args.table:
        print(f"\nwrote {flow.save_table(args.table)}")
    if args.plots:
        from . import flow_plots

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        written = [flow_plots.plot_M_vs_level(flow, args.granularity, out / f"M_vs_level_{args.granularity}.png"),
                   flow_plots.plot_eigenvalues(table, out / f"eigenvalues_{args.granularity}.png")]
        x_unit, y_unit = args.x_unit, args.y_unit
        if x_unit is None or y_unit is None:
            lam = table.lambdas.dropna()
            if len(lam) >= 2:
                x_unit = x_unit or str(lam.idxmax())
                y_unit = y_unit or str(lam.drop(x_unit, errors="ignore").idxmin())
        if x_unit and y_unit:
            flows, labels = [flow], [flow.label]
            if other is not None:
                names = {u.name for u in other.get_units(args.granularity)}
                if x_unit in names and y_unit in names:
                    flows.append(other)
                    labels.append(f"{other.label} [{args.compare}]")
            written.append(flow_plots.plot_flow_projection(
                flows, x_unit, y_unit, args.granularity, out / f"flow_projection_{args.granularity}.png", labels=labels))
        try:
            from .scaling import points_from_flows

            d, _ = points_from_flows([flow], args.metric)
            if d.size:
                written.append(flow_plots.plot_error_vs_density([flow], fit, out / "error_vs_density.png",
                                                                metric=args.metric))
        except ValueError as e:
            print(f"error-vs-density plot skipped: {e}", file=sys.stderr)
        print()
        for w in written:
            print(f"wrote {w}")
    return rc


if __name__ == "__main__":
    # run the package's copy of this module, so that its classes are the ones other modules check against
    from lottery_rg.flow import main as _main

    sys.exit(_main())
