"""Pruning masks: magnitude pruning, enforcement during training, and safetensors I/O.

A mask is a ``dict`` from parameter name to a ``torch.bool`` tensor of the parameter's
shape (True = the weight survives). Only prunable tensors appear in it.

Magnitude pruning removes *exactly* the requested number of weights: the smallest
surviving magnitudes go first and ties at the threshold are broken deterministically
(tensor order, then flat index), so every process and every re-run computes the same
mask. The global threshold is found exactly by radix selection on the float bit
patterns (two histogram passes), so the extra memory is per-tensor temporaries plus the
new mask, about a third of one copy of the weights.

Device: every tensor the pruning creates lives on the weights' device (CUDA weights are
pruned on the GPU; the only host transfers are a few scalars: the NaN check, the two
selected histogram buckets and the tie count). The result is the same bit for bit on
every device. Masks are returned on the weights' device; ``MaskEnforcer`` moves them to the
parameters' device, dtype and memory format; ``save_mask`` writes from any device and ``load_mask(device=)``
reads onto any device.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from fractions import Fraction

import torch
from torch import nn

from ..io import atomic_path

__all__ = [
    "Mask", "full_mask", "mask_density", "surviving", "removal_counts", "magnitude_prune", "next_mask",
    "MaskEnforcer", "apply_mask", "save_mask", "load_mask", "check_mask", "broadcast_mask",
    "SCHEDULES", "PRUNING_SCOPES", "mask_digest",
]

Mask = dict[str, torch.Tensor]
SCHEDULES = ("geometric", "linear")  # fraction of the surviving weights / of the original weights per level
PRUNING_SCOPES = ("global", "layerwise")


def full_mask(model: nn.Module, names: list[str], device: str | torch.device = "cpu") -> Mask:
    """An all-True mask over ``names`` (the dense network, level 0), on ``device`` (default the CPU)."""
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(f"the model has no parameters named {missing[:5]}")
    return {n: torch.ones_like(params[n], dtype=torch.bool, device=device) for n in names}


def _counts(tensors: list[torch.Tensor]) -> list[int]:
    """``count_nonzero`` of every tensor with one host transfer per device (not one per tensor)."""
    out: list[int] = [0] * len(tensors)
    by_device: dict[torch.device, list[int]] = {}
    for i, t in enumerate(tensors):
        by_device.setdefault(t.device, []).append(i)
    for idx in by_device.values():
        values = torch.stack([torch.count_nonzero(tensors[i]) for i in idx]).tolist()
        for i, v in zip(idx, values):
            out[i] = int(v)
    return out


def surviving(mask: Mapping[str, torch.Tensor]) -> dict[str, int]:
    return dict(zip(mask, _counts(list(mask.values())))) if mask else {}


def mask_digest(mask: Mapping[str, torch.Tensor]) -> str:
    """A short hash of a mask, equal on two processes only if the masks are bit-identical.

    Device-safe: the mask is copied to the host once, as one uint8 buffer (not tensor by
    tensor). Same value as hashing each tensor's uint8 bytes in sorted-name order.
    """
    import hashlib

    names = sorted(mask)
    h = hashlib.sha256()
    if not names:
        return h.hexdigest()[:16]
    flat = torch.cat([mask[n].detach().reshape(-1).to(mask[names[0]].device, torch.uint8) for n in names]).cpu()
    data = flat.numpy()
    start = 0
    for n in names:
        size = mask[n].numel()
        h.update(n.encode())
        h.update(data[start:start + size].tobytes())
        start += size
    return h.hexdigest()[:16]


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
    """How many weights the next pruning step removes (Frankle et al. 2020; the linear schedule of Chen et al. 2020).

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
    """|w| as int32 bit patterns on ``w``'s device: for non-negative float32, ordering the bits orders the values.

    bf16/fp16 weights are widened to float32 exactly, so the order (and the mask) is the same.
    """
    return w.detach().to(torch.float32).reshape(-1).view(torch.int32) & 0x7FFFFFFF


# Radix digits (bits per histogram pass, high to low; they add up to the 31 bits of |w|). On the CPU two passes
# (2^15 and 2^16 bins). On CUDA three passes of at most 2^11 bins: torch's bincount then counts in shared memory
# (nbins * 8 bytes < 48 KiB) instead of contended global atomics; one more read of the weights costs far less.
RADIX_DIGITS = {"cpu": (15, 16), "cuda": (11, 10, 10)}


