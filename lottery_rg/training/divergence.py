"""Stop a level the moment its training loss stops being a number.

A loss of NaN or infinity means the weights are (or are about to be) NaN: every later step, the level's record,
its pruning and every level after it would be built on nothing. :class:`DivergenceGuard` stops the level at the
first such loss, naming the step and the settings to look at; :class:`~lottery_rg.LotteryTrainer` also refuses
to write a level whose weights are not finite at the end of its training, whatever the loss said (one pass over
the weights per level).

The check stays off the hot path. ``LotteryTrainer.training_step`` hands every micro-batch loss to
:meth:`DivergenceGuard.add`:

* on the CPU, and whenever the Trainer's ``logging_nan_inf_filter`` is on (the default), the Trainer itself reads
  the loss on the host right after ``training_step`` (to filter it): the guard reads it at that same point, when
  the device has already finished the step, so it adds no synchronisation of its own;
* otherwise the first bad step is kept in a device tensor (no host sync), read where the Trainer synchronises
  anyway: at logging steps, before a checkpoint is saved or an evaluation runs, and when training ends.
"""

from __future__ import annotations

import torch
from transformers import TrainerCallback

__all__ = ["DivergenceGuard", "NonFiniteLossError"]


class NonFiniteLossError(ValueError):
    """The training loss became NaN or infinite: the settings (most often the learning rate) made training diverge."""


class DivergenceGuard(TrainerCallback):
    """Raises :class:`NonFiniteLossError` at the first non-finite training loss of a ``train()`` call.

    Args:
        trainer: the ``Trainer`` it watches (its arguments name the settings in the message).
    """

    def __init__(self, trainer):
        self.trainer = trainer
        self.what = "training"
        self._first_bad = None  # device tensor: first optimizer step with a non-finite loss, or -1

    def begin(self, what: str) -> None:
        """A new ``train()`` call for ``what`` ("level 3", "retraining level 2"…) starts."""
        self.what = what
        self._first_bad = None

    def add(self, loss: torch.Tensor) -> None:
        """One micro-batch loss, as ``training_step`` returns it."""
        step = self.trainer.state.global_step + 1  # the optimizer step this micro-batch belongs to
        loss = loss.detach()
        if self.reads_on_host(loss):
            if not bool(torch.isfinite(loss).all()):
                raise NonFiniteLossError(self.message(step, float(loss.float().mean())))
            return
        bad = ~torch.isfinite(loss).all()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.int64, device=loss.device)
        self._first_bad.copy_(torch.where(bad & (self._first_bad < 0), step, self._first_bad))

    def reads_on_host(self, loss: torch.Tensor) -> bool:
        """Whether the step's loss is read on the host anyway (on the CPU, or for the Trainer's
        ``logging_nan_inf_filter``): then the guard checks it at once, else it defers to :meth:`check`."""
        return loss.device.type == "cpu" or bool(self.trainer.args.logging_nan_inf_filter)

    def check(self) -> None:
        """Read the device-side record (one host sync) and raise if a loss was not finite."""
        if self._first_bad is not None:
            step = int(self._first_bad)
            if step >= 0:
                raise NonFiniteLossError(self.message(step, None))

    def message(self, step: int, value: float | None) -> str:
        args = self.trainer.args
        total = self.trainer.state.max_steps
        loss = f"is {value}" if value is not None else "is not finite"
        look = [f"--learning_rate (now {args.learning_rate:g})"]
        if args.max_grad_norm is None or args.max_grad_norm <= 0:
            look.append("--max_grad_norm (now off: no gradient clipping)")
        if getattr(args, "fp16", False) or getattr(args, "bf16", False):
            look.append("--fp16/--bf16 (mixed precision)")
        if not (args.warmup_steps or getattr(args, "warmup_ratio", 0)):
            look.append("--warmup_steps")
        return (f"{self.what}: the training loss {loss} at optimizer step {step}"
                + (f" of {total}" if total else "") + f": training diverged. Look at {', '.join(look)}; a smaller "
                "learning rate usually fixes it")

    def nonfinite_weights_message(self, names: list[str]) -> str:
        """The message for a ``train()`` call that ended with NaN/inf in the tensors ``names``."""
        return (f"{self.what}: training ended with NaN or infinite values in {len(names)} tensors "
                f"({', '.join(names[:5])}{' …' if len(names) > 5 else ''}) though the loss stayed finite: it is not "
                f"used. Look at --learning_rate (now {self.trainer.args.learning_rate:g}) and the data")

    # ------------------------------------------------------------------ where the Trainer synchronises anyway
    def on_step_end(self, args, state, control, **kwargs):
        if control.should_log or control.should_save or control.should_evaluate or control.should_training_stop:
            self.check()

    def on_train_end(self, args, state, control, **kwargs):
        self.check()
