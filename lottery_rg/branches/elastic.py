"""``ElasticTicket``: stretch or squeeze a ticket between depths of one family (Chen et al. 2021, E-LTH).

A transformation is a *mapping*: for every stage, the list of source blocks that fill the
target's block slots in order (``[0, 1, 1, 2, 2]`` turns B0 B1 B2 into B0 B1 B1 B2 B2).
Every tensor of a block — weights, mask, normalization parameters and running
statistics — travels with it; the stem, the head and each stage's entry block (index 0,
the down-sampling block) are copied one to one. Strategies only differ in the mapping
they build; :meth:`ElasticTicket.transform` applies any mapping and checks that every
tensor of the target was written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..hub.ticket import LotteryTicket
from ..models.families import Layout, family_of, get_family
from ..pruning.masks import Mask, magnitude_prune, mask_density, surviving
from ..run import RunDir

__all__ = ["ElasticTicket", "ElasticResult", "stretch_mapping", "squeeze_mapping", "rg_mapping", "inverse_mapping",
           "STRETCH_STRATEGIES", "SQUEEZE_STRATEGIES"]

STRETCH_STRATEGIES = ("interpolation", "appending")
SQUEEZE_STRATEGIES = ("later", "interleaved", "earlier")
StageMapping = dict[int, list[int]]
Target = nn.Module | dict | str  # a model, an architecture description, or a name the family resolves


def _spread(slots: int, blocks: Sequence[int]) -> dict[int, int]:
    """Give ``slots`` target slots to ``blocks`` as evenly as possible, extra copies to earlier blocks."""
    base, extra = divmod(slots, len(blocks))
    return {b: base + (1 if i < extra else 0) for i, b in enumerate(blocks)}


def _order(counts: dict[int, int], strategy: str, all_blocks: Sequence[int]) -> list[int]:
    if strategy == "interpolation":  # each copy right after its source block: B0 B1 B1 B2 B2
        return [0] + [b for b in all_blocks for _ in range(counts.get(b, 1))]
    if strategy == "appending":  # the copies appended as a whole after the last block: B0 B1 B2 B1 B2
        out = [0] + list(all_blocks)
        for r in range(1, max(counts.values(), default=1)):
            out += [b for b in all_blocks if counts.get(b, 1) > r]
        return out
    raise ValueError(f"stretch strategy must be one of {STRETCH_STRATEGIES}, got {strategy!r}")


def stretch_mapping(source_depth: int, target_depth: int, strategy: str = "interpolation",
                    replicate: Sequence[int] | None = None) -> list[int]:
    """Target slots of one stage when stretching ``source_depth`` blocks to ``target_depth``.

    E-LTH's rule: replicate *more distinct* blocks *fewer times* (all non-entry blocks by
    default, or the indices in ``replicate``), earlier blocks first when the copies do not
    divide evenly. The entry block 0 is never replicated.
    """
    if target_depth < source_depth:
        raise ValueError(f"cannot stretch {source_depth} blocks to {target_depth}: that is a squeeze")
    blocks = list(range(1, source_depth))
    if target_depth > source_depth and not blocks:
        raise ValueError("a stage with only its entry block has nothing to replicate")
    chosen = list(replicate) if replicate is not None else blocks
    if any(b not in blocks for b in chosen) or not chosen and target_depth > source_depth:
        raise ValueError(f"blocks to replicate must be among {blocks} (the entry block 0 is never replicated), "
                         f"got {list(chosen)}")
    extra = _spread(target_depth - source_depth, chosen)
    counts = {b: 1 + extra.get(b, 0) for b in blocks}
    return _order(counts, strategy, blocks)


def squeeze_mapping(source_depth: int, target_depth: int, strategy: str = "later") -> list[int]:
    """Target slots of one stage when squeezing: drop later blocks (default), interleaved ones, or earlier ones."""
    if target_depth > source_depth:
        raise ValueError(f"cannot squeeze {source_depth} blocks to {target_depth}: that is a stretch")
    if target_depth < 1:
        raise ValueError("every stage keeps at least its entry block")
    blocks = list(range(1, source_depth))
    n_drop = source_depth - target_depth
    if strategy == "later":
        drop = set(blocks[len(blocks) - n_drop:])
    elif strategy == "earlier":
        drop = set(blocks[:n_drop])
    elif strategy == "interleaved":  # every other block from the end, then the rest from the end
        order = blocks[::-1][::2] + blocks[::-1][1::2]
        drop = set(order[:n_drop])
    else:
        raise ValueError(f"squeeze strategy must be one of {SQUEEZE_STRATEGIES}, got {strategy!r}")
    return [0] + [b for b in blocks if b not in drop]


def inverse_mapping(mapping: Mapping[int, Sequence[int]]) -> StageMapping:
    """The squeeze that undoes a stretch: for each source block, the first target slot holding it."""
    out = {}
    for stage, slots in mapping.items():
        n = max(slots) + 1
        missing = [b for b in range(n) if b not in slots]
        if missing:
            raise ValueError(f"stage {stage}: blocks {missing} do not appear in the mapping; it has no inverse")
        out[stage] = [list(slots).index(b) for b in range(n)]
    return out


def _largest_remainder(total: int, shares: dict[str, float]) -> dict[str, int]:
    raw = {c: total * s for c, s in shares.items()}
    out = {c: int(v) for c, v in raw.items()}
    for c in sorted(raw, key=lambda c: raw[c] - out[c], reverse=True)[: total - sum(out.values())]:
        out[c] += 1
    return out


def rg_mapping(classes: Sequence[str], target_depth: int, strategy: str = "interpolation") -> list[int]:
    """RG-guided slots for one stage from the source blocks' classes (``classes[i]`` for block i).

    The RG reading of E-LTH (Redman et al. 2022, §3.2) predicts transfer works when the transformed
    ticket has the same mix of relevant / marginal / irrelevant blocks as the target's own
    ticket would; a family's tickets keep that mix per stage across depths, so the policy
    keeps each class's *share* of the non-entry blocks. Stretching gives each class its
    share of the slots, spread evenly over the class's blocks (earlier first); squeezing
    keeps each class's share, keeping the earliest blocks of each class (never dropping a
    class's early blocks wholesale).
    """
    source_depth = len(classes)
    blocks = list(range(1, source_depth))
    slots = target_depth - 1
    if not blocks:
        if target_depth != 1:
            raise ValueError("a stage with only its entry block has nothing to replicate")
        return [0]
    by_class: dict[str, list[int]] = {}
    for b in blocks:
        by_class.setdefault(classes[b], []).append(b)
    shares = {c: len(v) / len(blocks) for c, v in by_class.items()}
    quota = _largest_remainder(slots, shares)
    if target_depth >= source_depth:
        # every block appears at least once; rebalance quotas that fall below a class's block count
        for c, members in by_class.items():
            quota[c] = max(quota[c], len(members))
        while sum(quota.values()) > slots:
            c = max(quota, key=lambda c: (quota[c] - len(by_class[c]), quota[c]))
            quota[c] -= 1
        counts = {}
        for c, members in by_class.items():
            counts.update(_spread(quota[c], members))
        return _order(counts, strategy, blocks)
    keep = []
    for c, members in by_class.items():
        keep += members[: min(quota[c], len(members))]
    while len(keep) < slots:  # a class ran out of blocks: fill with the earliest unused ones
        keep.append(next(b for b in blocks if b not in keep))
    return [0] + sorted(keep)


@dataclass
class ElasticResult:
    """What a transformation did, for printing and for the target ticket's provenance."""

    source: str
    target: str
    mapping: StageMapping
    source_density: float
    target_density: float
    strategy: str
    classes: dict[int, list[str]] = field(default_factory=dict)  # transferred block classes per target stage

    def class_counts(self) -> dict[int, dict[str, int]]:
        """Per target stage: how many non-entry blocks carry each source class."""
        out = {}
        for stage, cls in self.classes.items():
            counts: dict[str, int] = {}
            for c in cls[1:]:
                counts[c] = counts.get(c, 0) + 1
            out[stage] = counts
        return out

    def to_dict(self) -> dict:
        return {"source": self.source, "target": self.target, "strategy": self.strategy,
                "mapping": {str(k): v for k, v in self.mapping.items()}, "source_density": self.source_density,
                "target_density": self.target_density,
                "class_counts": {str(k): v for k, v in self.class_counts().items()}}

    def __str__(self) -> str:
        lines = [f"{self.source} -> {self.target} ({self.strategy}); density {100 * self.source_density:.2f}% -> "
                 f"{100 * self.target_density:.2f}%"]
        for stage, slots in sorted(self.mapping.items()):
            lines.append(f"  stage {stage}: " + " ".join(f"B{b}" for b in slots))
        if self.classes:
            lines.append("  transferred classes per stage: " + "; ".join(
                f"{s}: {c}" for s, c in sorted(self.class_counts().items())))
        return "\n".join(lines)


