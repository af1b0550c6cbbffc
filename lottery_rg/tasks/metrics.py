"""Evaluation metrics through ``evaluate``: the tasks' own metrics are ``evaluate`` modules shipped inside
lottery_rg (``lottery_rg/evaluate_modules/``, package data) and loaded by path, so they work offline;
``--metric_name`` adds any ``evaluate`` metric by Hub name or local path.

Image tasks score top-1 accuracy on the argmax of the logits; masked-LM tasks score masked-token accuracy on
the predicted ids (see :func:`lottery_rg.tasks.text.preprocess_logits_for_metrics`), and an extra metric sees
the masked positions only, flattened. Perplexity is not a metric here: it is derived from the evaluation loss
(:meth:`lottery_rg.models.families.ModelFamily.derived_metrics`).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["MODULES", "load_metric", "ImageMetrics", "MLMMetrics"]

MODULES = Path(__file__).resolve().parents[1] / "evaluate_modules"
ACCURACY = MODULES / "accuracy"
MASKED_TOKEN_ACCURACY = MODULES / "masked_token_accuracy"


@functools.cache
def load_metric(name_or_path: str | Path) -> Any:
    """``evaluate.load(name_or_path)``, once per process, kept in memory (no cache files, no locks between the
    processes of a launch: each computes on the gathered predictions the Trainer hands it)."""
    import evaluate

    try:
        return evaluate.load(str(name_or_path), keep_in_memory=True)
    except Exception as e:  # noqa: BLE001  (evaluate raises FileNotFoundError, ConnectionError, ImportError…)
        raise ValueError(f"--metric_name {name_or_path}: evaluate cannot load it ({type(e).__name__}: {e}). Give "
                         f"an evaluate metric's Hub name (it is downloaded once, then cached) or the path of a "
                         f"local metric folder or script") from None


def _logits(predictions):
    return predictions[0] if isinstance(predictions, (tuple, list)) else predictions


class ImageMetrics:
    """``compute_metrics`` of image classification: ``accuracy`` (the shipped module) and, with ``metric_name``,
    that metric's values on the same predicted and true class ids."""

    def __init__(self, metric_name: str | None = None):
        self.metric_name = metric_name

    def __call__(self, eval_pred) -> dict[str, float]:
        predictions = np.asarray(_logits(eval_pred[0])).argmax(-1)
        references = np.asarray(eval_pred[1])
        out = load_metric(ACCURACY).compute(predictions=predictions, references=references)
        if self.metric_name:
            out.update(load_metric(self.metric_name).compute(predictions=predictions, references=references))
        return out


class MLMMetrics:
    """``compute_metrics`` of masked-LM: ``accuracy`` and ``masked_tokens`` (the shipped masked-token accuracy
    module) on predicted ids; with ``metric_name``, that metric on the masked positions (flattened)."""

    def __init__(self, metric_name: str | None = None, ignore_index: int = -100):
        self.metric_name, self.ignore_index = metric_name, ignore_index

    def __call__(self, eval_pred) -> dict[str, float]:
        predictions, references = np.asarray(_logits(eval_pred[0])), np.asarray(eval_pred[1])
        if predictions.shape != references.shape:
            raise ValueError(f"predictions {predictions.shape} and labels {references.shape} differ in shape; "
                             "pass predicted ids (see preprocess_logits_for_metrics), not logits")
        out = load_metric(MASKED_TOKEN_ACCURACY).compute(predictions=predictions, references=references,
                                                         ignore_index=self.ignore_index)
        if self.metric_name:
            keep = references != self.ignore_index
            out.update(load_metric(self.metric_name).compute(predictions=predictions[keep],
                                                             references=references[keep]))
        return out
