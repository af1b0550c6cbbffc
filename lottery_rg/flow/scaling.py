"""Error-versus-density scaling and the critical exponent γ (Redman et al. 2022, Eq. 14).

With ``d`` the density in percent (percentage of the prunable weights that survive) and
``ε`` the error in percent (100 − top-1 accuracy; for masked-language models
100 − masked-token accuracy), the fitted form is::

    ε̂(d) = ε_np · [ (d² + p² (ε†/ε_np)^(2/γ)) / (d² + p²) ]^(γ/2)

``ε_np`` is the error without pruning, ``ε†`` the error at maximal pruning, ``p`` the
density (in percent) around which the power law sets in and ``γ`` the critical exponent.
Limits: ε̂ → ε_np for d ≫ p and ε̂ → ε† for d → 0; in between ε̂ ≈ ε_np (d/p)^γ.

The fit (:func:`fit_critical_exponent`) uses ``scipy.optimize.curve_fit`` (trust-region
reflective, because of the bounds) with these default bounds:

=========  ==========================================================================
ε_np       measured dense error ε₀ ± tol, tol = ``eps_np_tolerance`` or, by default,
           max(0.1 percentage points, 5 % of ε₀, 2 × the spread (std) of the dense
           measurements over runs); never below 1e-6 (ε_np must be positive)
ε†         [1e-6, 100] (an error in percent)
p          [1e-6, 1e4] (a density in percent)
γ          [-10, -1e-6] (γ < 0: the error rises as the network is pruned; the paper found
           -0.03 … -1.01. Very negative γ is a degenerate limit in which Eq. 14 turns
           into a sigmoid in log d rather than a power law.)
=========  ==========================================================================

Any bound can be replaced through ``bounds={"gamma": (-3, -1e-3), ...}``. The model is
evaluated in log space, so (ε†/ε_np)^(2/γ) cannot overflow when γ is close to 0.
The Jacobian is analytic. Without ``p0`` the fit starts from a small grid of starting points
(p, γ, ε†) and keeps the converged fit with the smallest residual sum of squares; it stops
early once three starts have run and two of them reach the same minimum.

**Profile likelihood for γ** (:func:`profile_gamma`, ``ScalingFit.profile()``): γ is fixed on a
grid over its bounds and the other three parameters refitted at each value; with Gaussian
residuals of unknown variance the profile deviance is D(γ) = n · ln(RSS(γ) / RSS_min), and the
95 % interval is {γ : D(γ) ≤ 3.84} (χ² with 1 df). Where that set reaches a bound of γ the
interval is *open* on that side and is reported as a one-sided bound ("γ ≤ −2.1, 95 %
profile likelihood; no lower limit within [−10, 0)"). The deviance treats the points as
independent; levels of one run share its weights, so with several seeds the interval is, if
anything, too narrow.

Standard errors are the square roots of the diagonal of curve_fit's covariance. Without
``sigma`` that covariance is scaled by the residual variance (``absolute_sigma=False``),
so it reflects the scatter of the points around the fit; with ``sigma`` (per-point
errors in percentage points) it is absolute. Parameters that end on a bound are listed in
``ScalingFit.at_bounds``: their standard errors are not meaningful. ε_np is kept tightly
bounded (the paper's choice), so its standard error mostly reflects that bound.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "PARAMETERS", "DEFAULT_BOUNDS", "eq14", "ScalingFit", "GammaProfile", "fit_critical_exponent", "profile_gamma",
    "points_from_flows", "dense_error_of",
]

PARAMETERS = ("eps_np", "eps_dagger", "p", "gamma")
#: default bounds of ε†, p and γ (ε_np is bounded around the measured dense error)
DEFAULT_BOUNDS = {"eps_dagger": (1e-6, 100.0), "p": (1e-6, 1e4), "gamma": (-10.0, -1e-6)}
_DENSE = 100.0  # density in percent of the unpruned network
_DENSE_ATOL = 1e-6


def eq14(d, eps_np: float, eps_dagger: float, p: float, gamma: float) -> np.ndarray:
    """Eq. 14: the error (percent) at density ``d`` (percent), evaluated in log space."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore"):
        log_d2 = 2.0 * np.log(np.abs(d))
    log_p2 = 2.0 * math.log(p)
    log_num = np.logaddexp(log_d2, log_p2 + (2.0 / gamma) * math.log(eps_dagger / eps_np))
    log_den = np.logaddexp(log_d2, log_p2)
    return eps_np * np.exp(0.5 * gamma * (log_num - log_den))


