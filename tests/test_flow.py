"""IMP flow (Redman et al. 2022, Eq. 13): M_i(n), eigenvalues, classes, comparison, persistence, plots and CLI."""

from __future__ import annotations

import json
import math
import warnings

import numpy as np
import pytest
import torch

import lottery_rg  # noqa: F401  (registers the CIFAR ResNets in timm)
from lottery_rg.cli import flow_main as main
from lottery_rg.flow import (
    FLOW_FILE,
    SCHEMA_VERSION,
    ClassRule,
    EigenvalueTable,
    FlowComparison,
    IMPFlow,
    classify,
)
from lottery_rg.models.families import Unit, family_of, prunable_parameters
from lottery_rg.pruning.masks import full_mask, next_mask, save_mask

# --------------------------------------------------------------------------- synthetic flows
#
# Exact eigenfunctions: with λ_i = a_i / 20 and the total shrinking by 20/25 = 0.8 per level,
#   c_i(n) = k_i · a_i^n · 25^(N−n),   T(n) = K · 20^n · 25^(N−n)
# gives M_i(n) = (k_i / K) (a_i / 20)^n exactly (integers all the way). Since Σ_i M_i = 1, not
# every unit can be an eigenfunction: a "head" unit takes the remainder T(n) − Σ_i c_i(n).

DEN, SHRINK, K = 20, 25, 1000


def exact_flow(blocks: dict[str, tuple[int, int, int, int]], levels: int = 8, *, metrics=None,
               family: str = "resnet", architecture: str = "synthetic") -> IMPFlow:
    """blocks: name -> (stage, index, a, k) with λ = a / 20 and M(0) = k / K; plus a remainder 'head'."""
    N = levels - 1
    tensors, units = {}, []
    counts = {n: {} for n in range(levels)}
    for name, (stage, index, a, k) in blocks.items():
        t = f"{name}.weight"
        tensors[t] = k * SHRINK ** N
        units.append(Unit(name, "block", stage, index, index == 0 and stage > 1, (t,)))
        for n in range(levels):
            counts[n][t] = k * a ** n * SHRINK ** (N - n)
    ksum = sum(k for *_, k in blocks.values())
    tensors["fc.weight"] = (K - ksum) * SHRINK ** N
    units.append(Unit("head", "head", None, None, False, ("fc.weight",)))
    for n in range(levels):
        counts[n]["fc.weight"] = K * DEN ** n * SHRINK ** (N - n) - sum(counts[n].values())
        assert 0 <= counts[n]["fc.weight"] <= tensors["fc.weight"]
    tensor_units = [Unit(t, "tensor", u.stage, u.index, u.downsample, (t,)) for u in units for t in u.params]
    stage_units = []
    for s in sorted({v[0] for v in blocks.values()}):
        params = tuple(f"{b}.weight" for b, v in blocks.items() if v[0] == s)
        stage_units.append(Unit(f"layer{s}", "stage", s, None, False, params))
    stage_units.append(units[-1])
    lv = [{"level": n, "surviving": counts[n], "metrics": (metrics or {}).get(n, {})} for n in range(levels)]
    return IMPFlow(model={"family": family, "architecture": architecture}, tensors=tensors,
                   units={"tensor": tensor_units, "block": units, "stage": stage_units},
                   schedule={"prune_fraction": 0.2, "schedule": "geometric", "pruning": "global"}, levels=lv)


def resnet_like(depth_per_stage: int, classes_by_stage: dict[int, list[int]]) -> IMPFlow:
    """Blocks layer{s}.{j}; classes_by_stage[s][j] is the numerator a (λ = a/20)."""
    blocks = {}
    for s in (1, 2, 3):
        for j in range(depth_per_stage):
            blocks[f"layer{s}.{j}"] = (s, j, classes_by_stage[s][j], 5)
    return exact_flow(blocks, levels=6, architecture=f"resnet{6 * depth_per_stage + 2}_like")


