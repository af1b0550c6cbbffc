"""A level's train_loss is the mean loss of every optimizer step of the level, kept through public Trainer hooks.

Run by the floor environment as well: transformers 5.17 and the newest release report ``training_loss`` after a
resume differently; the level's record must not."""

from __future__ import annotations

import json

import pytest
from transformers import TrainerCallback
from utils import make_trainer

from lottery_rg import RunDir
from lottery_rg.training.level_loss import LOSS_FILE


def test_a_levels_train_loss_is_the_mean_of_its_logged_step_losses(tmp_path):
    k = 2
    trainer = make_trainer(tmp_path / "run", {"levels": 1, "rewind_steps": k}, logging_steps=1)
    trainer.run_imp()
    run = RunDir(tmp_path / "run")
    for level, first in ((0, 0), (1, k)):  # a rewound level trains from step k on
        steps = [h for h in trainer.level_log_history[level] if "loss" in h and h["step"] > first]
        record = run.record(level)["metrics"]
        assert len(steps) == record["train_steps"] - first > 0
        assert record["train_loss"] == pytest.approx(sum(h["loss"] for h in steps) / len(steps), rel=1e-6)
    # a level that starts at step 0 and is not resumed: the Trainer's own figure is the same at every version
    reported = [h["train_loss"] for h in trainer.level_log_history[0] if "train_loss" in h]
    assert run.record(0)["metrics"]["train_loss"] == pytest.approx(reported[-1], rel=1e-6)


def test_every_checkpoint_carries_the_loss_since_the_level_began(tmp_path):
    """The file is written before the Trainer's own files, and holds the sum over the level's steps so far."""
    trainer = make_trainer(tmp_path / "run", {"levels": 1}, logging_steps=1, save_strategy="steps", save_steps=2,
                           save_total_limit=None, train_samples=192)
    seen = {}

    class Keep(TrainerCallback):  # reads each checkpoint's file while the level runs (its folder goes at the end)
        def on_save(self, args, state, control, **kwargs):
            folder = tmp_path / "run" / "checkpoints" / f"level_{trainer.current_level:02d}" / \
                f"checkpoint-{state.global_step}"
            seen[(trainer.current_level, state.global_step)] = json.loads((folder / LOSS_FILE).read_text())

    trainer.add_callback(Keep())
    trainer.run_imp()
    assert sorted(seen) == [(0, 2), (0, 4), (0, 6), (1, 2), (1, 4), (1, 6)]
    for level in (0, 1):
        losses = [h["loss"] for h in trainer.level_log_history[level] if "loss" in h]
        for step in (2, 4, 6):
            data = seen[(level, step)]
            assert data["steps"] == step and data["loss_sum"] == pytest.approx(sum(losses[:step]), rel=1e-6)