def _model(d, eps_np, eps_dagger, p, gamma):
    return eq14(d, eps_np, eps_dagger, p, gamma)


def _jacobian(d, eps_np, eps_dagger, p, gamma) -> np.ndarray:
    """∂ε̂/∂(ε_np, ε†, p, γ), analytic (shape: points × 4)."""
    d = np.asarray(d, dtype=float)
    with np.errstate(divide="ignore"):
        log_d2 = 2.0 * np.log(np.abs(d))
    log_r = math.log(eps_dagger / eps_np)
    log_p2 = 2.0 * math.log(p)
    b = log_p2 + (2.0 / gamma) * log_r
    log_num, log_den = np.logaddexp(log_d2, b), np.logaddexp(log_d2, log_p2)
    w_num, w_den = np.exp(b - log_num), np.exp(log_p2 - log_den)  # share of the p-terms
    f = eps_np * np.exp(0.5 * gamma * (log_num - log_den))
    return np.stack([
        f / eps_np * (1.0 - w_num),
        f * w_num / eps_dagger,
        f * gamma * (w_num - w_den) / p,
        f * (0.5 * (log_num - log_den) - w_num * log_r / gamma),
    ], axis=1)


@dataclass
class ScalingFit:
    """A fit of Eq. 14: parameters, their standard errors, residuals and ``predict``."""

    params: dict[str, float]
    stderr: dict[str, float]
    covariance: np.ndarray
    density: np.ndarray  # percent
    error: np.ndarray  # percent
    residuals: np.ndarray  # error - predict(density)
    dense_error: float
    bounds: dict[str, tuple[float, float]]
    at_bounds: list[str] = field(default_factory=list)
    sigma: np.ndarray | None = None
    n_starts: int = 1

    @property
    def gamma(self) -> float:
        return self.params["gamma"]

    @property
    def gamma_stderr(self) -> float:
        return self.stderr["gamma"]

    @property
    def gamma_determined(self) -> bool:
        """γ is an estimate: inside its bounds with a finite standard error smaller than |γ|."""
        return ("gamma" not in self.at_bounds and math.isfinite(self.gamma_stderr)
                and self.gamma_stderr < abs(self.gamma))

    @property
    def n_points(self) -> int:
        return int(self.density.size)

    @property
    def dof(self) -> int:
        return self.n_points - len(PARAMETERS)

    @property
    def rss(self) -> float:
        return float(np.sum(self.residuals ** 2))

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.residuals ** 2)))

    def predict(self, d) -> np.ndarray:
        """Fitted error (percent) at density ``d`` (percent); scalar in, 0-d array out."""
        return eq14(d, **self.params)

    def profile(self, level: float = 0.95, n_grid: int = 41) -> GammaProfile:
        """The profile-likelihood interval of γ (see :func:`profile_gamma`); cached per level and grid."""
        key = (float(level), int(n_grid))
        cache = self.__dict__.setdefault("_profiles", {})
        if key not in cache:
            cache[key] = profile_gamma(self, level=level, n_grid=n_grid)
        return cache[key]

    def to_dict(self) -> dict:
        return {
            "params": dict(self.params), "stderr": dict(self.stderr), "dense_error": self.dense_error,
            "n_points": self.n_points, "rss": self.rss, "rmse": self.rmse,
            "bounds": {k: list(v) for k, v in self.bounds.items()}, "at_bounds": list(self.at_bounds),
            "covariance": self.covariance.tolist(),
        }

    def to_markdown(self) -> str:
        names = {"eps_np": "ε_np", "eps_dagger": "ε†", "p": "p", "gamma": "γ"}
        lines = ["| parameter | value | std. error | bounds |", "|---|---|---|---|"]
        for k in PARAMETERS:
            lo, hi = self.bounds[k]
            note = " (at bound)" if k in self.at_bounds else ""
            lines.append(f"| {names[k]} | {self.params[k]:.4g}{note} | {_fmt_err(self.stderr[k])} "
                         f"| [{lo:.4g}, {hi:.4g}] |")
        lines.append("")
        head = f"{self.n_points} points, dense error {self.dense_error:.4g} %, RMSE {self.rmse:.3g} percentage points, "
        if self.gamma_determined:
            lines.append(head + f"γ = {self.gamma:.4f} ± {_fmt_err(self.gamma_stderr)}")
        else:
            why = ("it ended on its bound" if "gamma" in self.at_bounds
                   else "its standard error is not smaller than |γ|")
            lines.append(head + f"γ NOT DETERMINED: {why} (optimizer stopped at γ = {self.gamma:.4g}, standard "
                                f"error {_fmt_err(self.gamma_stderr)}; neither is an estimate)")
        if self.at_bounds:
            lines.append(f"warning: {', '.join(self.at_bounds)} ended on a bound; those standard errors are not "
                         f"meaningful and the fit may not describe the data (more levels or runs help)")
        prof = self.__dict__.get("_profiles", {})
        for _key, pr in sorted(prof.items()):
            lines.append(pr.describe())
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def _fmt_err(x: float) -> str:
    return "inf" if not np.isfinite(x) else f"{x:.3g}"


