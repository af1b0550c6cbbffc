"""LotteryTrainer on real (tiny) runs: masks stay zero, rewinds are exact, levels land on disk."""

import gc
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback
from utils import make_trainer, reference_global_prune

from lottery_rg import LotteryArguments
from lottery_rg.pruning.masks import load_mask, surviving
from lottery_rg.run import RunDir


class ZeroCheck(TrainerCallback):
    """After every optimizer step, every pruned weight of the real model must be exactly 0."""

    def __init__(self):
        self.trainer, self.checked = None, 0

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        params = dict(t.model.named_parameters())
        pruned = {n: ~m for n, m in t.mask.items() if not m.all()}
        for n, dead in pruned.items():
            values = params[n].detach()[dead]
            assert torch.count_nonzero(values) == 0, f"pruned weights of {n} revived at step {state.global_step}"
        self.checked += bool(pruned)


@pytest.mark.parametrize("optim_kw", [
    dict(optim="sgd", optim_args="momentum=0.9", weight_decay=5e-3),
    dict(optim="adamw_torch", optim_args=None, learning_rate=1e-2, weight_decay=0.1),
    dict(optim="sgd", optim_args="momentum=0.9", gradient_accumulation_steps=2),
    dict(optim="adamw_torch", optim_args=None, learning_rate=1e-2, bf16=True),
], ids=["sgd-momentum-wd", "adamw", "grad-accumulation", "bf16-autocast"])
def test_pruned_weights_stay_exactly_zero(tmp_path, optim_kw):
    check = ZeroCheck()
    trainer = make_trainer(tmp_path, {"levels": 2, "prune_fraction": 0.5}, callbacks=[check], **optim_kw)
    check.trainer = trainer
    trainer.run_imp()
    assert check.checked >= 4, "levels 1 and 2 were not checked after real steps"
    final = dict(trainer.model.named_parameters())
    for n, m in trainer.mask.items():
        assert torch.count_nonzero(final[n].detach()[~m]) == 0


class RewindCheck(TrainerCallback):
    """At the start of every rewound level, record the model, optimizer and lr state."""

    def __init__(self):
        self.trainer, self.starts, self.first_lrs = None, {}, {}

    def on_train_begin(self, args, state, control, optimizer=None, lr_scheduler=None, **kwargs):
        t = self.trainer
        self.starts[t.current_level] = {
            "state": {k: v.detach().clone() for k, v in t.model.state_dict().items()},
            "optimizer_state": len(optimizer.state), "step": state.global_step,
            "lr": lr_scheduler.get_last_lr()[0], "mask": {n: m.clone() for n, m in t.mask.items()},
        }


@pytest.mark.parametrize("k", [0, 3])
def test_rewind_restores_theta_k_exactly(tmp_path, k):
    check = RewindCheck()
    trainer = make_trainer(tmp_path, {"levels": 2, "rewind_steps": k}, callbacks=[check],
                           lr_scheduler_type="linear")
    check.trainer = trainer
    trainer.run_imp()
    theta_k = load_file(tmp_path / "rewind.safetensors")
    assert any("running_mean" in n for n in theta_k), "BatchNorm statistics must be part of the rewind point"
    assert any("running_mean" in n and not torch.equal(v, torch.zeros_like(v)) for n, v in theta_k.items()) == (k > 0)
    lr0 = check.starts[0]["lr"]
    for level in (1, 2):
        start = check.starts[level]
        mask = start["mask"]
        for name, value in theta_k.items():
            expected = value * mask[name] if name in mask else value
            assert torch.equal(start["state"][name], expected), f"level {level}: {name} is not θ_k (⊙ m)"
        assert start["optimizer_state"] == 0, "the optimizer must start fresh"
        assert start["step"] == k, "training must restart at the rewind step"
    # the learning-rate schedule resumes at step k: same lr as level 0 had after k steps
    total = trainer.training_steps()
    assert check.starts[1]["lr"] == pytest.approx(lr0 * (total - k) / total, rel=1e-6)
    assert check.starts[2]["lr"] == pytest.approx(check.starts[1]["lr"], rel=1e-12)


def test_levels_on_disk_densities_and_masks(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 3})
    before = gc.get_freeze_count()  # 0, unless something earlier in this process froze the heap
    result = trainer.run_imp()
    # the run neither freezes the heap nor unfreezes it (a library may free a few frozen objects on its own)
    assert 0.99 * before <= gc.get_freeze_count() <= before
    assert (tmp_path / "rewind.safetensors").is_file()
    densities = []
    for level in range(4):
        d = RunDir(tmp_path).level(level)
        assert {p.name for p in d.iterdir()} >= {"mask.safetensors", "model.safetensors", "metrics.json"}
        metrics = json.loads((d / "metrics.json").read_text())
        mask = load_mask(d / "mask.safetensors", trainer.model)
        assert metrics["surviving"] == surviving(mask)
        assert "eval_accuracy" in metrics["metrics"] and "eval_loss" in metrics["metrics"]
        densities.append(metrics["density"])
        if level:
            prev = RunDir(tmp_path).level(level - 1)
            weights = load_file(prev / "model.safetensors")
            expected = reference_global_prune(weights, load_mask(prev / "mask.safetensors"), 0.2)
            assert all(torch.equal(mask[n], expected[n]) for n in mask), f"level {level} mask is not IMP's"
            trained = load_file(d / "model.safetensors")
            assert all(torch.count_nonzero(trained[n][~mask[n]]) == 0 for n in mask)
    assert densities == pytest.approx([1.0, 0.8, 0.64, 0.512], abs=2e-5)
    assert [r["level"] for r in result.rows()] == [0, 1, 2, 3]
    assert (tmp_path / "summary.csv").read_text().count("\n") == 5
    assert (tmp_path / "accuracy_vs_density.png").stat().st_size > 1000
    assert not (tmp_path / "checkpoints").exists() or not any((tmp_path / "checkpoints").iterdir())


