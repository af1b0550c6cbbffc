"""The lottery settings of a run as one typed object, from the command line to the flow and the ticket.

``LotteryArguments`` (the command-line dataclass) makes one; ``lottery_config.json``,
``flow.json`` and ticket folders store its JSON form; :meth:`LotterySettings.from_dict`
reads it back with the defaults stated here and nowhere else.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING

from ..errors import check_field_types
from .masks import PRUNING_SCOPES, SCHEDULES, Mask, next_mask

if TYPE_CHECKING:
    from torch import nn

__all__ = ["LotterySettings", "PRUNE_PRESETS"]

#: named prunable sets. ``rg_paper``: the RG paper's convention (Redman et al. 2022, whose data
#: came from code that prunes only the residual stages): of the family's default prunable tensors
#: (after the include/exclude patterns) only those inside a block of a stage — for a ResNet the
#: stage convolutions *including* the down-sampling projections; stem and classifier stay dense,
#: so M_i(n) is normalised over what is prunable. For BERT: the encoder layers' matrices (no pooler).
PRUNE_PRESETS = ("rg_paper",)


@dataclass(frozen=True)
class LotterySettings:
    """How IMP prunes and rewinds (Frankle et al. 2020): what every level of a run shares."""

    prune_fraction: float = 0.2
    pruning: str = "global"
    schedule: str = "geometric"
    rewind_steps: int = 0
    prune_include: tuple[str, ...] | None = None
    prune_exclude: tuple[str, ...] | None = None
    prune_preset: str | None = None

    def __post_init__(self):
        check_field_types(self)  # LotterySettings(prune_fraction="0.2") is refused naming the field
        for name in ("prune_include", "prune_exclude"):
            value = getattr(self, name)
            if value is not None:
                value = tuple(str(v) for v in value)
                object.__setattr__(self, name, value)
                for pattern in value:
                    try:
                        re.compile(pattern)
                    except re.error as e:
                        raise ValueError(f"--{name} {pattern!r} is not a regular expression ({e}); give Python "
                                         f"regular expressions matched against parameter names, e.g. "
                                         f"'^fc\\.' or 'layer[12]\\.'") from None
        if not 0.0 < self.prune_fraction < 1.0:
            raise ValueError(f"--prune_fraction must lie strictly between 0 and 1, got {self.prune_fraction}")
        if self.pruning not in PRUNING_SCOPES:
            raise ValueError(f"--pruning must be one of {PRUNING_SCOPES}, got {self.pruning!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if int(self.rewind_steps) < 0:
            raise ValueError(f"--rewind_steps must be >= 0, got {self.rewind_steps}")
        if self.prune_preset is not None and self.prune_preset not in PRUNE_PRESETS:
            raise ValueError(f"--prune_preset must be one of {PRUNE_PRESETS} (or left out), got {self.prune_preset!r}")

    def prunable_parameters(self, model: nn.Module) -> list[str]:
        """The parameters IMP prunes in ``model``: the family default or the include/exclude patterns, then the preset.

        ``rg_paper`` keeps only tensors inside the blocks of the model's stages, as the model
        family's :class:`~lottery_rg.models.families.Layout` describes them (no stem, no head).
        """
        from ..models.families import family_of, prunable_parameters

        names = prunable_parameters(model, self.prune_include, self.prune_exclude)
        if self.prune_preset == "rg_paper":
            inner = getattr(model, "module", model)
            layout = family_of(inner).layout(inner)
            names = [n for n in names if layout.block_of(n) is not None]
            if not names:
                raise ValueError("--prune_preset rg_paper leaves nothing to prune: no prunable tensor lies in a "
                                 "block of a stage of this model")
        return names

    def check_levels(self, levels: int) -> None:
        """Refuse a number of levels the schedule cannot reach."""
        if self.schedule == "linear" and levels * self.prune_fraction >= 1.0:
            raise ValueError(
                f"a linear schedule removing {self.prune_fraction:.0%} of the original weights per level leaves "
                f"nothing after {levels} levels; use fewer levels or a smaller --prune_fraction")

    def target_density(self, level: int) -> float:
        """Nominal density of the prunable weights after ``level`` levels (before rounding)."""
        if self.schedule == "geometric":
            return (1.0 - self.prune_fraction) ** level
        return 1.0 - self.prune_fraction * level

    def next_mask(self, weights: Mapping, mask: Mapping) -> Mask:
        """The mask of the next level: prune ``weights`` (the trained level) under ``mask`` by magnitude."""
        return next_mask(weights, mask, self.prune_fraction, scope=self.pruning, schedule=self.schedule)

    def to_dict(self) -> dict:
        d = asdict(self)
        for name in ("prune_include", "prune_exclude"):
            if d[name] is not None:
                d[name] = list(d[name])
        if d["prune_preset"] is None:  # runs recorded before presets existed read back equal
            del d["prune_preset"]
        return d

    def schedule_dict(self) -> dict:
        """The part a flow records (``flow.json``'s ``schedule``)."""
        d = {"prune_fraction": self.prune_fraction, "schedule": self.schedule, "pruning": self.pruning,
             "rewind_steps": self.rewind_steps}
        if self.prune_preset is not None:
            d["prune_preset"] = self.prune_preset
        return d

    @classmethod
    def from_dict(cls, data: Mapping | None) -> LotterySettings:
        """Read the JSON form back; keys this class does not know (``control``, ``elastic``…) are ignored."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in dict(data or {}).items() if k in known})
