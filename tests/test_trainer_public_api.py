"""LotteryTrainer reads no private attribute of transformers' Trainer: what it needs comes through public hooks
(TrainerCallback, TrainerState, training_step, compute_loss, log, the constructor's arguments), so it works across
the transformers range setup.cfg claims (the floor environment runs this suite at 5.17)."""

from __future__ import annotations

import inspect
import re

import transformers.trainer
from utils import ROOT


def _private_names_of_the_trainer() -> set[str]:
    names = {n for n in dir(transformers.Trainer) if n.startswith("_") and not n.startswith("__")}
    names |= set(re.findall(r"self\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=", inspect.getsource(transformers.trainer)))
    return names


def test_no_private_trainer_attribute_is_read_or_overridden():
    private = _private_names_of_the_trainer()
    assert {"_save_checkpoint", "_prepare_inputs", "_remove_unused_columns", "_signature_columns",
            "_tr_loss"} <= private  # the check sees the Trainer's internals
    used = {}
    for path in sorted((ROOT / "lottery_rg").rglob("*.py")):
        text = path.read_text()
        for name in set(re.findall(r"(?:self|trainer)\.(_[A-Za-z]\w*)", text)) | \
                set(re.findall(r"^\s+def (_[A-Za-z]\w*)\(self", text, re.M)):
            if name in private and not name.startswith("__"):
                used.setdefault(name, []).append(str(path.relative_to(ROOT)))
    assert not used, f"Trainer internals used: {used}"
