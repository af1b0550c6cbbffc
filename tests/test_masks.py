import math

import pytest
import torch
from utils import reference_global_prune

from lottery_rg.pruning.masks import (
    MaskEnforcer,
    load_mask,
    magnitude_prune,
    mask_density,
    next_mask,
    removal_counts,
    save_mask,
    surviving,
)


def random_weights(seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"a": torch.randn(64, 32, generator=g), "b": torch.randn(17, generator=g) * 0.1,
            "c": torch.randn(8, 4, 3, 3, generator=g) * 3}


def ones(w):
    return {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}


def test_global_pruning_matches_sorting_reference_over_levels():
    w, m = random_weights(), None
    m = ones(w)
    for level in range(6):
        alive = sum(surviving(m).values())
        new = next_mask(w, m, 0.2)
        ref = reference_global_prune(w, m, 0.2)
        assert all(torch.equal(new[n], ref[n]) for n in w), f"level {level}"
        assert sum(surviving(new).values()) == alive - math.ceil(0.2 * alive)
        assert not any((new[n] & ~m[n]).any() for n in w), "a pruned weight came back"
        m = new


def test_exact_count_is_not_fooled_by_float_rounding():
    # 0.2 * 100 is 20.000000000000004 in floating point: exactly 20 must be removed
    w = {"a": torch.arange(1, 101, dtype=torch.float32)}
    new = next_mask(w, ones(w), 0.2)
    assert int(new["a"].sum()) == 80
    assert not new["a"][:20].any() and new["a"][20:].all()


def test_ties_are_broken_deterministically_in_tensor_then_index_order():
    w = {"x": torch.ones(6), "y": torch.ones(6)}
    new = next_mask(w, ones(w), 0.25)  # remove 3 of 12 equal weights
    assert new["x"].tolist() == [False, False, False, True, True, True]
    assert new["y"].all()


def test_layerwise_prunes_the_fraction_in_every_tensor():
    w = random_weights(1)
    m = ones(w)
    new = next_mask(w, m, 0.2, scope="layerwise")
    for n in w:
        k = math.ceil(0.2 * w[n].numel())
        assert int(new[n].sum()) == w[n].numel() - k
        kept = w[n].abs()[new[n]]
        dropped = w[n].abs()[~new[n]]
        assert dropped.max() <= kept.min()


def test_linear_schedule_removes_a_fraction_of_the_original_weights():
    w = random_weights(2)
    m = ones(w)
    total = sum(t.numel() for t in w.values())
    for level in range(1, 4):
        m = next_mask(w, m, 0.1, schedule="linear")
        assert sum(surviving(m).values()) == total - level * math.ceil(0.1 * total)


def test_global_threshold_is_shared_across_tensors():
    w = random_weights(3)
    new = next_mask(w, ones(w), 0.5)
    kept = torch.cat([w[n].abs()[new[n]] for n in w])
    dropped = torch.cat([w[n].abs()[~new[n]] for n in w])
    assert dropped.max() <= kept.min()
    # small-magnitude tensor b loses proportionally more than large-magnitude c
    assert mask_density({"b": new["b"]}) < mask_density({"c": new["c"]})


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1, 1.5])
def test_impossible_fractions_are_refused(fraction):
    w = random_weights()
    with pytest.raises(ValueError, match="fraction"):
        removal_counts(ones(w), fraction)


def test_cannot_remove_every_weight():
    w = {"a": torch.randn(10)}
    with pytest.raises(ValueError, match="at least one must survive"):
        magnitude_prune(w, ones(w), 10)


def test_shape_mismatch_is_refused():
    with pytest.raises(ValueError, match="shape"):
        magnitude_prune({"a": torch.randn(4, 4)}, {"a": torch.ones(16, dtype=torch.bool)}, 2)


def test_save_load_round_trip_and_clear_errors(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    mask = {"0.weight": torch.rand(3, 4) > 0.5, "1.weight": torch.rand(2, 3) > 0.5}
    path = tmp_path / "mask.safetensors"
    save_mask(mask, path)
    back = load_mask(path, model)
    assert all(torch.equal(back[n], mask[n]) and back[n].dtype == torch.bool for n in mask)

    from safetensors.torch import save_file
    save_file({"0.weight": torch.ones(3, 4)}, tmp_path / "float.safetensors")
    with pytest.raises(ValueError, match="torch.bool"):
        load_mask(tmp_path / "float.safetensors", model)
    save_file({"0.weight": torch.ones(4, 4, dtype=torch.bool)}, tmp_path / "shape.safetensors")
    with pytest.raises(ValueError, match="does not fit"):
        load_mask(tmp_path / "shape.safetensors", model)
    save_file({"2.weight": torch.ones(2, dtype=torch.bool)}, tmp_path / "name.safetensors")
    with pytest.raises(ValueError, match="no parameter"):
        load_mask(tmp_path / "name.safetensors", model)
    (tmp_path / "corrupt.safetensors").write_bytes(path.read_bytes()[:40])
    with pytest.raises(ValueError, match="corrupt.safetensors"):
        load_mask(tmp_path / "corrupt.safetensors", model)


def test_enforcer_zeroes_exactly_the_pruned_weights():
    model = torch.nn.Linear(8, 8)
    mask = {"weight": torch.rand(8, 8) > 0.3}
    before = model.weight.detach().clone()
    MaskEnforcer(model, mask).apply()
    assert torch.equal(model.weight[~mask["weight"]], torch.zeros(int((~mask["weight"]).sum())))
    assert torch.equal(model.weight[mask["weight"]], before[mask["weight"]])


def test_nan_weights_are_refused():
    w = {"a": torch.randn(10)}
    w["a"][3] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        next_mask(w, ones(w), 0.2)


def test_other_dtypes_and_negative_weights_prune_by_magnitude():
    w = {"a": torch.tensor([-5.0, 0.1, -0.2, 3.0], dtype=torch.bfloat16), "b": torch.tensor([-0.05, 4.0]).double()}
    new = next_mask(w, ones(w), 0.5)
    assert new["a"].tolist() == [True, False, False, True] and new["b"].tolist() == [False, True]
