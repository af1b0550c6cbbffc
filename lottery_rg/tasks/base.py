"""What every task hands to ``LotteryTrainer``: a model and the ``Trainer`` keyword arguments that go with it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["TaskSetup", "truncate_splits"]


@dataclass
class TaskSetup:
    """A model and the keyword arguments of ``Trainer`` that go with it."""

    task: str
    model: nn.Module
    train_dataset: Any
    eval_dataset: Any
    data_collator: Callable | None = None
    compute_metrics: Callable | None = None
    preprocess_logits_for_metrics: Callable | None = None
    processing_class: Any = None
    info: dict = field(default_factory=dict)  # data set name, image size, … (for model cards)
    fast: str = "off"  # --fast and --channels_last, for LotteryTrainer (which decides precision and layout)
    channels_last: bool = False

    def trainer_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "train_dataset", "eval_dataset", "data_collator",
                                              "compute_metrics", "preprocess_logits_for_metrics",
                                              "processing_class", "fast", "channels_last")}


def truncate_splits(dsd, max_train_samples: int | None, max_eval_samples: int | None):
    """Keep the first ``max_*_samples`` examples of the train and test splits (None: all)."""
    if max_train_samples:
        dsd["train"] = dsd["train"].select(range(min(max_train_samples, len(dsd["train"]))))
    if max_eval_samples:
        dsd["test"] = dsd["test"].select(range(min(max_eval_samples, len(dsd["test"]))))
    return dsd