BLOCKS = {
    "layer1.0": (1, 0, 24, 10),  # λ = 1.2   relevant
    "layer1.1": (1, 1, 21, 10),  # λ = 1.05  relevant
    "layer2.0": (2, 0, 20, 30),  # λ = 1.0   marginal
    "layer2.1": (2, 1, 19, 40),  # λ = 0.95  irrelevant
    "layer3.0": (3, 0, 18, 300),  # λ = 0.9   irrelevant
}


@pytest.fixture
def synthetic():
    return exact_flow(BLOCKS, levels=8, metrics={n: {"eval_accuracy": 0.9 - 0.01 * n} for n in range(8)})


# --------------------------------------------------------------------------- eigenvalues and classes


def test_synthetic_eigenvalues_recovered(synthetic):
    table = synthetic.eigenvalues("block")
    assert isinstance(table, EigenvalueTable)
    expected = {"layer1.0": ("relevant", 1.2), "layer1.1": ("relevant", 1.05), "layer2.0": ("marginal", 1.0),
                "layer2.1": ("irrelevant", 0.95), "layer3.0": ("irrelevant", 0.9)}
    for name, (cls, lam) in expected.items():
        assert table.loc[name, "lambda"] == pytest.approx(lam, abs=1e-9)
        assert table.loc[name, "std"] == pytest.approx(0.0, abs=1e-9)
        assert table.loc[name, "class"] == cls
        assert table.loc[name, "n_pairs"] == 7
        assert bool(table.loc[name, "eigenfunction"])
        assert table.loc[name, "M_start"] == pytest.approx(BLOCKS[name][3] / K, abs=1e-12)
    # the remainder unit is not an eigenfunction: its ratio drifts
    assert table.loc["head", "std"] > 1e-4
    assert list(table.index) == [u.name for u in synthetic.units["block"]]
    text = table.to_markdown()
    for name in expected:
        assert name in text
    assert str(table) == text


def test_window_and_start(synthetic):
    t = synthetic.eigenvalues("block", window=3, start=2)
    assert t.levels == (2, 3, 4, 5)
    assert (t["n_pairs"] == 3).all()
    assert t.loc["layer1.0", "lambda"] == pytest.approx(1.2, abs=1e-9)
    with pytest.warns(UserWarning, match="only 5"):
        t = synthetic.eigenvalues("block", window=50, start=2)
    assert t.levels == tuple(range(2, 8))
    with pytest.raises(ValueError, match="start level"):
        synthetic.eigenvalues("block", start=42)
    with pytest.raises(ValueError, match="at least two levels"):
        synthetic.eigenvalues("block", start=7)


def test_population_vs_sample_std():
    # a unit whose ratios alternate: 2 pairs with ratios r1, r2 -> population std |r1 - r2| / 2
    tensors = {"a": 1000, "b": 1000}
    units = {"tensor": [Unit("a", "tensor", None, None, False, ("a",)), Unit("b", "tensor", None, None, False, ("b",))]}
    levels = [{"level": 0, "surviving": {"a": 500, "b": 500}},
              {"level": 1, "surviving": {"a": 600, "b": 400}},
              {"level": 2, "surviving": {"a": 600, "b": 600}}]
    flow = IMPFlow({"family": "x", "architecture": "toy"}, tensors, units, levels=levels)
    r = np.array([0.6 / 0.5, 0.5 / 0.6])
    pop = flow.eigenvalues("tensor")
    samp = flow.eigenvalues("tensor", ddof=1)
    assert pop.loc["a", "lambda"] == pytest.approx(r.mean())
    assert pop.loc["a", "std"] == pytest.approx(r.std(ddof=0))
    assert samp.loc["a", "std"] == pytest.approx(r.std(ddof=1))


