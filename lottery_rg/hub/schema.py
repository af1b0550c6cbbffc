"""What a ticket folder's ``config.json`` may say: a schema of allowed keys and bounded values.

A ticket folder is data, never instructions. Before anything is built from it, its
``config.json`` is checked here: only known keys, only plain JSON values, sizes and depths
within sane bounds, and nothing that names a file to open or code to run (no timm
``checkpoint_path`` / ``pretrained_cfg_overlay``, no transformers ``auto_map``). The mask is
checked against the family's prunable tensors of the model built from it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["TicketConfigError", "FORMAT_VERSION", "validate_ticket_config", "check_prunable", "check_tokenizer_config"]

FORMAT_VERSION = 2  # 2: model.safetensors = trained weights of the level, rewind.safetensors = θ_k ⊙ m
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 16
MAX_DEPTH = 1000  # blocks per stage / encoder layers
MAX_STAGES = 8
MAX_LEVEL = 10_000
BERT_BOUNDS = {  # key: (min, max)
    "hidden_size": (1, 16_384), "num_hidden_layers": (1, MAX_DEPTH), "num_attention_heads": (1, 512),
    "intermediate_size": (1, 65_536), "vocab_size": (1, 1_000_000), "max_position_embeddings": (1, 131_072),
    "type_vocab_size": (1, 64),
}
_BERT_ARCHITECTURES = {"BertForMaskedLM", "BertModel", "BertForPreTraining", "BertForSequenceClassification",
                       "BertForTokenClassification", "BertForQuestionAnswering", "BertForMultipleChoice"}
_TIMM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_LOTTERY_KEYS = {"version", "format", "family", "library", "architecture", "num_classes", "in_chans", "model_args",
                 "level", "density", "surviving", "prunable_total", "prunable", "lottery", "info", "model_weights",
                 "config"}
# keys that name files or code; refused wherever they appear in a ticket's config
_CODE_OR_FILE_KEYS = {"auto_map", "checkpoint_path", "pretrained_cfg_overlay", "file", "hf_hub_id", "hf_hub_filename",
                      "url", "custom_pipelines", "trust_remote_code", "pretrained_model_name_or_path",
                      "tokenizer_file", "state_dict_path"}


class TicketConfigError(ValueError):
    """A ticket's ``config.json`` (or mask) does not fit the schema; the message names the file and the key."""


