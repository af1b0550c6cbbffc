"""Uncertainty of IMP-flow eigenvalues and the tests behind flow comparisons.

The eigenvalue of unit i is the mean of its per-level ratios r(n) = M_i(n+1)/M_i(n). The
*spread* of those ratios (the paper's "std", :class:`~lottery_rg.flow.EigenvalueTable`'s
``std`` column) describes how far M_i is from an eigenfunction; it is not the uncertainty
of λ_i. Two uncertainties are offered:

* **Across seeds** (preferred): λ_i of S runs of one configuration; the standard error is
  the sample standard deviation of the S eigenvalues over √S, with S − 1 degrees of freedom
  (:mod:`lottery_rg.flow.pool`).
* **Within one run** (one seed only): consecutive ratios are autocorrelated (a level that
  prunes a unit hard leaves fewer weights for the next), so std/√n is not a standard error.
  :func:`block_bootstrap_se` uses a moving-block bootstrap over the levels: blocks of
  ``L = max(1, min(⌈n^(1/3)⌉, ⌊n/2⌋))`` consecutive ratios are drawn with replacement
  (``n_boot = 2000`` resamples, fixed seed 0, so results are reproducible) and the standard
  deviation of the resampled means is the standard error. It only measures how well the
  window determines *this run's* mean ratio; it does not include seed-to-seed variation,
  and with the ~10 ratios of a short run it is itself uncertain (the bootstrap tends to
  under-estimate with so few blocks). **It is indicative only**: on simulated flows with
  known λ its 95 % intervals cover 59–100 % of the time depending on the noise (i.i.d.,
  AR(1), drift), and on trained runs it is 0.7–7× the seed-to-seed spread. No verdict in
  lottery_rg uses it; a comparison of single runs answers "not resolved" unless the two
  flows are identical.

:func:`difference_test` turns two (λ, SE, degrees of freedom) into Welch's t statistic
(Welch–Satterthwaite degrees of freedom; a normal z when both SEs come from the
bootstrap), a two-sided p value, and Holm's step-down adjustment over the units compared.
Holm controls the family-wise error under *any* dependence between the units' tests, which
matters here: global pruning ties the eigenvalues together (Σ_i M_i(n) λ_i(n) = 1 at every
level), so they are never independent.

Three answers, never two (SCIENCE §2): :func:`three_way` labels each unit *different*
(Holm-adjusted p < α), *equivalent* (:func:`tost`: two one-sided tests at level α against a
stated margin, i.e. the (1 − 2α) confidence interval of the difference lies inside
(−margin, +margin)) or *not resolved*; :func:`min_detectable_difference` says how large a
difference the seeds could have detected. The default margin (:func:`equivalence_margin`)
is tied to the class boundary λ = 1: a fraction (25 %) of |λ̄ − 1|, at least 0.005. Calling
*every* unit equivalent is an intersection–union test, valid at level α without adjustment
and under any dependence. :func:`trend_test` asks the same three-way question of the
drift of λ_i(n) over the levels.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["default_block_length", "block_bootstrap_se", "naive_se", "lag1_autocorrelation", "seed_se",
           "difference_test", "holm", "tost", "min_detectable_difference", "equivalence_margin", "three_way",
           "ols_slope", "trend_test", "VERDICTS", "MARGIN_FRACTION", "MARGIN_FLOOR", "POWER",
           "BOOTSTRAP_SEED", "N_BOOT"]

#: the three answers of a comparison (SCIENCE §2)
VERDICTS = ("different", "equivalent", "not resolved")
#: default equivalence margin: this fraction of |λ̄ − 1| (the distance to the class boundary) ...
MARGIN_FRACTION = 0.25
#: ... but at least this much (units at λ ≈ 1 would otherwise need an infinitely precise equality)
MARGIN_FLOOR = 0.005
#: power at which the minimal detectable difference is quoted
POWER = 0.8

BOOTSTRAP_SEED = 0
N_BOOT = 2000


def default_block_length(n: int) -> int:
    """⌈n^(1/3)⌉ (the usual rate for the moving-block bootstrap of a mean), at most n // 2, at least 1."""
    n = int(n)
    return max(1, min(math.ceil(n ** (1.0 / 3.0) - 1e-12), n // 2))


def naive_se(x, ddof: int = 1) -> float:
    """std/√n, the standard error of the mean of *independent* values (NaN for fewer than two)."""
    x = np.asarray(x, dtype=float)
    return float(x.std(ddof=ddof) / math.sqrt(x.size)) if x.size > ddof and x.size >= 2 else float("nan")


def lag1_autocorrelation(x) -> float:
    """Lag-1 sample autocorrelation (NaN for fewer than three values or a constant series)."""
    x = np.asarray(x, dtype=float)
    if x.size < 3:
        return float("nan")
    d = x - x.mean()
    den = float((d * d).sum())
    return float((d[1:] * d[:-1]).sum() / den) if den > 0 else float("nan")


def block_bootstrap_se(x, block_length: int | None = None, n_boot: int = N_BOOT, seed: int = BOOTSTRAP_SEED) -> float:
    """Moving-block-bootstrap standard error of the mean of the series ``x``.

    ``ceil(n / L)`` blocks of L consecutive values (start drawn uniformly among the n − L + 1
    possible) are concatenated and cut to n values; the SE is the standard deviation
    (ddof=1) of the ``n_boot`` resampled means. NaN for fewer than three values; 0 for a
    constant series.
    """
    x = np.asarray(x, dtype=float)
    n = x.size
    if n < 3:
        return float("nan")
    if np.ptp(x) == 0:
        return 0.0
    L = default_block_length(n) if block_length is None else int(block_length)
    if not 1 <= L <= n:
        raise ValueError(f"block_length must be in [1, {n}], got {block_length}")
    k = math.ceil(n / L)
    rng = np.random.default_rng(seed)
    starts = rng.integers(0, n - L + 1, size=(int(n_boot), k))
    idx = (starts[:, :, None] + np.arange(L)[None, None, :]).reshape(int(n_boot), k * L)[:, :n]
    means = x[idx].mean(axis=1)
    return float(means.std(ddof=1))


def seed_se(values) -> tuple[float, float, int]:
    """(mean, SE = sample std / √S, degrees of freedom S − 1) of per-seed values (NaNs dropped)."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan"), 0
    if v.size == 1:
        return float(v[0]), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(v.size)), int(v.size - 1)


def difference_test(lam_a, se_a, df_a, lam_b, se_b, df_b) -> dict[str, np.ndarray]:
    """Per unit: diff = λa − λb, its SE, Welch's t (z when both df are infinite), df and a two-sided p.

    ``df`` = ∞ marks a bootstrap SE (normal reference). A zero SE with a zero difference
    gives t = 0 (p = 1); a zero SE with a non-zero difference gives |t| = ∞ (p = 0); a NaN
    SE gives NaN.
    """
    from scipy import stats

    la, lb = np.asarray(lam_a, float), np.asarray(lam_b, float)
    sa, sb = np.asarray(se_a, float), np.asarray(se_b, float)
    da, db = np.asarray(df_a, float), np.asarray(df_b, float)
    diff = la - lb
    var = sa ** 2 + sb ** 2
    se = np.sqrt(var)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(se > 0, diff / se, np.where(np.abs(diff) <= 1e-12, 0.0, np.inf * np.sign(diff)))
        ta = np.where(np.isinf(da), 0.0, sa ** 4 / np.where(da > 0, da, np.nan))
        tb = np.where(np.isinf(db), 0.0, sb ** 4 / np.where(db > 0, db, np.nan))
        den = ta + tb
        df = np.where(den > 0, var ** 2 / den, np.inf)
    t = np.where(np.isnan(se) & ~(np.abs(diff) <= 1e-12), np.nan, t)
    p = np.full(t.shape, np.nan)
    ok = np.isfinite(t) | np.isinf(t)
    ok &= ~np.isnan(df)
    finite_df = ok & np.isfinite(df)
    p[finite_df] = 2 * stats.t.sf(np.abs(t[finite_df]), df[finite_df])
    normal = ok & np.isinf(df)
    p[normal] = 2 * stats.norm.sf(np.abs(t[normal]))
    return {"diff": diff, "se": se, "t": t, "df": df, "p": p}


def holm(p) -> np.ndarray:
    """Holm's step-down adjusted p values (NaNs stay NaN and do not count)."""
    p = np.asarray(p, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    m = ok.size
    if m == 0:
        return out
    order = ok[np.argsort(p[ok], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def _t_quantile(q: float, df) -> np.ndarray:
    """Student-t quantile, normal where df is infinite; NaN where df is NaN or ≤ 0."""
    from scipy import stats

    df = np.asarray(df, dtype=float)
    out = np.full(df.shape, np.nan)
    inf = np.isinf(df)
    out[inf] = stats.norm.ppf(q)
    ok = np.isfinite(df) & (df > 0)
    out[ok] = stats.t.ppf(q, df[ok])
    return out


def tost(diff, se, df, margin, alpha: float = 0.05) -> dict[str, np.ndarray]:
    """Two one-sided tests of |difference| < margin, per unit.

    Returns the (1 − 2α) confidence interval (``low``, ``high``), ``p`` = the larger of the
    two one-sided p values, and ``equivalent`` = the interval lies strictly inside
    (−margin, margin). A zero SE gives the point itself as interval (an exact difference,
    e.g. a run compared with itself); a NaN SE or margin is never equivalent.
    """
    from scipy import stats

    diff, se = np.asarray(diff, float), np.asarray(se, float)
    df, margin = np.broadcast_to(np.asarray(df, float), diff.shape), np.broadcast_to(np.asarray(margin, float),
                                                                                       diff.shape)
    q = _t_quantile(1.0 - alpha, df)
    with np.errstate(invalid="ignore"):
        half = np.where(se == 0, 0.0, q * se)
    low, high = diff - half, diff + half
    with np.errstate(divide="ignore", invalid="ignore"):
        t_low = (diff + margin) / se  # H0: diff ≤ −margin
        t_high = (diff - margin) / se  # H0: diff ≥ +margin
        finite_df = np.where(np.isfinite(df) & (df > 0), df, 1.0)
        p_low = np.where(np.isinf(df), stats.norm.sf(t_low), stats.t.sf(t_low, finite_df))
        p_high = np.where(np.isinf(df), stats.norm.cdf(t_high), stats.t.cdf(t_high, finite_df))
    p = np.maximum(p_low, p_high)
    exact = se == 0
    p = np.where(exact, np.where(np.abs(diff) < margin, 0.0, 1.0), p)
    bad = ~(np.isfinite(diff) & np.isfinite(margin)) | np.isnan(se) | (~exact & ~np.isinf(df) & ~(df > 0))
    p = np.where(bad, np.nan, p)
    equivalent = np.isfinite(low) & np.isfinite(high) & (low > -margin) & (high < margin)
    return {"low": low, "high": high, "p": p, "equivalent": equivalent}


def min_detectable_difference(se, df, alpha: float = 0.05, m: int = 1, power: float = POWER) -> np.ndarray:
    """The smallest |difference| a two-sided test at level α/m detects with the given power.

    (t_{1−α/(2m)} + t_{power}) · SE with the test's degrees of freedom; m is the number of
    units tested (Holm's first step is Bonferroni's α/m, so this is the difference Holm finds
    even when it is the only real one). NaN where the SE is NaN.
    """
    se = np.asarray(se, float)
    df = np.broadcast_to(np.asarray(df, float), se.shape)
    m = max(int(m), 1)
    return (_t_quantile(1.0 - alpha / (2 * m), df) + _t_quantile(power, df)) * se


def equivalence_margin(lam_a, lam_b=None, *, fraction: float = MARGIN_FRACTION, floor: float = MARGIN_FLOOR,
                       margin: float | None = None) -> np.ndarray:
    """The default equivalence margin per unit: ``fraction`` · |λ̄ − 1|, at least ``floor``.

    λ̄ is the mean of the two eigenvalues compared (one, for a drift). A difference inside
    the margin cannot move a unit across the class boundary λ = 1 by more than a quarter of
    its distance to it. ``margin`` (a number) replaces the rule by a fixed margin.
    """
    lam_a = np.asarray(lam_a, float)
    if margin is not None:
        if not margin > 0:
            raise ValueError(f"the equivalence margin must be positive, got {margin}")
        return np.full(lam_a.shape, float(margin))
    if not fraction >= 0 or not floor >= 0 or fraction == floor == 0:
        raise ValueError(f"margin fraction and floor must be non-negative and not both 0, got {fraction}, {floor}")
    center = lam_a if lam_b is None else 0.5 * (lam_a + np.asarray(lam_b, float))
    return np.maximum(fraction * np.abs(center - 1.0), floor)


def three_way(differs, equivalent) -> np.ndarray:
    """'equivalent' where the TOST passes, else 'different' where the (Holm) test rejects, else 'not resolved'.

    Equivalence wins when both hold: the difference is real but smaller than the margin.
    """
    differs, equivalent = np.asarray(differs, bool), np.asarray(equivalent, bool)
    return np.where(equivalent, "equivalent", np.where(differs, "different", "not resolved")).astype(object)


def ols_slope(y) -> tuple[float, float]:
    """(slope, its OLS standard error) of y against 0, 1, …, n − 1; NaN SE for fewer than 3 points.

    The OLS SE assumes independent residuals; consecutive per-level ratios are not, so for a
    single run it is indicative. An exactly straight series has SE 0.
    """
    y = np.asarray(y, float)
    y = y[np.isfinite(y)]
    n = y.size
    if n < 2:
        return float("nan"), float("nan")
    x = np.arange(n, dtype=float) - (n - 1) / 2.0
    sxx = float((x * x).sum())
    b = float((x * (y - y.mean())).sum() / sxx)
    if n < 3:
        return b, float("nan")
    resid = y - y.mean() - b * x
    s2 = float((resid * resid).sum()) / (n - 2)
    return b, math.sqrt(s2 / sxx)


def trend_test(slopes, span, lam, *, alpha: float = 0.05, fraction: float = MARGIN_FRACTION,
               floor: float = MARGIN_FLOOR, margin: float | None = None) -> dict[str, np.ndarray]:
    """Per unit: is λ_i(n) drifting over the window? Three answers from the seeds' slopes.

    ``slopes``: units × seeds array of each seed's OLS slope of λ_i(n) against n (per level);
    ``span``: levels spanned by the ratios (pairs − 1), so that ``drift`` = mean slope · span
    is the total change of λ_i(n) over the window; ``lam``: the units' λ (for the margin).
    The slope's SE is the sample std across seeds / √S (S − 1 df): seeds are independent even
    though a run's ratios are not. *drifts*: Holm-adjusted p < α; *steady*: the total drift's
    (1 − 2α) interval lies inside ± the unit's equivalence margin; otherwise *not resolved*.
    With one seed there is no SE: *not tested (one seed)*.
    """
    slopes = np.atleast_2d(np.asarray(slopes, float))
    n_units, S = slopes.shape
    mean = np.full(n_units, np.nan)
    se = np.full(n_units, np.nan)
    df = np.zeros(n_units)
    for j in range(n_units):
        mean[j], se[j], df[j] = seed_se(slopes[j])
    drift, drift_se = mean * span, se * span
    dfs = np.where(df > 0, df, np.nan)
    test = difference_test(drift, drift_se, dfs, np.zeros(n_units), np.zeros(n_units), np.full(n_units, np.inf))
    p_holm = holm(test["p"]) if S > 1 else np.full(n_units, np.nan)
    margins = equivalence_margin(lam, fraction=fraction, floor=floor, margin=margin)
    eq = tost(drift, drift_se, dfs, margins, alpha)
    verdict = np.where(eq["equivalent"], "steady",
                       np.where(np.nan_to_num(p_holm, nan=1.0) < alpha, "drifts", "not resolved")).astype(object)
    if S < 2:
        verdict = np.full(n_units, "not tested (one seed)", dtype=object)
    return {"slope": mean, "slope_se": se, "drift": drift, "drift_se": drift_se, "df": df, "p": test["p"],
            "p_holm": p_holm, "margin": margins, "low": eq["low"], "high": eq["high"], "verdict": verdict}