def test_collapsed_unit_flagged_and_pairs_skipped():
    tensors = {"a": 100, "b": 100}
    units = {"tensor": [Unit("a", "tensor", None, None, False, ("a",)), Unit("b", "tensor", None, None, False, ("b",))]}
    surv = [(100, 100), (50, 90), (0, 80), (0, 70)]
    levels = [{"level": n, "surviving": {"a": a, "b": b}} for n, (a, b) in enumerate(surv)]
    flow = IMPFlow({"family": "x"}, tensors, units, levels=levels)
    t = flow.eigenvalues("tensor")
    assert bool(t.loc["a", "collapsed"]) and t.loc["a", "collapse_level"] == 2
    assert t.loc["a", "n_pairs"] == 2 and t.loc["a", "n_skipped"] == 1  # 0 -> 0 skipped, 1 -> 2 gives λ = 0
    assert not t.loc["b", "collapsed"] and t.loc["b", "n_skipped"] == 0
    assert "M reached 0 at level 2" in t.to_markdown()


TABLE2 = {  # Redman et al. 2022, Table 2 (ResNet-50, simCLR pre-training)
    "ImageNet": ([(1.15, 0.01), (1.09, 0.02), (1.02, 0.01), (0.95, 0.02)],
                 ["relevant", "relevant", "relevant", "irrelevant"]),
    "CIFAR-10": ([(1.11, 0.01), (1.06, 0.01), (1.01, 0.01), (0.98, 0.002)],
                 ["relevant", "relevant", "marginal", "irrelevant"]),
    "CIFAR-100": ([(1.08, 0.03), (1.04, 0.02), (1.00, 0.01), (0.99, 0.01)],
                  ["relevant", "relevant", "marginal", "marginal"]),
}
TABLE6 = [(0.99, 0.01), (1.00, 0.01), (1.00, 0.01), (1.00, 0.01), (1.01, 0.01), (1.01, 0.01), (1.01, 0.01),
          (1.00, 0.01), (1.00, 0.002), (1.00, 0.001), (1.00, 0.01), (1.00, 0.01)]


@pytest.mark.parametrize("task", list(TABLE2))
def test_classify_reproduces_table2(task):
    values, classes = TABLE2[task]
    assert [classify(lam, std) for lam, std in values] == classes


def test_classify_reproduces_table6_bert_all_marginal():
    assert {classify(lam, std) for lam, std in TABLE6} == {"marginal"}


def test_class_rule_is_configurable():
    assert classify(1.03, 0.02) == "relevant"
    assert classify(1.03, 0.02, rule=ClassRule(k=2.0)) == "marginal"
    assert classify(1.03, 0.02, rule=2.0) == "marginal"
    assert classify(1.03, 0.0, rule=ClassRule(min_std=0.05)) == "marginal"
    assert classify(1.03, 0.02, rule=lambda lam, std: "custom") == "custom"
    assert classify(1.01, 0.01, rule=ClassRule(tol=0.0)) == "relevant"  # float rounding without the tolerance
    assert classify(float("nan"), 0.1) == "undetermined"


def test_rule_passed_to_eigenvalues(synthetic):
    t = synthetic.eigenvalues("block", rule=ClassRule(min_std=0.07))
    assert t.loc["layer1.1", "class"] == "marginal"  # 1.05 within 0.07
    assert t.loc["layer1.0", "class"] == "relevant"


# --------------------------------------------------------------------------- M and the real model


def test_M_rows_sum_to_one(synthetic):
    for g in ("tensor", "block", "stage"):
        M = synthetic.M(g)
        np.testing.assert_allclose(M.sum(axis=1).to_numpy(), 1.0, atol=1e-12)
        assert list(M.columns) == [u.name for u in synthetic.units[g]]
    dens = synthetic.densities()
    np.testing.assert_allclose(dens.to_numpy(), 0.8 ** np.arange(8), rtol=1e-12)


@pytest.fixture(scope="module")
def resnet20():
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet20_cifar")
    prunable = prunable_parameters(model)
    params = dict(model.named_parameters())
    masks = [full_mask(model, prunable)]
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        weights = {n: params[n].detach() * (1 + torch.rand(params[n].shape, generator=gen)) for n in prunable}
        masks.append(next_mask(weights, masks[-1], 0.2))
    return model, prunable, masks


