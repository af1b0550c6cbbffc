"""Flow statistics (issue 14): seeds pooled, standard errors of λ, comparisons that say what they compare,
stage-only normalisation (Redman et al. 2022, Table 2) and the untrained control from θ_0 or θ_k."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lottery_rg  # noqa: F401  (registers the CIFAR ResNets in timm)
from lottery_rg.cli import flow_main
from lottery_rg.flow import FlowPool, IMPFlow
from lottery_rg.flow.uncertainty import (
    block_bootstrap_se,
    default_block_length,
    difference_test,
    holm,
    lag1_autocorrelation,
    naive_se,
)
from lottery_rg.models.families import Unit, prunable_parameters

# --------------------------------------------------------------------------- synthetic noisy flows
#
# Blocks with known eigenvalues λ_i: M_i(n+1) = M_i(n) · λ_i · (1 + ε_n), ε_n ~ N(0, σ) i.i.d.;
# the total shrinks by 0.8 per level and a "head" unit takes the remainder, so the blocks'
# per-level ratios have mean λ_i exactly (up to rounding of counts of ~1e8 weights).

TRUE = {"layer1.0": (1, 0, 1.10, 0.15), "layer2.0": (2, 0, 1.00, 0.15), "layer3.0": (3, 0, 0.90, 0.20)}
T0 = 10 ** 9


def noisy_flow(seed: int, sigma: float = 0.01, levels: int = 11, true=TRUE, ar: float = 0.0,
               schedule: dict | None = None) -> IMPFlow:
    rng = np.random.default_rng(seed)
    tensors, units, counts = {}, [], {n: {} for n in range(levels)}
    for name, (stage, index, lam, m0) in true.items():
        t = f"{name}.weight"
        tensors[t] = int(m0 * T0)
        units.append(Unit(name, "block", stage, index, False, (t,)))
        m, eps = m0, 0.0
        for n in range(levels):
            counts[n][t] = int(round(m * T0 * 0.8 ** n))
            eps = ar * eps + math.sqrt(1 - ar ** 2) * rng.normal(0, sigma)
            m *= lam * (1 + eps)
    head = T0 - sum(tensors.values())
    tensors["fc.weight"] = head
    units.append(Unit("head", "head", None, None, False, ("fc.weight",)))
    for n in range(levels):
        counts[n]["fc.weight"] = int(round(T0 * 0.8 ** n)) - sum(counts[n].values())
        assert 0 < counts[n]["fc.weight"] <= head
    stage_units = [Unit(f"layer{s}", "stage", s, None, False, (f"{b}.weight",))
                   for b, (s, *_rest) in true.items()] + [units[-1]]
    lv = [{"level": n, "surviving": counts[n], "metrics": {"eval_accuracy": 0.9}} for n in range(levels)]
    sched = {"prune_fraction": 0.2, "schedule": "geometric", "pruning": "global", "seed": seed, **(schedule or {})}
    return IMPFlow(model={"family": "resnet", "architecture": "synthetic"}, tensors=tensors,
                   units={"block": units, "stage": stage_units}, schedule=sched, levels=lv)


# --------------------------------------------------------------------------- uncertainty


def test_block_bootstrap_se_exceeds_naive_se_for_autocorrelated_ratios():
    rng = np.random.default_rng(0)
    n, phi = 400, 0.9
    x = np.empty(n)
    x[0] = rng.normal()
    for i in range(1, n):
        x[i] = phi * x[i - 1] + math.sqrt(1 - phi ** 2) * rng.normal()
    assert lag1_autocorrelation(x) > 0.8
    naive, boot = naive_se(x), block_bootstrap_se(x)
    assert boot > 2 * naive  # long-run variance of AR(1) is (1+φ)/(1−φ) = 19× the i.i.d. one
    assert block_bootstrap_se(x, block_length=40) > boot  # longer blocks capture more of it
    # i.i.d. values: the bootstrap agrees with std/√n
    iid = rng.normal(size=n)
    assert 0.75 < block_bootstrap_se(iid) / naive_se(iid) < 1.25
    # reproducible (fixed seed), degenerate cases
    assert block_bootstrap_se(x) == block_bootstrap_se(x)
    assert block_bootstrap_se([1.0, 1.0, 1.0, 1.0]) == 0.0 and math.isnan(block_bootstrap_se([1.0, 2.0]))
    assert default_block_length(10) == 3 and default_block_length(3) == 1 and default_block_length(400) == 8


def test_difference_test_and_holm():
    r = difference_test([1.0, 1.1, 1.0], [0.0, 0.01, 0.01], [np.inf] * 3, [1.0, 1.0, 1.0], [0.0, 0.01, 0.01],
                        [np.inf] * 3)
    assert r["t"][0] == 0.0 and r["p"][0] == 1.0
    assert r["t"][1] == pytest.approx(0.1 / math.sqrt(2e-4)) and r["p"][1] < 1e-6
    # Welch–Satterthwaite with 2 df on each side and equal SEs: df = 4
    w = difference_test([1.1], [0.02], [2], [1.0], [0.02], [2])
    assert w["df"][0] == pytest.approx(4.0)
    np.testing.assert_allclose(holm([0.01, 0.04, 0.03, np.nan]), [0.03, 0.06, 0.06, np.nan])


def test_eigenvalue_table_has_bootstrap_se():
    flow = noisy_flow(0, sigma=0.02)
    t = flow.eigenvalues("block")
    assert {"se", "se_df", "lag1"} <= set(t.table.columns)
    assert (t.table.loc[["layer1.0", "layer2.0", "layer3.0"], "se"] > 0).all()
    assert np.isinf(t.table["se_df"]).all()
    assert "bootstrap" in t.se_method and "SE" in t.to_markdown()


# --------------------------------------------------------------------------- seeds


def test_pooled_seeds_recover_known_eigenvalues_and_standard_errors():
    sigma, levels, S = 0.02, 11, 40
    pool = FlowPool([noisy_flow(s, sigma=sigma, levels=levels) for s in range(S)])
    t = pool.eigenvalues("block")
    n = levels - 1
    for unit, (_, _, lam, _) in TRUE.items():
        row = t.table.loc[unit]
        expected_se = lam * sigma / math.sqrt(n * S)
        assert abs(row["lambda"] - lam) < 4 * expected_se
        assert row["se"] == pytest.approx(expected_se, rel=0.3)
        assert row["sd_seeds"] == pytest.approx(lam * sigma / math.sqrt(n), rel=0.3)
        assert row["se_df"] == S - 1 and row["n_seeds"] == S
        assert row["std"] == pytest.approx(lam * sigma, rel=0.3)  # within-run spread of the ratios
    assert t.table.loc["layer1.0", "class"] == "relevant" and t.table.loc["layer3.0", "class"] == "irrelevant"
    assert t.table.loc["layer2.0", "class"] == "marginal"
    assert {"layer1.0", "layer2.0", "layer3.0"} <= set(t.stable_units())
    assert t.table.loc["layer1.0", "class_share"] == 1.0
    assert "pooled over 40 seeds" in t.to_markdown() and "stable across all 40 seeds" in t.to_markdown()
    mean, se = pool.M("block")
    assert mean.shape == se.shape and np.allclose(mean.sum(axis=1), 1.0)


def test_pool_refuses_different_configurations():
    a, b = noisy_flow(0), noisy_flow(1, schedule={"prune_fraction": 0.1})
    with pytest.raises(ValueError, match="prune_fraction"):
        FlowPool([a, b])
    FlowPool([a, noisy_flow(1)])  # only the seed differs


def test_unstable_class_is_reported_per_seed():
    # a unit at λ = 1.012 with a spread of ~1 %: its class flips between seeds
    true = {**TRUE, "layer2.0": (2, 0, 1.012, 0.15)}
    t = FlowPool([noisy_flow(s, sigma=0.01, true=true) for s in range(8)]).eigenvalues("block")
    row = t.table.loc["layer2.0"]
    assert not row["stable"] and 0 < row["class_share"] < 1 and "/" in row["classes"]


# --------------------------------------------------------------------------- comparisons


def test_compare_with_itself_says_equivalent():
    # issue 21: "same" meant "no difference found"; a run compared with itself is *equivalent*
    flow = noisy_flow(0, sigma=0.02)
    cmp = flow.compare(flow)
    assert cmp.summary["same"] and cmp.summary["n_differ"] == 0 and cmp.summary["distance"] == 0.0
    assert cmp.equivalent and (cmp.table["verdict"] == "equivalent").all()
    assert cmp.verdict.startswith("equivalent") and "predicted to transfer" in cmp.verdict
    assert "statistic" in cmp.summary and "bootstrap" in cmp.summary["statistic"]
    pool = FlowPool([noisy_flow(s) for s in range(3)])
    pc = pool.compare(pool)
    assert pc.summary["same"] and "seeds" in pc.summary["statistic"]


def test_another_seed_does_not_call_stable_classes_different():
    a, b = noisy_flow(1, sigma=0.01), noisy_flow(2, sigma=0.01)
    cmp = a.compare(b)
    for unit in TRUE:
        assert cmp.table.loc[unit, "agree"], unit
        assert not cmp.table.loc[unit, "differs"], unit
    assert cmp.summary["n_differ"] == 0 and cmp.summary["all_agree"]
    # issue 21: one seed per side resolves nothing (its bootstrap SE is indicative); no transfer claim either way
    assert (cmp.table["verdict"] == "not resolved").all() and cmp.verdict.startswith("not resolved")
    assert not cmp.summary["transfer_predicted"] and "one seed" in cmp.verdict
    # pools of three seeds each: across-seed SEs, Welch df, still no difference
    pa = FlowPool([noisy_flow(s, sigma=0.01) for s in (10, 11, 12)])
    pb = FlowPool([noisy_flow(s, sigma=0.01) for s in (20, 21, 22)])
    pc = pa.compare(pb)
    assert pc.summary["n_differ"] == 0 and pc.summary["all_agree"]
    assert np.isfinite(pc.table["df"]).all()
    assert "seeds agreeing a" in pc.to_markdown()


def test_pools_detect_a_real_difference():
    other = {**TRUE, "layer1.0": (1, 0, 1.16, 0.15)}
    pa = FlowPool([noisy_flow(s, sigma=0.01) for s in (10, 11, 12)])
    pb = FlowPool([noisy_flow(s, sigma=0.01, true=other) for s in (20, 21, 22)])
    cmp = pa.compare(pb)
    assert "layer1.0" in cmp.summary["differing"]
    assert cmp.table.loc["layer1.0", "agree"]  # both relevant: same class, different λ
    assert "λ differs significantly" in cmp.verdict and "layer1.0" in cmp.verdict


def test_control_is_phrased_as_control_vs_trained():
    trained = noisy_flow(0)
    control = noisy_flow(5, schedule={"control": "untrained", "control_from": "rewind"})
    for cmp in (trained.compare(control), control.compare(trained)):
        assert cmp.summary["relation"] == "control"
        assert cmp.verdict.startswith("control vs trained")
        assert "transfer" not in cmp.verdict.replace("no transfer prediction", "")
        assert "untrained control" in cmp.to_markdown()
    # an explicit relation overrides the detection; stage comparisons phrase it too
    assert trained.compare(noisy_flow(3), relation="control").verdict.startswith("control vs trained")
    assert trained.compare(control, by="stage").verdict.startswith("control vs trained")


# --------------------------------------------------------------------------- stage-only normalisation


def test_stage_only_normalisation_resnet50_by_hand():
    import timm

    with torch.device("meta"):
        model = timm.create_model("resnet50")
    prunable = prunable_parameters(model)
    assert "fc.weight" in prunable and "conv1.weight" in prunable
    flow = IMPFlow.from_model(model, prunable)
    numel = dict(flow.tensors)
    rng = np.random.default_rng(0)
    levels = []
    for n in range(4):
        counts = {t: int(numel[t] * rng.uniform(0.2, 1.0) * 0.8 ** n) + 1 for t in numel}
        flow.add_level(n, counts)
        levels.append(counts)
    M = flow.M("stage", normalize="stages")
    assert list(M.columns) == ["layer1", "layer2", "layer3", "layer4"]  # no stem, no head
    for n, counts in enumerate(levels):
        stage = {s: sum(v for t, v in counts.items() if t.startswith(f"layer{s}.")) for s in (1, 2, 3, 4)}
        inside = sum(stage.values())
        for s in (1, 2, 3, 4):
            assert M.at[n, f"layer{s}"] == pytest.approx(stage[s] / inside, rel=1e-12)
        # the default denominator includes conv1 and fc
        everything = sum(counts.values())
        assert flow.M("stage").at[n, "layer1"] == pytest.approx(stage[1] / everything, rel=1e-12)
    np.testing.assert_allclose(M.sum(axis=1), 1.0)
    # the dense shares of Table 2's denominator: M(0) with full masks
    dense = IMPFlow.from_model(model, prunable)
    dense.add_level(0, dict(numel))
    m0 = dense.M("stage", normalize="stages").iloc[0]
    by_hand = {s: sum(v for t, v in numel.items() if t.startswith(f"layer{s}.")) for s in (1, 2, 3, 4)}
    assert m0["layer4"] == pytest.approx(by_hand[4] / sum(by_hand.values()))
    # eigenvalues under stage-only normalisation: ratios of the hand-made shares
    t = flow.eigenvalues("stage", normalize="stages")
    assert list(t.table.index) == ["layer1", "layer2", "layer3", "layer4"] and t.normalize == "stages"
    ratios = M["layer2"].to_numpy()[1:] / M["layer2"].to_numpy()[:-1]
    assert t.table.loc["layer2", "lambda"] == pytest.approx(ratios.mean())
    assert "residual stages only" in t.to_markdown()
    # block granularity keeps every bottleneck block, tensor granularity every stage tensor
    assert "conv1" not in flow.M("block", normalize="stages").columns
    assert "fc.weight" not in flow.M("tensor", normalize="stages").columns
    # a Table-2-comparable run excludes the classifier from pruning: --prune_exclude '^fc\.'
    no_fc = prunable_parameters(model, exclude=[r"^fc\."])
    assert "fc.weight" not in no_fc and "conv1.weight" in no_fc
    with pytest.raises(ValueError, match="normalize"):
        flow.M("stage", normalize="paper")


# --------------------------------------------------------------------------- control from θ_0 or θ_k


def test_untrained_control_from_init_or_rewind(tmp_path, capsys):
    from utils import make_trainer

    from lottery_rg.run import RunDir

    make_trainer(tmp_path, {"levels": 2, "rewind_steps": 2}).run_imp()
    run = RunDir(tmp_path)
    assert run.init.is_file() and run.rewind.is_file()
    rewind = IMPFlow.untrained_control(tmp_path)  # default: θ_k
    init = IMPFlow.untrained_control(tmp_path, start="init")
    assert rewind.schedule["control"] == init.schedule["control"] == "untrained"
    assert rewind.schedule["control_from"] == "rewind" and rewind.schedule["control_step"] == 2
    assert init.schedule["control_from"] == "init" and init.schedule["control_step"] == 0
    assert init.schedule["control_weights"] == "init.safetensors"
    assert "θ_0" in init.label and "k = 2" in rewind.label
    assert rewind.levels[1]["surviving"] != init.levels[1]["surviving"]  # different weights, different masks
    with pytest.raises(ValueError, match="start"):
        IMPFlow.untrained_control(tmp_path, start="final")
    assert flow_main([str(tmp_path), "--control", "--control-from", "init"]) == 0
    out = capsys.readouterr().out
    assert "untrained control from θ_0" in out and "control vs trained" in out


# --------------------------------------------------------------------------- command line


def test_cli_pools_seeds_and_normalises_stages(tmp_path, capsys):
    paths = []
    for s in range(3):
        p = tmp_path / f"seed{s}"
        noisy_flow(s, sigma=0.01).save(p)
        paths.append(str(p / "flow.json"))
    other = tmp_path / "other"
    noisy_flow(9, sigma=0.01).save(other)
    rc = flow_main([*paths, "--compare", str(other / "flow.json"), "--plots", str(tmp_path / "png"),
                    "--normalize", "stages", "--granularity", "stage"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "pooled over 3 seeds" in out and "residual stages only" in out and "head" not in out.split("Verdict")[0]
    assert "Verdict" in out and "statistic" in out
    assert (tmp_path / "png" / "eigenvalues_stage.png").is_file()


# --------------------------------------------------------------------------- Eq. 14 wording


def test_eq14_gamma_on_its_bound_is_reported_as_not_determined():
    from lottery_rg.flow.scaling import eq14, fit_critical_exponent

    d = 100 * 0.8 ** np.arange(21)
    step = np.where(d > 5, 0.5, 88.0)  # flat, then chance within one level: a step, not a power law
    fit = fit_critical_exponent(d, step)
    assert not fit.gamma_determined
    assert "γ NOT DETERMINED" in fit.to_markdown()
    smooth = eq14(d, 1.0, 80.0, 20.0, -1.5)  # a gradual rise that reaches its plateau
    good = fit_critical_exponent(d, smooth + np.random.default_rng(0).normal(0, 0.2, d.size))
    assert good.gamma_determined and abs(good.gamma + 1.5) < 0.2 and good.gamma_stderr < 0.1
    assert f"γ = {good.gamma:.4f} ±" in good.to_markdown()
