"""What lottery_rg knows about networks: one module per model family, registered here.

Importing this package registers every family with lottery_rg, and the architectures lottery_rg defines
(``resnet{14,20,32,44,56,110}_cifar``, ``vgg{11,13,16,19}_cifar``) with timm's model registry, the way
``import timm`` registers timm's own. A family module holds everything about its kind of network (see
:mod:`.families` for the contract and docs/families.md for adding one); adding a family is that module plus
one line below (and one entry in ``tests/test_family_contract.py``).
"""

from .bert import BertFamily
from .families import (
    Block,
    Layout,
    ModelFamily,
    TimmFamily,
    Unit,
    families,
    family_of,
    get_family,
    prunable_parameters,
    register_family,
)
from .resnet import ResNetFamily
from .vgg import VGGFamily
from .vit import ViTFamily

__all__ = ["Block", "Layout", "ModelFamily", "TimmFamily", "Unit", "families", "family_of", "get_family",
           "prunable_parameters", "register_family", "ResNetFamily", "VGGFamily", "ViTFamily", "BertFamily"]

# the registry: one line per family, asked in this order by family_of
register_family(ResNetFamily())
register_family(VGGFamily())
register_family(ViTFamily())
register_family(BertFamily())
