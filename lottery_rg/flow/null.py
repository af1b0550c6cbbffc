"""The init-scale null model of the IMP flow: what global magnitude pruning does to weights that were never trained.

Global magnitude pruning compares the weights of all prunable tensors against one
threshold. Before any training the weights of tensor t are draws from its initialiser —
for a ResNet Kaiming's normal law, std √(2 / fan_out), so stage-1 convolutions are about
twice as large as stage-3 ones; PyTorch's default Linear init is uniform — and which tensors
keep their weights follows from those per-tensor *scales* alone. The eigenvalues such a flow
has are therefore a null model for the RG reading: a trained flow says something about
training only where it differs from this null (SCIENCE §2, "Null models").

:class:`InitScaleNull` is that null in closed form. With fixed weights, pruning a fraction
per level by magnitude, level after level, keeps exactly the weights above a threshold τ_n;
for n_t weights drawn from a law with survival function S_t(τ) = P(|w| > τ) the expected
number kept is n_t · S_t(τ_n), and τ_n solves Σ_t n_t S_t(τ_n) = (surviving weights at level n)
— the densities of the flow it is the null of. Laws: ``normal`` (S(τ) = erfc(τ / (σ√2))) and
``uniform`` on [−b, b] (S(τ) = 1 − τ/b). No data, no training, no sampling error; the
per-tensor law and scale come from fresh initialisations of the architecture the flow
records (:func:`init_laws_from_architecture`: several draws, moments averaged) or from given weights
(:func:`init_laws`). Layer-wise pruning keeps the same fraction of every tensor whatever the
weights are, so its null is the flow's own counts.

The controls of :meth:`lottery_rg.flow.IMPFlow.untrained_control` prune the run's actual
θ_k or θ_0 (one draw each); the null is the limit of many draws.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .eigen import EigenvalueTable, eigenvalue_table, window_levels

__all__ = ["LAWS", "InitLaw", "InitScaleNull", "init_laws", "init_laws_from_architecture", "init_scale_null"]

LAWS = ("normal", "uniform")
NULL_KIND = "init-scale null"
#: excess kurtosis below which a tensor's initial weights are read as uniform (normal: 0, uniform: −1.2)
_UNIFORM_KURTOSIS = -0.6


@dataclass(frozen=True)
class InitLaw:
    """The initial law of one tensor's weights: ``normal`` with std ``scale`` or ``uniform`` on [−scale, scale]."""

    law: str
    scale: float

    def __post_init__(self):
        if self.law not in LAWS:
            raise ValueError(f"law must be one of {LAWS}, got {self.law!r}")
        if not (math.isfinite(self.scale) and self.scale >= 0):
            raise ValueError(f"scale must be a finite non-negative number, got {self.scale}")

    def survival(self, tau) -> np.ndarray:
        """P(|w| > τ)."""
        from scipy.special import erfc

        tau = np.asarray(tau, dtype=float)
        if self.scale == 0:
            return np.where(tau < 0, 1.0, 0.0)
        if self.law == "normal":
            return erfc(np.maximum(tau, 0.0) / (self.scale * math.sqrt(2.0)))
        return np.clip(1.0 - np.maximum(tau, 0.0) / self.scale, 0.0, 1.0)

    @property
    def std(self) -> float:
        return self.scale if self.law == "normal" else self.scale / math.sqrt(3.0)

    def to_dict(self) -> dict:
        return {"law": self.law, "scale": self.scale}


