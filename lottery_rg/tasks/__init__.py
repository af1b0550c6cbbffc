"""Tasks: from command-line dataclasses to everything a ``LotteryTrainer`` needs.

``image`` (timm classifiers on image data sets; the embedded digits), ``mlm`` (BERT masked-LM on text; the
embedded Python docs), ``text`` (text data and the embedded tokenizer), ``base`` (``TaskSetup``).
``examples/run_imp.py`` and the elastic experiment share this, so the image and masked-LM paths differ only here.
"""

from __future__ import annotations

from .base import TaskSetup
from .image import load_image_splits, prepare_data_for_model, prepare_image_task

__all__ = ["TaskSetup", "prepare_task", "detect_task", "prepare_image_task", "prepare_data_for_model",
           "load_image_splits"]


def detect_task(name_or_path: str, revision: str | None = None) -> str:
    """'image-classification' for timm models, 'fill-mask' for transformers language models."""
    from ..models.loading import is_timm_config, read_model_config
    from .mlm import EMBEDDED_BERT

    if name_or_path == EMBEDDED_BERT:
        return "fill-mask"
    cfg = read_model_config(name_or_path, revision)
    return "image-classification" if cfg is None or is_timm_config(cfg) else "fill-mask"


def prepare_task(model_args, data_args, seed: int = 42) -> TaskSetup:
    """Load model and data for ``model_args.task`` (inferred from the model when not given).

    ``info["arguments"]`` records the model and data flags: a run locks them (they change what a level computes).
    """
    from dataclasses import asdict

    task = model_args.task or detect_task(model_args.model_name_or_path, model_args.revision)
    if task == "image-classification":
        setup = prepare_image_task(model_args, data_args, seed)
    else:
        from .mlm import prepare_mlm_task

        setup = prepare_mlm_task(model_args, data_args, seed)
    setup.info["arguments"] = {"model_arguments": asdict(model_args), "data_arguments": asdict(data_args)}
    setup.fast, setup.channels_last = model_args.fast, model_args.channels_last
    return setup
