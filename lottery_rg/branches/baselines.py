"""Baseline sparse networks a ticket is judged against (E-LTH §4, open_lth branches).

Every baseline keeps *exactly* the per-tensor survivor counts it is given (normally those
of the ticket under test), so baselines differ from the ticket only in *which* weights
survive or in the weights themselves:

* :func:`random_mask` — each tensor's mask permuted (the "random pruning" baseline);
* :func:`reinit_model` — same mask, freshly initialised weights;
* :func:`magnitude_mask` — one-shot magnitude pruning of the given weights;
* :func:`snip_mask` — SNIP, scores |g ⊙ θ| from batches of data (Lee et al. 2019);
* :func:`grasp_mask` — GraSP, scores −θ ⊙ (H g), the weights with the largest scores removed (Wang et al. 2020).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..hub.ticket import LotteryTicket
from ..models.families import family_of
from ..pruning.masks import Mask, surviving

__all__ = ["layerwise_counts", "keep_top", "random_mask", "reinit_model", "magnitude_mask", "snip_mask", "grasp_mask",
           "default_loss", "BASELINES", "baseline_mask", "baseline_ticket"]

BASELINES = ("random", "reinit", "magnitude", "snip", "grasp")


def layerwise_counts(mask: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """Surviving weights per tensor: what every baseline must match."""
    return surviving(mask)


def keep_top(scores: Mapping[str, torch.Tensor], counts: Mapping[str, int]) -> Mask:
    """Per tensor, keep the ``counts[name]`` highest scores (ties: lower flat index first).

    Sorted where the scores live (a stable sort, so the same mask on every device); each mask is
    on its scores' device.
    """
    out = {}
    for name, k in counts.items():
        s = scores[name].detach().float().flatten()
        if not 0 <= k <= s.numel():
            raise ValueError(f"{name}: cannot keep {k} of {s.numel()} weights")
        order = torch.sort(s, descending=True, stable=True).indices[:k]
        keep = torch.zeros(s.numel(), dtype=torch.bool, device=s.device)
        keep[order] = True
        out[name] = keep.view_as(scores[name])
    return out


def random_mask(mask: Mapping[str, torch.Tensor], seed: int = 0) -> Mask:
    """Each tensor's mask randomly permuted: same layerwise densities, random positions.

    The permutations come from a CPU generator (the same masks for a seed on every device);
    each mask stays on its input's device.
    """
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, m in mask.items():
        flat = m.flatten()
        out[name] = flat[torch.randperm(flat.numel(), generator=g).to(flat.device)].view_as(m)
    return out


def reinit_model(model: nn.Module, seed: int = 0) -> nn.Module:
    """A fresh, randomly initialised copy of ``model``'s architecture (the "reinit" baseline's weights)."""
    family = family_of(model)
    devices = {p.device for p in model.parameters()}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = family.build(family.architecture(model))
    return fresh.to(next(iter(devices))) if devices else fresh


def magnitude_mask(model: nn.Module, counts: Mapping[str, int]) -> Mask:
    """One-shot magnitude pruning of ``model``'s current weights to ``counts`` survivors per tensor."""
    params = dict(model.named_parameters())
    return keep_top({n: params[n].detach().abs() for n in counts}, counts)