def _moments(w) -> tuple[float, float, int]:
    """(mean of w², excess kurtosis about the mean, size) of one tensor."""
    x = np.asarray(w.detach().float().cpu().numpy() if hasattr(w, "detach") else w, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("a tensor without elements has no initial law")
    m2 = float(np.dot(x, x)) / x.size
    z = x - x.mean()
    z2 = z * z  # z ** 4 as (z²)², not numpy's general power: ~10x faster
    var = float(z2.sum()) / x.size
    kurt = float(np.dot(z2, z2)) / x.size / var ** 2 - 3.0 if var > 0 else 0.0
    return m2, kurt, int(x.size)


def _law(m2: float, kurt: float, size: int) -> InitLaw:
    rms = math.sqrt(m2)
    if rms == 0 or size < 8:
        return InitLaw("normal", rms)
    return InitLaw("uniform", math.sqrt(3.0) * rms) if kurt < _UNIFORM_KURTOSIS else InitLaw("normal", rms)


def init_laws(weights: Mapping) -> dict[str, InitLaw]:
    """The law of each tensor in ``weights`` (name -> tensor or array): RMS scale, normal or uniform by kurtosis.

    Magnitude pruning looks at |w| around 0, so the scale is the root mean square (not the
    std about the mean). A tensor whose excess kurtosis is below −0.6 is uniform (b = √3 · RMS),
    otherwise normal (σ = RMS).
    """
    laws = {}
    for name, w in weights.items():
        try:
            laws[name] = _law(*_moments(w))
        except ValueError:
            raise ValueError(f"{name!r} has no elements") from None
    return laws


def init_laws_from_architecture(model_info: Mapping, tensors, seed: int = 0,
                                draws: int | None = None) -> dict[str, InitLaw]:
    """The laws of ``tensors`` in fresh, untrained builds of the architecture ``model_info`` describes.

    ``model_info`` is a flow's ``model`` (``family`` plus the family's architecture
    description); the model is built on the CPU ``draws`` times (seeds ``seed``, ``seed + 1``,
    …) and each tensor's second moment and kurtosis are averaged over the draws, so that
    tensors with the same initialiser get the same law up to a small sampling error. By
    default (``draws=None``) enough draws for about 2·10⁶ values of the smallest tensor, at
    least 4 and at most 64, and no more than 10⁸ weights built in all.
    """
    family = model_info.get("family")
    if not family:
        raise ValueError("the flow records no model family, so its initialisation cannot be rebuilt; "
                         "pass laws= (init_laws(weights)) instead")
    key = (json.dumps(dict(model_info), sort_keys=True, default=repr), tuple(tensors), int(seed), draws)
    if key not in _LAWS_CACHE:
        if len(_LAWS_CACHE) >= 16:
            _LAWS_CACHE.pop(next(iter(_LAWS_CACHE)))
        _LAWS_CACHE[key] = _laws_from_architecture(model_info, tuple(tensors), int(seed), draws)
    return dict(_LAWS_CACHE[key])


#: the laws of the architectures seen in this process: a run's summary, plots and card all ask for the same null
#: (64 builds of a ResNet-20 and ~1,400 tensor moments each time)
_LAWS_CACHE: dict[tuple, dict[str, InitLaw]] = {}


def _laws_from_architecture(model_info: Mapping, tensors: tuple, seed: int, draws: int | None) -> dict[str, InitLaw]:
    import torch

    from ..models.families import get_family

    family = model_info["family"]
    sums: dict[str, list[float]] = {}
    k, n_draws = 0, draws
    while n_draws is None or k < max(int(n_draws), 1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + k)
            model = get_family(family).build(dict(model_info))
        params = dict(model.named_parameters())
        missing = [t for t in tensors if t not in params]
        if missing:
            raise ValueError(f"a fresh {model_info.get('architecture', family)} has no parameters {missing[:5]}")
        if n_draws is None:
            smallest = min(params[t].numel() for t in tensors)
            total = sum(p.numel() for p in params.values())
            n_draws = int(min(64, max(4, math.ceil(2e6 / smallest)), max(1, 1e8 // total)))
        for t in tensors:
            m2, kurt, size = _moments(params[t])
            acc = sums.setdefault(t, [0.0, 0.0, size])
            acc[0] += m2
            acc[1] += kurt
        del model, params
        k += 1
    return {t: _law(a[0] / k, a[1] / k, int(a[2])) for t, a in sums.items()}


def _solve_threshold(sizes: np.ndarray, laws: list[InitLaw], target: float) -> float:
    """τ with Σ_t n_t S_t(τ) = target (continuous, decreasing in τ)."""
    from scipy.optimize import brentq

    def kept(tau: float) -> float:
        return float(sum(n * law.survival(tau) for n, law in zip(sizes, laws)))

    total = float(sizes.sum())
    if target >= total:
        return 0.0
    hi = max((8.0 * law.scale for law in laws), default=1.0) or 1.0
    while kept(hi) > target:
        hi *= 2.0
    return brentq(lambda t: kept(t) - target, 0.0, hi, xtol=1e-15 * hi, rtol=4 * np.finfo(float).eps, maxiter=500)


class InitScaleNull:
    """The closed-form init-scale null of a flow (or of a pool of seeds): λ from the initial weights' scales alone.

    Quacks like an :class:`~lottery_rg.flow.IMPFlow` where eigenvalues, comparisons and plots need
    it (``M``, ``eigenvalues``, ``get_units``, ``model``, ``schedule``, ``label``, ``level_numbers``,
    ``densities``), so ``flow.compare(null)`` tests trained against null (a control relation).
    Its eigenvalue tables are exact (``se`` = 0).
    """

    def __init__(self, flow, laws: Mapping[str, InitLaw] | None = None, *, seed: int = 0, draws: int | None = None,
                 source: str | None = None):
        base = flow.flows[0] if hasattr(flow, "flows") else flow
        if not (hasattr(base, "surviving") and hasattr(base, "tensors") and hasattr(base, "_normalized_units")):
            raise TypeError(f"InitScaleNull needs an IMPFlow or a FlowPool, got {type(flow).__name__}")
        if not base.levels:
            raise ValueError("the flow has no levels yet")
        self.template = base
        if laws is None:
            laws = init_laws_from_architecture(base.model, list(base.tensors), seed=seed, draws=draws)
            arch = base.model.get("architecture", "the model")
            source = source or f"fresh initialisations of {arch} from seed {seed}, scales and laws averaged"
        missing = [t for t in base.tensors if t not in laws]
        if missing:
            raise ValueError(f"no initial law for the prunable tensors {missing[:5]}")
        self.laws = {t: laws[t] if isinstance(laws[t], InitLaw) else InitLaw(**dict(laws[t])) for t in base.tensors}
        self.source = source or "given laws"
        self.tensors = dict(base.tensors)
        self.units = base.units
        self.model = dict(base.model, name=f"{base.label} ({NULL_KIND})")
        self.schedule = {k: v for k, v in base.schedule.items() if k not in ("seed", "output_dir")}
        self.schedule.update(control=NULL_KIND, control_from="initialisation law")
        self._counts = self._expected_counts()

    def _expected_counts(self) -> pd.DataFrame:
        base = self.template
        counts = base.surviving()  # levels × tensors
        if base.schedule.get("pruning", "global") == "layerwise":
            return counts.astype(float)  # every tensor keeps the same fraction whatever its weights
        names = list(self.tensors)
        sizes = np.array([self.tensors[t] for t in names], dtype=float)
        laws = [self.laws[t] for t in names]
        rows = []
        for n in counts.index:
            tau = _solve_threshold(sizes, laws, float(counts.loc[n].sum()))
            rows.append([self.tensors[t] * float(law.survival(tau)) for t, law in zip(names, laws)])
        return pd.DataFrame(rows, index=counts.index, columns=names)

    # ------------------------------------------------------------------ IMPFlow-like views

    def __repr__(self) -> str:
        return f"InitScaleNull({self.template.label}, {len(self.tensors)} tensors, from {self.source})"

    @property
    def label(self) -> str:
        return str(self.model["name"])

    @property
    def level_numbers(self) -> list[int]:
        return list(self._counts.index)

    @property
    def levels(self) -> list[dict]:
        return [{"level": int(n), "metrics": {}} for n in self._counts.index]

    def get_units(self, granularity: str = "block"):
        return self.template.get_units(granularity)

    def densities(self) -> pd.Series:
        return self.template.densities()

    def surviving(self, granularity: str | None = None) -> pd.DataFrame:
        """Expected surviving weights (floats) per level and tensor, or per unit of ``granularity``."""
        if granularity is None:
            return self._counts.copy()
        units = self.get_units(granularity)
        out = pd.DataFrame({u.name: self._counts[list(u.params)].sum(axis=1) for u in units}, index=self._counts.index)
        out.columns.name = "unit"
        return out

    def M(self, granularity: str = "block", normalize: str = "all") -> pd.DataFrame:
        counts = self.surviving(granularity)
        counts = counts[self.template._normalized_units(granularity, normalize)]
        return counts.div(counts.sum(axis=1), axis=0).astype(float)

    def eigenvalues(self, granularity: str = "block", window: int | None = None, start: int = 0, *, rule=None,
                    ddof: int = 0, eigen_tol: float = 0.05, normalize: str = "all", **_ignored) -> EigenvalueTable:
        """The null's eigenvalues with the same window, rule and normalisation as the flow's (exact: SE 0)."""
        M = self.M(granularity, normalize)
        used = window_levels(M.index, start, window)
        kept = set(M.columns)
        units = [u for u in self.get_units(granularity) if u.name in kept]
        return eigenvalue_table(M, units, used, granularity=granularity, start=start, window=window, rule=rule,
                                ddof=ddof, eigen_tol=eigen_tol, label=self.label, normalize=normalize, exact=True)

    def laws_frame(self) -> pd.DataFrame:
        """Each prunable tensor's law, scale, std and size."""
        return pd.DataFrame([{"tensor": t, "law": law.law, "scale": law.scale, "std": law.std,
                              "numel": self.tensors[t]} for t, law in self.laws.items()]).set_index("tensor")


def init_scale_null(flow, laws: Mapping[str, InitLaw] | None = None, *, seed: int = 0,
                    draws: int | None = None) -> InitScaleNull:
    """The closed-form init-scale null of ``flow`` (an IMPFlow or a FlowPool); see :class:`InitScaleNull`."""
    return InitScaleNull(flow, laws, seed=seed, draws=draws)
