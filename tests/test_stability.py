"""Linear mode connectivity: the path between two copies, its end points, and the second copy's training."""

import json

import pytest
import torch
from torch import nn
from utils import make_trainer

from lottery_rg.io import state_from_file
from lottery_rg.run import RunDir
from lottery_rg.stability import (
    InstabilityResult,
    interpolate_state,
    load_results,
    recalibrate_batchnorm,
    stability_table,
)


def test_interpolation_is_exact_at_the_ends_and_linear_between():
    g = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(7)}
    b = {"w": torch.randn(5, 3, generator=g), "n": torch.tensor(9)}
    assert torch.equal(interpolate_state(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state(a, b, 1.0)["w"], b["w"])
    mid = interpolate_state(a, b, 0.25)
    assert torch.allclose(mid["w"], 0.75 * a["w"] + 0.25 * b["w"], atol=1e-7)
    assert int(mid["n"]) == 7 and int(interpolate_state(a, b, 0.75)["n"]) == 9  # integers: nearer end point
    with pytest.raises(ValueError, match="different tensors"):
        interpolate_state(a, {"w": b["w"]}, 0.5)
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state(a, b, 1.5)


def test_batchnorm_recalibration_gives_the_exact_mean_and_variance():
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(4, momentum=0.1)
    model = nn.Sequential(bn).eval()
    batches = [torch.randn(16, 4) * 3 + 2 for _ in range(5)]
    assert recalibrate_batchnorm(model, batches, lambda m, x: m(x)) == 1
    data = torch.cat(batches)
    assert torch.allclose(bn.running_mean, data.mean(0), atol=1e-5)
    # the running variance averages the unbiased per-batch variances
    expected_var = torch.stack([x.var(0, unbiased=True) for x in batches]).mean(0)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-4)
    assert bn.momentum == 0.1 and not model.training
    assert recalibrate_batchnorm(nn.Sequential(nn.LayerNorm(4)), batches, lambda m, x: m(x)) == 0


def test_instability_is_the_error_rise_above_the_mean_of_the_ends(tmp_path):
    r = InstabilityResult(level=3, density=0.512, rewind_steps=0, seeds=(0, 1), alphas=[0, 0.5, 1],
                          accuracy=[0.98, 0.90, 0.96], loss=[0.1, 0.5, 0.2])
    assert r.error == pytest.approx([2.0, 10.0, 4.0])
    assert r.instability == pytest.approx(10.0 - 3.0)
    assert r.loss_barrier == pytest.approx(0.5 - 0.15)
    assert not r.stable() and r.stable(threshold=8)
    assert InstabilityResult.load(r.save(tmp_path / "x")) == r
    assert "instability 7.00 points (unstable" in r.to_markdown()
    with pytest.raises(ValueError, match="alpha = 0"):
        InstabilityResult(level=0, density=1, rewind_steps=0, seeds=(0, 1), alphas=[0.1, 1], accuracy=[1, 1],
                          loss=[0, 0])


@pytest.mark.parametrize("k", [0, 2])
def test_second_copy_with_the_same_noise_reproduces_the_level_bit_for_bit(tmp_path, k):
    """The copy starts where the level started (θ_k ⊙ m at step k, fresh optimizer, schedule at k):
    trained with the level's own seed it must land on the level's weights exactly."""
    trainer = make_trainer(tmp_path, {"levels": 1, "rewind_steps": k, "prune_fraction": 0.5})
    trainer.run_imp()
    level = state_from_file(RunDir(tmp_path).level(1) / "model.safetensors")
    trainer.retrain_level(1, seed=trainer.args.seed)
    again = trainer.model.state_dict()
    assert all(torch.equal(again[n], v) for n, v in level.items())
    trainer.retrain_level(1, seed=trainer.args.seed + 1)
    other = trainer.model.state_dict()
    assert not all(torch.equal(other[n], v) for n, v in level.items()), "another seed must give other SGD noise"


