"""The VGG family: VGG-11/13/16/19 with BatchNorm for 32x32 images, registered in timm as ``vgg{11,13,16,19}_cifar``.

The network of Simonyan & Zisserman (2015) in the CIFAR form that open_lth and the Elastic Lottery Ticket
experiments use (Chen et al. 2021, "The Elastic Lottery Ticket Hypothesis", §4 and Fig. 7): five stages of
3x3 convolutions with 64, 128, 256, 512 and 512 channels, each convolution followed by BatchNorm and ReLU,
2x2 max-pooling between two stages, then global average pooling and one linear classifier. VGG-11/13/16/19
have 1-1-2-2-2, 2-2-2-2-2, 2-2-3-3-3 and 2-2-4-4-4 convolutions per stage. Weights are Kaiming-normal
(open_lth's initializer), biases zero. ``timm.create_model("vgg16_cifar")`` builds one after
``import lottery_rg.models``; ``depths`` and ``channels`` build any other member (``channels`` narrows it for
small experiments).

:class:`VGGFamily`: a *layer* — a convolution with its BatchNorm — is the unit of the flow and of elastic
transfer (E-LTH's unit for VGG, §3.1); a stage is the run of layers between two poolings, and its first
layer (which changes the width) is the stage's entry block, copied one to one by elastic transfer. There is
no stem; the head is the classifier. Default prunable set: every convolution weight; the classifier is not
pruned (open_lth's choice for VGG).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from timm.layers import create_classifier, get_act_layer, get_norm_layer
from timm.models import build_model_with_cfg, checkpoint_seq, generate_default_cfgs, register_model
from torch import nn

from .families import MAX_STAGES, Block, Layout, TimmFamily, check_depths, check_int, module_weights

__all__ = ["CifarVGG", "VGGFamily", "VGG_DEPTHS", "VGG_CHANNELS"]

#: depth -> convolutions per stage
VGG_DEPTHS = {11: (1, 1, 2, 2, 2), 13: (2, 2, 2, 2, 2), 16: (2, 2, 3, 3, 3), 19: (2, 2, 4, 4, 4)}
VGG_CHANNELS = (64, 128, 256, 512, 512)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
MAX_CHANNELS = 4096


class ConvBN(nn.Module):
    """One VGG layer: 3x3 convolution, BatchNorm, ReLU (the unit that elastic transfer replicates or drops)."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer, act_layer):
        super().__init__()
        self.conv = nn.Conv2d(in_chs, out_chs, kernel_size=3, padding=1)
        self.bn = norm_layer(out_chs)
        self.act = act_layer(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


class CifarVGG(nn.Module):
    """VGG with BatchNorm for small images: stages of ``ConvBN`` layers, max-pooling between them, linear head."""

    def __init__(
        self,
        depths: Sequence[int] = VGG_DEPTHS[16],
        channels: Sequence[int] = VGG_CHANNELS,
        num_classes: int = 10,
        in_chans: int = 3,
        global_pool: str = "avg",
        drop_rate: float = 0.0,
        act_layer="relu",
        norm_layer="batchnorm2d",
    ):
        super().__init__()
        if len(depths) != len(channels) or min(depths, default=0) < 1:
            raise ValueError(f"a VGG needs one channel count per stage and >= 1 layer per stage, got depths "
                             f"{tuple(depths)} and channels {tuple(channels)}")
        act_layer, norm_layer = get_act_layer(act_layer), get_norm_layer(norm_layer)
        self.num_classes, self.in_chans, self.drop_rate = num_classes, in_chans, drop_rate
        self.depths, self.channels = tuple(int(d) for d in depths), tuple(int(c) for c in channels)
        self.grad_checkpointing = False
        stages, prev, self.feature_info = [], in_chans, []
        for i, (depth, width) in enumerate(zip(self.depths, self.channels)):
            layers = []
            for _ in range(depth):
                layers.append(ConvBN(prev, width, norm_layer, act_layer))
                prev = width
            stages.append(nn.Sequential(*layers))
            self.feature_info.append(dict(num_chs=width, reduction=2 ** i, module=f"stages.{i}"))
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2)
        self.num_features = self.head_hidden_size = self.channels[-1]
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)
        self.head_drop = nn.Dropout(drop_rate)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pool(x)
            x = checkpoint_seq(stage, x) if self.grad_checkpointing and torch.is_grad_enabled() else stage(x)
        return x

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """timm's switch for activation checkpointing (``--gradient_checkpointing``): each layer's activations
        are recomputed in the backward pass instead of kept."""
        self.grad_checkpointing = enable

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.head_drop(self.global_pool(x))
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.fc

    def reset_classifier(self, num_classes: int, global_pool: str = "avg") -> None:
        self.num_classes = num_classes
        self.global_pool, self.fc = create_classifier(self.num_features, num_classes, pool_type=global_pool)


def _cfg(depth: int) -> dict:
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": (2, 2), "crop_pct": 1.0,
        "interpolation": "bilinear", "mean": CIFAR_MEAN, "std": CIFAR_STD, "first_conv": "stages.0.0.conv",
        "classifier": "fc", "license": "apache-2.0", "architecture": f"vgg{depth}_cifar",
    }


