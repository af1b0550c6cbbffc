"""Pruning masks: magnitude pruning, enforcement during training, and safetensors I/O.

A mask is a ``dict`` from parameter name to a ``torch.bool`` tensor of the parameter's
shape (True = the weight survives). Only prunable tensors appear in it.

Magnitude pruning removes *exactly* the requested number of weights: the smallest
surviving magnitudes go first and ties at the threshold are broken deterministically
(tensor order, then flat index), so every process and every re-run computes the same
mask. The global threshold is found exactly by radix selection on the float bit
patterns (two histogram passes), so the extra memory is per-tensor temporaries plus the
new mask, about a third of one copy of the weights.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction
from typing import Mapping

import torch
from torch import nn

__all__ = [
    "Mask", "full_mask", "mask_density", "surviving", "removal_counts", "magnitude_prune", "next_mask",
    "MaskEnforcer", "apply_mask", "save_mask", "load_mask", "check_mask", "broadcast_mask",
    "SCHEDULES", "PRUNING_SCOPES",
]

Mask = dict[str, torch.Tensor]
SCHEDULES = ("geometric", "linear")  # fraction of the surviving weights / of the original weights per level
PRUNING_SCOPES = ("global", "layerwise")


def full_mask(model: nn.Module, names: list[str]) -> Mask:
    """An all-True mask over ``names`` (the dense network, level 0)."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameters named {missing[:5]}")
    return {n: torch.ones_like(params[n], dtype=torch.bool, device="cpu") for n in names}


