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
  under-estimate with so few blocks). Treat single-run comparisons as indicative.

:func:`difference_test` turns two (λ, SE, degrees of freedom) into Welch's t statistic
(Welch–Satterthwaite degrees of freedom; a normal z when both SEs come from the
bootstrap), a two-sided p value, and Holm's step-down adjustment over the units compared.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["default_block_length", "block_bootstrap_se", "naive_se", "lag1_autocorrelation", "seed_se",
           "difference_test", "holm", "BOOTSTRAP_SEED", "N_BOOT"]

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
