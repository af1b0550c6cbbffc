"""The model-family contract: what lottery_rg needs to know about one kind of network, and the registry.

A family is the one owner of everything lottery_rg knows about a kind of network: which tensors are
prunable, how the network divides into stem, blocks (grouped into stages) and head, how it is saved
and rebuilt, what a ticket's ``config.json`` may say about it, what its model card adds, and how a
deeper or shallower sibling is built for elastic transfer. Pruning, the IMP flow, tickets, cards and
``ElasticTicket`` ask the family; nothing else in lottery_rg inspects module names.

The families live one per module in :mod:`lottery_rg.models` (``resnet``, ``vgg``, ``vit``, ``bert``),
each registered there with one line; the contract test suite (``tests/test_family_contract.py``)
runs every registered family through the same checks. docs/families.md shows how to add one.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "Block", "Layout", "Unit", "ModelFamily", "TimmFamily", "GRANULARITIES", "register_family", "get_family",
    "family_of", "families", "prunable_parameters", "module_weights", "check_int", "MAX_DEPTH", "MAX_STAGES",
]

GRANULARITIES = ("tensor", "block", "stage")
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 16
MAX_DEPTH = 1000  # blocks per stage / encoder layers
MAX_STAGES = 8
_TIMM_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class Block:
    """A replicable unit of a network: a residual block, a VGG layer (conv + BatchNorm) or a transformer block."""

    prefix: str  # module path, e.g. "layer2.0" or "bert.encoder.layer.3"
    stage: int  # 1-based stage number
    index: int  # 0-based position inside its stage; index 0 is the stage's entry block
    downsample: bool  # changes resolution or width (has a projection shortcut)

    @property
    def name(self) -> str:
        return self.prefix


@dataclass(frozen=True)
class Unit:
    """A group of prunable tensors whose share M_i(n) of the surviving weights the flow tracks."""

    name: str
    kind: str  # "tensor", "stem", "block", "stage", "head" or "other"
    stage: int | None
    index: int | None  # block index inside its stage (blocks and their tensors)
    downsample: bool
    params: tuple[str, ...]


def _under(name: str, prefix: str) -> bool:
    """``name`` is the module or parameter ``prefix`` or lies inside it."""
    return name == prefix or name.startswith(prefix + ".")


@dataclass
class Layout:
    """Stem, blocks (grouped into stages) and head of one model, by module (or parameter) prefix."""

    family: str
    stem: list[str]
    blocks: list[Block]
    head: list[str]
    stage_names: dict[int, str] = field(default_factory=dict)

    @property
    def num_stages(self) -> int:
        return max((b.stage for b in self.blocks), default=0)

    def stages(self) -> dict[int, list[Block]]:
        out: dict[int, list[Block]] = {}
        for b in self.blocks:
            out.setdefault(b.stage, []).append(b)
        return out

    def depths(self) -> tuple[int, ...]:
        """Number of blocks in each stage."""
        return tuple(len(v) for _, v in sorted(self.stages().items()))

    def block_of(self, param: str) -> Block | None:
        for b in self.blocks:
            if param.startswith(b.prefix + "."):
                return b
        return None

    def part_of(self, param: str) -> str:
        """'stem', 'block', 'head' or 'other' for a parameter or buffer name."""
        if self.block_of(param) is not None:
            return "block"
        if any(_under(param, p) for p in self.stem):
            return "stem"
        if any(_under(param, p) for p in self.head):
            return "head"
        return "other"

    def units(self, params: Sequence[str], granularity: str = "block") -> list[Unit]:
        """Group prunable ``params`` into flow units at one granularity (tensor, block, stage)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        groups: dict[str, dict[str, Any]] = {}

        def add(name: str, kind: str, stage, index, downsample, param):
            g = groups.setdefault(name, dict(kind=kind, stage=stage, index=index, downsample=downsample, params=[]))
            g["params"].append(param)

        for p in params:
            block = self.block_of(p)
            part = "block" if block is not None else self.part_of(p)
            if granularity == "tensor":
                add(p, "tensor", block.stage if block else None, block.index if block else None,
                    block.downsample if block else False, p)
            elif block is None:
                add(part, part, None, None, False, p)
            elif granularity == "block":
                add(block.prefix, "block", block.stage, block.index, block.downsample, p)
            else:
                add(self.stage_names.get(block.stage, f"stage{block.stage}"), "stage", block.stage, None, False, p)
        return [Unit(n, g["kind"], g["stage"], g["index"], g["downsample"], tuple(g["params"]))
                for n, g in groups.items()]