def test_non_prunable_tensors_are_never_masked(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 1, "prune_fraction": 0.5})
    trainer.run_imp()
    mask = load_mask(RunDir(tmp_path).level(1) / "mask.safetensors")
    assert all(n.endswith("weight") and ("conv" in n or "fc" in n or "downsample.0" in n) for n in mask)
    trained = load_file(RunDir(tmp_path).level(1) / "model.safetensors")
    assert all(torch.count_nonzero(trained[n]) == trained[n].numel() for n in trained if "bn" in n and "weight" in n)


def test_completed_run_is_skipped_and_different_settings_refused(tmp_path):
    make_trainer(tmp_path, {"levels": 1}).run_imp()
    before = (RunDir(tmp_path).level(1) / "mask.safetensors").read_bytes()
    again = make_trainer(tmp_path, {"levels": 1})
    again.run_imp()  # nothing to do: both levels are complete
    assert (RunDir(tmp_path).level(1) / "mask.safetensors").read_bytes() == before
    with pytest.raises(ValueError, match="different lottery settings.*prune_fraction"):
        make_trainer(tmp_path, {"levels": 1, "prune_fraction": 0.3}).run_imp()
    with pytest.raises(ValueError, match="different model settings"):
        make_trainer(tmp_path, {"levels": 1}, model="resnet20_cifar").run_imp()
    other_data = make_trainer(tmp_path, {"levels": 1})
    other_data.run_info = {"dataset": "sklearn-digits (embedded)", "image_size": 24}
    with pytest.raises(ValueError, match="other data.*image_size: 16 on disk vs 24 now"):
        other_data.run_imp()


@pytest.mark.parametrize("kwargs, message", [
    (dict(prune_fraction=0.0), "prune_fraction"),
    (dict(prune_fraction=1.0), "prune_fraction"),
    (dict(levels=0), "levels"),
    (dict(rewind_steps=-1), "rewind_steps"),
    (dict(pruning="random"), "pruning"),
    (dict(schedule="linear", prune_fraction=0.2, levels=5), "linear schedule"),
])
def test_bad_lottery_arguments_fail_at_parse_time(kwargs, message):
    with pytest.raises(ValueError, match=message):
        LotteryArguments(**kwargs)


def test_bad_input_fails_before_any_training(tmp_path):
    with pytest.raises(ValueError, match="rewind_steps 100 is not before the end of training"):
        make_trainer(tmp_path / "a", {"levels": 1, "rewind_steps": 100}).run_imp()
    assert not (tmp_path / "a" / "level_00").exists()
    with pytest.raises(ValueError, match="leave no parameter"):
        make_trainer(tmp_path / "b", {"prune_include": [r"\.bias$"], "prune_exclude": ["."]})
    with pytest.raises(ValueError, match="unknown model"):
        make_trainer(tmp_path / "c", model="resnet21_cifar")


def test_include_exclude_patterns_choose_the_prunable_set(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 1, "prune_exclude": [r"^fc\.", r"^conv1\."]})
    assert "fc.weight" not in trainer.prunable and "conv1.weight" not in trainer.prunable
    assert all("conv" in n or "downsample" in n for n in trainer.prunable)
    only = make_trainer(tmp_path / "x", {"prune_include": [r"^layer3\..*conv\d\.weight$"]})
    assert only.prunable and all(n.startswith("layer3.") for n in only.prunable)


def test_resume_skips_checkpoints_a_kill_left_half_written(tmp_path):
    from lottery_rg.run import last_complete_checkpoint

    assert last_complete_checkpoint(tmp_path / "missing") is None
    for step, files in [(2, {"model.safetensors": b"w", "trainer_state.json": b"{}"}),
                        (3, {"model.safetensors": b"w"}),  # killed before the state was written
                        (4, {"model.safetensors": b"w", "trainer_state.json": b'{"global_st'}),  # mid-write
                        (5, {})]:
        d = tmp_path / f"checkpoint-{step}"
        d.mkdir()
        for name, data in files.items():
            (d / name).write_bytes(data)
    (tmp_path / "checkpoint-9.partial").mkdir()
    assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-2"
    (tmp_path / "checkpoint-2" / "trainer_state.json").unlink()
    assert last_complete_checkpoint(tmp_path) is None


def test_the_trainer_leaves_the_garbage_collector_alone(tmp_path):
    """gc.freeze() is the program's choice (examples/run_imp.py makes it); a run neither freezes nor unfreezes."""
    trainer = make_trainer(tmp_path / "a", {"levels": 1})
    gc.unfreeze()
    gc.collect()  # Python 3.12's full collection puts a few hundred interpreter objects back in the frozen generation
    base = gc.get_freeze_count()  # 0 on Python 3.11
    trainer.run_imp()
    assert gc.get_freeze_count() == base and gc.isenabled()  # nothing frozen by the run
    trainer = make_trainer(tmp_path / "b", {"levels": 1})
    gc.freeze()
    try:
        frozen = gc.get_freeze_count()
        trainer.run_imp()
        # gc.unfreeze() would empty the permanent generation; a frozen object a library frees while the run goes
        # on (a cache it clears: transformers 5.17 frees ~100) only leaves it
        assert gc.get_freeze_count() >= 0.99 * frozen
    finally:
        gc.unfreeze()
