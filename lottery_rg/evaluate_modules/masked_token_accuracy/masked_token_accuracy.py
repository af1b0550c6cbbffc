"""Masked-token accuracy as an ``evaluate`` module, shipped inside lottery_rg so that it loads offline by path.

A masked-LM is scored on the masked positions only: each example's ``references`` hold the original token id at
a masked position and ``ignore_index`` (-100, what ``DataCollatorForLanguageModeling`` writes) everywhere else;
``predictions`` hold the predicted token id at every position. Also returns the number of masked tokens scored.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = "Masked-token accuracy: the fraction of masked positions whose predicted token is the original one."
_INPUTS = """
Args:
    predictions (list of list of int): predicted token ids, one sequence per example.
    references (list of list of int): original token ids at masked positions, ``ignore_index`` elsewhere.
    ignore_index (int): the label of positions that are not scored (default -100).
Returns:
    accuracy (float): correct masked positions / masked positions (NaN when nothing is masked).
    masked_tokens (float): the number of masked positions scored.
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _INPUTS)
class MaskedTokenAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION, citation="", inputs_description=_INPUTS,
            features=datasets.Features({"predictions": datasets.Sequence(datasets.Value("int64")),
                                        "references": datasets.Sequence(datasets.Value("int64"))}),
        )

    def _compute(self, predictions, references, ignore_index: int = -100):
        predictions, references = np.asarray(predictions), np.asarray(references)
        keep = references != ignore_index
        count = int(keep.sum())
        accuracy = float((predictions[keep] == references[keep]).mean()) if count else float("nan")
        return {"accuracy": accuracy, "masked_tokens": float(count)}