def _concat(values) -> np.ndarray:
    """One flat float array from an array, a list of numbers, or a list of runs (arrays)."""
    if isinstance(values, np.ndarray):
        return values.astype(float).ravel()
    values = list(values)
    if values and all(np.ndim(v) >= 1 for v in values):
        return np.concatenate([np.asarray(v, dtype=float).ravel() for v in values])
    return np.asarray(values, dtype=float).ravel()


def dense_error_of(density, error) -> tuple[float, np.ndarray]:
    """Mean and all values of the errors measured at density 100 % (the dense network)."""
    d, e = _concat(density), _concat(error)
    dense = e[np.isclose(d, _DENSE, rtol=0.0, atol=_DENSE_ATOL)]
    return (float(dense.mean()) if dense.size else float("nan")), dense


def fit_critical_exponent(
    density,
    error,
    *,
    dense_error: float | None = None,
    eps_np_tolerance: float | None = None,
    p0: Sequence[float] | dict | None = None,
    bounds: dict[str, tuple[float, float]] | None = None,
    sigma=None,
    max_nfev: int = 20000,
) -> ScalingFit:
    """Fit Eq. 14 to error-versus-density points (Redman et al. 2022, Eq. 14).

    ``density`` and ``error`` are in percent: density 100 is the dense network, error is
    100 − accuracy in percent. Each may be a flat sequence or a list of runs (one array
    per run, concatenated). ε_np is bounded around ``dense_error`` (default: the mean
    error of the points at density 100) by ``eps_np_tolerance`` percentage points (see
    the module docstring for the default). ``p0`` is a start (ε_np, ε†, p, γ) or a dict;
    ``bounds`` overrides bounds by parameter name; ``sigma`` gives per-point errors.

    Raises ValueError for fewer points than the 4 free parameters, non-finite values, or
    no dense error; RuntimeError when no start converges.
    """
    d, e, sigma = _checked_points(density, error, sigma)
    dense_error, all_bounds = _bounds(d, e, dense_error, eps_np_tolerance, bounds)
    lower = np.array([all_bounds[k][0] for k in PARAMETERS])
    upper = np.array([all_bounds[k][1] for k in PARAMETERS])
    starts = _starting_points(d, e, dense_error, p0)
    popt, pcov, resid = _best_of_starts(d, e, sigma, starts, lower, upper, max_nfev, dense_error)
    pcov = np.asarray(pcov, dtype=float)
    with np.errstate(invalid="ignore"):
        se = np.sqrt(np.where(np.diag(pcov) >= 0, np.diag(pcov), np.nan))
    se = np.where(np.isfinite(se), se, np.inf)
    at_bounds = [k for k, v, lo, hi in zip(PARAMETERS, popt, lower, upper)
                 if np.isclose(v, lo, rtol=1e-6, atol=0) or np.isclose(v, hi, rtol=1e-6, atol=0)]
    if d.size == len(PARAMETERS):
        warnings.warn("Eq. 14 fitted from exactly 4 points: no degrees of freedom left, standard errors are infinite",
                      stacklevel=2)
    return ScalingFit(
        params={k: float(v) for k, v in zip(PARAMETERS, popt)},
        stderr={k: float(v) for k, v in zip(PARAMETERS, se)},
        covariance=pcov, density=d, error=e, residuals=resid, dense_error=dense_error,
        bounds=all_bounds, at_bounds=at_bounds, sigma=sigma, n_starts=len(starts),
    )


