"""What a ticket folder's ``config.json`` may say: a schema of allowed keys and bounded values.

A ticket folder is data, never instructions. Before anything is built from it, its
``config.json`` is checked here: only known keys, only plain JSON values, and nothing that
names a file to open or code to run (no timm ``checkpoint_path`` / ``pretrained_cfg_overlay``,
no transformers ``auto_map``); the model family then bounds what it allows (sizes, depths,
constructor arguments: :meth:`ModelFamily.check_architecture`). The mask is checked against the
ticket's recorded prunable tensors and the parameters of the model built from it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from torch import nn

from ..models.families import ModelFamily, get_family

__all__ = ["TicketConfigError", "FORMAT_VERSION", "validate_ticket_config", "ticket_architecture", "check_prunable",
           "check_tokenizer_config"]

FORMAT_VERSION = 2  # 2: model.safetensors = trained weights of the level, rewind.safetensors = θ_k ⊙ m
MAX_LEVEL = 10_000
_LOTTERY_KEYS = {"version", "format", "family", "library", "architecture", "num_classes", "in_chans", "model_args",
                 "level", "density", "surviving", "prunable_total", "prunable", "lottery", "info", "model_weights",
                 "config"}
_ARCHITECTURE_KEYS = ("library", "architecture", "num_classes", "in_chans", "model_args", "config")
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
    family = _family(meta, where)
    try:
        family.check_architecture(ticket_architecture(cfg, meta))
    except ValueError as e:
        raise TicketConfigError(f"{where}: {e}") from None
    return meta


def _family(meta: dict, where: str) -> ModelFamily:
    try:
        return get_family(meta.get("family"))
    except ValueError as e:
        raise TicketConfigError(f"{where}: lottery_rg.family: {e}") from None


def ticket_architecture(cfg: Mapping[str, Any], meta: Mapping[str, Any]) -> dict:
    """The architecture description a ticket's ``config.json`` gives its family's ``build``.

    A transformers model's configuration is ``config.json`` itself (less the ``lottery_rg`` section).
    """
    arch = {k: v for k, v in meta.items() if k in _ARCHITECTURE_KEYS}
    if arch.get("library") == "transformers":
        arch["config"] = {k: v for k, v in cfg.items() if k != "lottery_rg"}
    return arch


def check_prunable(meta: Mapping[str, Any], model: nn.Module, mask_names: Sequence[str], where: str) -> None:
    """The mask names exactly the ticket's recorded prunable tensors, and those are parameters of ``model``.

    The recorded set, not the family's default, is the reference: a run with ``--prune_include`` prunes
    tensors the family would not, and its tickets load like any other.
    """
    params = {n for n, p in model.named_parameters() if p.is_floating_point()}
    prunable = meta.get("prunable")
    if prunable is not None:
        bad = sorted(set(prunable) - params)
        if bad:
            raise TicketConfigError(f"{where}: lottery_rg.prunable names tensors that are not parameters of the "
                                    f"{type(model).__name__} it describes: {bad[:8]}")
    names = set(mask_names)
    not_params = sorted(names - params)
    if not_params:
        raise TicketConfigError(f"the ticket mask has entries for tensors that are not parameters of the "
                                f"{type(model).__name__} of {where}: {not_params[:8]}")
    if prunable is not None and names != set(prunable):
        missing, extra = sorted(set(prunable) - names), sorted(names - set(prunable))
        raise TicketConfigError(f"the ticket mask does not name exactly the prunable tensors of {where}: "
                                f"missing {missing[:8]}, extra {extra[:8]}")


def check_tokenizer_config(cfg, where: str) -> None:
    """A tokenizer shipped with a ticket is data too: no ``auto_map`` or other code references."""
    if not isinstance(cfg, dict):
        raise TicketConfigError(f"{where} is not a JSON object")
    _refuse_code_keys({k: v for k, v in cfg.items() if k != "tokenizer_file"}, where)
