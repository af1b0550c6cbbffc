"""lottery_rg: lottery tickets by IMP with rewinding, their RG flow, and elastic transfer."""

from . import cifar_resnet  # noqa: F401  (registers resnet{14,20,32,44,56,110}_cifar in timm)
from .families import Block, Layout, ModelFamily, Unit, family_of, get_family, prunable_parameters, register_family

__version__ = "0.1.0"
