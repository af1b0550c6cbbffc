"""Small builders shared by the tests: tiny real runs on the embedded digits."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import torch
from transformers import TrainingArguments

from lottery_rg import LotteryArguments, LotteryTrainer
from lottery_rg.training.arguments import DataArguments, ModelArguments

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable


@functools.cache
def digits(image_size: int = 16):
    from lottery_rg.tasks.image import embedded_digits

    return embedded_digits(image_size=image_size)


def training_args(output_dir, **kw) -> TrainingArguments:
    base = dict(
        output_dir=str(output_dir), num_train_epochs=1, per_device_train_batch_size=32, per_device_eval_batch_size=128,
        learning_rate=0.05, optim="sgd", optim_args="momentum=0.9", weight_decay=5e-4, report_to="none",
        save_strategy="no", logging_steps=1, disable_tqdm=True, dataloader_pin_memory=False, seed=0,
        use_cpu=True,
    )
    base.update(kw)
    return TrainingArguments(**base)


def image_setup(model="resnet14_cifar", train_samples=128, eval_samples=64, image_size=16, seed=0):
    from lottery_rg.tasks import prepare_image_task

    return prepare_image_task(
        ModelArguments(model_name_or_path=model),
        DataArguments(max_train_samples=train_samples, max_eval_samples=eval_samples, image_size=image_size),
        seed=seed,
    )


def make_trainer(output_dir, lottery: dict | None = None, model="resnet14_cifar", callbacks=None,
                 train_samples=128, **train_kw) -> LotteryTrainer:
    setup = image_setup(model=model, train_samples=train_samples)
    return LotteryTrainer(args=training_args(output_dir, **train_kw), lottery_args=LotteryArguments(**(lottery or {})),
                          callbacks=callbacks, run_info=setup.info, **setup.trainer_kwargs())


def subprocess_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def reference_global_prune(weights: dict, mask: dict, fraction: float) -> dict:
    """Independent reference: sort all surviving |w| (stable, tensor then flat order) and drop the smallest."""
    import math
    from fractions import Fraction

    names = list(mask)
    scores, owners = [], []
    for i, n in enumerate(names):
        m = mask[n].flatten()
        idx = m.nonzero().flatten()
        scores.append(weights[n].flatten().float().abs()[idx])
        owners.append(torch.stack([torch.full_like(idx, i), idx], 1))
    scores, owners = torch.cat(scores), torch.cat(owners)
    k = math.ceil(Fraction(repr(fraction)) * len(scores))
    order = torch.sort(scores, stable=True).indices[:k]
    out = {n: mask[n].clone().flatten() for n in names}
    for i, j in owners[order].tolist():
        out[names[i]][j] = False
    return {n: out[n].view_as(mask[n]) for n in names}