def test_linear_mode_connectivity_on_a_real_run(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 1, "rewind_steps": 2, "prune_fraction": 0.5,
                                      "stability_levels": [1], "stability_points": 5})
    result = trainer.run_imp()
    [r] = result.stability
    assert r.level == 1 and r.seeds == (0, 1) and r.alphas == [0, 0.25, 0.5, 0.75, 1]
    out = tmp_path / "stability" / "level_01"
    # α = 0 is the level's own network: the same accuracy and loss as recorded for the level
    recorded = json.loads((RunDir(tmp_path).level(1) / "metrics.json").read_text())["metrics"]
    assert r.accuracy[0] == recorded["eval_accuracy"] and r.loss[0] == pytest.approx(recorded["eval_loss"], abs=1e-6)
    # copy b: other SGD noise, same mask, pruned weights exactly zero
    from lottery_rg.pruning.masks import load_mask

    mask = load_mask(RunDir(tmp_path).level(1) / "mask.safetensors")
    a = state_from_file(RunDir(tmp_path).level(1) / "model.safetensors")
    b = state_from_file(out / "copy_b.safetensors")
    assert all(torch.count_nonzero(b[n][~m]) == 0 for n, m in mask.items())
    assert not all(torch.equal(a[n], b[n]) for n in mask), "copy b must see other SGD noise"
    assert r.instability >= 0 and (out / "stability.png").stat().st_size > 1000
    assert "Linear mode connectivity" in (tmp_path / "summary.md").read_text()
    assert load_results(tmp_path) == [r]
    # the level's ticket carries the result into its model card
    from lottery_rg import LotteryTicket

    ticket = LotteryTicket.from_run(tmp_path, level=1)
    assert ticket.info["stability"]["instability"] == pytest.approx(r.instability)
    assert "linear mode connectivity" in str(ticket.model_card())
    # the model is left at copy a
    assert all(torch.equal(trainer.model.state_dict()[n], v) for n, v in a.items())
    # asking again reads the record back without training
    stamp = (out / "copy_b.safetensors").stat().st_mtime_ns
    assert trainer.linear_mode_connectivity(1, num_points=5) == r
    assert (out / "copy_b.safetensors").stat().st_mtime_ns == stamp
    # more points re-evaluate the path but reuse copy b
    r9 = trainer.linear_mode_connectivity(1, num_points=9)
    assert len(r9.alphas) == 9 and r9.accuracy[0] == r.accuracy[0] and r9.accuracy[-1] == r.accuracy[-1]
    assert (out / "copy_b.safetensors").stat().st_mtime_ns == stamp
    # the dense level 0 trained through step k = 2 with its optimizer state: it gets a rewound copy a of its own
    r0 = trainer.linear_mode_connectivity(0, num_points=3)
    a0 = state_from_file(tmp_path / "stability" / "level_00" / "copy_a.safetensors")
    level0 = state_from_file(RunDir(tmp_path).level(0) / "model.safetensors")
    assert r0.seeds == (0, 1) and not all(torch.equal(a0[n], level0[n]) for n in mask)
    # recalibrated BatchNorm statistics: a record of its own next to the plain one, same copy b
    rb = trainer.linear_mode_connectivity(1, num_points=3, recalibrate_bn=2)
    assert rb.bn_batches == 2 and (out / "stability_bn.json").is_file() and (out / "stability.json").is_file()
    assert (out / "copy_b.safetensors").stat().st_mtime_ns == stamp
    assert sorted((x.level, x.bn_batches) for x in load_results(tmp_path)) == [(0, 0), (1, 0), (1, 2)]
    assert "recalibrated (2 batches)" in stability_table(load_results(tmp_path))
    # a damaged copy is trained again, not read: the same seed gives the same copy bit for bit
    b = {n: v.clone() for n, v in b.items()}  # safetensors maps the file: copy before overwriting it in place
    (out / "copy_b.safetensors").write_bytes(b"not a safetensors file")
    trainer.linear_mode_connectivity(1, num_points=4)
    again = state_from_file(out / "copy_b.safetensors")
    assert all(torch.equal(again[n], v) for n, v in b.items())


def test_stability_bad_input_fails_before_training(tmp_path):
    from lottery_rg import LotteryArguments

    with pytest.raises(ValueError, match="stability_levels"):
        LotteryArguments(levels=2, stability_levels=[3])
    with pytest.raises(ValueError, match="stability_points"):
        LotteryArguments(stability_points=2)
    with pytest.raises(ValueError, match="SGD noise of its own"):
        make_trainer(tmp_path, {"levels": 1, "stability_levels": [0], "stability_seed": 0}).run_imp()
    assert not (tmp_path / "level_00").exists()
    with pytest.raises(ValueError, match="not complete"):
        make_trainer(tmp_path / "b", {"levels": 1}).linear_mode_connectivity(1)


def test_command_line_table_and_plot(tmp_path, capsys):
    from lottery_rg.cli import stability_main as main

    assert main([str(tmp_path)]) == 2 and "holds no stability analysis" in capsys.readouterr().err
    for level, k, bn in ((0, 0, 0), (0, 20, 0), (0, 20, 8), (10, 20, 0)):
        InstabilityResult(level=level, density=0.8 ** level, rewind_steps=k, seeds=(0, 1), alphas=[0, 0.5, 1],
                          accuracy=[0.99, 0.5 if k == 0 else 0.97, 0.99], loss=[0.1, 1.0, 0.1],
                          bn_batches=bn).save(tmp_path / f"run{k}" / "stability" / f"level_{level:02d}")
    argv = [str(tmp_path / "run0"), str(tmp_path / "run20"), "--levels", "0", "--plot", str(tmp_path / "s.png")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("\n| 0 |") == 3 and "| 10 |" not in out and "recalibrated (8 batches)" in out
    assert "| 49.00 |" in out  # k = 0: 50 % error in the middle, 1 % at the ends
    assert (tmp_path / "s.png").stat().st_size > 1000