class ElasticTicket:
    """Turns a ticket into a ticket of a deeper or shallower sibling architecture.

    ``ElasticTicket(ticket).stretch("resnet56_cifar")`` or ``.squeeze("resnet20_cifar")``
    return a :class:`~lottery_rg.hub.ticket.LotteryTicket` for the target, retrainable by
    :class:`~lottery_rg.training.trainer.LotteryTrainer`; ``.last_result`` says what was done.
    """

    def __init__(self, ticket: LotteryTicket | str | os.PathLike):
        if isinstance(ticket, (str, bytes)) or hasattr(ticket, "__fspath__"):
            run = RunDir(ticket)
            ticket = LotteryTicket.from_run(run.root) if run.is_run() else LotteryTicket.from_pretrained(str(ticket))
        self.source = ticket
        self.family = family_of(ticket.model)
        self.layout: Layout = self.family.layout(ticket.model)
        self.last_result: ElasticResult | None = None

    # ------------------------------------------------------------------ strategies
    def stretch(self, target: Target, strategy: str = "interpolation", replicate: Sequence[int] | None = None,
                target_density: float | None = None) -> LotteryTicket:
        """Deeper target: replicate blocks by ``interpolation`` (B0 B1 B1 B2 B2) or ``appending`` (B0 B1 B2 B1 B2)."""
        model = self._target_model(target)
        depths = self.family.layout(model).depths()
        mapping = {s: stretch_mapping(sd, td, strategy, replicate)
                   for s, sd, td in self._stage_pairs(depths, stretch=True)}
        return self.transform(model, mapping, strategy=f"stretch/{strategy}", target_density=target_density)

    def squeeze(self, target: Target, strategy: str = "later", target_density: float | None = None) -> LotteryTicket:
        """Shallower target: drop ``later`` blocks (default), ``interleaved`` ones, or ``earlier`` ones."""
        model = self._target_model(target)
        depths = self.family.layout(model).depths()
        mapping = {s: squeeze_mapping(sd, td, strategy) for s, sd, td in self._stage_pairs(depths, stretch=False)}
        return self.transform(model, mapping, strategy=f"squeeze/{strategy}", target_density=target_density)

    def to(self, target: Target, strategy: str = "interpolation", squeeze_strategy: str = "later",
           target_density: float | None = None) -> LotteryTicket:
        """Stretch or squeeze, whichever the target's depths require (``strategy='rg'``: the RG-guided policy)."""
        model = self._target_model(target)
        if strategy == "rg":
            return self.rg_guided(model, target_density=target_density)
        src, tgt = self.layout.depths(), self.family.layout(model).depths()
        if all(t >= s for s, t in zip(src, tgt)):
            return self.stretch(model, strategy=strategy, target_density=target_density)
        if all(t <= s for s, t in zip(src, tgt)):
            return self.squeeze(model, strategy=squeeze_strategy, target_density=target_density)
        raise ValueError(f"target depths {tgt} are deeper in some stages and shallower in others than {src}; "
                         f"give an explicit mapping to transform()")

    def rg_guided(self, target: Target, strategy: str = "interpolation", target_density: float | None = None,
                  rule: Any = None, window: int | None = None) -> LotteryTicket:
        """Replicate or drop blocks so each stage keeps its mix of relevant / marginal / irrelevant blocks.

        ``rule`` and ``window`` go to :meth:`IMPFlow.eigenvalues` (default: one standard deviation,
        every recorded level; a window keeps late, finite-size levels out of the classes).
        """
        classes = self.block_classes(rule, window)
        model = self._target_model(target)
        depths = self.family.layout(model).depths()
        mapping = {s: rg_mapping(classes[s], td, strategy) for s, _, td in self._stage_pairs(depths, stretch=None)}
        return self.transform(model, mapping, strategy=f"rg-guided/{strategy}", target_density=target_density)

    def block_classes(self, rule: Any = None, window: int | None = None) -> dict[int, list[str]]:
        """Class of every source block, per stage, from the source ticket's flow (entry blocks included)."""
        flow = self.source.flow
        if flow is None or len(flow.levels) < 3:
            raise ValueError("the RG-guided policy needs the source ticket's IMP flow with at least 3 levels")
        by_name = flow.eigenvalues("block", window=window, rule=rule).classes.to_dict()
        out: dict[int, list[str]] = {}
        for stage, blocks in sorted(self.layout.stages().items()):
            out[stage] = [by_name.get(b.prefix, "marginal") for b in blocks]
        return out

    # ------------------------------------------------------------------ the transformation
    def transform(self, target: Target, mapping: Mapping[int, Sequence[int]] | Sequence[int], *,
                  strategy: str = "mapping", target_density: float | None = None) -> LotteryTicket:
        """Apply an explicit per-stage mapping (target slot -> source block index) and return the target ticket.

        ``mapping`` is ``{stage: [source index for each target block]}`` or one list used for every stage.
        """
        model = self._target_model(target)
        t_layout = self.family.layout(model)
        t_stages, s_stages = t_layout.stages(), self.layout.stages()
        if not isinstance(mapping, Mapping):
            mapping = {s: list(mapping) for s in t_stages}
        mapping = {int(k): [int(i) for i in v] for k, v in mapping.items()}
        self._check_mapping(mapping, s_stages, t_stages)

        src_state = self.source.model.state_dict()
        tgt_state = model.state_dict()
        new_state, new_mask, origin = {}, {}, {}
        rename = {}  # target tensor name -> source tensor name
        for stage, slots in mapping.items():
            for j, i in enumerate(slots):
                rename[t_stages[stage][j].prefix] = s_stages[stage][i].prefix
        for name in tgt_state:
            block = t_layout.block_of(name)
            src_name = name if block is None else rename[block.prefix] + name[len(block.prefix):]
            if src_name not in src_state:
                raise ValueError(f"no source tensor for target tensor {name} (looked for {src_name})")
            if tuple(src_state[src_name].shape) != tuple(tgt_state[name].shape):
                raise ValueError(f"{name}: target shape {tuple(tgt_state[name].shape)} differs from the source's "
                                 f"{src_name} {tuple(src_state[src_name].shape)}; widths must match")
            device = tgt_state[name].device  # the target's tensors and masks live where its parameters do
            new_state[name] = src_state[src_name].detach().to(device, copy=True)
            origin[name] = src_name
            if src_name in self.source.mask:
                new_mask[name] = self.source.mask[src_name].to(device, copy=True)
        unwritten = set(tgt_state) - set(new_state)
        if unwritten:  # every tensor of the target must come from the source, never a silent random init
            raise RuntimeError(f"the transformation left target tensors unwritten: {sorted(unwritten)[:5]}")
        src_prunable = set(self.source.mask)
        t_params = dict(model.named_parameters())
        stray = [n for n in new_mask if n not in t_params]
        if stray:
            raise RuntimeError(f"masked tensors are not parameters of the target: {stray[:5]}")
        model.load_state_dict(new_state, strict=True)
        missing_mask = [n for n in t_params if origin.get(n) in src_prunable and n not in new_mask]
        if missing_mask:
            raise RuntimeError(f"prunable target tensors without a mask: {missing_mask[:5]}")

        source_density = self.source.density
        if target_density is not None:
            new_mask = self._reprune(model, new_mask, target_density)
        result = ElasticResult(
            source=self._arch_name(self.source.model), target=self._arch_name(model), mapping=mapping,
            source_density=source_density, target_density=mask_density(new_mask), strategy=strategy,
        )
        try:
            classes = self.block_classes()
            result.classes = {s: [classes[s][i] for i in slots] for s, slots in mapping.items()}
        except ValueError:
            pass
        self.last_result = result
        lottery = dict(self.source.lottery, elastic=result.to_dict())
        info = dict(self.source.info, elastic_source=result.source)
        return LotteryTicket(model, new_mask, level=self.source.level, lottery=lottery, flow=None,
                             metrics=None, info=info)

    # ------------------------------------------------------------------ helpers
    def _reprune(self, model: nn.Module, mask: Mask, density: float) -> Mask:
        total = sum(m.numel() for m in mask.values())
        alive = sum(surviving(mask).values())
        keep = round(density * total)
        if not 0 < density <= 1:
            raise ValueError(f"target_density must lie in (0, 1], got {density}")
        if keep > alive:
            raise ValueError(f"cannot reach density {density:.4f}: the transformed ticket already has "
                             f"{alive / total:.4f} and pruned weights cannot be restored")
        params = dict(model.named_parameters())
        new = magnitude_prune({n: params[n].detach() for n in mask}, mask, alive - keep)
        with torch.no_grad():
            for n, m in new.items():
                params[n].mul_(m.to(params[n].dtype))
        return new

    def _target_model(self, target) -> nn.Module:
        if isinstance(target, nn.Module):
            model = target  # stays where the caller put it
        else:
            if isinstance(target, dict):
                model = get_family(target.get("family", self.family.name)).build(target)
            else:
                model = self.family.build(self.family.resolve_architecture(str(target), like=self.source.model))
            source = next(self.source.model.parameters(), None)
            if source is not None:  # a target built here goes on the source's device (a CUDA ticket: the GPU)
                model = model.to(source.device)
        try:
            fam = family_of(model)
        except ValueError as e:
            raise ValueError(f"target: {e}") from None
        if fam.name != self.family.name:
            raise ValueError(f"cannot move a {self.family.name} ticket to a {fam.name} model: families differ")
        a, b = self.family.signature(self.source.model), fam.signature(model)
        diff = [k for k in a if a.get(k) != b.get(k)]
        if diff:
            detail = "; ".join(f"{k}: source {a[k]!r} vs target {b.get(k)!r}" for k in diff)
            raise ValueError(f"{self._arch_name(model)} is not a depth variant of {self._arch_name(self.source.model)} "
                             f"({detail})")
        return model

    def _stage_pairs(self, target_depths, stretch):
        src = self.layout.depths()
        if len(src) != len(target_depths):
            raise ValueError(f"stage count differs: source {len(src)}, target {len(target_depths)}")
        pairs = []
        for s, (sd, td) in enumerate(zip(src, target_depths), start=1):
            if stretch is True and td < sd:
                raise ValueError(f"stage {s}: target has {td} blocks, source {sd}; use squeeze() for shallower targets")
            if stretch is False and td > sd:
                raise ValueError(f"stage {s}: target has {td} blocks, source {sd}; use stretch() for deeper targets")
            pairs.append((s, sd, td))
        return pairs

    @staticmethod
    def _check_mapping(mapping, s_stages, t_stages):
        if set(mapping) != set(t_stages):
            raise ValueError(f"the mapping must name every stage {sorted(t_stages)}, got {sorted(mapping)}")
        for stage, slots in mapping.items():
            if len(slots) != len(t_stages[stage]):
                raise ValueError(f"stage {stage}: the target has {len(t_stages[stage])} blocks, the mapping "
                                 f"fills {len(slots)}")
            if slots[0] != 0:
                raise ValueError(f"stage {stage}: the entry (down-sampling) block must map to source block 0")
            if 0 in slots[1:]:
                raise ValueError(f"stage {stage}: the entry block 0 cannot be replicated")
            bad = [i for i in slots if not 0 <= i < len(s_stages[stage])]
            if bad:
                raise ValueError(f"stage {stage}: source blocks {bad} do not exist (source has "
                                 f"{len(s_stages[stage])} blocks)")

    def _arch_name(self, model) -> str:
        return family_of(model).display_name(model)