def _int(value, key: str, lo: int, hi: int, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise TicketConfigError(f"{where}: {key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _refuse_code_keys(obj, where: str, path: str = "") -> None:
    if isinstance(obj, Mapping):
        for k, v in obj.items():
            if not isinstance(k, str):
                raise TicketConfigError(f"{where}: non-string key {k!r} at {path or 'top level'}")
            if k in _CODE_OR_FILE_KEYS:
                raise TicketConfigError(f"{where}: {path + k!r} names a file or code to run; a ticket's config is "
                                        f"data only and may not carry it")
            _refuse_code_keys(v, where, f"{path}{k}.")
    elif isinstance(obj, list):
        for v in obj:
            _refuse_code_keys(v, where, path)


def validate_ticket_config(cfg, where: str) -> dict:
    """Check a ticket's ``config.json`` (``where`` names it in errors); returns its ``lottery_rg`` section."""
    if not isinstance(cfg, dict):
        raise TicketConfigError(f"{where} is not a JSON object")
    meta = cfg.get("lottery_rg")
    if not isinstance(meta, dict):
        raise TicketConfigError(f"{where} has no 'lottery_rg' section: not a lottery ticket (a plain checkpoint?)")
    _refuse_code_keys({k: v for k, v in cfg.items() if k != "lottery_rg"}, where)
    _refuse_code_keys(meta.get("model_args") or {}, where, "lottery_rg.model_args.")
    unknown = sorted(set(meta) - _LOTTERY_KEYS)
    if unknown:
        raise TicketConfigError(f"{where}: unknown keys in the lottery_rg section: {unknown}")
    fmt = meta.get("format", 1)
    _int(fmt, "lottery_rg.format", 1, FORMAT_VERSION, where)
    if meta.get("model_weights", "rewind") not in ("rewind", "trained"):
        raise TicketConfigError(f"{where}: lottery_rg.model_weights must be 'rewind' or 'trained', "
                                f"got {meta.get('model_weights')!r}")
    _int(meta.get("level", 0), "lottery_rg.level", 0, MAX_LEVEL, where)
    prunable = meta.get("prunable")
    if prunable is not None and (not isinstance(prunable, list) or not all(isinstance(p, str) for p in prunable)):
        raise TicketConfigError(f"{where}: lottery_rg.prunable must be a list of parameter names")
    for key in ("lottery", "info"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            raise TicketConfigError(f"{where}: lottery_rg.{key} must be an object")
    family = meta.get("family")
    library = meta.get("library")
    if family == "resnet" or library == "timm":
        _check_timm(meta, where)
    elif family == "bert" or library == "transformers":
        _check_bert(cfg, meta, where)
    return meta


def _check_timm(meta: dict, where: str) -> None:
    name = meta.get("architecture")
    if not isinstance(name, str) or not _TIMM_NAME.match(name):
        raise TicketConfigError(f"{where}: lottery_rg.architecture must be a timm model name, got {name!r}")
    _int(meta.get("num_classes", 1000), "lottery_rg.num_classes", 1, MAX_NUM_CLASSES, where)
    _int(meta.get("in_chans", 3), "lottery_rg.in_chans", 1, MAX_IN_CHANS, where)
    model_args = meta.get("model_args") or {}
    if not isinstance(model_args, dict) or set(model_args) - {"layers"}:
        extra = sorted(set(model_args) - {"layers"}) if isinstance(model_args, dict) else model_args
        raise TicketConfigError(f"{where}: lottery_rg.model_args may only set 'layers', got {extra!r}")
    if "layers" in model_args:
        layers = model_args["layers"]
        if not isinstance(layers, list) or not 1 <= len(layers) <= MAX_STAGES:
            raise TicketConfigError(f"{where}: lottery_rg.model_args.layers must list 1..{MAX_STAGES} depths")
        for d in layers:
            _int(d, "lottery_rg.model_args.layers[i]", 1, MAX_DEPTH, where)


def _check_bert(cfg: dict, meta: dict, where: str) -> None:
    arch = meta.get("architecture", "BertForMaskedLM")
    if arch not in _BERT_ARCHITECTURES:
        raise TicketConfigError(f"{where}: lottery_rg.architecture must be one of {sorted(_BERT_ARCHITECTURES)}, "
                                f"got {arch!r}")
    if cfg.get("model_type") != "bert":
        raise TicketConfigError(f"{where}: model_type must be 'bert', got {cfg.get('model_type')!r}")
    for key, (lo, hi) in BERT_BOUNDS.items():
        if key in cfg:
            _int(cfg[key], key, lo, hi, where)


def check_prunable(meta: dict, model, family, mask_names, where: str) -> None:
    """The mask names exactly the ticket's prunable tensors, and those are prunable tensors of the family."""
    allowed = set(family.default_prunable(model))
    prunable = meta.get("prunable")
    if prunable is not None:
        bad = sorted(set(prunable) - allowed)
        if bad:
            raise TicketConfigError(f"{where}: lottery_rg.prunable names tensors that are not prunable in a "
                                    f"{family.name} model: {bad[:8]}")
    expected = set(prunable) if prunable is not None else None
    names = set(mask_names)
    not_prunable = sorted(names - allowed)
    if not_prunable:
        raise TicketConfigError(f"the ticket mask has entries for tensors that are not prunable in a {family.name} "
                                f"model: {not_prunable[:8]}")
    if expected is not None and names != expected:
        missing, extra = sorted(expected - names), sorted(names - expected)
        raise TicketConfigError(f"the ticket mask does not name exactly the prunable tensors of {where}: "
                                f"missing {missing[:8]}, extra {extra[:8]}")


def check_tokenizer_config(cfg, where: str) -> None:
    """A tokenizer shipped with a ticket is data too: no ``auto_map`` or other code references."""
    if not isinstance(cfg, dict):
        raise TicketConfigError(f"{where} is not a JSON object")
    _refuse_code_keys({k: v for k, v in cfg.items() if k != "tokenizer_file"}, where)
