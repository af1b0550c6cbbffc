"""The Vision Transformer family: timm ``VisionTransformer`` models (Dosovitskiy et al. 2021).

Any registered timm ViT, e.g. ``vit_tiny_patch16_224`` built at the data's image size with a small patch:
``--model_name_or_path vit_tiny_patch16_224 --image_size 16 --model_kwargs '{"patch_size": 4}'`` builds it
for 16x16 images cut into 4x4 patches (the family adds ``img_size`` from ``--image_size`` itself). Its tickets
are ordinary timm checkpoints: ``config.json`` records ``model_args`` (image size, patch size, depth…), so
plain ``timm.create_model("hf-hub:…", pretrained=True)`` rebuilds and loads them.

:class:`ViTFamily`, the layout:

* **stem** — the patch embedding with the class token and the position embeddings (``patch_embed``,
  ``cls_token``, ``pos_embed``, ``norm_pre``);
* **blocks** — the transformer blocks ``blocks.0 … blocks.N-1`` (attention and MLP with their norms), the
  unit of the IMP flow and of elastic transfer (E-LTH's unit for transformers, Chen et al. 2021, §3.1);
* **stages** — one: a ViT keeps one token grid and one width from its first block to its last, so no block
  changes the shape of the representation and nothing marks a stage boundary (as in BERT's encoder). The
  stage-level flow therefore has three units, stem, ``blocks`` and head, and block 0 is the stage's entry
  block (copied one to one by elastic transfer, never replicated);
* **head** — the final norm (``norm``/``fc_norm``) and the classifier ``head``.

Default prunable set: the weights of every linear layer of the blocks — attention ``qkv`` and ``proj``, MLP
``fc1`` and ``fc2``, the BERT-tickets choice for an encoder (Chen et al. 2020) — and the classifier head's (as
for ResNets). The patch embedding, position embeddings, class token, norms and biases are not pruned.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .families import MAX_DEPTH, Block, Layout, TimmFamily, check_int, has_module, module_weights

__all__ = ["ViTFamily"]

_STEM = ("patch_embed", "cls_token", "reg_token", "pos_embed", "norm_pre")
_HEAD = ("attn_pool", "norm", "fc_norm", "head_drop", "head")
MAX_IMAGE = 4096
_POOLS = ("", "token", "avg", "avgmax", "max", "map")


def _shape(model: nn.Module) -> dict[str, Any]:
    """What the constructor arguments of ``model_arg_keys`` made of ``model``, read from its modules."""
    block = model.blocks[0]
    img, patch = model.patch_embed.img_size, model.patch_embed.patch_size
    return {"img_size": int(img[0]) if img[0] == img[1] else list(img),
            "patch_size": int(patch[0]) if patch[0] == patch[1] else list(patch),
            "depth": len(model.blocks), "embed_dim": int(model.embed_dim), "num_heads": int(block.attn.num_heads),
            "mlp_ratio": block.mlp.fc1.out_features / model.embed_dim, "qkv_bias": block.attn.qkv.bias is not None,
            "class_token": model.cls_token is not None, "reg_tokens": int(getattr(model, "num_reg_tokens", 0)),
            "global_pool": str(model.global_pool)}


@functools.cache
def _registered_shape(name: str) -> dict[str, Any]:
    """The shape of the registered architecture ``name`` with its default arguments (built on the meta device)."""
    import timm

    with torch.random.fork_rng(devices=[]), torch.device("meta"):
        return _shape(timm.create_model(name, pretrained=False))


class ViTFamily(TimmFamily):
    """timm Vision Transformers: patch-embedding stem, one stage of transformer blocks, norm + classifier head."""

    name = "vit"
    model_arg_keys = ("img_size", "patch_size", "depth", "embed_dim", "num_heads", "mlp_ratio", "qkv_bias",
                      "class_token", "reg_tokens", "global_pool")

    def matches(self, model: nn.Module) -> bool:
        from timm.models.vision_transformer import VisionTransformer

        return isinstance(model, VisionTransformer)

    def layout(self, model: nn.Module) -> Layout:
        blocks = [Block(f"blocks.{i}", 1, i, False) for i in range(len(model.blocks))]
        stem = [n for n in _STEM if _present(model, n)]
        head = [n for n in _HEAD if _present(model, n)]
        return Layout(self.name, stem, blocks, head, {1: "blocks"})

    def default_prunable(self, model: nn.Module) -> list[str]:
        head = ["head.weight"] if isinstance(getattr(model, "head", None), nn.Linear) else []
        return module_weights(model, (nn.Linear,), under="blocks") + head

    def display_name(self, model: nn.Module) -> str:
        return f"{self.architecture(model)['architecture']}-{len(model.blocks)}L"

    def model_args(self, model: nn.Module) -> dict:
        name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
        default = _registered_shape(name) if name else {}
        return {k: v for k, v in _shape(model).items() if default.get(k) != v}

    def check_model_args(self, model_args: Mapping[str, Any]) -> None:
        for key, hi in (("img_size", MAX_IMAGE), ("patch_size", MAX_IMAGE), ("depth", MAX_DEPTH),
                        ("embed_dim", 65_536), ("num_heads", 512), ("reg_tokens", 64)):
            value = model_args.get(key)
            for v in (value if isinstance(value, list) and key in ("img_size", "patch_size") else [value]):
                if v is not None:
                    check_int(v, f"lottery_rg.model_args.{key}", 1, hi)
        ratio = model_args.get("mlp_ratio")
        if ratio is not None and (isinstance(ratio, bool) or not isinstance(ratio, (int, float))
                                  or not 0 < ratio <= 64):
            raise ValueError(f"lottery_rg.model_args.mlp_ratio must be a number in (0, 64], got {ratio!r}")
        for key in ("qkv_bias", "class_token"):
            if key in model_args and not isinstance(model_args[key], bool):
                raise ValueError(f"lottery_rg.model_args.{key} must be true or false, got {model_args[key]!r}")
        if model_args.get("global_pool", "token") not in _POOLS:
            raise ValueError(f"lottery_rg.model_args.global_pool must be one of {_POOLS}, got "
                             f"{model_args['global_pool']!r}")

    def input_kwargs(self, model: nn.Module, image_size: int | None) -> dict:
        if image_size is None:
            return {}
        patch = model.patch_embed.patch_size
        if image_size % patch[0] or image_size % patch[1]:
            raise ValueError(f"--image_size {image_size} is not a multiple of the ViT's patch size {tuple(patch)}; "
                             f"choose a patch size that divides it (--model_kwargs '{{\"patch_size\": 4}}')")
        return {} if tuple(model.patch_embed.img_size) == (image_size, image_size) else {"img_size": image_size}

    def signature(self, model: nn.Module) -> dict:
        shape = {k: v for k, v in _shape(model).items() if k != "depth"}
        head = {n: tuple(p.shape) for n, p in model.named_parameters() if n.startswith("head.")}
        return {"family": self.name, "class": type(model).__name__, **shape, "head": head}

    def with_depths(self, model: nn.Module, depths: Sequence[int]) -> dict:
        if len(depths) != 1 or int(depths[0]) < 1:
            raise ValueError(f"a ViT has one stage of transformer blocks, got depths {tuple(depths)}")
        arch = self.architecture(model)
        args = {**(arch.get("model_args") or {}), "depth": int(depths[0])}
        default = _registered_shape(arch["architecture"])
        args = {k: v for k, v in args.items() if default.get(k) != v}
        return {**{k: v for k, v in arch.items() if k != "model_args"}, **({"model_args": args} if args else {})}

    def resolve_architecture(self, name: str, like: nn.Module) -> dict:
        m = re.fullmatch(r"(?:vit[-_])?(\d+)(?:[-_ ]?(?:blocks?|layers?|L))?", str(name))
        if not m:
            raise ValueError(f"name a ViT target by its number of transformer blocks (e.g. '6' or 'vit-6'), "
                             f"got {name!r}")
        return self.with_depths(like, [int(m.group(1))])


def _present(model: nn.Module, name: str) -> bool:
    """A module or a parameter (``cls_token``) of that name that holds something."""
    value = getattr(model, name, None)
    if isinstance(value, nn.Parameter):
        return True
    return has_module(model, name) and not isinstance(value, nn.Identity)
