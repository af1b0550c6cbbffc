"""lottery_rg: lottery tickets by IMP with rewinding, their RG flow, and elastic transfer.

Public API::

    from lottery_rg import LotteryTrainer, LotteryArguments, MaskCallback      # IMP with rewinding
    from lottery_rg import LotteryTicket, IMPFlow, ElasticTicket              # tickets, flows, transfer
    from lottery_rg import InstabilityResult                                  # linear mode connectivity
    from lottery_rg import family_of, prunable_parameters, next_mask, load_mask, save_mask

The layers, lowest first. A module imports only from its own layer and the layers below it
(``tests/test_layers.py`` checks this; ``import_cycles.py --packages`` finds no cycle)::

    1  version, errors, io, redact, plotting  version; one-line refusals; atomic files, JSON; secrets out; figures
    1  evaluate_modules           the tasks' metrics as evaluate modules, loaded by path (package data)
    2  models                     model families (prunable tensors, blocks, stages, configs), one module each
    3  pruning                    masks and magnitude pruning, typed lottery settings, mask enforcement
    4  run                        RunDir: every file of a run, its settings lock and its records
    5  flow, stability            what a run's levels show: the IMP flow; linear mode connectivity
    6  hub, report                LotteryTicket, model cards and Hub pushes; the end-of-run summary
    7  training                   LotteryTrainer, its command-line dataclasses, rewind point, launcher guards
    8  tasks                      image classification and masked-LM data and models for the trainer
    9  branches                   elastic transfer, baselines, the elastic experiment
    10 cli, __main__              the ``lottery-rg`` command line
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .version import __version__  # noqa: F401  (lottery_rg.__version__)

if TYPE_CHECKING:  # what static type checkers see; at run time the names are imported on first use
    from .branches.elastic import ElasticResult, ElasticTicket
    from .flow import IMPFlow
    from .hub.ticket import LotteryTicket
    from .models.families import (
        Block,
        Layout,
        ModelFamily,
        Unit,
        family_of,
        get_family,
        prunable_parameters,
        register_family,
    )
    from .pruning.callbacks import MaskCallback, keep_masked
    from .pruning.masks import MaskEnforcer, apply_mask, load_mask, magnitude_prune, mask_density, next_mask, save_mask
    from .pruning.settings import LotterySettings
    from .run import LotteryResult, RunDir
    from .stability import InstabilityResult
    from .training.arguments import DataArguments, LotteryArguments, ModelArguments
    from .training.trainer import LotteryTrainer

# The public API, imported on first use (PEP 562): ``import lottery_rg`` costs no torch, timm or
# transformers import, and ``from lottery_rg import LotteryTrainer`` imports only what the trainer needs.
_LAZY = {
    "ElasticResult": "branches.elastic", "ElasticTicket": "branches.elastic",
    "InstabilityResult": "stability", "IMPFlow": "flow", "LotteryTicket": "hub.ticket",
    "Block": "models.families", "Layout": "models.families", "ModelFamily": "models.families",
    "Unit": "models.families", "family_of": "models.families", "get_family": "models.families",
    "prunable_parameters": "models.families", "register_family": "models.families",
    "MaskCallback": "pruning.callbacks", "keep_masked": "pruning.callbacks",
    "MaskEnforcer": "pruning.masks", "apply_mask": "pruning.masks", "load_mask": "pruning.masks",
    "magnitude_prune": "pruning.masks", "mask_density": "pruning.masks", "next_mask": "pruning.masks",
    "save_mask": "pruning.masks", "LotterySettings": "pruning.settings", "LotteryResult": "run", "RunDir": "run",
    "DataArguments": "training.arguments", "LotteryArguments": "training.arguments",
    "ModelArguments": "training.arguments", "LotteryTrainer": "training.trainer",
}
__all__ = [
    "LotteryTrainer", "LotteryTicket", "IMPFlow", "ElasticTicket", "ElasticResult", "LotteryArguments",
    "ModelArguments", "DataArguments", "LotteryResult", "LotterySettings", "RunDir", "MaskCallback", "keep_masked",
    "InstabilityResult", "MaskEnforcer", "apply_mask", "load_mask", "save_mask", "magnitude_prune", "next_mask",
    "mask_density", "Block", "Layout", "ModelFamily", "Unit", "family_of", "get_family", "prunable_parameters",
    "register_family",
]
_SUBPACKAGES = ("errors", "io", "plotting", "run", "models", "pruning", "flow", "stability", "branches", "hub",
                "training", "tasks", "report", "cli", "version")


def __getattr__(name: str) -> object:
    """The public API and the sub-packages, imported on first access."""
    if name in _LAZY:
        value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBPACKAGES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))
