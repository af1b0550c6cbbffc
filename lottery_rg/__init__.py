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
    flow/                  the IMP flow M_i(n), eigenvalues and classes, seeds pooled, uncertainties, Eq. 14, plots
    branches/              stability (linear mode connectivity), elastic transfer, baselines, the elastic experiment
    hub/                   LotteryTicket and the model cards
    training/              LotteryTrainer and its command-line dataclasses
    tasks/                 image classification and masked-LM data and models for the trainer
    report, cli            the end-of-run summary; the ``lottery-rg`` command line
"""

import contextlib
import gc
import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

from .version import __version__  # noqa: F401  (lottery_rg.__version__)

# The public API, imported on first use (PEP 562): ``import lottery_rg`` costs no torch, timm or
# transformers import, and ``from lottery_rg import LotteryTrainer`` imports only what the trainer needs.
_LAZY = {
    "ElasticResult": "branches.elastic", "ElasticTicket": "branches.elastic",
    "InstabilityResult": "branches.stability", "IMPFlow": "flow", "LotteryTicket": "hub.ticket",
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
    "register_family", "imports_without_collection",
]
_SUBPACKAGES = ("io", "plotting", "run", "models", "pruning", "flow", "branches", "hub", "training", "tasks", "report",
                "cli", "version")

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


@contextlib.contextmanager
def imports_without_collection(freeze: bool = False):
    """Import heavy modules with the cyclic garbage collector paused.

    Importing torch, datasets and transformers creates ~10^6 objects, which sets off full
    collections that walk every object made so far (~0.8 s of a 4.5 s start-up here). Module
    objects live as long as the process, so those collections free nothing. The collector's
    state is restored afterwards. ``freeze=True`` (for a program's entry point) also moves
    every object that exists by then into the permanent generation (:func:`gc.freeze`), so
    no later collection walks them again; without it, the first collection afterwards does.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze:
            gc.freeze()
        if enabled:
            gc.enable()


def __getattr__(name):
    """The public API and the sub-packages, imported on first access."""
    if name in _LAZY:
        with imports_without_collection():
            value = getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    if name in _SUBPACKAGES or name in _MOVED:
        with imports_without_collection():
            return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBPACKAGES))


class _RegisterCifarResNets(importlib.abc.MetaPathFinder):
    """Registers ``resnet{14,20,32,44,56,110}_cifar`` in timm as soon as timm is imported.

    ``import lottery_rg`` does not import timm (2-3 s with torchvision); a program that imports timm
    afterwards still finds the CIFAR ResNets in ``timm.create_model`` / ``timm.list_models``, and
    every lottery_rg path that builds a model imports :mod:`lottery_rg.models.cifar_resnet` itself.
    """

    target = f"{__name__}.models.cifar_resnet"

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "timm":
            return None
        for finder in sys.meta_path:  # the spec the import would have found without this finder
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        exec_timm, register = loader.exec_module, self.target

        def exec_module(module):
            exec_timm(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            if register not in sys.modules:  # (not when cifar_resnet itself is importing timm)
                importlib.import_module(register)

        loader.exec_module = exec_module
        return spec


if "timm" in sys.modules:
    importlib.import_module(f"{__name__}.models.cifar_resnet")
else:
    sys.meta_path.insert(0, _RegisterCifarResNets())
