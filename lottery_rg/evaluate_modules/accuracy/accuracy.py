"""Top-1 accuracy as an ``evaluate`` module, shipped inside lottery_rg so that it loads offline by path.

``evaluate.load("accuracy")`` would fetch the Hub's module at run time; lottery_rg's image tasks load this one
with ``evaluate.load(<path of this folder>)`` (see :mod:`lottery_rg.tasks.metrics`). Same definition: the
fraction of predicted class ids equal to the references.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Accuracy: the fraction of predictions equal to their references (top-1 for class ids)."
_INPUTS = """
Args:
    predictions (list of int): predicted class ids (the argmax of the logits).
    references (list of int): true class ids.
Returns:
    accuracy (float): the fraction of predictions equal to their references, in [0, 1].
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class Accuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Value("int64"),
                                        "references": datasets.Value("int64")}),
        )

    def _compute(self, predictions, references):
        return {"accuracy": float((np.asarray(predictions) == np.asarray(references)).mean())}