def check_int(value: Any, key: str, lo: int, hi: int) -> int:
    """``value`` if it is an integer in [lo, hi]; otherwise a ``ValueError`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


class ModelFamily:
    """What lottery_rg needs to know about one kind of network.

    Subclass it in one module of :mod:`lottery_rg.models` and register an instance there. The methods
    up to :meth:`check_architecture` are required; elastic transfer needs :meth:`signature`,
    :meth:`with_depths` and :meth:`resolve_architecture` (families without depth siblings leave them
    raising ``NotImplementedError``); the rest have defaults.
    """

    name: str = ""
    library: str = ""  # the library whose checkpoints the family's models are: "timm" or "transformers"
    convolutional: bool = False  # a network of 2-D convolutions: --fast auto trains it channels-last

    # ------------------------------------------------------------------ recognising and describing a model
    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def task(self, model: nn.Module) -> str:
        """The pipeline task ``model`` serves (``image-classification``, ``fill-mask``…)."""
        raise NotImplementedError

    def layout(self, model: nn.Module) -> Layout:
        """Stem, blocks grouped into stages, and head: the units of the IMP flow and of elastic transfer."""
        raise NotImplementedError

    def default_prunable(self, model: nn.Module) -> list[str]:
        """Parameter names pruned when the user gives no include/exclude patterns."""
        raise NotImplementedError

    def display_name(self, model: nn.Module) -> str:
        """A short name that tells depths apart (``resnet20_cifar``, ``resnet18[1, 1, 2, 2]``, ``bert-4L``)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving and rebuilding
    def architecture(self, model: nn.Module) -> dict:
        """JSON-able description from which :meth:`build` recreates the (untrained) model."""
        raise NotImplementedError

    def build(self, architecture: Mapping[str, Any]) -> nn.Module:
        raise NotImplementedError

    def save(self, model: nn.Module, folder: str | os.PathLike) -> None:
        """Write ``model`` as an ordinary checkpoint of its library (``config.json`` + ``model.safetensors``)."""
        raise NotImplementedError

    def check_architecture(self, architecture: Mapping[str, Any]) -> None:
        """Refuse (``ValueError``) an architecture read from a ticket's ``config.json`` before anything is built.

        A ticket folder is data: only known keys and bounded values may reach :meth:`build`.
        """
        raise NotImplementedError

    # ------------------------------------------------------------------ elastic transfer (optional)
    def signature(self, model: nn.Module) -> dict:
        """Everything but depth that two members must share for a ticket to move between them."""
        raise NotImplementedError(f"the {self.name} family has no depth siblings: elastic transfer does not apply")

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        """Architecture description of a sibling of ``model`` with ``depths`` blocks per stage."""
        raise NotImplementedError(f"the {self.name} family has no depth siblings: elastic transfer does not apply")

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        """Architecture description for a target named by the user (e.g. 'resnet32_cifar')."""
        raise NotImplementedError(f"the {self.name} family has no depth siblings: elastic transfer does not apply")

    # ------------------------------------------------------------------ optional hooks
    def input_kwargs(self, model: nn.Module, image_size: int | None) -> dict:
        """Constructor arguments that make ``model``'s kind accept inputs of ``image_size`` (none by default;
        a ViT's position embeddings are built for one image size)."""
        return {}

    def derived_metrics(self, model: nn.Module, metrics: Mapping[str, float]) -> dict:
        """Metrics computed from the evaluation metrics (a masked-LM's perplexity from its loss)."""
        return {}

    def card_details(self, model: nn.Module) -> dict:
        """Extra variables for the ticket's model card (``registration``: the import that makes a model of
        this family loadable by plain timm, for architectures lottery_rg registers)."""
        return {}


