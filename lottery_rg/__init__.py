"""lottery_rg: lottery tickets by IMP with rewinding, their RG flow, and elastic transfer.

Public API::

    from lottery_rg import LotteryTrainer, LotteryArguments, MaskCallback      # IMP with rewinding
    from lottery_rg import LotteryTicket, IMPFlow, ElasticTicket              # tickets, flows, transfer
    from lottery_rg import InstabilityResult                                  # linear mode connectivity
    from lottery_rg import family_of, prunable_parameters, next_mask, load_mask, save_mask

The package, by concern (imports flow downwards only)::

    io, plotting, run      atomic files and JSON; figures and tables; RunDir (every path of a run)
    models/                model families (prunable tensors, blocks, stages), CIFAR ResNets, loading by name
    pruning/               masks and magnitude pruning, typed lottery settings, mask enforcement
    flow/                  the IMP flow M_i(n), eigenvalues and classes, Eq. 14, the paper's plots
    branches/              stability (linear mode connectivity), elastic transfer, baselines, the elastic experiment
    hub/                   LotteryTicket and the model cards
    training/              LotteryTrainer and its command-line dataclasses
    tasks/                 image classification and masked-LM data and models for the trainer
    report, cli            the end-of-run summary; the ``lottery-rg`` command line
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

from .branches.elastic import ElasticResult, ElasticTicket
from .branches.stability import InstabilityResult
from .flow import IMPFlow
from .hub.ticket import LotteryTicket
from .models import cifar_resnet  # noqa: F401  (registers resnet{14,20,32,44,56,110}_cifar in timm)
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
from .training.arguments import DataArguments, LotteryArguments, ModelArguments
from .training.trainer import LotteryTrainer
from .version import __version__  # noqa: F401  (lottery_rg.__version__)

__all__ = [
    "LotteryTrainer", "LotteryTicket", "IMPFlow", "ElasticTicket", "ElasticResult", "LotteryArguments",
    "ModelArguments", "DataArguments", "LotteryResult", "LotterySettings", "RunDir", "MaskCallback", "keep_masked",
    "InstabilityResult", "MaskEnforcer", "apply_mask", "load_mask", "save_mask", "magnitude_prune", "next_mask",
    "mask_density", "Block", "Layout", "ModelFamily", "Unit", "family_of", "get_family", "prunable_parameters",
    "register_family",
]

# Modules of lottery_rg 0.1 and where they live now. The old paths keep working (with a DeprecationWarning
# naming the new one), and `python -m lottery_rg.stability` still runs the stability command line.
_MOVED = {
    "arguments": "training.arguments", "trainer": "training.trainer", "ticket": "hub.ticket",
    "families": "models.families", "cifar_resnet": "models.cifar_resnet", "modeling": "models.loading",
    "masks": "pruning.masks", "baselines": "branches.baselines", "stability": "branches.stability",
    "elastic": "branches.elastic", "flow_plots": "flow.plots", "scaling": "flow.scaling", "summary": "report",
    "mlm": "tasks.mlm", "image_data": "tasks.image", "text_data": "tasks.text",
}
_MAIN = {"stability": "stability_main"}  # old module -> its command line in lottery_rg.cli


class _MovedModule(types.ModuleType):
    """Stands for a moved module: every attribute comes from the new one, or the error names it."""

    def __getattr__(self, name):
        new = self.__dict__["_lottery_rg_target"]
        try:
            return getattr(importlib.import_module(new), name)
        except AttributeError:
            raise AttributeError(f"{self.__name__}.{name} does not exist any more: lottery_rg.{self.__name__} "
                                 f"moved to {new}, and {name!r} is not there (see the README's Design section)") \
                from None


class _MovedFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, fullname, path=None, target=None):
        old = fullname.removeprefix(__name__ + ".")
        if fullname.startswith(__name__ + ".") and old in _MOVED:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        old = spec.name.removeprefix(__name__ + ".")
        new = f"{__name__}.{_MOVED[old]}"
        warnings.warn(f"{spec.name} moved to {new}; import it from there (or from lottery_rg)", DeprecationWarning,
                      stacklevel=3)
        module = _MovedModule(spec.name, f"moved to {new}")
        module._lottery_rg_target = new
        return module

    def exec_module(self, module):
        pass

    def get_code(self, fullname):  # `python -m lottery_rg.stability`
        old = fullname.removeprefix(__name__ + ".")
        if old not in _MAIN:
            raise ImportError(f"{fullname} moved to {__name__}.{_MOVED[old]} and has no command line")
        return compile(f"import sys\nfrom lottery_rg.cli import {_MAIN[old]}\nsys.exit({_MAIN[old]}())",
                       fullname, "exec")


sys.meta_path.append(_MovedFinder())