def _checked_points(density, error, sigma):
    """Density and error (percent) as flat arrays, refused with a reason when Eq. 14 cannot be fitted to them."""
    d, e = _concat(density), _concat(error)
    if d.shape != e.shape:
        raise ValueError(f"density and error have different lengths ({d.size} and {e.size})")
    if not (np.all(np.isfinite(d)) and np.all(np.isfinite(e))):
        raise ValueError("density and error must be finite numbers (drop levels without a metric first)")
    if d.size < len(PARAMETERS):
        raise ValueError(
            f"Eq. 14 has {len(PARAMETERS)} free parameters (eps_np, eps_dagger, p, gamma); "
            f"cannot fit them from {d.size} point(s). Run more IMP levels or pool several runs."
        )
    if np.any(d <= 0) or np.any(d > _DENSE + _DENSE_ATOL):
        raise ValueError("densities must be in percent, in (0, 100]")
    if np.any(e < 0) or np.any(e > 100):
        raise ValueError("errors must be in percent, in [0, 100] (error = 100 - accuracy in percent)")
    if sigma is not None:
        sigma = _concat(sigma)
        if sigma.shape != d.shape or np.any(sigma <= 0):
            raise ValueError("sigma must hold one positive error per point")
    return d, e, sigma


def _bounds(d, e, dense_error, eps_np_tolerance, bounds) -> tuple[float, dict[str, tuple[float, float]]]:
    """The dense error and every parameter's bounds: ε_np tightly around the dense error, the rest as given."""
    measured, dense_values = dense_error_of(d, e)
    if dense_error is None:
        if not dense_values.size:
            hint = " (the densities look like fractions; give them in percent)" if d.max() <= 1.0 else ""
            raise ValueError("no point at density 100 %: pass dense_error= (the error of the unpruned network)"
                             + hint)
        dense_error = measured
    dense_error = float(dense_error)
    if eps_np_tolerance is None:
        spread = float(np.std(dense_values)) if dense_values.size > 1 else 0.0
        eps_np_tolerance = max(0.1, 0.05 * dense_error, 2.0 * spread)
    if eps_np_tolerance <= 0:
        raise ValueError("eps_np_tolerance must be positive")
    all_bounds = {"eps_np": (max(dense_error - eps_np_tolerance, 1e-6), max(dense_error + eps_np_tolerance, 2e-6))}
    all_bounds.update(DEFAULT_BOUNDS)
    for k, v in (bounds or {}).items():
        if k not in PARAMETERS:
            raise ValueError(f"unknown parameter {k!r} in bounds; parameters are {PARAMETERS}")
        lo, hi = float(v[0]), float(v[1])
        if not lo < hi:
            raise ValueError(f"bounds for {k} must satisfy lower < upper, got {v}")
        all_bounds[k] = (lo, hi)
    if all_bounds["gamma"][1] >= 0 or all_bounds["p"][0] <= 0 or all_bounds["eps_dagger"][0] <= 0:
        raise ValueError("bounds must keep gamma < 0, p > 0 and eps_dagger > 0")
    return dense_error, all_bounds


