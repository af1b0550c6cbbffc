"""From command-line dataclasses to everything a ``LotteryTrainer`` needs, per task.

``examples/run_imp.py`` and ``examples/run_elastic.py`` share this, so the image and
masked-LM paths differ only here: which model, which data, which collator and metrics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable

from torch import nn

from .arguments import DataArguments, ModelArguments

__all__ = ["TaskSetup", "prepare_task", "prepare_image_task", "prepare_data_for_model", "load_image_splits"]

logger = logging.getLogger(__name__)


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

    def trainer_kwargs(self) -> dict:
        return {k: getattr(self, k) for k in ("model", "train_dataset", "eval_dataset", "data_collator",
                                              "compute_metrics", "preprocess_logits_for_metrics",
                                              "processing_class")}


def prepare_task(model_args: ModelArguments, data_args: DataArguments, seed: int = 42) -> TaskSetup:
    """Load model and data for ``model_args.task`` (inferred from the model when not given)."""
    from .modeling import detect_task

    task = model_args.task or detect_task(model_args.model_name_or_path, model_args.revision)
    if task == "image-classification":
        return prepare_image_task(model_args, data_args, seed)
    from .mlm import prepare_mlm_task

    return prepare_mlm_task(model_args, data_args, seed)


def _truncate(dsd, data_args: DataArguments):
    if data_args.max_train_samples:
        dsd["train"] = dsd["train"].select(range(min(data_args.max_train_samples, len(dsd["train"]))))
    if data_args.max_eval_samples:
        dsd["test"] = dsd["test"].select(range(min(data_args.max_eval_samples, len(dsd["test"]))))
    return dsd


def load_image_splits(data_args: DataArguments):
    """Train/test image splits for ``data_args``; the split depends on ``split_seed`` only, never on ``--seed``."""
    from .image_data import load_image_datasets

    return load_image_datasets(data_args.dataset_name, data_args.dataset_config_name,
                               image_column=data_args.image_column, label_column=data_args.label_column,
                               test_fraction=data_args.test_fraction, seed=data_args.split_seed,
                               image_size=data_args.image_size or 32)


def prepare_data_for_model(model: nn.Module, data_args: DataArguments, dsd=None):
    """Train and test splits of an image data set, transformed to the input ``model`` expects."""
    from timm.data import resolve_data_config

    from .image_data import ImageTransform

    data_cfg = resolve_data_config({}, model=model)
    size = data_args.image_size or int(data_cfg["input_size"][-1])
    dsd = _truncate(load_image_splits(data_args) if dsd is None else dsd, data_args)
    mean, std = data_cfg["mean"], data_cfg["std"]
    train = dsd["train"].with_transform(ImageTransform(size, mean, std, train=True, augment=data_args.augment))
    test = dsd["test"].with_transform(ImageTransform(size, mean, std))
    return train, test, size


def prepare_image_task(model_args: ModelArguments, data_args: DataArguments, seed: int = 42) -> TaskSetup:
    from transformers import set_seed

    from .image_data import accuracy_metrics
    from .modeling import load_model

    dsd = load_image_splits(data_args)
    labels = dsd["train"].features["label"].names
    set_seed(seed)  # the initial weights θ_0 depend only on the seed
    model = load_model(model_args.model_name_or_path, num_labels=len(labels), pretrained=model_args.pretrained,
                       revision=model_args.revision)
    train, test, size = prepare_data_for_model(model, data_args, dsd)
    info = {"dataset": data_args.dataset_name or "sklearn-digits (embedded)", "image_size": size,
            "num_labels": len(labels), "labels": labels, "model_name_or_path": model_args.model_name_or_path}
    return TaskSetup("image-classification", model, train, test, compute_metrics=accuracy_metrics, info=info)
