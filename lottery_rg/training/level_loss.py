"""The training loss of a whole IMP level, across interruptions, kept through public ``Trainer`` hooks.

``Trainer.train()`` reports the loss of the steps that one call ran, and what it means after a resume changed
within the supported range (transformers 5.17-5.18 divide the loss since the checkpoint by *all* steps, 5.19 on by
the steps since the checkpoint). A level's record needs the mean over every optimizer step of the level, however
often it was interrupted, at every transformers version. So LotteryTrainer keeps its own account:

* ``LotteryTrainer.training_step`` hands each micro-batch loss to :meth:`LevelLoss.add` (summed on the device:
  no host sync in the training step);
* every Trainer checkpoint gets ``lottery_rg_loss.json`` (the sum and the number of steps since the level
  began), written in ``on_step_end`` / ``on_epoch_end`` when the Trainer is about to save, i.e. before the
  Trainer's own files: a checkpoint that is complete (``trainer_state.json`` written last) has it too;
* a resumed level starts from that file, and :meth:`LevelLoss.mean` is the loss of the whole level.

With several processes the sums are averaged over the processes (``Accelerator.reduce``), like the logged loss.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..io import read_json, write_json

__all__ = ["LevelLoss", "LOSS_FILE"]

logger = logging.getLogger(__name__)

LOSS_FILE = "lottery_rg_loss.json"  # in a Trainer checkpoint: the training loss summed since the level began


class LevelLoss(TrainerCallback):
    """Sum of the training loss since a level began, carried through the level's checkpoints.

    Args:
        trainer: the ``Trainer`` it accounts for (its ``accelerator`` averages over processes; only the main
            process writes files).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.active = False
        self._carry_sum, self._carry_steps = 0.0, 0
        self._start_step = 0
        self._sum = self._finite = None  # device tensors: loss summed over finite micro-batches, and their count
        self._micro = 0  # micro-batches seen since this train() call began
        self._written_step = None  # the step whose checkpoint got the file (the same on every process)

    # ------------------------------------------------------------------ a level
    def begin(self, checkpoint: str | Path | None, level_start: int = 0) -> None:
        """Start accounting for a ``train()`` call resuming from ``checkpoint`` (None: the level starts now).

        ``level_start`` is the step the level itself starts at (the rewind step k for a rewound level): a
        checkpoint there carries nothing.
        """
        self._carry_sum, self._carry_steps = 0.0, 0
        if checkpoint is not None:
            path = Path(checkpoint) / LOSS_FILE
            if path.is_file():
                data = read_json(path)
                self._carry_sum, self._carry_steps = float(data["loss_sum"]), int(data["steps"])
            elif _step_of(checkpoint) not in (None, level_start):
                logger.warning("%s has no %s: the level's train_loss covers the steps after step %s only",
                               checkpoint, LOSS_FILE, _step_of(checkpoint))
        self.active = True

    def stop(self) -> None:
        self.active = False
        self._sum = self._finite = None

    def add(self, loss: torch.Tensor) -> None:
        """One micro-batch's loss, as ``training_step`` returns it (summed per optimizer step by the Trainer)."""
        if not self.active:
            return
        loss = loss.detach()
        if self._sum is None:
            # float64 where the device has it (MPS has not): a level's sum stays exact to ~1e-12
            dtype = torch.float32 if loss.device.type == "mps" else torch.float64
            self._sum = torch.zeros((), dtype=dtype, device=loss.device)
            self._finite = torch.zeros((), dtype=torch.int64, device=loss.device)
        if self.trainer.args.logging_nan_inf_filter:  # as the Trainer's own loss: non-finite losses are left out
            finite = torch.isfinite(loss)
            self._sum.add_(torch.where(finite, loss, torch.zeros_like(loss)).sum())
            self._finite.add_(finite.sum())
        else:
            self._sum.add_(loss.sum())
            self._finite.add_(loss.numel())
        self._micro += 1

    def totals(self, state) -> tuple[float, int]:
        """(loss summed over the level's optimizer steps so far, number of those steps), averaged over processes.

        A collective call with several processes: every process must make it.
        """
        steps = state.global_step - self._start_step
        local = 0.0
        if self._sum is not None and self._micro:
            finite = max(1, int(self._finite.item()))
            local = float(self._sum.item()) * self._micro / finite  # non-finite micro-batches: their mean instead
        accelerator = self.trainer.accelerator
        if accelerator.num_processes > 1:
            local = float(accelerator.reduce(torch.tensor(local, device=accelerator.device), reduction="mean"))
        return self._carry_sum + local, self._carry_steps + steps

    def mean(self, state) -> float:
        """The mean training loss per optimizer step over the whole level so far."""
        total, steps = self.totals(state)
        return total / steps if steps > 0 else float("nan")

    # ------------------------------------------------------------------ Trainer callbacks
    def on_train_begin(self, args, state, control, **kwargs):
        # the checkpoint (if any) is loaded by now: global_step is where this call starts
        self._start_step = state.global_step
        self._sum = self._finite = None
        self._micro = 0

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save:  # the Trainer saves right after the step's callbacks: write before its files
            self._write(args, state)

    def on_epoch_end(self, args, state, control, **kwargs):
        if control.should_save:
            self._write(args, state)

    def on_save(self, args, state, control, **kwargs):
        # a save decided after on_step_end (save_strategy="best") gets the file after the Trainer's own
        if self._written_step != state.global_step:
            self._write(args, state)

    def _folder(self, args, state) -> Path:
        return Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"

    def _write(self, args, state) -> None:
        if not self.active:
            return
        total, steps = self.totals(state)  # collective: on every process
        self._written_step = state.global_step
        if self.trainer.is_world_process_zero():
            folder = self._folder(args, state)
            folder.mkdir(parents=True, exist_ok=True)
            write_json(folder / LOSS_FILE, {"step": state.global_step, "loss_sum": total, "steps": steps})


def _step_of(checkpoint) -> int | None:
    tail = Path(checkpoint).name[len(PREFIX_CHECKPOINT_DIR) + 1:]
    return int(tail) if tail.isdigit() else None