def test_from_model_counts_match_masks(resnet20):
    model, prunable, masks = resnet20
    flow = IMPFlow.from_model(model, prunable, schedule={"prune_fraction": 0.2})
    assert flow.model["family"] == "resnet" and flow.model["architecture"] == "resnet20_cifar"
    assert list(flow.tensors) == prunable
    for n, mask in enumerate(masks):
        flow.add_level(n, mask, {"eval_accuracy": 0.9})
    layout = family_of(model).layout(model)
    for g in ("tensor", "block", "stage"):
        units = layout.units(prunable, g)
        assert flow.units[g] == units
        counts, M = flow.surviving(g), flow.M(g)
        for n, mask in enumerate(masks):
            total = sum(int(m.sum()) for m in mask.values())
            for u in units:
                direct = sum(int(mask[p].sum()) for p in u.params)
                assert counts.at[n, u.name] == direct
                assert M.at[n, u.name] == pytest.approx(direct / total, rel=1e-12)
        np.testing.assert_allclose(M.sum(axis=1).to_numpy(), 1.0, atol=1e-12)
    np.testing.assert_allclose(flow.densities().to_numpy(), [0.8 ** n for n in range(len(masks))], atol=1e-5)
    # add_level replaces an existing record (resume)
    flow.add_level(2, masks[2], {"eval_accuracy": 0.5})
    assert flow.level_numbers == list(range(len(masks))) and flow.levels[2]["metrics"]["eval_accuracy"] == 0.5
    with pytest.raises(ValueError, match="missing tensors"):
        flow.add_level(9, {k: v for k, v in masks[3].items() if k != "fc.weight"})
    with pytest.raises(ValueError, match="boolean"):
        flow.add_level(9, {k: v.float() for k, v in masks[3].items()})


# --------------------------------------------------------------------------- persistence


def test_save_load_round_trip(tmp_path, synthetic):
    synthetic.set_metrics(3, {"eval_loss": np.float32(0.25), "note": "x", "diverged": float("nan")})
    assert synthetic.levels[3]["metrics"]["diverged"] is None  # non-finite values are stored as null
    path = synthetic.save(tmp_path)
    assert path == tmp_path / FLOW_FILE
    data = json.loads(path.read_text())
    assert data["schema_version"] == SCHEMA_VERSION
    loaded = IMPFlow.load(path)
    assert loaded == synthetic and loaded.to_dict() == synthetic.to_dict()
    assert IMPFlow.load(tmp_path) == synthetic
    assert IMPFlow.from_pretrained(str(path)) == synthetic
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write leaves no temp file
    other = exact_flow(BLOCKS, levels=7)
    assert other != synthetic
    with pytest.raises(ValueError, match="schema_version"):
        (tmp_path / "bad.json").write_text("{}")
        IMPFlow.load(tmp_path / "bad.json")


def _fabricate_run(tmp_path, resnet20, n_levels=4, with_flow_json=False):
    model, prunable, masks = resnet20
    run = tmp_path / "run"
    run.mkdir()
    arch = family_of(model).architecture(model)
    config = {"model": {"family": "resnet", **arch}, "prunable": prunable,
              "lottery": {"prune_fraction": 0.2, "schedule": "geometric", "pruning": "global", "rewind_steps": 0}}
    (run / "lottery_config.json").write_text(json.dumps(config))
    accs = [0.92, 0.918, 0.915, 0.91, 0.9, 0.88, 0.85]
    for n in range(n_levels):
        d = run / f"level_{n:02d}"
        d.mkdir()
        save_mask(masks[n], d / "mask.safetensors")
        metrics = {"eval_accuracy": accs[n], "eval_loss": 0.3 + 0.01 * n}
        if n % 2:  # the trainer's level record, metrics nested
            metrics = {"level": n, "density": 0.8 ** n, "metrics": metrics, "mask_digest": "abc"}
        (d / "metrics.json").write_text(json.dumps(metrics))
    return run, config