def default_loss(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The training loss of one batch: the model's own loss for transformers models, cross-entropy for timm."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return model(**batch).loss
    return F.cross_entropy(model(batch["pixel_values"]), batch["labels"])


def _on_device(batch, device: torch.device):
    """``batch`` (a mapping of tensors, or a tensor) on ``device``: data loaders give CPU batches, the model may be
    on a GPU."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _on_device(v, device) for k, v in batch.items()}
    return batch


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _grads(model, names, batches, loss_fn, create_graph=False):
    params = dict(model.named_parameters())
    tensors = [params[n] for n in names]
    device = _device(model)
    total = None
    n = 0
    for batch in batches:
        loss = loss_fn(model, _on_device(batch, device))
        g = torch.autograd.grad(loss, tensors, create_graph=create_graph, allow_unused=True)
        g = [torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, tensors)]
        total = g if total is None else [a + b for a, b in zip(total, g)]
        n += 1
    if n == 0:
        raise ValueError("SNIP and GraSP need at least one batch of data")
    return [t / n for t in total], tensors


class _Scoring:
    """Score in training mode (batch statistics, as SNIP and GraSP do) and leave the model as it was.

    A train-mode forward updates BatchNorm running statistics; they are restored afterwards so
    the baseline starts from exactly the weights and buffers it was given.
    """

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        self.model.train()

    def __exit__(self, *exc):
        with torch.no_grad():
            for n, b in self.model.named_buffers():
                b.copy_(self.buffers[n])
        self.model.train(self.was_training)
        self.model.zero_grad(set_to_none=True)


def snip_mask(model: nn.Module, counts: Mapping[str, int], batches: Iterable[Mapping[str, torch.Tensor]],
              loss_fn: Callable = default_loss) -> Mask:
    """SNIP: keep the weights with the largest connection sensitivity |∂L/∂θ ⊙ θ|."""
    names = list(counts)
    with _Scoring(model):
        grads, tensors = _grads(model, names, batches, loss_fn)
    return keep_top({n: (g * t).abs() for n, g, t in zip(names, grads, tensors)}, counts)


def grasp_mask(model: nn.Module, counts: Mapping[str, int], batches: Iterable[Mapping[str, torch.Tensor]],
               loss_fn: Callable = default_loss) -> Mask:
    """GraSP: scores −θ ⊙ (H g); the largest scores are removed, i.e. the smallest are kept."""
    names = list(counts)
    device = _device(model)
    batches = [_on_device(b, device) for b in batches]
    with _Scoring(model):
        g, tensors = _grads(model, names, batches, loss_fn)
        g = [x.detach() for x in g]
        hg = None
        for batch in batches:  # H g = ∇_θ (g_detached · ∇_θ L)
            grad = torch.autograd.grad(loss_fn(model, batch), tensors, create_graph=True, allow_unused=True)
            z = sum((gi * gd).sum() for gi, gd in zip(grad, g) if gi is not None)
            h = torch.autograd.grad(z, tensors, allow_unused=True)
            h = [torch.zeros_like(t) if x is None else x for x, t in zip(h, tensors)]
            hg = h if hg is None else [a + b for a, b in zip(hg, h)]
    scores = {n: -(t.detach() * x) for n, t, x in zip(names, tensors, hg)}
    return keep_top({n: -s for n, s in scores.items()}, counts)  # keep the lowest GraSP scores


def baseline_mask(kind: str, model: nn.Module, reference: Mapping[str, torch.Tensor], *, batches=None,
                  seed: int = 0, loss_fn: Callable = default_loss) -> Mask:
    """The ``kind`` baseline's mask with ``reference``'s per-tensor densities, on ``model``'s weights."""
    counts = layerwise_counts(reference)
    if kind in ("random",):
        return random_mask(reference, seed)
    if kind == "reinit":
        return {n: m.clone() for n, m in reference.items()}
    if kind == "magnitude":
        return magnitude_mask(model, counts)
    if kind == "snip":
        return snip_mask(model, counts, batches or [], loss_fn)
    if kind == "grasp":
        return grasp_mask(model, counts, batches or [], loss_fn)
    raise ValueError(f"unknown baseline {kind!r}; choose from {BASELINES}")


def baseline_ticket(kind: str, reference, weights: nn.Module, *, batches=None, seed: int = 0,
                    loss_fn: Callable = default_loss):
    """A :class:`~lottery_rg.hub.ticket.LotteryTicket` for baseline ``kind`` at ``reference``'s layerwise densities.

    ``weights`` holds the dense weights the baseline starts from (the target's own rewind
    weights θ_k); ``reinit`` starts from fresh weights instead and keeps ``reference``'s mask.
    """
    import copy

    model = reinit_model(weights, seed=seed + 1000) if kind == "reinit" else copy.deepcopy(weights)
    mask = baseline_mask(kind, model, reference.mask, batches=batches, seed=seed, loss_fn=loss_fn)
    info = dict(reference.info, baseline=kind)
    return LotteryTicket(model, mask, level=reference.level, lottery=dict(reference.lottery, baseline=kind), info=info)
