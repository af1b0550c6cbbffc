"""Dataclasses for ``HfArgumentParser``: the lottery settings, and the model and data choices.

``LotteryArguments`` sits next to ``transformers.TrainingArguments``: everything about
optimisation (learning rate, epochs, batch size, precision, checkpointing) stays in
``TrainingArguments``; everything about IMP lives here. Invalid settings fail in
``__post_init__``, i.e. while parsing, before any model or data is loaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..errors import check_field_types
from ..pruning.masks import PRUNING_SCOPES, SCHEDULES
from ..pruning.settings import PRUNE_PRESETS, LotterySettings
from . import flags
from .precision import FAST_CHOICES

__all__ = ["LotteryArguments", "ModelArguments", "DataArguments", "TASKS", "FREE_TRAINING_ARGUMENTS", "parse_args",
           "json_kwargs"]

TASKS = ("image-classification", "fill-mask")


# TrainingArguments that cannot change what a level computes (each with its reason): lottery_rg.training.flags
FREE_TRAINING_ARGUMENTS = flags.FREE_TRAINING_ARGUMENTS


@dataclass
class LotteryArguments:
    """Iterative magnitude pruning with rewinding (Frankle et al. 2020, "Linear mode connectivity and the lottery
    ticket hypothesis")."""

    levels: int = field(default=10, metadata={
        "help": "Pruning levels after the dense level 0: trains levels 0..N, each pruned once more."})
    prune_fraction: float = field(default=0.2, metadata={
        "help": "Fraction pruned per level: of the surviving weights (geometric schedule) or of the original "
                "weights (linear schedule)."})
    pruning: str = field(default="global", metadata={
        "help": "global: one magnitude threshold over all prunable tensors; layerwise: the fraction in each tensor.",
        "choices": list(PRUNING_SCOPES)})
    schedule: str = field(default="geometric", metadata={
        "help": "geometric: remove prune_fraction of the surviving weights per level (open_lth); linear: remove "
                "prune_fraction of the original weights per level (BERT tickets).", "choices": list(SCHEDULES)})
    rewind_steps: int = field(default=0, metadata={
        "help": "Rewind point k in optimizer steps: every level restarts from the weights, buffers and learning-rate "
                "schedule of step k (0 = the initial or pre-trained weights)."})
    prune_include: list[str] | None = field(default=None, metadata={
        "help": "Regular expressions selecting the prunable parameters (replaces the family default)."})
    prune_exclude: list[str] | None = field(default=None, metadata={
        "help": "Regular expressions removing parameters from the prunable set."})
    prune_preset: str | None = field(default=None, metadata={
        "help": "A named prunable set applied after include/exclude. rg_paper: the RG paper's convention — prune "
                "only the tensors inside the residual stages (convolutions incl. down-sampling; BERT: the encoder "
                "layers), leave stem and classifier dense, so M is normalised over what is prunable.",
        "choices": list(PRUNE_PRESETS)})
    push_levels: bool = field(default=False, metadata={
        "help": "With --push_to_hub: also push every level's ticket (as branch level-XX), not only the final one."})
    stability_levels: list[int] | None = field(default=None, metadata={
        "help": "After IMP, test these levels for linear mode connectivity (Frankle et al. 2020): train a second copy "
                "from the rewind point with other SGD noise and report the instability (error barrier) between "
                "the two."})
    stability_seed: int | None = field(default=None, metadata={
        "help": "SGD-noise seed (data order, augmentation, dropout) of the second copy; default --seed + 1."})
    stability_points: int = field(default=11, metadata={
        "help": "Evenly spaced points of the linear path at which the error is measured (ends included)."})
    stability_bn_batches: int = field(default=0, metadata={
        "help": "Recompute BatchNorm statistics from this many training batches at every point of the path "
                "(0: interpolate the running statistics like every other tensor)."})

    def __post_init__(self):
        check_field_types(self)
        if self.levels < 1:
            raise ValueError(f"--levels must be at least 1 (level 0 is the dense network), got {self.levels}")
        self.settings().check_levels(self.levels)  # validates fraction, scope, schedule, rewind point, patterns
        bad = [lv for lv in self.stability_levels or [] if not 0 <= lv <= self.levels]
        if bad:
            raise ValueError(f"--stability_levels {bad} are not levels of this run (0..{self.levels})")
        if self.stability_points < 3:
            raise ValueError(f"--stability_points must be at least 3 (both ends and one between), "
                             f"got {self.stability_points}")
        if self.stability_bn_batches < 0:
            raise ValueError(f"--stability_bn_batches must be >= 0, got {self.stability_bn_batches}")

    def settings(self) -> LotterySettings:
        """The settings that define a run (a resumed run must match them); levels, pushes and analyses do not."""
        return LotterySettings(prune_fraction=self.prune_fraction, pruning=self.pruning, schedule=self.schedule,
                               rewind_steps=self.rewind_steps, prune_include=self.prune_include,
                               prune_exclude=self.prune_exclude, prune_preset=self.prune_preset)

    def target_density(self, level: int) -> float:
        """Nominal density of the prunable weights after ``level`` levels (before rounding)."""
        return self.settings().target_density(level)


@dataclass
class ModelArguments:
    model_name_or_path: str = field(default="resnet20_cifar", metadata={
        "help": "A timm architecture (resnet18, resnet50, resnet20_cifar, …), a local folder, or a Hub repo id "
                "(timm or transformers checkpoint). For fill-mask, 'embedded-bert' trains a small BERT from scratch."})
    task: str | None = field(default=None, metadata={
        "help": "image-classification or fill-mask; inferred from the model when omitted.", "choices": list(TASKS)})
    pretrained: bool = field(default=False, metadata={
        "help": "For a timm architecture name: start from timm's pretrained weights (needs the network)."})
    revision: str = field(default="main", metadata={"help": "Hub revision (branch, tag or commit)."})
    tokenizer_name: str | None = field(default=None, metadata={"help": "Tokenizer name or path if not the model's."})
    model_kwargs: dict | str | None = field(default=None, metadata={
        "help": "Keyword arguments of the model, as JSON: timm.create_model's (e.g. '{\"patch_size\": 4}' for a "
                "ViT), from_pretrained's, or for embedded-bert the BertConfig fields (e.g. '{\"num_hidden_layers\": "
                "2, \"hidden_size\": 128}'); the model's family checks them."})
    channels_last: bool = field(default=False, metadata={
        "help": "Train a convolutional network (ResNet, VGG) in channels-last (NHWC) memory format: the model and "
                "every image batch (faster convolutions on CPUs with oneDNN and on GPUs). Files stay plain "
                "contiguous tensors."})
    fast: str = field(default="off", metadata={
        "help": "auto: choose precision and layout for this machine — bf16 autocast where the device computes "
                "bf16 natively (CPU with AVX512-BF16 or AMX, GPU of compute capability >= 8.0), fp32 elsewhere; "
                "channels-last for convolutional families. The choice is logged, recorded in lottery_config.json "
                "and locked like --bf16. off: exactly the flags given.", "choices": list(FAST_CHOICES)})
    sync_bn: bool = field(default=False, metadata={
        "help": "With several GPU processes: convert BatchNorm to SyncBatchNorm, so that batch statistics are "
                "computed over the global batch as on one GPU (not available on CPU/gloo)."})

    def __post_init__(self):
        check_field_types(self)
        if self.task is not None and self.task not in TASKS:
            raise ValueError(f"--task must be one of {TASKS}, got {self.task!r}")
        if self.fast not in FAST_CHOICES:
            raise ValueError(f"--fast must be one of {FAST_CHOICES}, got {self.fast!r}")
        self.model_kwargs = json_kwargs(self.model_kwargs, "--model_kwargs")


@dataclass
class DataArguments:
    dataset_name: str | None = field(default=None, metadata={
        "help": "A data set for datasets.load_dataset (Hub name or local folder). Default: the embedded data "
                "(scikit-learn digits for images, Python's own documentation for fill-mask)."})
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of the data set."})
    train_file: str | None = field(default=None, metadata={"help": "A local text/csv/json file (fill-mask)."})
    validation_file: str | None = field(default=None, metadata={"help": "A local validation file (fill-mask)."})
    image_column: str | None = field(default=None, metadata={"help": "Image column (default: detected)."})
    label_column: str | None = field(default=None, metadata={"help": "Label column (default: detected)."})
    text_column: str | None = field(default=None, metadata={"help": "Text column (default: detected)."})
    image_size: int | None = field(default=None, metadata={
        "help": "Side of the (square) input images; default: the model's input size."})
    augment: bool = field(default=False, metadata={"help": "Random crop and horizontal flip during training."})
    tensor_data: bool = field(default=False, metadata={
        "help": "Decode every image once into one tensor and crop/flip whole batches (small data sets such as the "
                "digits or CIFAR): the data path stops limiting a GPU. Same pixels as the default PIL path."})
    max_seq_length: int = field(default=128, metadata={"help": "Sequence length for fill-mask."})
    mlm_probability: float = field(default=0.15, metadata={"help": "Share of tokens masked for MLM."})
    test_fraction: float = field(default=0.2, metadata={
        "help": "Share held out for evaluation when the data set has no test/validation split."})
    split_seed: int = field(default=0, metadata={
        "help": "Seed of that train/test split (and of the fixed MLM evaluation masks). Independent of --seed, "
                "so runs with different seeds, depths or methods are trained and scored on the same split."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Truncate the training set (debugging)."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Truncate the evaluation set."})
    metric_name: str | None = field(default=None, metadata={
        "help": "An extra evaluation metric: any evaluate metric by Hub name (e.g. 'f1') or local path, computed on "
                "the predicted and true class ids (images) or masked tokens (fill-mask), beside accuracy."})

    def __post_init__(self):
        check_field_types(self)
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"--test_fraction must lie in (0, 1), got {self.test_fraction}")
        if not 0.0 < self.mlm_probability < 1.0:
            raise ValueError(f"--mlm_probability must lie in (0, 1), got {self.mlm_probability}")
        if self.image_size is not None:
            _check_range("--image_size", self.image_size, 8, 4096, "pixels per side (leave it out for the model's "
                                                                     "input size)")
        _check_range("--max_seq_length", self.max_seq_length, 8, 1 << 16, "tokens")
        for name in ("max_train_samples", "max_eval_samples"):
            if getattr(self, name) is not None:
                _check_range(f"--{name}", getattr(self, name), 1, None, "examples (leave it out for all of them)")
        _check_range("--split_seed", self.split_seed, 0, 2**32 - 1, "(a seed numpy accepts)")
        for name in ("train_file", "validation_file"):  # local files: named now, not by the data loader later
            path = getattr(self, name)
            if path is not None and "://" not in path and not os.path.isfile(path):
                raise ValueError(f"--{name} {path}: no such file (give a local .txt, .csv or .json file)")


