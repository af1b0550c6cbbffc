"""The masked-language-model task: a BERT, its tokenizer and text data for ``LotteryTrainer``.

``embedded-bert`` builds a small BERT from scratch with a WordPiece tokenizer trained on
English that ships with Python (:mod:`lottery_rg.tasks.text`); any other name loads a
BERT-family checkpoint and its tokenizer with ``from_pretrained``. Evaluation masks are
drawn once per run with a fixed seed, so every IMP level is scored on the same masked
tokens and level-to-level differences are the network's, not the masking's.
"""

from __future__ import annotations

import logging

from ..models import get_family
from ..training.arguments import DataArguments, ModelArguments
from .base import TaskSetup, truncate_splits

__all__ = ["prepare_mlm_task", "MLMCollator", "fixed_eval_masks", "EMBEDDED_BERT"]

logger = logging.getLogger(__name__)
EMBEDDED_BERT = "embedded-bert"


class MLMCollator:
    """Random masking for training batches; evaluation examples that already carry labels pass through."""

    def __init__(self, tokenizer, mlm_probability: float = 0.15, seed: int | None = None):
        from transformers import DataCollatorForLanguageModeling, DataCollatorWithPadding

        self.masking = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)
        self.padding = DataCollatorWithPadding(tokenizer)

    def __call__(self, examples):
        if "labels" in examples[0]:
            return self.padding(examples)
        return self.masking(examples)


def fixed_eval_masks(dataset, tokenizer, mlm_probability: float, seed: int = 0):
    """Apply MLM masking to an evaluation split once (seeded): ``input_ids`` and ``labels`` columns."""
    from transformers import DataCollatorForLanguageModeling

    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=mlm_probability, seed=seed)

    def mask(batch):
        rows = [{k: batch[k][i] for k in batch} for i in range(len(batch["input_ids"]))]
        out = collator(rows)
        return {"input_ids": out["input_ids"].tolist(), "labels": out["labels"].tolist(),
                "attention_mask": out["attention_mask"].tolist()}

    return dataset.map(mask, batched=True, batch_size=256, remove_columns=dataset.column_names,
                       desc="fixing evaluation masks")


def _load_tokenizer(model_args: ModelArguments):
    from transformers import AutoTokenizer

    from .text import embedded_tokenizer

    name = model_args.tokenizer_name or model_args.model_name_or_path
    if name == EMBEDDED_BERT:
        return embedded_tokenizer()
    return AutoTokenizer.from_pretrained(name, revision=model_args.revision)


def _build_model(model_args: ModelArguments, tokenizer, max_seq_length: int):
    from transformers import AutoModelForMaskedLM, BertForMaskedLM

    from .text import small_bert_config

    if model_args.model_name_or_path == EMBEDDED_BERT:
        kwargs = get_family("bert").scratch_kwargs(model_args.model_kwargs, max_seq_length)
        return BertForMaskedLM(small_bert_config(tokenizer, **kwargs))
    return AutoModelForMaskedLM.from_pretrained(model_args.model_name_or_path, revision=model_args.revision,
                                                **(model_args.model_kwargs or {}))


def prepare_mlm_task(model_args: ModelArguments, data_args: DataArguments, seed: int = 42):
    """Tokenizer, model and tokenized data for masked-language modelling, validated before any work."""
    from transformers import set_seed

    from .metrics import MLMMetrics
    from .text import (
        check_mlm_compatibility,
        load_text_datasets,
        prepare_mlm_datasets,
        preprocess_logits_for_metrics,
    )

    if model_args.model_name_or_path == EMBEDDED_BERT:  # bad sizes are refused before any work
        get_family("bert").scratch_kwargs(model_args.model_kwargs, data_args.max_seq_length)
    tokenizer = _load_tokenizer(model_args)
    if model_args.model_name_or_path != EMBEDDED_BERT:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_args.model_name_or_path, revision=model_args.revision)
        check_mlm_compatibility(config, tokenizer, data_args.max_seq_length)  # before loading weights or data
    set_seed(seed)  # θ_0 of a from-scratch model depends only on the seed
    model = _build_model(model_args, tokenizer, data_args.max_seq_length)
    check_mlm_compatibility(model.config, tokenizer, data_args.max_seq_length)
    raw = load_text_datasets(data_args.dataset_name, data_args.dataset_config_name, data_args.train_file,
                             data_args.validation_file, text_column=data_args.text_column,
                             test_fraction=data_args.test_fraction, seed=data_args.split_seed)
    dsd = prepare_mlm_datasets(raw, tokenizer, data_args.max_seq_length, model_config=model.config)
    dsd = truncate_splits(dsd, data_args.max_train_samples, data_args.max_eval_samples)
    eval_set = fixed_eval_masks(dsd["test"], tokenizer, data_args.mlm_probability, seed=data_args.split_seed)
    info = {"dataset": data_args.dataset_name or data_args.train_file or "python-docs (embedded)",
            "model_name_or_path": model_args.model_name_or_path, "max_seq_length": data_args.max_seq_length,
            "base_model": model_args.model_name_or_path if model_args.model_name_or_path != EMBEDDED_BERT else None}
    return TaskSetup(
        "fill-mask", model, dsd["train"], eval_set,
        data_collator=MLMCollator(tokenizer, data_args.mlm_probability),
        compute_metrics=MLMMetrics(getattr(data_args, "metric_name", None)),
        preprocess_logits_for_metrics=preprocess_logits_for_metrics, processing_class=tokenizer, info=info,
    )
