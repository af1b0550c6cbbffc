"""Channels-last (NHWC) memory format for convolutional networks: the model, its batches, and its saved state.

oneDNN on CPUs and cuDNN on GPUs run 2-D convolutions fastest with channels innermost; the model's 4-D weights
and every image batch are then kept that way. Files are not: every ``state_dict()`` of a converted model is
contiguous, so checkpoints, level weights and tickets are the same files as before (safetensors refuses strided
tensors, and plain timm loads them).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from .families import family_of

__all__ = ["is_convolutional", "to_channels_last", "channels_last_batch"]


def is_convolutional(model: nn.Module) -> bool:
    """Whether ``model``'s family is a convolutional network (``ModelFamily.convolutional``: the ResNets and VGGs),
    the networks channels-last speeds up; a ViT's one patch-embedding convolution does not make it one."""
    return family_of(model).convolutional


_CONTIGUOUS_STATE = weakref.WeakKeyDictionary()  # model -> its state-dict hook handle


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put ``model``'s 4-D weights in channels-last memory format, in place; its ``state_dict()`` stays contiguous.

    The state-dict hook makes every file written from the model (checkpoints, level weights, tickets) hold plain
    contiguous tensors — safetensors refuses strided ones — so plain timm loads them as before. Live tensors
    (``state_dict(keep_vars=True)``) are left as they are.
    """
    model.to(memory_format=torch.channels_last)
    if model not in _CONTIGUOUS_STATE:
        _CONTIGUOUS_STATE[model] = model.register_state_dict_post_hook(_contiguous_state)
    return model


def _contiguous_state(module, state_dict, prefix, local_metadata) -> None:
    for key, value in state_dict.items():
        if key.startswith(prefix) and isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter) \
                and not value.is_contiguous():
            state_dict[key] = value.contiguous()


def channels_last_batch(x: torch.Tensor) -> torch.Tensor:
    """A 4-D image batch in channels-last format (no copy when it already is one)."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x