def _best_of_starts(d, e, sigma, starts, lower, upper, max_nfev, dense_error):
    """``curve_fit`` from each start until two reach the same best minimum; (popt, pcov, residuals) of the best."""
    from scipy.optimize import OptimizeWarning, curve_fit

    best, errors, costs = None, [], []
    same = 1e-9 * float(np.sum((e - e.mean()) ** 2)) + 1e-24  # costs this close are the same minimum
    for start in starts:
        x0 = np.clip(np.asarray(start, dtype=float), lower, upper)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, pcov = curve_fit(
                    _model, d, e, p0=x0, bounds=(lower, upper), sigma=sigma, absolute_sigma=sigma is not None,
                    method="trf", jac=_jacobian, max_nfev=max_nfev, ftol=1e-12, xtol=1e-12, gtol=1e-12,
                )
        except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
            errors.append(f"start {np.round(x0, 4).tolist()}: {exc}")
            continue
        resid = e - _model(d, *popt)
        weights = 1.0 if sigma is None else 1.0 / sigma ** 2
        cost = float(np.sum(weights * resid ** 2))
        if not np.isfinite(cost):
            errors.append(f"start {np.round(x0, 4).tolist()}: non-finite residuals")
            continue
        costs.append(cost)
        if best is None or cost < best[0]:
            best = (cost, popt, pcov, resid)
        if len(costs) >= 3 and sum(c <= best[0] + same for c in costs) >= 2:
            break  # two starts reached the same (best) minimum
    if best is None:
        raise RuntimeError(
            f"Eq. 14 fit did not converge from any of {len(starts)} starting point(s) "
            f"({d.size} points, dense error {dense_error:.4g} %): " + "; ".join(errors[:3])
        )
    return best[1], best[2], best[3]


def _starting_points(d: np.ndarray, e: np.ndarray, dense_error: float, p0) -> list[list[float]]:
    names = PARAMETERS
    if p0 is not None:
        if isinstance(p0, dict):
            missing = [k for k in names if k not in p0]
            if missing:
                raise ValueError(f"p0 is missing {missing}")
            return [[float(p0[k]) for k in names]]
        p0 = [float(x) for x in p0]
        if len(p0) != len(names):
            raise ValueError(f"p0 needs {len(names)} values {names}, got {len(p0)}")
        return [p0]
    e_max = float(np.max(e))
    eps_np = max(dense_error, 1e-3)
    daggers = sorted({min(max(e_max, 1.05 * eps_np), 99.0), min(max(2.0 * e_max, 1.5 * eps_np), 99.0)})
    d_min = float(np.min(d))
    ps = sorted({max(d_min, 1e-3), 20.0})
    gammas = (-0.2, -1.0)
    return [[eps_np, dag, p, g] for dag in daggers for p in ps for g in gammas]


def points_from_flows(
    flows, metric: str = "eval_accuracy", *, accuracy_in_percent: bool = False, per_run: bool = False,
):
    """(density %, error %) points from the levels of one or several IMP flows.

    Each level with ``metric`` in its metrics gives d = 100 · density and
    ε = 100 − 100 · metric (a fraction in [0, 1]; set ``accuracy_in_percent`` when the
    metric is already in percent, then ε = 100 − metric). Levels without the metric are
    skipped. Returns two concatenated arrays, or with ``per_run=True`` one
    ``(density, error)`` pair per flow.
    """
    if hasattr(flows, "densities"):  # one IMPFlow
        flows = [flows]
    runs = []
    for i, flow in enumerate(flows):
        dens = flow.densities()
        ds, es = [], []
        for rec in flow.levels:
            value = rec.get("metrics", {}).get(metric)
            if value is None or isinstance(value, (bool, str)) or not np.isfinite(float(value)):
                continue
            value = float(value)
            if not accuracy_in_percent and not -1e-9 <= value <= 1 + 1e-9:
                raise ValueError(
                    f"flow {i}: {metric}={value} at level {rec['level']} is not a fraction in [0, 1]; "
                    f"pass accuracy_in_percent=True if the metric is in percent"
                )
            ds.append(100.0 * float(dens.loc[rec["level"]]))
            es.append(100.0 - (value if accuracy_in_percent else 100.0 * value))
        runs.append((np.asarray(ds, dtype=float), np.asarray(es, dtype=float)))
    if per_run:
        return runs
    if not runs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate([r[0] for r in runs]), np.concatenate([r[1] for r in runs])


