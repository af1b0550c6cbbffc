"""Weights worth building on: finite everywhere, and exactly zero wherever the mask has pruned.

A level's trained weights are pruned from, a ticket's weights are retrained or used: a NaN, an infinity or a
pruned weight that is not zero (``MaskEnforcer`` multiplies by the mask, and ``nan * 0`` is ``nan``) would be
carried silently into everything that follows. These checks run once per file or level, never in the training
step: one batched reduction per device and one host transfer.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

__all__ = ["nonfinite_tensors", "unpruned_tensors", "weight_problems", "check_weights"]


def _flags(tests: list[tuple[str, torch.Tensor]]) -> list[str]:
    """The names whose 0-d bool tensor is True, with one host transfer per device."""
    by_device: dict[torch.device, list[tuple[str, torch.Tensor]]] = {}
    for name, flag in tests:
        by_device.setdefault(flag.device, []).append((name, flag))
    bad = set()
    for pairs in by_device.values():
        values = torch.stack([f for _, f in pairs]).tolist()
        bad.update(n for (n, _), v in zip(pairs, values) if v)
    return [n for n, _ in tests if n in bad]


@torch.no_grad()
def nonfinite_tensors(state: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding a NaN or an infinity, in ``state``'s order."""
    return _flags([(n, ~torch.isfinite(t).all()) for n, t in state.items()
                   if isinstance(t, torch.Tensor) and t.is_floating_point()])


@torch.no_grad()
def unpruned_tensors(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the masked tensors of ``state`` with a value other than exactly zero at a pruned position."""
    # torch.where, not boolean indexing: no host sync per tensor
    return _flags([(n, torch.where(mask[n].to(state[n].device), 0, state[n]).ne(0).any()) for n in mask if n in state])


def weight_problems(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None = None,
                    limit: int = 5) -> list[str]:
    """One line per kind of problem of ``state``: non-finite tensors, and (with ``mask``) pruned positions that are
    not zero; each names up to ``limit`` tensors with counts. Empty when the weights can be built on."""
    lines = []
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(f"{n} ({int((~torch.isfinite(state[n])).sum())} of {state[n].numel()})" for n in bad[:limit])
        floats = sum(1 for t in state.values() if isinstance(t, torch.Tensor) and t.is_floating_point())
        lines.append(f"{len(bad)} of {floats} tensors hold NaN or infinite values: {shown}"
                     + (" …" if len(bad) > limit else ""))
    if mask is not None:
        bad = unpruned_tensors(state, mask)
        if bad:
            def count(n):
                m = ~mask[n].to(state[n].device)
                return f"{n} ({int((state[n][m] != 0).sum())} of {int(m.sum())} pruned positions)"

            lines.append(f"{len(bad)} pruned tensor{' is' if len(bad) == 1 else 's are'} not zero where the mask "
                         f"prunes {'it' if len(bad) == 1 else 'them'}: "
                         + ", ".join(count(n) for n in bad[:limit]) + (" …" if len(bad) > limit else ""))
    return lines


def check_weights(state: Mapping[str, torch.Tensor], mask: Mapping[str, torch.Tensor] | None, where: str,
                  fix: str) -> None:
    """Raise ``ValueError`` naming ``where``, the tensors and ``fix`` if :func:`weight_problems` finds any."""
    problems = weight_problems(state, mask)
    if problems:
        raise ValueError(f"{where}: " + "; ".join(problems) + f". {fix}")
