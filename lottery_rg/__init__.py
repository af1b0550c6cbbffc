"""lottery_rg: lottery tickets by IMP with rewinding, their RG flow, and elastic transfer.

Public API::

    from lottery_rg import LotteryTrainer, LotteryArguments, MaskCallback      # IMP with rewinding
    from lottery_rg import LotteryTicket, IMPFlow, ElasticTicket              # tickets, flows, transfer
    from lottery_rg import InstabilityResult                                  # linear mode connectivity
    from lottery_rg import family_of, prunable_parameters, next_mask, load_mask, save_mask
"""

from . import cifar_resnet  # noqa: F401  (registers resnet{14,20,32,44,56,110}_cifar in timm)
from .arguments import DataArguments, LotteryArguments, ModelArguments
from .families import Block, Layout, ModelFamily, Unit, family_of, get_family, prunable_parameters, register_family
from .ticket import LotteryTicket
from .masks import MaskEnforcer, apply_mask, load_mask, magnitude_prune, mask_density, next_mask, save_mask
from .trainer import LotteryResult, LotteryTrainer, MaskCallback

from .version import __version__  # noqa: F401  (lottery_rg.__version__)


def __getattr__(name):
    # imported on first use so that `python -m lottery_rg.flow` (or .stability) runs the module only once
    if name == "IMPFlow":
        from .flow import IMPFlow

        return IMPFlow
    if name == "InstabilityResult":
        from .stability import InstabilityResult

        return InstabilityResult
    if name in ("ElasticTicket", "ElasticResult"):
        from . import elastic

        return getattr(elastic, name)
    raise AttributeError(f"module 'lottery_rg' has no attribute {name!r}")


__all__ = [
    "LotteryTrainer", "LotteryTicket", "IMPFlow", "ElasticTicket", "ElasticResult", "LotteryArguments",
    "ModelArguments", "DataArguments", "LotteryResult", "MaskCallback", "InstabilityResult",
    "MaskEnforcer", "apply_mask", "load_mask", "save_mask", "magnitude_prune", "next_mask", "mask_density",
    "Block", "Layout", "ModelFamily", "Unit", "family_of", "get_family", "prunable_parameters", "register_family",
]