# --------------------------------------------------------------------------- profile likelihood of γ


@dataclass
class GammaProfile:
    """The profile deviance of γ and the interval it gives (see :func:`profile_gamma`)."""

    gamma: np.ndarray  # grid (ascending)
    deviance: np.ndarray  # n · ln(RSS(γ) / RSS_min)
    rss: np.ndarray
    gamma_hat: float
    level: float
    threshold: float
    low: float  # NaN: open (the set reaches the lower bound of γ)
    high: float  # NaN: open (the set reaches the upper bound of γ)
    bounds: tuple[float, float]
    n_points: int

    @property
    def kind(self) -> str:
        """'two-sided', 'upper bound' (γ ≤ high), 'lower bound' (γ ≥ low) or 'unbounded'."""
        lo, hi = math.isfinite(self.low), math.isfinite(self.high)
        return "two-sided" if lo and hi else "upper bound" if hi else "lower bound" if lo else "unbounded"

    @property
    def determined(self) -> bool:
        return self.kind == "two-sided"

    def describe(self) -> str:
        pct = f"{100 * self.level:.0f} %"
        lo_b, hi_b = self.bounds
        if self.kind == "two-sided":
            return (f"γ = {self.gamma_hat:.3f}, {pct} profile-likelihood interval [{self.low:.3f}, {self.high:.3f}] "
                    f"({self.n_points} points)")
        if self.kind == "upper bound":
            return (f"γ ≤ {self.high:.3f} ({pct} profile likelihood, ONE-SIDED: no lower limit within the bound "
                    f"{lo_b:g}; the best fit lies at γ = {self.gamma_hat:.3g}, {self.n_points} points)")
        if self.kind == "lower bound":
            return (f"γ ≥ {self.low:.3f} ({pct} profile likelihood, ONE-SIDED: no upper limit below {hi_b:g}; "
                    f"{self.n_points} points)")
        return (f"γ unconstrained within [{lo_b:g}, {hi_b:g}] at {pct} (profile likelihood, {self.n_points} points): "
                f"the data do not determine it")


def _fit_fixed_gamma(d, e, sigma, gamma, lower3, upper3, starts):
    """Best (RSS, params) of Eq. 14 with γ fixed, over the given starts of (ε_np, ε†, p)."""
    from scipy.optimize import OptimizeWarning, curve_fit

    def model(x, a, b, c):
        return eq14(x, a, b, c, gamma)

    def jac(x, a, b, c):
        return _jacobian(x, a, b, c, gamma)[:, :3]

    best = None
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), lower3, upper3)
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore", OptimizeWarning)
                popt, _ = curve_fit(model, d, e, p0=x0, bounds=(lower3, upper3), sigma=sigma,
                                    absolute_sigma=sigma is not None, method="trf", jac=jac, max_nfev=5000)
        except (RuntimeError, ValueError, FloatingPointError, np.linalg.LinAlgError):
            continue
        w = 1.0 if sigma is None else 1.0 / sigma ** 2
        rss = float(np.sum(w * (e - model(d, *popt)) ** 2))
        if np.isfinite(rss) and (best is None or rss < best[0]):
            best = (rss, popt)
    return best