def test_from_run_dir_rebuilds_from_layout(tmp_path, resnet20):
    model, prunable, masks = resnet20
    run, config = _fabricate_run(tmp_path, resnet20)
    flow = IMPFlow.from_run_dir(run)
    ref = IMPFlow.from_model(model, prunable, model_info=config["model"], schedule=config["lottery"])
    for n, m in enumerate(masks[:4]):
        ref.add_level(n, m, {"eval_accuracy": [0.92, 0.918, 0.915, 0.91][n], "eval_loss": 0.3 + 0.01 * n})
    assert flow == ref
    assert flow.schedule["prune_fraction"] == 0.2
    assert IMPFlow.from_pretrained(run) == ref
    # flow.json wins, and levels on disk that it lacks are added
    partial = IMPFlow.from_dict(ref.to_dict())
    partial.levels = partial.levels[:2]
    partial.save(run)
    assert IMPFlow.from_run_dir(run) == ref
    with pytest.raises(FileNotFoundError):
        IMPFlow.from_run_dir(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="lottery_config.json"):
        IMPFlow.from_run_dir(empty)


def test_tables(tmp_path, synthetic):
    df = synthetic.to_dataframe()
    n_units = sum(len(u) for u in synthetic.units.values())
    assert len(df) == n_units * 8
    for col in ("unit", "kind", "stage", "level", "density", "surviving", "total", "M", "eval_accuracy"):
        assert col in df.columns
    block = df[df.granularity == "block"]
    np.testing.assert_allclose(block.groupby("level")["M"].sum().to_numpy(), 1.0, atol=1e-12)
    ds = synthetic.to_dataset()
    assert ds.num_rows == len(df) and "M" in ds.column_names
    import pandas as pd

    synthetic.save_table(tmp_path / "flow.csv")
    synthetic.save_table(tmp_path / "flow.parquet")
    assert len(pd.read_csv(tmp_path / "flow.csv")) == len(df)
    assert len(pd.read_parquet(tmp_path / "flow.parquet")) == len(df)
    with pytest.raises(ValueError, match="csv or .parquet"):
        synthetic.save_table(tmp_path / "flow.xlsx")


# --------------------------------------------------------------------------- comparison


def test_compare_identical_flows_agree(synthetic):
    cmp = synthetic.compare(exact_flow(BLOCKS, levels=8))
    assert isinstance(cmp, FlowComparison) and cmp.mode == "unit"
    assert cmp.summary["agreement"] == 1.0 and cmp.agree
    assert cmp.summary["distance"] == 0.0
    assert cmp.table["agree"].all()
    assert "predicted to transfer" in cmp.verdict
    text = str(cmp)
    assert "layer1.0" in text and "Verdict" in text


def test_compare_swapped_classes_disagree(synthetic):
    swapped = dict(BLOCKS)
    swapped["layer1.0"] = (1, 0, 18, 10)  # relevant -> irrelevant
    swapped["layer2.1"] = (2, 1, 22, 40)  # irrelevant -> relevant
    cmp = synthetic.compare(exact_flow(swapped, levels=8))
    assert cmp.mode == "unit"
    assert not cmp.table.loc["layer1.0", "agree"] and not cmp.table.loc["layer2.1", "agree"]
    assert cmp.table.loc["layer2.0", "agree"]
    assert cmp.summary["agreement"] < 1.0
    assert cmp.summary["distance"] > 1e3  # exact eigenfunctions: std ~ 0, any difference is far
    assert "not predicted to transfer" in cmp.verdict


def test_compare_noisy_pooled_distance():
    # two flows from the same real masks are identical; a perturbed copy gives a finite distance
    a = exact_flow(BLOCKS, levels=8)
    b = IMPFlow.from_dict(a.to_dict())
    for r in b.levels[1:]:
        r["surviving"]["layer1.0.weight"] = int(r["surviving"]["layer1.0.weight"] * 0.999)
    b = IMPFlow.from_dict(b.to_dict())
    cmp = a.compare(b)
    assert math.isfinite(cmp.summary["distance"]) and cmp.summary["distance"] > 0


