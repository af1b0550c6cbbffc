"""Critical-exponent fit of Eq. 14 (Redman et al. 2022)."""

from __future__ import annotations

import numpy as np
import pytest

from lottery_rg.flow import IMPFlow
from lottery_rg.flow.scaling import PARAMETERS, ScalingFit, eq14, fit_critical_exponent, points_from_flows
from lottery_rg.models.families import Unit

TRUE = dict(eps_np=5.0, eps_dagger=90.0, p=2.0, gamma=-0.5)
D = 100 * 0.8 ** np.arange(21)


def test_eq14_limits_and_form():
    # the closed form of Eq. 14, written out literally
    d = np.array([0.5, 3.0, 40.0])
    e, ed, p, g = TRUE["eps_np"], TRUE["eps_dagger"], TRUE["p"], TRUE["gamma"]
    literal = e * ((d ** 2 + p ** 2 * (ed / e) ** (2 / g)) / (d ** 2 + p ** 2)) ** (g / 2)
    np.testing.assert_allclose(eq14(d, **TRUE), literal, rtol=1e-12)
    assert eq14(1e6, **TRUE) == pytest.approx(TRUE["eps_np"], rel=1e-6)  # no pruning
    assert eq14(1e-9, **TRUE) == pytest.approx(TRUE["eps_dagger"], rel=1e-6)  # maximal pruning
    assert np.isfinite(eq14(D, 5.0, 90.0, 2.0, -1e-5)).all()  # γ near 0 does not overflow


def test_noiseless_fit_recovers_parameters():
    fit = fit_critical_exponent(D, eq14(D, **TRUE))
    assert isinstance(fit, ScalingFit)
    assert fit.gamma == pytest.approx(TRUE["gamma"], abs=1e-3)
    assert fit.params["p"] == pytest.approx(TRUE["p"], rel=1e-3)
    assert fit.params["eps_np"] == pytest.approx(TRUE["eps_np"], rel=1e-6)
    assert fit.params["eps_dagger"] == pytest.approx(TRUE["eps_dagger"], rel=1e-2)
    assert set(fit.stderr) == set(PARAMETERS) and all(v >= 0 for v in fit.stderr.values())
    assert fit.covariance.shape == (4, 4)
    assert fit.residuals.shape == D.shape and np.abs(fit.residuals).max() < 1e-6
    np.testing.assert_allclose(fit.predict(D), eq14(D, **TRUE), atol=1e-6)
    assert fit.dense_error == pytest.approx(float(eq14(100.0, **TRUE)))  # the measured error at d = 100
    text = str(fit)
    assert "γ" in text and "ε_np" in text


def test_noisy_fits_cover_true_gamma():
    """Three runs per seed, noise 0.05 percentage points: true γ within 2 standard errors in most seeds."""
    clean = eq14(D, **TRUE)
    covered, informative, seeds = 0, 0, range(8)
    for seed in seeds:
        rng = np.random.default_rng(seed)
        runs = [clean + rng.normal(0.0, 0.05, D.size) for _ in range(3)]
        fit = fit_critical_exponent([D, D, D], runs)
        assert fit.n_points == 3 * D.size
        lo, hi = fit.bounds["eps_np"]
        assert lo <= fit.params["eps_np"] <= hi
        assert np.isclose(fit.dense_error, np.mean([r[0] for r in runs]))
        covered += abs(fit.gamma - TRUE["gamma"]) <= 2 * fit.gamma_stderr
        # not vacuous: γ is not stuck on a bound and its standard error is below 1
        informative += "gamma" not in fit.at_bounds and fit.gamma_stderr < 1.0
    assert covered >= 6
    assert informative >= 6


def test_eps_np_is_bounded_around_dense_error():
    fit = fit_critical_exponent(D, eq14(D, **TRUE), dense_error=5.5, eps_np_tolerance=0.1)
    assert fit.bounds["eps_np"] == pytest.approx((5.4, 5.6))
    assert 5.4 - 1e-12 <= fit.params["eps_np"] <= 5.6 + 1e-12
    assert "eps_np" in fit.at_bounds
    fit = fit_critical_exponent(D, eq14(D, **TRUE), bounds={"gamma": (-0.4, -0.01)})
    assert fit.gamma == pytest.approx(-0.4) and "gamma" in fit.at_bounds


def test_too_few_points_and_bad_input():
    with pytest.raises(ValueError, match="4 free parameters"):
        fit_critical_exponent([100, 80, 64], [5, 5.1, 5.3])
    with pytest.raises(ValueError, match="dense_error"):
        fit_critical_exponent(D[1:], eq14(D[1:], **TRUE))
    with pytest.raises(ValueError, match="finite"):
        fit_critical_exponent([100, 80, 64, np.nan, 40], [5, 5, 5, 5, 5])
    with pytest.raises(ValueError, match="fractions"):
        fit_critical_exponent(D / 100, eq14(D, **TRUE))
    with pytest.raises(ValueError, match="percent"):
        fit_critical_exponent(D, eq14(D, **TRUE) / 100 - 1)


def test_non_convergence_is_a_runtime_error():
    with pytest.raises(RuntimeError, match="did not converge"):
        fit_critical_exponent(D, eq14(D, **TRUE), max_nfev=1)


def _flow_with_accuracy(accs):
    tensors = {"a": 10_000}
    units = {"tensor": [Unit("a", "tensor", None, None, False, ("a",))]}
    levels = [{"level": n, "surviving": {"a": round(10_000 * 0.8 ** n)}, "metrics": {"eval_accuracy": acc}}
              for n, acc in enumerate(accs)]
    return IMPFlow({"family": "x", "architecture": "toy"}, tensors, units, levels=levels)


def test_points_from_flows_and_pooled_fit():
    n = np.arange(15)
    d = 100 * np.array([round(10_000 * 0.8 ** k) for k in n]) / 10_000
    acc = 1 - eq14(d, **TRUE) / 100
    flows = [_flow_with_accuracy(acc), _flow_with_accuracy(acc)]
    flows[1].levels[3]["metrics"] = {}  # a level without the metric is skipped
    dd, ee = points_from_flows(flows)
    assert dd.size == 2 * 15 - 1
    np.testing.assert_allclose(dd[:15], d)
    np.testing.assert_allclose(ee[:15], eq14(d, **TRUE), atol=1e-9)
    per_run = points_from_flows(flows, per_run=True)
    assert len(per_run) == 2 and per_run[1][0].size == 14
    fit = fit_critical_exponent(dd, ee)
    assert fit.gamma == pytest.approx(TRUE["gamma"], abs=1e-3)
    assert flows[0].critical_exponent().gamma == pytest.approx(TRUE["gamma"], abs=1e-3)
    with pytest.raises(ValueError, match="accuracy_in_percent"):
        points_from_flows(_flow_with_accuracy([90.0, 89.0]))
    d2, e2 = points_from_flows(_flow_with_accuracy([90.0, 89.0]), accuracy_in_percent=True)
    np.testing.assert_allclose(e2, [10.0, 11.0])