def profile_gamma(fit: ScalingFit, *, level: float = 0.95, n_grid: int = 41) -> GammaProfile:
    """Profile likelihood of γ for a fit of Eq. 14: the deviance over a grid of γ and the interval it gives.

    At each γ of a grid (log-spaced in |γ| over γ's bounds, plus the fitted γ) the other three
    parameters are refitted (warm-started from the neighbouring γ and from the full fit); the
    deviance D(γ) = n · ln(RSS(γ) / RSS_min) is compared with the χ²(1) quantile of ``level``.
    Interval ends are interpolated between grid points; an end that reaches γ's bound is open
    (NaN) and the result is a one-sided bound — say so when reporting it.
    """
    from scipy import stats

    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    d, e, sigma = fit.density, fit.error, fit.sigma
    g_lo, g_hi = fit.bounds["gamma"]
    lower3 = np.array([fit.bounds[k][0] for k in PARAMETERS[:3]])
    upper3 = np.array([fit.bounds[k][1] for k in PARAMETERS[:3]])
    mags = np.geomspace(max(abs(g_hi), 1e-3), abs(g_lo), int(n_grid))
    grid = np.unique(np.clip(np.concatenate([-mags, [fit.gamma]]), g_lo, g_hi))
    full = [fit.params[k] for k in PARAMETERS[:3]]
    base_starts = _starting_points(d, e, fit.dense_error, None)
    rss = np.full(grid.size, np.nan)
    prev = None
    rss_fit_guess = float(np.sum((1.0 if sigma is None else 1.0 / sigma ** 2) * fit.residuals ** 2)) + 1e-12
    order = np.argsort(np.abs(grid - fit.gamma))  # outwards from the fit: warm starts stay close
    params_at = {}
    for i in order:
        g = grid[i]
        near = [params_at[j] for j in (i - 1, i + 1) if j in params_at]
        starts = near or ([prev] if prev is not None else [full])
        best = _fit_fixed_gamma(d, e, sigma, g, lower3, upper3, starts + ([full] if near else []))
        if best is None or (near and best[0] > 1.5 * rss_fit_guess):  # lost the valley: try the usual starts
            best = min([b for b in (best, _fit_fixed_gamma(d, e, sigma, g, lower3, upper3,
                                                           [s[:3] for s in base_starts])) if b is not None],
                       key=lambda b: b[0], default=None)
        if best is not None:
            rss[i], params_at[i] = best[0], list(best[1])
            prev = params_at[i]
    ok = np.isfinite(rss)
    if not ok.any():
        raise RuntimeError("the profile of γ could not be computed: no fixed-γ fit converged")
    w = 1.0 if sigma is None else 1.0 / sigma ** 2
    rss_fit = float(np.sum(w * fit.residuals ** 2))
    rss_min = min(float(np.nanmin(rss)), rss_fit)
    n = d.size
    dev = np.where(ok, n * np.log(np.maximum(rss, 1e-300) / max(rss_min, 1e-300)), np.nan)
    thr = float(stats.chi2.ppf(level, 1))
    inside = ok & (dev <= thr)
    i_best = int(np.nanargmin(np.where(ok, dev, np.inf)))
    gamma_hat = float(grid[i_best]) if rss[i_best] < rss_fit else fit.gamma

    def crossing(step: int) -> float:
        j = i_best
        while 0 <= j + step < grid.size and inside[j + step]:
            j += step
        k = j + step
        if not 0 <= k < grid.size:
            return float("nan")  # reaches the bound: open
        if not ok[k]:
            return float(grid[j])
        # linear interpolation of the deviance between the last point inside and the first outside
        d0, d1 = dev[j], dev[k]
        t = (thr - d0) / (d1 - d0) if d1 != d0 else 0.0
        return float(grid[j] + t * (grid[k] - grid[j]))

    return GammaProfile(gamma=grid, deviance=dev, rss=rss, gamma_hat=gamma_hat, level=level, threshold=thr,
                        low=crossing(-1), high=crossing(+1), bounds=(g_lo, g_hi), n_points=n)