def test_compare_resnet20_vs_resnet32_like_by_stage():
    r20 = resnet_like(3, {1: [20, 22, 22], 2: [20, 20, 21], 3: [20, 19, 19]})
    r32_same = resnet_like(5, {1: [20, 22, 22, 20, 20], 2: [20, 20, 21, 20, 20], 3: [20, 19, 19, 20, 20]})
    r32_same_classes = resnet_like(5, {1: [20, 22, 22, 22, 22], 2: [20, 20, 21, 21, 21], 3: [20, 19, 19, 19, 19]})
    r20_other = resnet_like(3, {1: [18, 21, 23], 2: [20, 20, 22], 3: [20, 18, 18]})

    cmp = r20.compare(r32_same)
    assert cmp.mode == "stage"
    t = cmp.table
    assert list(t.index) == [1, 2, 3]
    # entry blocks (index 0) excluded: ResNet-20-like has 2 blocks per stage, ResNet-32-like 4
    assert t.loc[1, "blocks_a"] == 2 and t.loc[1, "blocks_b"] == 4
    assert t.loc[1, "relevant_a"] == 2 and t.loc[1, "relevant_b"] == 2 and t.loc[1, "marginal_b"] == 2
    assert not t.loc[1, "same_classes"]
    assert "transfer poorly" in cmp.verdict

    cmp2 = r20.compare(r32_same_classes)  # same classes per stage, in different numbers
    assert cmp2.summary["same_classes"] and not cmp2.summary["same_counts"]
    assert "different numbers" in cmp2.verdict

    # same names -> unit mode by default; forcing by='stage' compares counts
    assert r20.compare(r20_other).mode == "unit"
    forced = r20.compare(r20_other, by="stage")
    assert forced.mode == "stage" and forced.summary["same_counts"]
    assert "predicted to transfer" in forced.verdict
    with_entry = r20.compare(r32_same, exclude_entry=False)
    assert with_entry.table.loc[1, "blocks_a"] == 3
    assert "stage" in str(cmp)


def test_compare_refuses_other_family(synthetic):
    other = exact_flow({"l.0": (1, 0, 20, 10)}, family="bert", architecture="BertForMaskedLM")
    with pytest.raises(ValueError, match="family|families"):
        synthetic.compare(other)


# --------------------------------------------------------------------------- plots and CLI


def _is_png(path) -> bool:
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path, synthetic):
    from lottery_rg.flow import plots as flow_plots
    from lottery_rg.flow.scaling import fit_critical_exponent, points_from_flows

    other = exact_flow({**BLOCKS, "layer1.1": (1, 1, 22, 10)}, levels=8,
                       metrics={n: {"eval_accuracy": 0.91 - 0.012 * n} for n in range(8)})
    paths = [
        flow_plots.plot_flow_projection(synthetic, "layer1.0", "layer3.0", "block", tmp_path / "proj.png"),
        flow_plots.plot_flow_projection([synthetic, other], "layer1.0", "layer3.0", "block", tmp_path / "proj2.png",
                                        labels=["task A", "task B"]),
        flow_plots.plot_eigenvalues(synthetic, tmp_path / "eig.png"),
        flow_plots.plot_eigenvalues(synthetic.eigenvalues("stage"), tmp_path / "eig_stage.png"),
        flow_plots.plot_M_vs_level(synthetic, "tensor", tmp_path / "M.png"),
    ]
    d, e = points_from_flows([synthetic, other])
    fit = fit_critical_exponent(d, e)
    paths.append(flow_plots.plot_error_vs_density([synthetic, other], fit, tmp_path / "err.png"))
    paths.append(flow_plots.plot_error_vs_density((d, e), None, tmp_path / "err_points.png"))
    for p in paths:
        assert _is_png(p), p
    with pytest.raises(ValueError, match="no block unit"):
        flow_plots.plot_flow_projection(synthetic, "nope", "layer3.0", "block", tmp_path / "x.png")


