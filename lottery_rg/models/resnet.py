"""The ResNet family: every timm ``ResNet``, and the CIFAR ResNets (He et al. 2016, §4.2) registered in timm.

Three stages of 16/32/64 channels with ``n`` basic blocks each (depth = 6n + 2), a 3x3
stem without max-pooling, and a 1x1-conv projection shortcut where a stage changes
width or resolution (open_lth's choice). The class subclasses timm's ``ResNet`` and
reuses its blocks, so module names (``conv1``, ``layer1.0.conv2``, ``fc``) match every
other timm ResNet and one family description covers both. After ``import lottery_rg.models``,
``timm.create_model("resnet20_cifar")`` builds one, and ``pretrained=True`` with
``pretrained_cfg_overlay=dict(file=...)`` loads saved weights through timm's own path.

:class:`ResNetFamily`: stem (conv1/bn1), stages ``layer1…layerN`` of residual blocks (the units of the
flow and of elastic transfer, Chen et al. 2021), head ``fc``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import torch
from timm.layers import create_classifier, get_act_layer, get_norm_layer
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet, make_blocks
from torch import nn

from .families import Block, Layout, TimmFamily, check_depths, module_weights

__all__ = ["CifarResNet", "CIFAR_RESNET_DEPTHS", "ResNetFamily"]

#: depth -> basic blocks per stage (depth = 6n + 2)
CIFAR_RESNET_DEPTHS = {14: 2, 20: 3, 32: 5, 44: 7, 56: 9, 110: 18}
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class CifarResNet(ResNet):
    """ResNet for 32x32 inputs: 3x3 stem, three stages, global pooling, linear head."""

    def __init__(
        self,
        layers: tuple[int, ...] = (3, 3, 3),
        channels: tuple[int, ...] = (16, 32, 64),
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        act_layer="relu",
        norm_layer="batchnorm2d",
        zero_init_last: bool = False,
    ):
        nn.Module.__init__(self)  # ResNet.__init__ hard-codes an ImageNet stem; build our own
        act_layer, norm_layer = get_act_layer(act_layer), get_norm_layer(norm_layer)
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.grad_checkpointing = False
        stem = channels[0]
        self.conv1 = nn.Conv2d(in_chans, stem, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = norm_layer(stem)
        self.act1 = act_layer(inplace=True)
        self.maxpool = nn.Identity()
        self.feature_info = [dict(num_chs=stem, reduction=1, module="act1")]
        stages, stage_info = make_blocks(
            (BasicBlock,) * len(channels), tuple(channels), tuple(layers), stem,
            act_layer=act_layer, norm_layer=norm_layer,
        )
        for name, stage in stages:
            self.add_module(name, stage)
        self.stage_names = tuple(name for name, _ in stages)
        self.feature_info.extend(stage_info)
        self.num_features = self.head_hidden_size = channels[-1] * BasicBlock.expansion
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.init_weights(zero_init_last=zero_init_last)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.act1(self.bn1(self.conv1(x))))
        for name in self.stage_names:  # --gradient_checkpointing: timm's set_grad_checkpointing, per block
            stage = getattr(self, name)
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and torch.is_grad_enabled() else stage(x)
        return x

    def forward_intermediates(self, *args, **kwargs):
        raise NotImplementedError("forward_intermediates is not implemented for CIFAR ResNets")


def _cfg(depth: int) -> dict:
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (8, 8),
        "crop_pct": 1.0, "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD,
        "first_conv": "conv1", "classifier": "fc", "license": "apache-2.0",
        "architecture": f"resnet{depth}_cifar",
    }


default_cfgs = generate_default_cfgs({f"resnet{d}_cifar": _cfg(d) for d in CIFAR_RESNET_DEPTHS})


def _create(depth: int, pretrained: bool, **kwargs) -> CifarResNet:
    n = CIFAR_RESNET_DEPTHS[depth]
    kwargs.setdefault("layers", (n, n, n))
    return build_model_with_cfg(CifarResNet, f"resnet{depth}_cifar", pretrained,
                                feature_cfg=dict(flatten_sequential=True), **kwargs)


@register_model
def resnet14_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-14 for CIFAR (2 blocks per stage)."""
    return _create(14, pretrained, **kwargs)


@register_model
def resnet20_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-20 for CIFAR (3 blocks per stage)."""
    return _create(20, pretrained, **kwargs)


@register_model
def resnet32_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-32 for CIFAR (5 blocks per stage)."""
    return _create(32, pretrained, **kwargs)


@register_model
def resnet44_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-44 for CIFAR (7 blocks per stage)."""
    return _create(44, pretrained, **kwargs)


@register_model
def resnet56_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-56 for CIFAR (9 blocks per stage)."""
    return _create(56, pretrained, **kwargs)


@register_model
def resnet110_cifar(pretrained: bool = False, **kwargs) -> CifarResNet:
    """ResNet-110 for CIFAR (18 blocks per stage)."""
    return _create(110, pretrained, **kwargs)


class ResNetFamily(TimmFamily):
    """timm ResNets: stem (conv1/bn1), stages ``layer1…layerN`` of residual blocks, head ``fc``.

    Default prunable set: the weight of every convolution and linear layer, head
    included (open_lth's choice for CIFAR and ImageNet ResNets).
    """

    name = "resnet"
    model_arg_keys = ("layers",)
    _stage_re = re.compile(r"^layer(\d+)$")

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ResNet)

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
        return module_weights(model, (nn.Conv2d, nn.Linear))

    def model_args(self, model: nn.Module) -> dict:
        depths = self.layout(model).depths()
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        return {"layers": list(depths)} if name and depths != _default_depths(name) else {}

    def check_model_args(self, model_args) -> None:
        if "layers" in model_args:
            check_depths(model_args["layers"], "lottery_rg.model_args.layers")

    def signature(self, model: nn.Module) -> dict:
        layout = self.layout(model)
        block_types = sorted({type(model.get_submodule(b.prefix)).__name__ for b in layout.blocks})
        widths = [f["num_chs"] for f in getattr(model, "feature_info", [])[1:]]
        ends = {n: tuple(p.shape) for n, p in model.named_parameters() if layout.part_of(n) in ("stem", "head")}
        return {"family": self.name, "class": type(model).__name__, "block_type": block_types,
                "stages": layout.num_stages, "widths": widths, "stem_and_head": ends}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        arch = {k: v for k, v in self.architecture(model).items() if k != "model_args"}
        depths = tuple(int(d) for d in depths)
        if len(depths) != self.layout(model).num_stages or min(depths) < 1:
            raise ValueError(f"{arch['architecture']} has {self.layout(model).num_stages} stages; got depths {depths}")
        if isinstance(model, CifarResNet) and len(set(depths)) == 1 and depths[0] in CIFAR_RESNET_DEPTHS.values():
            return {**arch, "architecture": f"resnet{6 * depths[0] + 2}_cifar"}
        if depths != _default_depths(arch["architecture"]):
            arch["model_args"] = {"layers": list(depths)}
        return arch

    def card_details(self, model: nn.Module) -> dict:
        if isinstance(model, CifarResNet):
            return {"registration": "import lottery_rg.models  # registers the CIFAR ResNets with timm"}
        return {}


@functools.cache
def _default_depths(name: str) -> tuple[int, ...]:
    """Blocks per stage of a registered timm ResNet, built on the meta device (no memory, no time)."""
    import timm

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False)
    return ResNetFamily().layout(model).depths()