def surviving(mask: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return {n: int(m.sum()) for n, m in mask.items()}


def mask_density(mask: Mapping[str, torch.Tensor]) -> float:
    """Surviving fraction of the masked (prunable) weights."""
    total = sum(m.numel() for m in mask.values())
    return sum(surviving(mask).values()) / total if total else 1.0


def _exact(fraction: float) -> Fraction:
    # Fraction(repr(0.2)) == 1/5: ceil(0.2 * 100) is 20, not the 21 float rounding gives
    return Fraction(repr(float(fraction)))


def removal_counts(
    mask: Mapping[str, torch.Tensor], fraction: float, *, scope: str = "global", schedule: str = "geometric",
) -> int | dict[str, int]:
    """How many weights the next pruning step removes (SCIENCE §1.4).

    ``geometric``: ⌈fraction · surviving⌉ (open_lth, Frankle & Carbin). ``linear``:
    ⌈fraction · original⌉ of the original weights per level (the BERT-tickets schedule).
    Global scope returns one count; layerwise a count per tensor.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"prune fraction must lie in (0, 1), got {fraction}")
    if scope not in PRUNING_SCOPES:
        raise ValueError(f"pruning must be one of {PRUNING_SCOPES}, got {scope!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    f = _exact(fraction)
    alive = surviving(mask)

    def count(n_alive: int, n_total: int) -> int:
        base = n_alive if schedule == "geometric" else n_total
        return min(math.ceil(f * base), n_alive)

    if scope == "global":
        return count(sum(alive.values()), sum(m.numel() for m in mask.values()))
    return {n: count(alive[n], mask[n].numel()) for n in mask}


@torch.no_grad()
def magnitude_prune(
    weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], remove: int | Mapping[str, int],
) -> Mask:
    """Remove exactly ``remove`` surviving weights with the smallest ``|w|``.

    ``remove`` is one count (one threshold over all tensors: global pruning) or a count
    per tensor (layerwise pruning). Returns a new mask; the inputs are not modified.
    """
    if isinstance(remove, Mapping):
        out: Mask = {}
        for name in mask:
            out.update(_prune_global({name: weights[name]}, {name: mask[name]}, int(remove.get(name, 0))))
        return out
    return _prune_global(weights, mask, int(remove))


def _magnitude_bits(w: torch.Tensor) -> torch.Tensor:
    """|w| as int32 bit patterns: for non-negative float32, ordering the bits orders the values."""
    return w.detach().to("cpu", torch.float32).reshape(-1).view(torch.int32) & 0x7FFFFFFF


def _kth_smallest_magnitude(weights, mask, names, k: int) -> tuple[int, int]:
    """Bit pattern of the k-th smallest surviving |w| (1-based), and how many surviving |w| are smaller.

    Exact radix selection: two histogram passes over the bit patterns (high 15 bits, then
    the low 16 bits inside the selected bucket). Only per-tensor temporaries are allocated —
    no buffer of all the weights, no sort.
    """

    def alive(n: str) -> torch.Tensor:
        bits = _magnitude_bits(weights[n])
        m = mask[n].cpu().reshape(-1)
        return bits if bool(m.all()) else bits[m]

    high = torch.zeros(1 << 15, dtype=torch.int64)
    for n in names:
        high += torch.bincount(alive(n) >> 16, minlength=1 << 15)
    if int(high[0x7F80:].sum()):
        raise ValueError("cannot prune by magnitude: the weights contain NaN or infinity")
    cum = high.cumsum(0)
    hi = int(torch.searchsorted(cum, k))
    below = int(cum[hi - 1]) if hi else 0
    low = torch.zeros(1 << 16, dtype=torch.int64)
    for n in names:
        b = alive(n)
        low += torch.bincount(b[(b >> 16) == hi] & 0xFFFF, minlength=1 << 16)
    cum = low.cumsum(0)
    lo = int(torch.searchsorted(cum, k - below))
    below += int(cum[lo - 1]) if lo else 0
    return (hi << 16) | lo, below


def _prune_global(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], k: int) -> Mask:
    names = list(mask)
    for n in names:
        if tuple(weights[n].shape) != tuple(mask[n].shape):
            raise ValueError(f"mask for {n} has shape {tuple(mask[n].shape)}, weight has {tuple(weights[n].shape)}")
    alive = [int(torch.count_nonzero(mask[n])) for n in names]
    total = sum(alive)
    if k < 0 or k >= total:
        raise ValueError(f"cannot remove {k} of the {total} surviving weights (at least one must survive)")
    if k == 0:
        return {n: mask[n].clone() for n in names}

    threshold, below = _kth_smallest_magnitude(weights, mask, names, k)
    ties = k - below  # weights equal to the threshold still to remove, first in tensor/flat order
    out = {}
    for n in names:
        bits, m = _magnitude_bits(weights[n]), mask[n].cpu().reshape(-1)
        keep = m & (bits >= threshold)
        if ties > 0:
            eq = (m & (bits == threshold)).nonzero().flatten()[:ties]
            keep[eq] = False
            ties -= eq.numel()
        out[n] = keep.view(mask[n].shape)
    return out


def next_mask(
    weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], fraction: float = 0.2,
    scope: str = "global", schedule: str = "geometric",
) -> Mask:
    """One IMP pruning step: the mask of the next level from this level's trained weights."""
    return magnitude_prune(weights, mask, removal_counts(mask, fraction, scope=scope, schedule=schedule))


class MaskEnforcer:
    """Multiplies masked parameters by their mask in place: pruned weights are exactly zero.

    Called after every optimizer step, so momentum, weight decay, Adam moments, gradient
    accumulation and mixed precision cannot revive a pruned weight. One fused
    ``_foreach_mul_`` over the pruned tensors only; tensors with nothing pruned are skipped.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor]):
        params = dict(model.named_parameters())
        check_mask(mask, model)
        pairs = [(params[n], m) for n, m in mask.items() if not bool(m.all())]
        self.params = [p for p, _ in pairs]
        self.factors = [m.to(device=p.device, dtype=p.dtype) for p, m in pairs]

    @torch.no_grad()
    def apply(self) -> None:
        if self.params:
            torch._foreach_mul_(self.params, self.factors)


def apply_mask(model: nn.Module, mask: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned weights of ``model`` once."""
    MaskEnforcer(model, mask).apply()


def check_mask(mask: Mapping[str, torch.Tensor], model: nn.Module | None = None, source: str = "mask") -> None:
    """Raise a clear error if ``mask`` is not boolean or does not fit ``model``."""
    if not mask:
        raise ValueError(f"{source} is empty")
    params = dict(model.named_parameters()) if model is not None else None
    for name, m in mask.items():
        if not isinstance(m, torch.Tensor) or m.dtype != torch.bool:
            dtype = getattr(m, "dtype", type(m).__name__)
            raise ValueError(f"{source}: entry {name!r} is {dtype}, masks must be torch.bool")
        if params is None:
            continue
        if name not in params:
            raise ValueError(f"{source}: the model has no parameter {name!r}")
        if tuple(params[name].shape) != tuple(m.shape):
            raise ValueError(f"{source}: {name!r} has shape {tuple(m.shape)} but the parameter is "
                             f"{tuple(params[name].shape)}; the mask does not fit this model")


def save_mask(mask: Mapping[str, torch.Tensor], path: str | os.PathLike, metadata: dict | None = None) -> None:
    """Write a mask as bool tensors in safetensors, atomically (temp file, then rename)."""
    from safetensors.torch import save_file

    from ..io import atomic_path

    check_mask(mask)
    with atomic_path(path) as tmp:
        save_file({n: m.detach().cpu().contiguous() for n, m in mask.items()}, tmp,
                  metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_mask(path: str | os.PathLike, model: nn.Module | None = None) -> Mask:
    """Read a mask, refusing files that are not safetensors, not boolean, or do not fit ``model``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no mask file at {path}")
    try:
        mask = load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors mask file: {e}") from e
    check_mask(mask, model, source=path)
    return mask


def broadcast_mask(mask: Mask, src: int = 0) -> Mask:
    """Make every process hold ``src``'s mask bit for bit (no-op outside torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return mask
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    out = {}
    for name, m in mask.items():
        t = m.to(device=device, dtype=torch.uint8).contiguous()
        dist.broadcast(t, src=src)
        out[name] = t.bool().cpu()
    return out