default_cfgs = generate_default_cfgs({f"vgg{d}_cifar": _cfg(d) for d in VGG_DEPTHS})


def _create(depth: int, pretrained: bool, **kwargs) -> CifarVGG:
    kwargs.setdefault("depths", VGG_DEPTHS[depth])
    return build_model_with_cfg(CifarVGG, f"vgg{depth}_cifar", pretrained, **kwargs)


@register_model
def vgg11_cifar(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-11 with BatchNorm for CIFAR (1-1-2-2-2 convolutions per stage)."""
    return _create(11, pretrained, **kwargs)


@register_model
def vgg13_cifar(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-13 with BatchNorm for CIFAR (2-2-2-2-2 convolutions per stage)."""
    return _create(13, pretrained, **kwargs)


@register_model
def vgg16_cifar(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-16 with BatchNorm for CIFAR (2-2-3-3-3 convolutions per stage)."""
    return _create(16, pretrained, **kwargs)


@register_model
def vgg19_cifar(pretrained: bool = False, **kwargs) -> CifarVGG:
    """VGG-19 with BatchNorm for CIFAR (2-2-4-4-4 convolutions per stage)."""
    return _create(19, pretrained, **kwargs)


@functools.cache
def _registered_depths(name: str) -> tuple[int, ...] | None:
    depth = name.removeprefix("vgg").removesuffix("_cifar")
    return VGG_DEPTHS.get(int(depth)) if depth.isdigit() else None


class VGGFamily(TimmFamily):
    """CIFAR VGGs: stages of layers (convolution + BatchNorm) between poolings, a linear head, no stem."""

    name = "vgg"
    model_arg_keys = ("depths", "channels")

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, CifarVGG)

    def layout(self, model: nn.Module) -> Layout:
        blocks = [Block(f"stages.{i}.{j}", i + 1, j, j == 0)
                  for i, stage in enumerate(model.stages) for j in range(len(stage))]
        return Layout(self.name, [], blocks, ["global_pool", "fc"], {i + 1: f"stages.{i}"
                                                                    for i in range(len(model.stages))})

    def default_prunable(self, model: nn.Module) -> list[str]:
        return module_weights(model, (nn.Conv2d,))

    def display_name(self, model: nn.Module) -> str:
        arch = self.architecture(model)
        depths = (arch.get("model_args") or {}).get("depths")
        return arch["architecture"] + (f"{depths}" if depths else "")

    def model_args(self, model: nn.Module) -> dict:
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture", "")
        args: dict[str, Any] = {}
        if model.depths != _registered_depths(name):
            args["depths"] = list(model.depths)
        if model.channels != VGG_CHANNELS:
            args["channels"] = list(model.channels)
        return args

    def check_model_args(self, model_args: Mapping[str, Any]) -> None:
        if "depths" in model_args:
            check_depths(model_args["depths"], "lottery_rg.model_args.depths")
        if "channels" in model_args:
            channels = model_args["channels"]
            if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_STAGES:
                raise ValueError(f"lottery_rg.model_args.channels must list 1..{MAX_STAGES} widths, got {channels!r}")
            for c in channels:
                check_int(c, "lottery_rg.model_args.channels[i]", 1, MAX_CHANNELS)

    def input_kwargs(self, model: nn.Module, image_size: int | None) -> dict:
        smallest = 2 ** (len(model.stages) - 1)
        if image_size is not None and image_size < smallest:
            raise ValueError(f"a VGG with {len(model.stages)} stages pools {len(model.stages) - 1} times: it needs "
                             f"images of at least {smallest} pixels, got --image_size {image_size}")
        return {}

    def signature(self, model: nn.Module) -> dict:
        head = {n: tuple(p.shape) for n, p in model.named_parameters() if n.startswith("fc.")}
        return {"family": self.name, "class": type(model).__name__, "stages": len(model.stages),
                "widths": list(model.channels), "in_chans": model.in_chans, "head": head}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        arch = {k: v for k, v in self.architecture(model).items() if k != "model_args"}
        depths = tuple(int(d) for d in depths)
        if len(depths) != len(model.stages) or min(depths) < 1:
            raise ValueError(f"{arch['architecture']} has {len(model.stages)} stages; got depths {depths}")
        standard = next((d for d, ds in VGG_DEPTHS.items() if ds == depths), None)
        if standard is not None:
            arch["architecture"] = f"vgg{standard}_cifar"
        args = {} if standard is not None else {"depths": list(depths)}
        if model.channels != VGG_CHANNELS:
            args["channels"] = list(model.channels)
        return {**arch, "model_args": args} if args else arch

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        depths = _registered_depths(name)
        if depths is None:
            raise ValueError(f"name a VGG target vgg11_cifar, vgg13_cifar, vgg16_cifar or vgg19_cifar, got {name!r}")
        return self.with_depths(like, depths)

    def card_details(self, model: nn.Module) -> dict:
        return {"registration": "import lottery_rg.models  # registers the CIFAR VGGs with timm"}
