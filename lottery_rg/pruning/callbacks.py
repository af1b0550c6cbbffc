"""Keeping pruned weights at zero while training: in a ``Trainer`` or in a plain PyTorch loop."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.hooks import RemovableHandle
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .masks import Mask, MaskEnforcer

__all__ = ["MaskCallback", "keep_masked"]


class MaskCallback(TrainerCallback):
    """Keeps pruned weights exactly zero in any ``Trainer``.

    Re-applies the mask after every optimizer step (and once when training starts), so
    momentum, weight decay, Adam moments, gradient accumulation and mixed precision
    cannot revive a pruned weight. Usable on its own: ``Trainer(..., callbacks=[MaskCallback(model, mask)])``.
    """

    def __init__(self, model: torch.nn.Module | None = None, mask: Mask | None = None):
        self.enforcer = MaskEnforcer(model, mask) if mask is not None else None

    def set_mask(self, model: torch.nn.Module, mask: Mask) -> None:
        self.enforcer = MaskEnforcer(model, mask)

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        if self.enforcer is not None:
            self.enforcer.apply()

    def on_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                          **kwargs: Any) -> None:
        if self.enforcer is not None:
            self.enforcer.apply()


def keep_masked(optimizer: torch.optim.Optimizer, model: torch.nn.Module, mask: Mask) -> RemovableHandle:
    """Zero ``model``'s pruned weights now and after every ``optimizer.step()`` of a hand-written loop.

    Uses ``Optimizer.register_step_post_hook``; returns its handle (``handle.remove()`` stops it).
    """
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply()
    return optimizer.register_step_post_hook(lambda opt, args, kwargs: enforcer.apply())
