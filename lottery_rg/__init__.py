"""lottery_rg: lottery tickets by IMP with rewinding, their RG flow, and elastic transfer.

Public API::

    from lottery_rg import LotteryTrainer, LotteryArguments, MaskCallback
    from lottery_rg import family_of, prunable_parameters, next_mask, load_mask, save_mask
"""

from . import cifar_resnet  # noqa: F401  (registers resnet{14,20,32,44,56,110}_cifar in timm)
from .arguments import DataArguments, LotteryArguments, ModelArguments
from .families import Block, Layout, ModelFamily, Unit, family_of, get_family, prunable_parameters, register_family
from .masks import MaskEnforcer, apply_mask, load_mask, magnitude_prune, mask_density, next_mask, save_mask
from .trainer import LotteryResult, LotteryTrainer, MaskCallback

from .version import __version__  # noqa: E402

__all__ = [
    "LotteryTrainer", "LotteryArguments", "ModelArguments", "DataArguments", "LotteryResult", "MaskCallback",
    "MaskEnforcer", "apply_mask", "load_mask", "save_mask", "magnitude_prune", "next_mask", "mask_density",
    "Block", "Layout", "ModelFamily", "Unit", "family_of", "get_family", "prunable_parameters", "register_family",
]
