"""Model-family descriptions: the one place that knows how a network is built.

Pruning asks a family which tensors are prunable, the IMP flow asks it which tensors form
a block or a stage, and ElasticTicket asks it which blocks may be replicated or dropped and
how to build a deeper or shallower sibling. Nothing else in lottery_rg inspects module
names. A family describes a model through a :class:`Layout` (stem, blocks grouped into
stages, head), computed from the live module tree rather than from a table of names.

Families: ``resnet`` (every timm ``ResNet``, ImageNet-style resnet18…152 and the CIFAR
ResNets of :mod:`lottery_rg.cifar_resnet`) and ``bert`` (``transformers`` BERT models,
e.g. ``BertForMaskedLM``). Add one by subclassing :class:`ModelFamily` and calling
:func:`register_family`.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from torch import nn

__all__ = [
    "Block", "Layout", "Unit", "ModelFamily", "ResNetFamily", "BertFamily", "GRANULARITIES",
    "register_family", "get_family", "family_of", "prunable_parameters",
]

GRANULARITIES = ("tensor", "block", "stage")


@dataclass(frozen=True)
class Block:
    """A replicable unit of a network: a residual block or a transformer encoder layer."""

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


@dataclass
class Layout:
    """Stem, blocks (grouped into stages) and head of one model, by module prefix."""

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
        if any(param.startswith(p + ".") for p in self.stem):
            return "stem"
        if any(param.startswith(p + ".") for p in self.head):
            return "head"
        return "other"

    def units(self, params: Sequence[str], granularity: str = "block") -> list[Unit]:
        """Group prunable ``params`` into flow units at one granularity (tensor, block, stage)."""
        if granularity not in GRANULARITIES:
            raise ValueError(f"granularity must be one of {GRANULARITIES}, got {granularity!r}")
        groups: dict[str, dict] = {}

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


class ModelFamily:
    """What lottery_rg needs to know about one kind of network."""

    name: str = ""
    library: str = ""  # the library whose checkpoints the family's models are: "timm" or "transformers"

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def task(self, model: nn.Module) -> str:
        """The pipeline task ``model`` serves (``image-classification``, ``fill-mask``…)."""
        raise NotImplementedError

    def save(self, model: nn.Module, folder) -> None:
        """Write ``model`` as an ordinary checkpoint of its library (``config.json`` + ``model.safetensors``)."""
        raise NotImplementedError

    def display_name(self, model: nn.Module) -> str:
        """A short name that tells depths apart (``resnet20_cifar``, ``resnet18[1, 1, 2, 2]``, ``bert-4L``)."""
        raise NotImplementedError

    def layout(self, model: nn.Module) -> Layout:
        raise NotImplementedError

    def default_prunable(self, model: nn.Module) -> list[str]:
        """Parameter names pruned when the user gives no include/exclude patterns."""
        raise NotImplementedError

    def architecture(self, model: nn.Module) -> dict:
        """JSON-able description from which :meth:`build` recreates the (untrained) model."""
        raise NotImplementedError

    def build(self, architecture: dict) -> nn.Module:
        raise NotImplementedError

    def signature(self, model: nn.Module) -> dict:
        """Everything but depth that two members must share for a ticket to move between them."""
        raise NotImplementedError

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        """Architecture description of a sibling of ``model`` with ``depths`` blocks per stage."""
        raise NotImplementedError

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        """Architecture description for a target named by the user (e.g. 'resnet32_cifar')."""
        raise NotImplementedError


def _module_weights(model: nn.Module, types: tuple[type, ...]) -> list[str]:
    names = []
    for mname, module in model.named_modules():
        if isinstance(module, types) and getattr(module, "weight", None) is not None:
            names.append(f"{mname}.weight" if mname else "weight")
    return names


class ResNetFamily(ModelFamily):
    """timm ResNets: stem (conv1/bn1), stages ``layer1…layerN`` of residual blocks, head ``fc``.

    Default prunable set: the weight of every convolution and linear layer, head
    included (open_lth's choice for CIFAR and ImageNet ResNets).
    """

    name = "resnet"
    library = "timm"
    _stage_re = re.compile(r"^layer(\d+)$")

    def matches(self, model: nn.Module) -> bool:
        from timm.models.resnet import ResNet

        return isinstance(model, ResNet)

    def task(self, model: nn.Module) -> str:
        return "image-classification"

    def save(self, model: nn.Module, folder) -> None:
        from timm.models import save_for_hf

        save_for_hf(model, str(folder), safe_serialization=True)

    def display_name(self, model: nn.Module) -> str:
        arch = self.architecture(model)
        return arch["architecture"] + (f"{arch['model_args']['layers']}" if "model_args" in arch else "")

    def _stages(self, model: nn.Module) -> list[tuple[int, str, nn.Module]]:
        out = []
        for name, module in model.named_children():
            m = self._stage_re.match(name)
            if m and isinstance(module, nn.Sequential) and len(module) > 0:
                out.append((int(m.group(1)), name, module))
        return sorted(out)

    def layout(self, model: nn.Module) -> Layout:
        blocks, stage_names = [], {}
        for stage, name, seq in self._stages(model):
            stage_names[stage] = name
            for i, block in enumerate(seq):
                blocks.append(Block(f"{name}.{i}", stage, i, getattr(block, "downsample", None) is not None))
        stage_modules = set(stage_names.values())
        head = [n for n in ("global_pool", "fc", "head") if hasattr(model, n)]
        stem = [n for n, _ in model.named_children() if n not in stage_modules and n not in head]
        return Layout(self.name, stem, blocks, head, stage_names)

    def default_prunable(self, model: nn.Module) -> list[str]:
        return _module_weights(model, (nn.Conv2d, nn.Linear))

    def architecture(self, model: nn.Module) -> dict:
        cfg = getattr(model, "pretrained_cfg", None) or {}
        name = cfg.get("architecture")
        if not name:
            raise ValueError(f"cannot tell which timm architecture built this {type(model).__name__}")
        arch = {"library": "timm", "architecture": name, "num_classes": int(model.num_classes),
                "in_chans": int(getattr(model, "in_chans", 3))}
        depths = self.layout(model).depths()
        if depths != _default_depths(name):
            arch["model_args"] = {"layers": list(depths)}
        return arch

    def build(self, architecture: dict) -> nn.Module:
        import timm

        from . import cifar_resnet  # noqa: F401  (registers the CIFAR ResNets)

        name = architecture["architecture"]
        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}")
        model_args = dict(architecture.get("model_args") or {})
        if "layers" in model_args:
            model_args["layers"] = tuple(model_args["layers"])
        return timm.create_model(name, pretrained=False, num_classes=architecture.get("num_classes", 1000),
                                 in_chans=architecture.get("in_chans", 3), **model_args)

    def signature(self, model: nn.Module) -> dict:
        layout = self.layout(model)
        block_types = sorted({type(model.get_submodule(b.prefix)).__name__ for b in layout.blocks})
        widths = [f["num_chs"] for f in getattr(model, "feature_info", [])[1:]]
        ends = {n: tuple(p.shape) for n, p in model.named_parameters() if layout.part_of(n) in ("stem", "head")}
        return {"family": self.name, "class": type(model).__name__, "block_type": block_types,
                "stages": layout.num_stages, "widths": widths, "stem_and_head": ends}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        from .cifar_resnet import CIFAR_RESNET_DEPTHS

        arch = {k: v for k, v in self.architecture(model).items() if k != "model_args"}
        depths = tuple(int(d) for d in depths)
        if len(depths) != self.layout(model).num_stages or min(depths) < 1:
            raise ValueError(f"{arch['architecture']} has {self.layout(model).num_stages} stages; got depths {depths}")
        cifar = type(model).__name__ == "CifarResNet"
        if cifar and len(set(depths)) == 1 and depths[0] in CIFAR_RESNET_DEPTHS.values():
            return {**arch, "architecture": f"resnet{6 * depths[0] + 2}_cifar"}
        if depths != _default_depths(arch["architecture"]):
            arch["model_args"] = {"layers": list(depths)}
        return arch

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        import timm

        from . import cifar_resnet  # noqa: F401

        if not timm.is_model(name):
            raise ValueError(f"unknown timm model {name!r}")
        return {k: v for k, v in self.architecture(like).items() if k != "model_args"} | {"architecture": name}


@functools.cache
def _default_depths(name: str) -> tuple[int, ...]:
    """Blocks per stage of a registered timm ResNet, built on the meta device (no memory, no time)."""
    import timm
    import torch

    from . import cifar_resnet  # noqa: F401

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return ResNetFamily().layout(model).depths()


class BertFamily(ModelFamily):
    """BERT encoders (``transformers``): embeddings, one stage of encoder layers, pooler/MLM head.

    Default prunable set (Chen et al. 2020, BERT tickets): in every encoder layer the
    query, key, value, attention-output, intermediate and output dense weights, plus the
    pooler. Embeddings, LayerNorms, biases and the MLM head are not pruned.
    """

    name = "bert"
    library = "transformers"
    _prunable_re = re.compile(
        r"(^|\.)encoder\.layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense|"
        r"intermediate\.dense|output\.dense)\.weight$|(^|\.)pooler\.dense\.weight$"
    )

    def matches(self, model: nn.Module) -> bool:
        config = getattr(model, "config", None)
        return config is not None and getattr(config, "model_type", None) == "bert"

    def task(self, model: nn.Module) -> str:
        return "fill-mask" if type(model).__name__.endswith("ForMaskedLM") else "feature-extraction"

    def save(self, model: nn.Module, folder) -> None:
        model.save_pretrained(folder)

    def display_name(self, model: nn.Module) -> str:
        return f"bert-{model.config.num_hidden_layers}L"

    def _encoder_prefix(self, model: nn.Module) -> str:
        for name, module in model.named_modules():
            if name.endswith("encoder") and isinstance(getattr(module, "layer", None), nn.ModuleList):
                return f"{name}.layer"
        raise ValueError("this BERT model has no encoder.layer module list")

    def layout(self, model: nn.Module) -> Layout:
        enc = self._encoder_prefix(model)
        n = len(model.get_submodule(enc))
        blocks = [Block(f"{enc}.{i}", 1, i, False) for i in range(n)]
        base = enc[: -len("encoder.layer")]
        stem = [f"{base}embeddings"]
        head = [p for p in (f"{base}pooler", "cls", "classifier", "qa_outputs") if _has_module(model, p)]
        return Layout(self.name, stem, blocks, head, {1: "encoder"})

    def default_prunable(self, model: nn.Module) -> list[str]:
        return [n for n, _ in model.named_parameters() if self._prunable_re.search(n)]

    def architecture(self, model: nn.Module) -> dict:
        arch = type(model).__name__
        return {"library": "transformers", "architecture": arch, "config": model.config.to_dict()}

    def build(self, architecture: dict) -> nn.Module:
        import transformers

        config = transformers.BertConfig.from_dict(architecture["config"])
        cls = getattr(transformers, architecture.get("architecture", "BertForMaskedLM"))
        return cls(config)

    def signature(self, model: nn.Module) -> dict:
        c = model.config
        return {"family": self.name, "architecture": type(model).__name__, "hidden_size": c.hidden_size,
                "intermediate_size": c.intermediate_size, "num_attention_heads": c.num_attention_heads,
                "vocab_size": c.vocab_size, "max_position_embeddings": c.max_position_embeddings}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        if len(depths) != 1:
            raise ValueError(f"BERT has one stage of encoder layers, got depths {tuple(depths)}")
        arch = self.architecture(model)
        config = dict(arch["config"], num_hidden_layers=int(depths[0]))
        return {**arch, "config": config}

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        m = re.fullmatch(r"(?:bert[-_])?(\d+)(?:[-_ ]?layers?)?", str(name))
        if not m:
            raise ValueError(f"name a BERT target by its number of encoder layers (e.g. '8' or 'bert-8'), got {name!r}")
        return self.with_depths(like, [int(m.group(1))])


def _has_module(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
        return True
    except AttributeError:
        return False


_FAMILIES: dict[str, ModelFamily] = {}


def register_family(family: ModelFamily) -> ModelFamily:
    _FAMILIES[family.name] = family
    return family


register_family(ResNetFamily())
register_family(BertFamily())


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
        f"supported: {sorted(_FAMILIES)} (timm ResNets, CIFAR ResNets, BERT)"
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
