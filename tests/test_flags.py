"""Every ``TrainingArguments`` flag, for a LotteryTrainer: used, refused while parsing, or listed as free (with a
reason). And the flags that Trainer would do through a transformers model work for timm models too."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import TrainingArguments
from utils import make_trainer, training_args

import lottery_rg
from lottery_rg.errors import UsageError
from lottery_rg.training.flags import (
    FREE_REASONS,
    HONOURED_BY_TRAINING_ARGUMENTS,
    REFUSED_EXAMPLES,
    check_training_arguments,
)

FIELDS = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]

# the code that reads TrainingArguments while a LotteryTrainer trains: transformers' Trainer (its modules and the
# integrations it calls) and lottery_rg itself; TrainingArguments' own __post_init__ is not counted as a use
_PACKAGE = Path(transformers.__file__).parent
_READERS = "\n".join(p.read_text(encoding="utf-8") for p in [
    *_PACKAGE.glob("trainer*.py"), *(_PACKAGE / "integrations").glob("*.py"),
    *Path(lottery_rg.__file__).parent.rglob("*.py")])

# values TrainingArguments needs alongside a refused example to be built at all
_COMPANIONS = {"load_best_model_at_end": dict(eval_strategy="epoch", save_strategy="epoch")}


def test_every_field_is_used_refused_or_free():
    unaccounted = []
    for name in FIELDS:
        if name in FREE_REASONS or name in HONOURED_BY_TRAINING_ARGUMENTS or name in REFUSED_EXAMPLES:
            continue
        if not re.search(rf"args\.{name}\b", _READERS):
            unaccounted.append(name)
    assert not unaccounted, f"TrainingArguments fields neither read by Trainer/lottery_rg, refused, nor free: " \
                            f"{unaccounted}"


def test_every_listed_field_exists_and_has_a_one_line_reason():
    for table in (FREE_REASONS, HONOURED_BY_TRAINING_ARGUMENTS):
        for name, reason in table.items():
            assert name in FIELDS, f"{name} is not a TrainingArguments field (renamed in this transformers?)"
            assert reason.strip() and "\n" not in reason
    assert set(REFUSED_EXAMPLES) <= set(FIELDS)


@pytest.mark.parametrize("name", sorted(REFUSED_EXAMPLES))
def test_each_refused_field_is_refused_naming_the_flag(tmp_path, name):
    value, library = REFUSED_EXAMPLES[name]
    args = training_args(tmp_path, **{name: value, **_COMPANIONS.get(name, {})})
    with pytest.raises(UsageError) as e:
        check_training_arguments(args, library)
    assert f"--{name}" in str(e.value) and "\n" not in str(e.value)
    check_training_arguments(training_args(tmp_path), library)  # the defaults pass


def test_label_smoothing_works_for_a_timm_model(tmp_path):
    trainer = make_trainer(tmp_path / "run", label_smoothing_factor=0.1)
    model = trainer.model.eval()
    batch = {"pixel_values": torch.randn(8, 3, 16, 16), "labels": torch.arange(8) % 10}
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch)
        logits = model(batch["pixel_values"])
    assert loss.item() == pytest.approx(F.cross_entropy(logits, batch["labels"], label_smoothing=0.1).item())
    assert loss.item() != pytest.approx(F.cross_entropy(logits, batch["labels"]).item())
    config = trainer.run_config(trainer.training_steps())
    assert config["settings"]["training"]["label_smoothing_factor"] == 0.1  # recorded as given


@pytest.mark.parametrize("model", ["resnet14_cifar", "vgg11_cifar"])
def test_gradient_checkpointing_works_for_a_timm_model(tmp_path, model):
    """timm's set_grad_checkpointing: every checkpointed layer runs twice per step (forward, then again in the
    backward pass), and the gradients are those of ordinary training."""
    def run(**kw):
        torch.manual_seed(0)
        trainer = make_trainer(tmp_path / str(len(kw)), model=model, **kw)
        net = trainer.model.train()
        conv = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][1]
        calls = []
        handle = conv.register_forward_hook(lambda *a: calls.append(1))
        batch = {"pixel_values": torch.randn(4, 3, 16, 16), "labels": torch.arange(4)}
        trainer.compute_loss(net, batch).backward()
        handle.remove()
        return len(calls), [p.grad.clone() for p in net.parameters() if p.grad is not None]

    plain_calls, plain = run()
    ckpt_calls, ckpt = run(gradient_checkpointing=True)
    assert (plain_calls, ckpt_calls) == (1, 2)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, ckpt))