def _kth_smallest_magnitude(weights, mask, names, k: int, full: dict | None = None,
                            digits: tuple[int, ...] | None = None) -> tuple[int, int]:
    """Bit pattern of the k-th smallest surviving |w| (1-based), and how many surviving |w| are smaller.

    Exact radix selection: one histogram pass per digit of the bit patterns (high bits
    first; each later pass counts only the weights inside the bucket selected so far). Only
    per-tensor temporaries are allocated — no buffer of all the weights, no sort. Everything
    stays on the weights' device; one scalar per pass (the selected bucket) and the NaN check
    come back to the host.
    """
    full = full if full is not None else {n: bool(mask[n].all()) for n in names}
    device = weights[names[0]].device
    digits = digits or RADIX_DIGITS.get(device.type, RADIX_DIGITS["cuda"])
    if sum(digits) != 31:
        raise ValueError(f"radix digits must add up to 31 bits, got {digits}")
    prefix, below, done = 0, 0, 0  # selected high bits so far, surviving |w| below that bucket, bits selected
    for step, width in enumerate(digits):
        shift = 31 - done - width
        hist = torch.zeros(1 << width, dtype=torch.int64, device=device)
        for n in names:
            bits = _magnitude_bits(weights[n])
            keep = None if full[n] else mask[n].to(bits.device).reshape(-1)
            if step:
                in_bucket = (bits >> (shift + width)) == prefix
                keep = in_bucket if keep is None else keep & in_bucket
            if keep is not None:
                bits = bits[keep]  # compact (a host sync on CUDA) rather than count into a contended sentinel bin
            hist += torch.bincount((bits >> shift) & ((1 << width) - 1), minlength=1 << width).to(device)
        cum = hist.cumsum(0)
        if step == 0:
            bad, d = torch.stack([hist[0x7F800000 >> shift:].sum(), torch.searchsorted(cum, k - below)]).tolist()
            if bad:
                raise ValueError("cannot prune by magnitude: the weights contain NaN or infinity")
        else:
            d = int(torch.searchsorted(cum, k - below))
        below += int(cum[d - 1]) if d else 0
        prefix = (prefix << width) | d
        done += width
    return prefix, below


def _prune_global(weights: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor], k: int) -> Mask:
    names = list(mask)
    for n in names:
        if tuple(weights[n].shape) != tuple(mask[n].shape):
            raise ValueError(f"mask for {n} has shape {tuple(mask[n].shape)}, weight has {tuple(weights[n].shape)}")
    alive = _counts([mask[n] for n in names])
    total = sum(alive)
    if k < 0 or k >= total:
        raise ValueError(f"cannot remove {k} of the {total} surviving weights (at least one must survive)")
    if k == 0:
        return {n: mask[n].to(weights[n].device, copy=True) for n in names}

    full = {n: a == mask[n].numel() for n, a in zip(names, alive)}
    threshold, below = _kth_smallest_magnitude(weights, mask, names, k, full)
    ties = k - below  # weights equal to the threshold still to remove, first in tensor/flat order
    out = {}
    for n in names:
        bits = _magnitude_bits(weights[n])
        keep = bits >= threshold
        if not full[n]:
            keep &= mask[n].to(bits.device).reshape(-1)
        if ties > 0:
            eq = (keep & (bits == threshold)).nonzero().flatten()[:ties]  # one host sync per tensor, while ties last
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
        names = list(mask)
        alive = _counts([mask[n] for n in names])
        pairs = [(params[n], mask[n]) for n, a in zip(names, alive) if a != mask[n].numel()]
        self.params = [p for p, _ in pairs]
        self._masks = [m for _, m in pairs]
        self._place()

    def _place(self) -> None:
        # factors in the parameter's own device, dtype (exact 0/1 in fp32, bf16 and fp16) and memory format
        # (channels-last weights get channels-last factors): equal strides keep _foreach_mul_ on its fused path
        self.factors = [torch.empty_like(p).copy_(m) for p, m in zip(self.params, self._masks)]
        self._where = [_placement(p) for p in self.params]

    @torch.no_grad()
    def apply(self) -> None:
        if self.params:
            if _placement(self.params[0]) != self._where[0]:  # the model was moved, cast or re-laid out since
                self._place()
            torch._foreach_mul_(self.params, self.factors)


def _placement(p: torch.Tensor) -> tuple:
    return p.device, p.dtype, p.stride()


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

    check_mask(mask)
    with atomic_path(path) as tmp:
        save_file({n: m.detach().cpu().contiguous() for n, m in mask.items()}, tmp,
                  metadata={k: str(v) for k, v in (metadata or {}).items()})


def load_mask(path: str | os.PathLike, model: nn.Module | None = None, device: str | torch.device = "cpu") -> Mask:
    """Read a mask onto ``device`` (default the CPU), refusing files that are not safetensors, not boolean,
    or do not fit ``model``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no mask file at {path}")
    try:
        mask = load_file(path, device=str(torch.device(device)))
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path} is not a readable safetensors mask file: {e}") from e
    check_mask(mask, model, source=path)
    return mask


def broadcast_mask(mask: Mask, src: int = 0) -> Mask:
    """Make every process hold ``src``'s mask bit for bit (no-op outside torch.distributed).

    One collective: the masks travel as one flat uint8 buffer on the process group's device
    (CUDA for nccl, the CPU otherwise); each returned mask is on its input mask's device.
    """
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1 or not mask:
        return mask
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
    names = list(mask)
    flat = torch.cat([mask[n].reshape(-1).to(device=device, dtype=torch.uint8) for n in names])
    dist.broadcast(flat, src=src)
    out, start = {}, 0
    for n in names:
        m = mask[n]
        out[n] = flat[start:start + m.numel()].view(m.shape).to(device=m.device, dtype=torch.bool)
        start += m.numel()
    return out