def test_flow_plot_labels_are_plain_text(synthetic):
    """Log axes are labelled 0.1, 0.01 (not mathtext, whose parser was most of the summary's drawing time)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from lottery_rg.flow import plots as flow_plots

    for fig in (flow_plots.plot_M_vs_level(synthetic, "block"), flow_plots.plot_eigenvalues(synthetic)):
        FigureCanvasAgg(fig).draw()
        ax = fig.axes[0]
        texts = [t.get_text() for t in ax.get_yticklabels() + ax.get_xticklabels()] + [ax.get_ylabel()]
        assert texts and not any("$" in t for t in texts), texts
    ax = flow_plots.plot_M_vs_level(synthetic, "block").axes[0]
    FigureCanvasAgg(ax.figure).draw()
    assert ax.get_yscale() == "log"
    labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert labels and all(float(t) > 0 for t in labels), labels  # plain numbers
    assert all(float(t.get_text().replace("−", "-")).is_integer() for t in ax.get_xticklabels() if t.get_text())


def test_cli_on_fabricated_run(tmp_path, resnet20, capsys):
    run, _ = _fabricate_run(tmp_path, resnet20, n_levels=6)
    other_dir = tmp_path / "other"
    IMPFlow.from_run_dir(run).save(other_dir)
    out_dir = tmp_path / "plots"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([str(run), "--granularity", "block", "--window", "3", "--fit", "--plots", str(out_dir),
                   "--compare", str(other_dir / FLOW_FILE), "--x", "layer1.1", "--y", "layer3.1",
                   "--table", str(tmp_path / "t.csv")])
    text = capsys.readouterr().out
    assert rc == 0
    for name in ("stem", "layer1.0", "layer2.1", "layer3.2", "head", "λ", "Verdict", "γ"):
        assert name in text
    pngs = sorted(p.name for p in out_dir.glob("*.png"))
    assert pngs == ["M_vs_level_block.png", "eigenvalues_block.png", "error_vs_density.png",
                    "flow_projection_block.png", "gamma_profile.png", "lambda_vs_level_block.png"]
    assert all(_is_png(out_dir / p) for p in pngs)
    assert (tmp_path / "t.csv").is_file()


def test_cli_fit_failure_is_reported(tmp_path, resnet20, capsys):
    run, _ = _fabricate_run(tmp_path, resnet20, n_levels=3)
    rc = main([str(run), "--fit", "--granularity", "stage"])
    captured = capsys.readouterr()
    assert rc == 1 and "layer1" in captured.out and "4 free parameters" in captured.err


def test_from_pretrained_missing_local_path(tmp_path):
    with pytest.raises(FileNotFoundError):
        IMPFlow.from_pretrained(str(tmp_path / "missing" / "flow.json"))


def test_cli_missing_run_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope" / "run")]) == 2
    assert "no flow at" in capsys.readouterr().err


def test_untrained_control_prunes_the_rewind_weights_with_the_same_schedule(tmp_path):
    from safetensors.torch import load_file
    from utils import make_trainer

    from lottery_rg.pruning.masks import next_mask

    make_trainer(tmp_path, {"levels": 2}).run_imp()
    control = IMPFlow.untrained_control(tmp_path)
    trained = IMPFlow.from_run_dir(tmp_path)
    assert control.level_numbers == trained.level_numbers and control.units == trained.units
    rewind = load_file(tmp_path / "rewind.safetensors")
    mask = {n: torch.ones_like(rewind[n], dtype=torch.bool) for n in trained.tensors}
    for level in control.level_numbers:
        assert control.levels[level]["surviving"] == {n: int(m.sum()) for n, m in mask.items()}
        mask = next_mask({n: rewind[n] for n in mask}, mask, 0.2)
    assert control.densities().tolist() == pytest.approx(trained.densities().tolist(), abs=1e-5)
    from lottery_rg.cli import flow_main as main
    assert main([str(tmp_path), "--control"]) == 0
