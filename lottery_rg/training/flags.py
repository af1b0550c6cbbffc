"""Every ``TrainingArguments`` flag, for a ``LotteryTrainer``: honoured, refused with the reason, or free.

* **honoured** — everything not listed below: ``Trainer`` reads it (``tests/test_flags.py`` finds each such field
  read in transformers' Trainer code) and ``LotteryTrainer`` keeps that code path; for timm models, label smoothing
  and activation checkpointing are done here instead of through a transformers model's ``config`` and
  ``activation_checkpointing_enable`` (:func:`timm_arguments`). These flags are *locked*: a run records them and a
  re-run must give the same values.
* **refused** — :func:`check_training_arguments` refuses, while parsing (and again when a ``LotteryTrainer`` is
  built), every value a LotteryTrainer would otherwise ignore or cannot honour, naming the flag and the reason.
* **free** — :data:`FREE_TRAINING_ARGUMENTS`: flags that cannot change what a level computes (logging, saving,
  evaluation schedule, the Hub, the launcher's own), each with the reason; they may differ between invocations.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import ArgumentParser, UsageError, one_line
from .precision import check_training_precision

__all__ = ["FREE_TRAINING_ARGUMENTS", "FREE_REASONS", "HONOURED_BY_TRAINING_ARGUMENTS", "check_training_arguments",
           "precision_refusal", "timm_arguments", "flag_parser", "REFUSED_EXAMPLES"]

# TrainingArguments that cannot change what a level computes: they may differ between the invocations of one run.
FREE_REASONS: dict[str, str] = {
    "output_dir": "the run directory itself (a different one is a different run)",
    "logging_steps": "how often the Trainer logs",
    "logging_strategy": "whether and when the Trainer logs",
    "logging_first_step": "whether the first step is logged",
    "logging_nan_inf_filter": "how logged losses are filtered (the training itself is unchanged)",
    "log_level": "the verbosity of transformers' logger on the main process",
    "log_level_replica": "the verbosity of transformers' logger on the other processes",
    "log_on_each_node": "which processes log",
    "disable_tqdm": "progress bars",
    "report_to": "which trackers receive the logs",
    "run_name": "the trackers' name of the run",
    "project": "the trackers' project",
    "trackio_space_id": "where trackio shows the logs",
    "trackio_bucket_id": "where trackio keeps the logs",
    "trackio_static_space_id": "where trackio shows the logs",
    "push_to_hub": "lottery_rg pushes the run's ticket (not Trainer checkpoints) when set",
    "hub_model_id": "the Hub repository the ticket goes to",
    "hub_strategy": "lottery_rg pushes tickets at the end (and every level with --push_levels); 'checkpoint' and "
                    "'all_checkpoints' are refused",
    "hub_token": "a secret, never recorded",
    "hub_private_repo": "the visibility of the Hub repository",
    "hub_always_push": "lottery_rg's pushes are blocking: none is ever skipped",
    "save_steps": "how often unfinished levels are checkpointed (a resumed level is bit-identical)",
    "save_strategy": "whether unfinished levels are checkpointed",
    "save_total_limit": "how many checkpoints of an unfinished level are kept",
    "save_on_each_node": "which processes write checkpoints",
    "enable_jit_checkpoint": "a checkpoint written when the job is told to stop",
    "eval_strategy": "evaluation during a level (logs only; every level is evaluated at its end)",
    "eval_steps": "how often a level is evaluated while it trains (logs only)",
    "eval_delay": "when evaluation during a level starts (logs only)",
    "eval_on_start": "an evaluation before a level trains (logs only)",
    "eval_accumulation_steps": "how predictions are moved to the CPU while evaluating (same metrics)",
    "eval_do_concat_batches": "how predictions are gathered while evaluating (same metrics)",
    "eval_use_gather_object": "how predictions are gathered across processes (same metrics)",
    "batch_eval_metrics": "metrics computed per batch or at the end (same metrics)",
    "dataloader_pin_memory": "host memory pinning (same batches)",
    "dataloader_prefetch_factor": "how many batches are prepared ahead (same batches)",
    "ddp_timeout": "how long processes wait for each other",
    "ddp_find_unused_parameters": "a DDP search for unused parameters (same gradients)",
    "skip_memory_metrics": "memory numbers in the logs",
    "resume_from_checkpoint": "refused when given: a run resumes from its own checkpoints",
    "do_train": "a switch of the transformers example scripts: run_imp.py always trains every level",
    "do_eval": "a switch of the transformers example scripts: run_imp.py evaluates every level",
    "do_predict": "a switch of the transformers example scripts: run_imp.py makes no predictions",
    "include_num_input_tokens_seen": "a count of tokens in the logs",
    "debug": "transformers' debugging reports",
    "local_rank": "set by the launcher for each process",
    "torch_empty_cache_steps": "when the accelerator's memory cache is emptied (same numbers)",
    "restore_callback_states_from_checkpoint": "callbacks' own state on resume (lottery_rg's callbacks keep theirs)",
    "remove_unused_columns": "which data-set columns reach the collator (for timm models lottery_rg passes the raw "
                             "image columns to its transform whatever the flag says)",
}
FREE_TRAINING_ARGUMENTS = frozenset(FREE_REASONS)

# honoured by TrainingArguments itself while it is built, or under another name: Trainer's code needs not read them
HONOURED_BY_TRAINING_ARGUMENTS: dict[str, str] = {
    "tf32": "TrainingArguments switches torch's TF32 matmuls on or off when it is built",
    "gradient_checkpointing": "the deprecated name of activation_checkpointing (TrainingArguments copies it over)",
    "gradient_checkpointing_kwargs": "the deprecated name of activation_checkpointing_kwargs",
    "use_cpu": "TrainingArguments chooses the device from it when it is built",
    "ddp_backend": "TrainingArguments starts the process group with it when it is built",
}

# a value of each flag that check_training_arguments refuses (tests/test_flags.py proves it), with its library
REFUSED_EXAMPLES: dict[str, tuple[Any, str | None]] = {
    "per_device_train_batch_size": (0, None), "per_device_eval_batch_size": (0, None),
    "gradient_accumulation_steps": (0, None), "num_train_epochs": (0, None), "learning_rate": (-1.0, None),
    "weight_decay": (float("nan"), None), "resume_from_checkpoint": ("/nonexistent", None),
    "load_best_model_at_end": (True, None), "auto_find_batch_size": (True, None), "save_only_model": (True, None),
    "hub_strategy": ("checkpoint", None), "hub_revision": ("v1", None), "optim_args": ("momentum=abc", None),
    "fp16": (True, None), "fp16_full_eval": (True, None), "neftune_noise_alpha": (5.0, "timm"),
    "use_liger_kernel": (True, "timm"), "label_names": (["label"], "timm"),
}

_HUB_STRATEGIES_REFUSED = ("checkpoint", "all_checkpoints")
_MODEL_BOUND_OPTIMIZERS = ("galore", "apollo", "lomo")  # Trainer builds them from the model: checked when training


def precision_refusal(args: Any) -> str | None:
    """Why the device cannot train in the precision ``args`` asks for (None when it can): float16 needs a GPU (the
    CPU would train in float32 while the run records fp16); bfloat16 needs a GPU that computes in it."""
    half = [f for f in ("fp16", "fp16_full_eval") if getattr(args, f, False)]
    brain = [f for f in ("bf16", "bf16_full_eval") if getattr(args, f, False)]
    if not half and not brain:
        return None
    device = args.device
    if half and device.type == "cpu":
        try:
            check_training_precision(args)  # the message that says whether this CPU has bf16 natively
        except ValueError as e:
            return str(e)
        return (f"--{half[0]}: the CPU does not compute in float16 (it would train in float32 and record fp16); "
                f"on the CPU drop --{half[0]} or use --bf16")
    if brain and device.type == "cuda":
        import torch

        if not torch.cuda.is_bf16_supported():
            return (f"--{brain[0]}: {torch.cuda.get_device_name(device)} does not compute in bfloat16; use --fp16 "
                    f"or drop --{brain[0]}")
    return None


_SWITCHES_REFUSED = {  # on/off flags a LotteryTrainer cannot honour, and why
    "load_best_model_at_end": "--load_best_model_at_end would replace a level's trained weights by an earlier "
                              "checkpoint's and break IMP; drop it",
    "auto_find_batch_size": "--auto_find_batch_size would shrink the batch on running out of memory, so levels could "
                            "train with different batches; choose --per_device_train_batch_size yourself",
    "save_only_model": "--save_only_model writes checkpoints without optimizer and schedule: an interrupted level "
                       "could not resume exactly; drop it (finished levels hold only the model anyway)",
}


def _value(x: Any) -> Any:
    """An enum flag as the user typed it (``HubStrategy.CHECKPOINT`` -> ``checkpoint``)."""
    return getattr(x, "value", x)


def _positive(args: Any, name: str, what: str) -> str | None:
    value = getattr(args, name, None)
    if value is not None and value < 1:
        return f"--{name} {value}: {what} must be at least 1"
    return None


def check_training_arguments(args: Any, library: str | None = None) -> None:
    """Refuse, naming the flag and the reason, a ``TrainingArguments`` value a LotteryTrainer would ignore or cannot
    honour; ``library`` ("timm" or "transformers", the model's) adds the refusals of one kind of model.
    Runs while the scripts parse their flags, and again when a ``LotteryTrainer`` is built."""
    problems = [
        _positive(args, "per_device_train_batch_size", "the training batch per device"),
        _positive(args, "per_device_eval_batch_size", "the evaluation batch per device"),
        _positive(args, "gradient_accumulation_steps", "the number of batches per optimizer step"),
    ]
    workers = getattr(args, "dataloader_num_workers", 0)
    if workers is not None and workers < 0:
        problems.append(f"--dataloader_num_workers {workers}: give 0 (load in the training process) or more")
    problems.append(_tracker_refusal(args))
    if getattr(args, "max_steps", -1) <= 0 and getattr(args, "num_train_epochs", 1) <= 0:
        problems.append(f"--num_train_epochs {args.num_train_epochs} trains nothing: every level needs optimizer "
                        f"steps; give --num_train_epochs above 0 (or --max_steps)")
    lr = getattr(args, "learning_rate", 0.0)
    if not math.isfinite(lr) or lr < 0:
        problems.append(f"--learning_rate {lr}: give a finite learning rate of at least 0 (e.g. 0.1 for SGD)")
    wd = getattr(args, "weight_decay", 0.0)
    if not math.isfinite(wd) or wd < 0:
        problems.append(f"--weight_decay {wd}: give a finite weight decay of at least 0 (e.g. 5e-4)")
    if getattr(args, "resume_from_checkpoint", None):
        problems.append(f"--resume_from_checkpoint {args.resume_from_checkpoint}: a lottery run resumes by itself "
                        f"from the checkpoints in its --output_dir; run the same command again (without this flag)")
    problems += [why for flag, why in _SWITCHES_REFUSED.items() if getattr(args, flag, False)]
    if getattr(args, "hub_strategy", None) in _HUB_STRATEGIES_REFUSED:
        problems.append(f"--hub_strategy {_value(args.hub_strategy)}: lottery_rg pushes tickets, not Trainer "
                        f"checkpoints (a run resumes from its own --output_dir); drop it, or add --push_levels to push "
                        f"every level")
    if getattr(args, "hub_revision", None):
        problems.append(f"--hub_revision {args.hub_revision}: lottery_rg pushes the ticket to the main branch and each "
                        f"level to a branch level-XX (--push_levels); to push elsewhere, call "
                        f"trainer.push_to_hub(revision=...) after run_imp()")
    problems.append(_parallelism_refusal(args))
    problems.append(_optimizer_refusal(args))
    problems.append(precision_refusal(args))
    if library == "timm":
        problems += _timm_refusals(args)
    problems = [p for p in problems if p]
    if problems:
        raise UsageError(problems[0])


def _tracker_refusal(args: Any) -> str | None:
    """``--report_to`` names trackers transformers knows (Trainer would refuse it after the data and the model)."""
    report_to = getattr(args, "report_to", None)
    if not report_to or report_to in ("none", ["none"]):
        return None
    from transformers.integrations import get_reporting_integration_callbacks

    try:
        get_reporting_integration_callbacks(report_to)
    except ValueError as e:
        return f"--report_to {' '.join(report_to) if isinstance(report_to, list) else report_to}: {one_line(str(e))}"
    return None


def _parallelism_refusal(args: Any) -> str | None:
    config = getattr(args, "parallelism_config", None)
    if config is None:
        return None
    split = {k: getattr(config, k, 1) or 1 for k in ("dp_shard_size", "tp_size", "cp_size", "sp_size")}
    split = {k: v for k, v in split.items() if v > 1}
    if split:
        return (f"--parallelism_config {split}: sharded, tensor, context or sequence parallelism splits parameters, "
                f"and masks are enforced on whole tensors; use data parallelism (accelerate launch --multi_gpu)")
    return None


def _optimizer_refusal(args: Any) -> str | None:
    """The optimizer and its ``--optim_args`` as Trainer will build them (checked now, not after the model)."""
    optim = str(getattr(getattr(args, "optim", None), "value", getattr(args, "optim", "")))
    if not optim or any(name in optim for name in _MODEL_BOUND_OPTIMIZERS):
        return None
    from transformers import Trainer

    given = getattr(args, "optim_args", None)
    pairs = [pair.strip() for pair in (given or "").split(",") if pair.strip()]
    malformed = [pair for pair in pairs if pair.count("=") != 1]
    if malformed:
        return (f"--optim_args {given}: {malformed[0]!r} is not key=value; give comma-separated key=value pairs, "
                f"e.g. --optim sgd --optim_args momentum=0.9,nesterov=true")
    try:
        _, kwargs = Trainer.get_optimizer_cls_and_kwargs(args)
    except (ValueError, TypeError, ImportError, KeyError) as e:
        why = one_line(str(e)) or type(e).__name__
        bad = [pair for pair in pairs if repr(pair.split("=")[1]) in why]
        if bad:  # float('abc'): name the pair
            return (f"--optim_args {given}: {bad[0]} is not a number that --optim {optim} can use; give e.g. "
                    f"{bad[0].split('=')[0]}=0.9")
        return f"--optim {optim}{f' --optim_args {given}' if given else ''} is refused: {why}"
    ignored = [pair.split("=")[0] for pair in pairs if pair.split("=")[0] not in kwargs]
    if ignored:  # a key the optimizer does not read would be ignored without a word
        return (f"--optim_args {given}: --optim {optim} does not read {', '.join(ignored)}; drop it, or choose an "
                f"optimizer that does (e.g. --optim sgd --optim_args momentum=0.9)")
    return None


def _timm_refusals(args: Any) -> list[str]:
    """Flags that act on a transformers model and that a timm model has nothing for."""
    out = []
    if getattr(args, "neftune_noise_alpha", None):
        out.append("--neftune_noise_alpha adds noise to a language model's input embeddings; a timm image model has "
                   "none: drop it")
    if getattr(args, "use_liger_kernel", False):
        out.append("--use_liger_kernel patches transformers language models; a timm image model has nothing to "
                   "patch: drop it")
    names = getattr(args, "label_names", None)
    if names and list(names) != ["labels"]:
        out.append(f"--label_names {names}: a timm model's batches hold 'pixel_values' and 'labels'; drop the flag")
    kwargs = getattr(args, "activation_checkpointing_kwargs", None) or getattr(args, "gradient_checkpointing_kwargs",
                                                                               None)
    if kwargs and (getattr(args, "activation_checkpointing", False) or getattr(args, "gradient_checkpointing", False)):
        out.append(f"--activation_checkpointing_kwargs {kwargs}: timm's set_grad_checkpointing takes no settings; drop "
                   f"them (--activation_checkpointing alone works)")
    return out


def timm_arguments(args: Any, model: Any) -> tuple[Any, dict]:
    """Label smoothing and activation checkpointing for a timm model, which Trainer would ask of a transformers
    model (its ``config``, its ``activation_checkpointing_enable``): timm's own ``set_grad_checkpointing`` is turned
    on here and the loss smooths the labels itself. ``args`` (the trainer's own copy) is changed so that Trainer
    does not try; the values as given are returned, for the run's record."""
    given: dict[str, Any] = {}
    if getattr(args, "label_smoothing_factor", 0.0):
        given["label_smoothing_factor"] = args.label_smoothing_factor
        args.label_smoothing_factor = 0.0
    names = [n for n in ("activation_checkpointing", "gradient_checkpointing") if hasattr(args, n)]
    if any(getattr(args, n) for n in names):
        if not hasattr(model, "set_grad_checkpointing"):
            raise UsageError(f"--activation_checkpointing: {type(model).__name__} has no set_grad_checkpointing "
                             f"(timm's switch for it); drop the flag")
        model.set_grad_checkpointing(True)
        for n in names:
            given[n] = getattr(args, n)
            setattr(args, n, False)
    return args, given


def flag_parser(dataclass_types: Any) -> Any:
    """``HfArgumentParser`` for ``dataclass_types`` whose errors are one line naming the flag (argparse would print
    the usage of every flag first)."""
    from transformers import HfArgumentParser

    class FlagParser(HfArgumentParser):
        error = ArgumentParser.error

    return FlagParser(dataclass_types)
