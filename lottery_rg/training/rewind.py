"""The rewind point θ_k of a lottery run (Frankle et al. 2020): captured once, restored at every later level.

θ_k is the whole ``state_dict`` (BatchNorm statistics included) at optimizer step k of level 0, saved with
the ``TrainerState`` of that step. A rewound level starts from a Trainer checkpoint holding θ_k ⊙ m and the
step-k state but no optimizer state, so the Trainer resumes at step k (same data position, learning-rate
schedule from k) with a fresh optimizer. With k = 0 the rewind point is θ_0 itself.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from ..io import atomic_dir, atomic_path, load_state, save_state
from ..pruning.masks import Mask, MaskEnforcer

__all__ = ["RewindPoint"]


class RewindPoint(TrainerCallback):
    """Saves θ_k at step k of level 0 (a ``TrainerCallback``); puts the model at θ_0 or θ_k ⊙ m for a level."""

    def __init__(self, trainer: Any):
        self.trainer = trainer  # the LotteryTrainer: its settings, run directory, model and current level

    @property
    def steps(self) -> int:
        return self.trainer.settings.rewind_steps

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        if t.current_level == 0 and self.steps > 0 and state.global_step == self.steps:
            if t.is_world_process_zero():
                save_state(t.model, t.run.rewind, metadata={"step": state.global_step})
                with atomic_path(t.run.rewind_state) as tmp:
                    state.save_to_json(tmp)

    def start_dense(self) -> None:
        """Level 0 starts from the model as given (θ_0); with k = 0 that is also the rewind point.

        With k > 0, θ_0 is kept too (``init.safetensors``): the untrained control of the flow can start there.
        """
        t = self.trainer
        start = t.run.rewind if self.steps == 0 else t.run.init
        if start.is_file():
            load_state(t.model, start)
        elif t.is_world_process_zero():
            save_state(t.model, start, metadata={"step": 0})
        t.accelerator.wait_for_everyone()

    def rewind(self, mask: Mask, work: Path) -> str | None:
        """Put the model at θ_k ⊙ m; returns the step-k checkpoint to resume from (None for k = 0)."""
        t, k, rewind = self.trainer, self.steps, self.trainer.run.rewind
        if not rewind.is_file():
            raise FileNotFoundError(f"{rewind} is missing: the rewind point of level 0 was not saved")
        load_state(t.model, rewind)  # θ_k: parameters and buffers
        MaskEnforcer(t.model, mask).apply()
        if k == 0:
            return None
        # a checkpoint at step k without optimizer state: the Trainer resumes at k with a fresh optimizer
        ckpt = work / f"checkpoint-{k}"
        if t.is_world_process_zero():
            with atomic_dir(ckpt) as tmp:
                save_state(t.model, tmp / "model.safetensors")
                shutil.copyfile(t.run.rewind_state, tmp / "trainer_state.json")
        t.accelerator.wait_for_everyone()
        return str(ckpt)
