"""The BERT family: ``transformers`` BERT encoders (e.g. ``BertForMaskedLM``).

Layout: embeddings (stem), one stage of encoder layers (the blocks; E-LTH's unit for transformers,
Chen et al. 2021), pooler / MLM head. Default prunable set (Chen et al. 2020, BERT tickets): in every
encoder layer the query, key, value, attention-output, intermediate and output dense weights, plus
the pooler; embeddings, LayerNorms, biases and the MLM head are not pruned.

The family also owns what a BERT's ``config.json`` may say in a ticket (:meth:`BertFamily.check_architecture`),
the from-scratch model's keyword arguments (``--model_kwargs`` of ``embedded-bert``) and the perplexity
reported next to a masked-LM's loss.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from .families import Block, Layout, ModelFamily, check_int, has_module

__all__ = ["BertFamily", "BERT_BOUNDS", "SCRATCH_DEFAULTS", "perplexity"]

BERT_BOUNDS = {  # config key: (min, max)
    "hidden_size": (1, 16_384), "num_hidden_layers": (1, 1000), "num_attention_heads": (1, 512),
    "intermediate_size": (1, 65_536), "vocab_size": (1, 1_000_000), "max_position_embeddings": (1, 131_072),
    "type_vocab_size": (1, 64),
}
ARCHITECTURES = ("BertForMaskedLM", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
                 "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice")
SCRATCH_DEFAULTS = {"num_hidden_layers": 4, "hidden_size": 256}  # the embedded from-scratch BERT


def perplexity(loss: float) -> float:
    """``exp(loss)``, with ``inf`` instead of an ``OverflowError`` for a diverged run (and NaN kept)."""
    loss = float(loss)
    if math.isnan(loss):
        return float("nan")
    try:
        return math.exp(loss)
    except OverflowError:
        return float("inf")


class BertFamily(ModelFamily):
    """BERT encoders (``transformers``): embeddings, one stage of encoder layers, pooler/MLM head."""

    name = "bert"
    library = "transformers"
    _prunable_re = re.compile(
        r"(^|\.)encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
        r"intermediate\.dense|output\.dense)\.weight$|(^|\.)pooler\.dense\.weight$"
    )

    def matches(self, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return config is not None and getattr(config, "model_type", None) == "bert"

    def task(self, model: nn.Module) -> str:
        return "fill-mask" if type(model).__name__.endswith("ForMaskedLM") else "feature-extraction"

    def save(self, model: nn.Module, folder) -> None:
        model.save_pretrained(folder)

    def display_name(self, model: nn.Module) -> str:
        return f"bert-{model.config.num_hidden_layers}L"

    def _encoder_prefix(self, model: nn.Module) -> str:
        for name, module in model.named_modules():
            if name.endswith("encoder") and isinstance(getattr(module, "layer", None), nn.ModuleList):
                return f"{name}.layer"
        raise ValueError("this BERT model has no encoder.layer module list")

    def layout(self, model: nn.Module) -> Layout:
        enc = self._encoder_prefix(model)
        n = len(model.get_submodule(enc))
        blocks = [Block(f"{enc}.{i}", 1, i, False) for i in range(n)]
        base = enc[: -len("encoder.layer")]
        stem = [f"{base}embeddings"]
        head = [p for p in (f"{base}pooler", "cls", "classifier", "qa_outputs") if has_module(model, p)]
        return Layout(self.name, stem, blocks, head, {1: "encoder"})

    def default_prunable(self, model: nn.Module) -> list[str]:
        return [n for n, _ in model.named_parameters() if self._prunable_re.search(n)]

    def architecture(self, model: nn.Module) -> dict:
        arch = type(model).__name__
        return {"library": "transformers", "architecture": arch, "config": model.config.to_dict()}

    def build(self, architecture: Mapping[str, Any]) -> nn.Module:
        import transformers

        config = transformers.BertConfig.from_dict(architecture["config"])
        cls = getattr(transformers, architecture.get("architecture", "BertForMaskedLM"))
        return cls(config)

    def check_architecture(self, architecture: Mapping[str, Any]) -> None:
        arch = architecture.get("architecture", "BertForMaskedLM")
        if arch not in ARCHITECTURES:
            raise ValueError(f"lottery_rg.architecture must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
        config = architecture.get("config") or {}
        if config.get("model_type") != "bert":
            raise ValueError(f"model_type must be 'bert', got {config.get('model_type')!r}")
        for key, (lo, hi) in BERT_BOUNDS.items():
            if key in config:
                check_int(config[key], key, lo, hi)

    def signature(self, model: nn.Module) -> dict:
        c = model.config
        return {"family": self.name, "architecture": type(model).__name__, "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size, "num_attention_heads": c.num_attention_heads,
                "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        if len(depths) != 1:
            raise ValueError(f"BERT has one stage of encoder layers, got depths {tuple(depths)}")
        arch = self.architecture(model)
        config = dict(arch["config"], num_hidden_layers=int(depths[0]))
        return {**arch, "config": config}

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        m = re.fullmatch(r"(?:bert[-_])?(\d+)(?:[-_ ]?layers?)?", str(name))
        if not m:
            raise ValueError(f"name a BERT target by its number of encoder layers (e.g. '8' or 'bert-8'), got {name!r}")
        return self.with_depths(like, [int(m.group(1))])

    def derived_metrics(self, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        if self.task(model) == "fill-mask" and "eval_loss" in metrics:
            return {"eval_perplexity": perplexity(metrics["eval_loss"])}
        return {}

    def scratch_kwargs(self, model_kwargs: Mapping[str, Any] | None, max_seq_length: int) -> dict:
        """``BertConfig`` keyword arguments of a from-scratch BERT (``embedded-bert``) from ``--model_kwargs``.

        Defaults: 4 layers of 256 hidden units, one attention head per 64 hidden units, a feed-forward
        layer 4x as wide, and position embeddings for ``max(max_seq_length, 128)`` tokens. Refused before any
        work: keys that are not ``BertConfig`` fields, and sizes out of bounds.
        """
        from transformers import BertConfig

        kwargs = dict(model_kwargs or {})
        unknown = sorted(set(kwargs) - set(BertConfig().to_dict()))
        if unknown:
            raise ValueError(f"--model_kwargs {unknown} are not BertConfig fields (e.g. num_hidden_layers, "
                             f"hidden_size, hidden_dropout_prob)")
        for key, value in SCRATCH_DEFAULTS.items():
            kwargs.setdefault(key, value)
        for key, (lo, hi) in BERT_BOUNDS.items():
            if key in kwargs:
                check_int(kwargs[key], f"--model_kwargs {key}", lo, hi)
        hidden = kwargs["hidden_size"]
        kwargs.setdefault("num_attention_heads", max(1, hidden // 64))
        kwargs.setdefault("intermediate_size", 4 * hidden)
        kwargs.setdefault("max_position_embeddings", max(max_seq_length, 128))
        if hidden % kwargs["num_attention_heads"]:
            raise ValueError(f"--model_kwargs: hidden_size {hidden} is not a multiple of num_attention_heads "
                             f"{kwargs['num_attention_heads']}")
        return kwargs