def _is_json(text: str) -> bool:
    import json

    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def json_kwargs(value: dict | str | None, flag: str) -> dict | None:
    """Keyword arguments given as a JSON object on the command line (a config file gives a mapping already)."""
    if isinstance(value, str):
        import json

        try:
            value = json.loads(value)
        except ValueError as e:
            raise ValueError(f"{flag} must be a JSON object, got {value!r} ({e})") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"{flag} must be a JSON object of keyword arguments, got {value!r}")
    return value


def _check_range(flag: str, value: int, lo: int, hi: int | None, what: str) -> None:
    """Refuse a value outside [lo, hi] naming the flag, the value, and what would be accepted."""
    if not isinstance(value, int) or value < lo or (hi is not None and value > hi):
        span = f"from {lo} to {hi}" if hi is not None else f"of at least {lo}"
        raise ValueError(f"{flag} {value!r} is not usable: give a whole number {span} {what}")


def parse_args(dataclass_types, argv=None):
    """Parse CLI flags, or a JSON/YAML config file followed by flags that override it.

    The file (first argument ending in .json, .yaml or .yml) is read the way ``HfArgumentParser.parse_json_file`` /
    ``parse_yaml_file`` read it (every key a field of one of the dataclasses, unknown keys refused), its values
    become the parser's defaults as they are — dicts (``lr_scheduler_kwargs``), lists, booleans and nulls
    included — and the flags after it are parsed on top, so flags override the file.

    On a CPU-only machine ``use_cpu`` defaults to True: ``accelerate launch --multi_gpu``
    starts gloo ranks there, but ``TrainingArguments`` only joins them as one distributed
    run with ``use_cpu=True`` (otherwise every rank would train and write alone).
    """
    import dataclasses
    import json
    import sys
    from pathlib import Path

    import torch
    import yaml
    from transformers import TrainingArguments

    parser = flags.flag_parser(dataclass_types)
    if not torch.cuda.is_available():
        parser.set_defaults(use_cpu=True)
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0].endswith((".json", ".yaml", ".yml")):
        path = Path(argv[0])
        try:  # the same readers as HfArgumentParser.parse_json_file / parse_yaml_file
            text = path.read_text(encoding="utf-8")
            config = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as e:
            raise ValueError(f"cannot read the config file {path}: {e}") from e
        config = config or {}
        if not isinstance(config, dict):
            raise ValueError(f"{path} must hold a mapping of argument names to values, got {type(config).__name__}")
        known = {f.name for dtype in parser.dataclass_types for f in dataclasses.fields(dtype) if f.init}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{path}: unknown arguments {unknown} (not fields of "
                             f"{', '.join(d.__name__ for d in parser.dataclass_types)})")
        parser.set_defaults(**config)
        required = [a for a in parser._actions if a.required and a.dest in config]
        for action in required:  # a value in the file satisfies a required flag
            action.required = False
        argv = argv[1:]
    try:
        *parsed, unknown = parser.parse_args_into_dataclasses(args=argv, return_remaining_strings=True)
    except json.JSONDecodeError as e:  # a dict flag of TrainingArguments (--lr_scheduler_kwargs …): name it
        bad = [f"{flag} {value}" for flag, value in zip(argv, argv[1:])
               if flag.startswith("--") and value.lstrip().startswith(("{", "[")) and not _is_json(value)]
        raise ValueError(f"{bad[0] if bad else 'a flag'}: not a JSON object ({e}); give e.g. "
                         f"'{{\"key\": 1}}' in single quotes") from None
    if unknown:
        parser.error(f"unknown {'flag' if len(unknown) == 1 else 'flags'} {' '.join(unknown)}")
    for args in parsed:  # refused while parsing: what a LotteryTrainer would ignore or cannot honour
        if isinstance(args, TrainingArguments):
            flags.check_training_arguments(args)
    return tuple(parsed)
