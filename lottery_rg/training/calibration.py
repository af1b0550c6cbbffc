"""Training batches for recomputing BatchNorm statistics: a fixed order, the same on every process.

The Trainer's own training loader shards the data over the processes and shuffles it with the run's seed; the
batches that recalibrate BatchNorm at a point of a linear path must be the same everywhere and at every point. So
they come from a plain ``DataLoader`` over the training set with the Trainer's data collator, after the columns
the model cannot take are dropped (as ``TrainingArguments.remove_unused_columns`` asks the Trainer to do).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import torch

__all__ = ["calibration_batches", "model_input_columns"]


def model_input_columns(model, label_names=()) -> list[str]:
    """The data-set columns ``model`` can be given: its ``forward`` arguments and the label columns."""
    forward = getattr(model, "forward", model)
    names = list(inspect.signature(forward).parameters)
    return names + [c for c in ("label", "label_ids", *label_names) if c not in names]


def calibration_batches(dataset, collator, batch_size: int, n: int, *, device, model=None, label_names=(),
                        remove_unused_columns: bool = True) -> Iterator[dict]:
    """``n`` batches of ``dataset`` in a seeded random order (seed 0), collated and moved to ``device``."""
    import datasets
    from accelerate.utils import send_to_device
    from torch.utils.data import DataLoader, RandomSampler

    if remove_unused_columns and model is not None and isinstance(dataset, datasets.Dataset):
        keep = set(model_input_columns(model, label_names))
        unused = [c for c in dataset.column_names if c not in keep]
        if unused and len(unused) < len(dataset.column_names):
            dataset = dataset.remove_columns(unused)
    sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=collator)
    for i, batch in enumerate(loader):
        if i >= n:
            break
        yield send_to_device(batch, device)