class TimmFamily(ModelFamily):
    """What every timm image classifier shares: timm's registry, ``save_for_hf`` checkpoints, ``model_args``.

    A subclass names its model class (:meth:`matches`), its layout and prunable set, and which constructor
    arguments (``model_arg_keys``) its architecture records beyond the registered name; :meth:`model_args`
    returns them for a model and :meth:`check_model_args` bounds them in a ticket's ``config.json``.
    """

    library = "timm"
    model_arg_keys: tuple[str, ...] = ()

    def task(self, model: nn.Module) -> str:
        return "image-classification"

    def display_name(self, model: nn.Module) -> str:
        arch = self.architecture(model)
        args = arch.get("model_args")
        return arch["architecture"] + (f"{list(args.values())[0]}" if args and len(args) == 1 else
                                       (f"{args}" if args else ""))

    def model_args(self, model: nn.Module) -> dict:
        """Constructor arguments beyond the registered name (only those that differ from its defaults)."""
        return {}

    def check_model_args(self, model_args: Mapping[str, Any]) -> None:
        """Bounds on the recorded constructor arguments (keys are already checked against ``model_arg_keys``)."""

    def architecture(self, model: nn.Module) -> dict:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        name = cfg.get("architecture")
        if not name:
            raise ValueError(f"cannot tell which timm architecture built this {type(model).__name__}")
        arch = {"library": "timm", "architecture": name, "num_classes": int(model.num_classes),
                "in_chans": int(getattr(model, "in_chans", 3))}
        model_args = self.model_args(model)
        if model_args:
            arch["model_args"] = model_args
        return arch

    def build(self, architecture: Mapping[str, Any]) -> nn.Module:
        import timm

        name = architecture["architecture"]
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}")
        model_args = {k: tuple(v) if isinstance(v, list) else v
                      for k, v in (architecture.get("model_args") or {}).items()}
        return timm.create_model(name, pretrained=False, num_classes=architecture.get("num_classes", 1000),
                                 in_chans=architecture.get("in_chans", 3), **model_args)

    def save(self, model: nn.Module, folder: str | os.PathLike) -> None:
        from timm.models import save_for_hf

        # the family's constructor arguments: timm rebuilds the same model from config.json alone
        model_args = {k: list(v) if isinstance(v, tuple) else v for k, v in self.model_args(model).items()}
        save_for_hf(model, str(folder), model_args=model_args or None, safe_serialization=True)

    def check_architecture(self, architecture: Mapping[str, Any]) -> None:
        name = architecture.get("architecture")
        if not isinstance(name, str) or not _TIMM_NAME.match(name):
            raise ValueError(f"lottery_rg.architecture must be a timm model name, got {name!r}")
        check_int(architecture.get("num_classes", 1000), "lottery_rg.num_classes", 1, MAX_NUM_CLASSES)
        check_int(architecture.get("in_chans", 3), "lottery_rg.in_chans", 1, MAX_IN_CHANS)
        model_args = architecture.get("model_args") or {}
        if not isinstance(model_args, dict) or set(model_args) - set(self.model_arg_keys):
            extra = sorted(set(model_args) - set(self.model_arg_keys)) if isinstance(model_args, dict) else model_args
            raise ValueError(f"lottery_rg.model_args of a {self.name} model may only set {list(self.model_arg_keys)}, "
                             f"got {extra!r}")
        self.check_model_args(model_args)

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}")
        return {k: v for k, v in self.architecture(like).items() if k != "model_args"} | {"architecture": name}


def check_depths(value: Any, key: str, stages: tuple[int, int] = (1, MAX_STAGES)) -> None:
    """A list of 1..MAX_STAGES block counts per stage, each in [1, MAX_DEPTH]."""
    if not isinstance(value, list) or not stages[0] <= len(value) <= stages[1]:
        raise ValueError(f"{key} must list {stages[0]}..{stages[1]} depths, got {value!r}")
    for d in value:
        check_int(d, f"{key}[i]", 1, MAX_DEPTH)


def module_weights(model: nn.Module, types: tuple[type, ...], under: str | None = None) -> list[str]:
    """Names of the ``weight`` of every module of ``types`` (inside module ``under`` when given)."""
    names = []
    for mname, module in model.named_modules():
        if isinstance(module, types) and getattr(module, "weight", None) is not None:
            if under is None or _under(mname, under):
                names.append(f"{mname}.weight" if mname else "weight")
    return names


def has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    """Make ``family`` known to :func:`family_of` and :func:`get_family` (families are asked in this order)."""
    if not family.name:
        raise ValueError(f"{type(family).__name__} has no name")
    _FAMILIES[family.name] = family
    return family


def families() -> list[ModelFamily]:
    """Every registered family, in the order :func:`family_of` asks them."""
    return list(_FAMILIES.values())


def get_family(name: str) -> ModelFamily:
    try:
        return _FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(_FAMILIES)}") from None


def family_of(model: nn.Module) -> ModelFamily:
    """The family describing ``model``; a clear error for models lottery_rg does not know."""
    model = getattr(model, "module", model)  # DDP
    for family in _FAMILIES.values():
        if family.matches(model):
            return family
    raise ValueError(
        f"lottery_rg has no model-family description for {type(model).__name__}; "
        f"supported families: {sorted(_FAMILIES)} (see docs/families.md to add one)"
    )


def prunable_parameters(
    model: nn.Module, include: Iterable[str] | None = None, exclude: Iterable[str] | None = None
) -> list[str]:
    """Names of the parameters IMP prunes, in ``named_parameters`` order.

    ``include`` (regular expressions, matched with ``re.search``) replaces the family's
    default set by every parameter matching any pattern; ``exclude`` then removes
    matches. Raises if nothing is left to prune.
    """
    include, exclude = list(include or []), list(exclude or [])
    names = [n for n, _ in model.named_parameters()]
    if include:
        chosen = [n for n in names if any(re.search(p, n) for p in include)]
    else:
        chosen = family_of(model).default_prunable(model)
    chosen = [n for n in chosen if not any(re.search(p, n) for p in exclude)]
    if not chosen:
        raise ValueError(
            f"the include patterns {include or '(family default)'} and exclude patterns {exclude} "
            f"leave no parameter of {type(model).__name__} to prune"
        )
    order = {n: i for i, n in enumerate(names)}
    return sorted(set(chosen), key=order.__getitem__)
