"""The IMP flow and its renormalization-group reading (Redman et al. 2022, Eq. 13).

Prunable weights are grouped into units i (a tensor, a residual block / encoder layer, or
a stage; the grouping comes from :meth:`lottery_rg.models.families.Layout.units`). After IMP
level n::

    M_i(n) = surviving weights in unit i / surviving prunable weights in the whole model

so that Σ_i M_i(n) = 1. :class:`IMPFlow` records, level by level, the number of
surviving weights of every prunable tensor (and the level's evaluation metrics); every
granularity's M_i(n) follows from those counts.

Eigenvalues. For each consecutive pair of levels (n, n+1) inside the window with
M_i(n) > 0, λ_i(n) = M_i(n+1) / M_i(n). The reported λ_i is the mean over the pairs and
``std`` their standard deviation. **Convention: population standard deviation**
(``ddof=0``, numpy's default) unless ``ddof=1`` is passed; the paper does not say which
it used. Pairs with M_i(n) = 0 are skipped and counted (``n_skipped``); units whose M
reached 0 inside the window are flagged ``collapsed``. Only pairs of *consecutive* level
numbers count as one IMP application; the window stops at the first missing level.

Classes, the eigenvalue table and comparisons live in :mod:`lottery_rg.flow.eigen`; the
critical-exponent fit in :mod:`lottery_rg.flow.scaling`; figures in :mod:`lottery_rg.flow.plots`.
Command line: ``lottery-rg flow RUN_DIR ...`` or ``python -m lottery_rg flow RUN_DIR ...``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from ..io import atomic_write_text, card_template, json_path, jsonable, read_json, state_from_file
from ..models.families import GRANULARITIES, Layout, Unit, family_of, get_family
from ..pruning.settings import LotterySettings
from ..run import FLOW_FILE, RunDir
from .eigen import (
    EigenvalueTable,
    FlowComparison,
    Rule,
    _rule,
    compare_stages,
    compare_units,
    eigenvalue_table,
    window_levels,
)
from .uncertainty import BOOTSTRAP_SEED, N_BOOT

if TYPE_CHECKING:
    import datasets

    from .scaling import ScalingFit

__all__ = ["SCHEMA_VERSION", "FLOW_FILE", "NORMALIZATIONS", "CONTROL_STARTS", "IMPFlow", "compare_flows"]

SCHEMA_VERSION = 1
#: denominators of M: every prunable weight (Eq. 13) or the residual stages only (Redman et al. 2022, Table 2)
NORMALIZATIONS = ("all", "stages")
CONTROL_STARTS = ("rewind", "init")


def _unit_to_dict(u: Unit) -> dict:
    d = dataclasses.asdict(u)
    d["params"] = list(u.params)
    return d


def _unit_from(u: Unit | Mapping) -> Unit:
    if isinstance(u, Unit):
        return u
    return Unit(name=str(u["name"]), kind=str(u["kind"]), stage=u.get("stage"), index=u.get("index"),
                downsample=bool(u.get("downsample", False)), params=tuple(u["params"]))


# --------------------------------------------------------------------------- the flow


@dataclass(eq=False)
class IMPFlow:
    """Surviving-weight counts of every prunable tensor at every IMP level, plus metrics.

    ``model``: JSON description of the model (at least ``family`` and ``architecture``);
    ``tensors``: prunable tensor name -> number of elements (ordered); ``units``:
    granularity -> list of :class:`~lottery_rg.models.families.Unit`; ``schedule``: the pruning
    schedule (prune_fraction, schedule, pruning, rewind_steps, ...); ``levels``: records
    ``{"level": n, "surviving": {tensor: count}, "metrics": {...}}`` sorted by level.
    Equality compares the JSON form (:meth:`to_dict`).
    """

    model: dict
    tensors: dict[str, int]
    units: dict[str, list[Unit]]
    schedule: dict = field(default_factory=dict)
    levels: list[dict] = field(default_factory=list)
    controls: dict = field(default_factory=dict)

    def __post_init__(self):
        self.model = jsonable(dict(self.model or {}))
        self.schedule = jsonable(dict(self.schedule or {}))
        self.tensors = {str(k): int(v) for k, v in self.tensors.items()}
        if not self.tensors:
            raise ValueError("an IMP flow needs at least one prunable tensor")
        if any(v <= 0 for v in self.tensors.values()):
            raise ValueError("every prunable tensor must have at least one element")
        self.units = {str(g): [_unit_from(u) for u in us] for g, us in self.units.items()}
        for g, us in self.units.items():
            seen: dict[str, str] = {}
            for u in us:
                for p in u.params:
                    if p not in self.tensors:
                        raise ValueError(f"{g} unit {u.name!r} holds {p!r}, which is not a prunable tensor of "
                                         f"this flow")
                    if p in seen:
                        raise ValueError(f"{p!r} belongs to two {g} units ({seen[p]!r} and {u.name!r})")
                    seen[p] = u.name
            missing = [t for t in self.tensors if t not in seen]
            if missing:
                raise ValueError(f"the {g} units do not cover the prunable tensors {missing[:5]}; M would not sum to 1")
            names = [u.name for u in us]
            if len(set(names)) != len(names):
                raise ValueError(f"duplicate {g} unit names")
        self.controls = {str(k): self._control_from(c) for k, c in dict(self.controls or {}).items()}
        records = [self._record(r["level"], r["surviving"], r.get("metrics")) for r in self.levels]
        numbers = [r["level"] for r in records]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"duplicate level numbers in {numbers}")
        self.levels = sorted(records, key=lambda r: r["level"])

    def _control_from(self, c) -> IMPFlow:
        if isinstance(c, IMPFlow):
            if c.tensors != self.tensors:
                raise ValueError("a control must have the flow's prunable tensors")
            return c
        c = dict(c)
        return IMPFlow(model=c.get("model") or {}, tensors=self.tensors, units=self.units,
                       schedule=c.get("schedule") or {}, levels=c.get("levels") or [])

    def _record(self, level: int, surviving: Mapping[str, int], metrics: Mapping | None) -> dict:
        level = int(level)
        if level < 0:
            raise ValueError(f"level numbers start at 0, got {level}")
        surviving = {str(k): int(v) for k, v in surviving.items()}
        extra = [k for k in surviving if k not in self.tensors]
        missing = [k for k in self.tensors if k not in surviving]
        if extra or missing:
            raise ValueError(f"level {level}: counts for unknown tensors {extra[:5]} / missing tensors {missing[:5]}")
        for k, v in surviving.items():
            if not 0 <= v <= self.tensors[k]:
                raise ValueError(f"level {level}: {v} surviving weights in {k!r}, which has {self.tensors[k]}")
        if sum(surviving.values()) == 0:
            raise ValueError(f"level {level}: no weight survives")
        return {"level": level, "surviving": {k: surviving[k] for k in self.tensors},
                "metrics": jsonable(dict(metrics or {}))}

    # ----------------------------------------------------------------- construction

    @classmethod
    def from_layout(cls, layout: Layout, tensors: Mapping[str, int], *, model_info: dict | None = None,
                    schedule: dict | None = None) -> IMPFlow:
        """A flow without levels for ``tensors`` (name -> numel) grouped by ``layout``."""
        names = list(tensors)
        units = {g: layout.units(names, g) for g in GRANULARITIES}
        info = dict(model_info or {})
        info.setdefault("family", layout.family)
        return cls(model=info, tensors=dict(tensors), units=units, schedule=dict(schedule or {}))

    @classmethod
    def from_model(cls, model: nn.Module, prunable: Sequence[str], *, model_info: dict | None = None,
                   schedule: dict | None = None) -> IMPFlow:
        """A flow without levels for ``model``'s ``prunable`` tensors (works on the meta device)."""
        model = getattr(model, "module", model)  # DDP
        family = family_of(model)
        params = dict(model.named_parameters())
        missing = [p for p in prunable if p not in params]
        if missing:
            raise ValueError(f"the model has no parameters named {missing[:5]}")
        if model_info is None:
            try:
                model_info = family.architecture(model)
            except ValueError:
                model_info = {"architecture": type(model).__name__}
        model_info = {"family": family.name, **dict(model_info)}
        return cls.from_layout(family.layout(model), {p: params[p].numel() for p in prunable},
                               model_info=model_info, schedule=schedule)

    def add_level(self, level: int, mask: Mapping[str, Any], metrics: dict | None = None) -> dict:
        """Record level ``level`` from its bool mask (or from counts); replaces an existing record."""
        surviving = {}
        for name, m in mask.items():
            if isinstance(m, (int, np.integer)):
                surviving[name] = int(m)
                continue
            numel = int(m.numel()) if hasattr(m, "numel") else int(np.size(m))
            if name in self.tensors and numel != self.tensors[name]:
                raise ValueError(f"mask entry {name!r} has {numel} elements, the flow's tensor has "
                                 f"{self.tensors[name]}")
            dtype = str(getattr(m, "dtype", ""))
            if "bool" not in dtype:
                raise ValueError(f"mask entry {name!r} is {dtype or type(m).__name__}; masks must be boolean")
            surviving[name] = int(m.sum())
        rec = self._record(level, surviving, metrics)
        self.levels = sorted([r for r in self.levels if r["level"] != rec["level"]] + [rec], key=lambda r: r["level"])
        return rec

    def set_metrics(self, level: int, metrics: dict, *, update: bool = True) -> None:
        """Attach (merge, or with ``update=False`` replace) the metrics of a recorded level."""
        rec = self._level(level)
        rec["metrics"] = {**rec["metrics"], **jsonable(dict(metrics))} if update else jsonable(dict(metrics))

    def _level(self, level: int) -> dict:
        for r in self.levels:
            if r["level"] == int(level):
                return r
        raise KeyError(f"level {level} is not recorded (levels: {self.level_numbers})")

    # ----------------------------------------------------------------- persistence

    def to_dict(self) -> dict:
        return {
            "schema_version": SCHEMA_VERSION,
            "library": "lottery_rg",
            "model": copy.deepcopy(self.model),
            "schedule": copy.deepcopy(self.schedule),
            "tensors": dict(self.tensors),
            "units": {g: [_unit_to_dict(u) for u in us] for g, us in self.units.items()},
            "levels": copy.deepcopy(self.levels),
            # the untrained controls (θ_k, θ_0 pruned without training), when attached: same tensors and units
            **({"controls": {k: {"model": copy.deepcopy(c.model), "schedule": copy.deepcopy(c.schedule),
                                 "levels": [{"level": r["level"], "surviving": dict(r["surviving"])} for r in c.levels]}
                             for k, c in self.controls.items()}} if self.controls else {}),
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> IMPFlow:
        version = data.get("schema_version")
        if version is None:
            raise ValueError("not an IMP flow: no 'schema_version' (expected a lottery_rg flow.json)")
        if int(version) > SCHEMA_VERSION:
            raise ValueError(f"flow schema version {version} is newer than this lottery_rg understands "
                             f"({SCHEMA_VERSION}); upgrade lottery_rg")
        for key in ("model", "tensors", "units"):
            if key not in data:
                raise ValueError(f"not an IMP flow: missing {key!r}")
        return cls(model=data["model"], tensors=data["tensors"], units=data["units"],
                   schedule=data.get("schedule") or {}, levels=data.get("levels") or [],
                   controls=data.get("controls") or {})

    def to_json(self, indent: int | None = 1) -> str:
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``flow.json`` atomically (temp file, then ``os.replace``); ``path`` is a file or a directory."""
        path = json_path(path, FLOW_FILE)
        path.parent.mkdir(parents=True, exist_ok=True)
        return atomic_write_text(path, self.to_json(), fsync=True)

    @classmethod
    def load(cls, path: str | os.PathLike) -> IMPFlow:
        """Read a ``flow.json`` (or a directory holding one)."""
        path = json_path(path, FLOW_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no flow file at {path}")
        data = read_json(path)
        if not isinstance(data, dict):
            raise ValueError(f"{path} is not an IMP flow file")
        try:
            return cls.from_dict(data)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from None

    @classmethod
    def from_run_dir(cls, run_dir: str | os.PathLike) -> IMPFlow:
        """The flow of an IMP run directory.

        Reads ``run_dir/flow.json`` when present and adds any ``level_XX`` whose mask is on
        disk but missing from it (a run interrupted between writing a level and the flow).
        Otherwise rebuilds the flow from ``lottery_config.json`` (model, prunable, lottery)
        and the ``level_XX/mask.safetensors`` + ``metrics.json`` files; the model is built
        on the meta device only to learn its layout. ``metrics.json`` is either the
        trainer's level record (metrics under its ``"metrics"`` key) or a flat object.
        """
        from ..pruning.masks import load_mask

        run = RunDir(run_dir)
        if not run.root.is_dir():
            raise FileNotFoundError(f"no run directory at {run.root}")
        levels = run.level_numbers(require="mask.safetensors")
        if run.flow.is_file():
            flow = cls.load(run.flow)
            for n in levels:
                if n not in flow.level_numbers:
                    flow.add_level(n, load_mask(run.mask(n)), run.level_metrics(n))
            return flow
        if not run.config.is_file():
            raise FileNotFoundError(f"{run.root} holds neither {FLOW_FILE} nor {run.config.name}; is it an IMP run "
                                    f"directory?")
        config = run.read_config()
        for key in ("model", "prunable"):
            if key not in config:
                raise ValueError(f"{run.config} has no {key!r} entry")
        model_info = dict(config["model"])
        if "family" not in model_info:
            raise ValueError(f"{run.config}: the 'model' entry names no 'family'")
        with torch.device("meta"):
            model = get_family(model_info["family"]).build(model_info)
        flow = cls.from_model(model, list(config["prunable"]), model_info=model_info,
                              schedule=config.get("lottery") or {})
        for n in levels:
            flow.add_level(n, load_mask(run.mask(n), model), run.level_metrics(n))
        return flow

    @classmethod
    def from_pretrained(cls, path_or_repo_id: str | os.PathLike, revision: str | None = None, *,
                        filename: str = FLOW_FILE, subfolder: str | None = None, **hub_kwargs) -> IMPFlow:
        """A flow from a run directory, a ticket directory, a ``flow.json`` file, or a Hub repository.

        Local paths win; anything else is treated as a repository id and ``filename`` is
        fetched with :func:`huggingface_hub.hf_hub_download` (``revision``, ``subfolder``
        and further keyword arguments such as ``cache_dir`` or ``token`` are passed on): from a
        data-set repository (how :meth:`push_to_hub` shares flows), else from a model repository
        (flows pushed by lottery_rg 0.1, and ticket repos). ``repo_type=`` picks one.
        """
        path = Path(os.path.expanduser(os.fspath(path_or_repo_id)))
        if path.is_dir():
            if subfolder:
                path = path / subfolder
            if filename != FLOW_FILE:
                return cls.load(path / filename)
            return cls.from_run_dir(path)
        if path.is_file():
            return cls.load(path)
        text = os.fspath(path_or_repo_id)
        if text.startswith((".", "/", "~")) or text.endswith(".json") or text.count("/") > 1 or "\\" in text:
            raise FileNotFoundError(f"no flow at {text} (not a local file or directory, nor a Hub repository id)")
        from huggingface_hub import hf_hub_download

        kwargs = dict(hub_kwargs)
        if subfolder:
            kwargs["subfolder"] = subfolder
        from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

        repo_type = kwargs.pop("repo_type", None)
        tried = [repo_type] if repo_type else ["dataset", "model"]  # flows are data sets; older ones model repos
        for i, rtype in enumerate(tried):
            try:
                file = hf_hub_download(repo_id=text, filename=filename, revision=revision, repo_type=rtype, **kwargs)
            except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError):
                if i == len(tried) - 1:
                    raise
                continue
            return cls.load(file)
        raise FileNotFoundError(f"no flow in {text}")  # not reached

    @classmethod
    def untrained_control(cls, run_dir: str | os.PathLike, start: str = "rewind") -> IMPFlow:
        """The flow the run's schedule would follow *without training*: fixed weights pruned again and again.

        ``start="rewind"`` prunes the rewind weights θ_k (``rewind.safetensors``; k SGD steps
        when the run rewinds to step k > 0); ``start="init"`` prunes the initialisation θ_0
        (``init.safetensors``, or ``rewind.safetensors`` when k = 0). The choice is recorded
        in ``schedule["control"]`` ("untrained"), ``schedule["control_from"]``, the weights'
        step ``schedule["control_step"]`` and the model name. A control for the RG reading:
        with unchanged weights, global magnitude pruning only sees the weights' per-layer
        scales (e.g. Kaiming's fan-out scaling), so eigenvalue patterns it reproduces are
        not evidence about what training learned.
        """
        if start not in CONTROL_STARTS:
            raise ValueError(f"start must be one of {CONTROL_STARTS}, got {start!r}")
        run = RunDir(run_dir)
        trained = cls.from_run_dir(run.root)
        sched, settings = trained.schedule, trained.settings
        k = int(sched.get("rewind_steps", 0) or 0)
        path = run.rewind if start == "rewind" else run.initial_weights()
        step = k if start == "rewind" else 0
        weights = state_from_file(path, list(trained.tensors))
        theta = f"θ_{step}" if start == "init" or k == 0 else f"θ_k, k = {k}"
        control = cls(model=dict(trained.model, name=f"{trained.label} (untrained control from {theta})"),
                      tensors=dict(trained.tensors), units=trained.units,
                      schedule=dict(sched, control="untrained", control_from=start, control_step=step,
                                    control_weights=path.name))
        return control._prune_fixed(weights, settings, max(trained.level_numbers))

    def attach_controls(self, run_dir: str | os.PathLike, starts: Sequence[str] = CONTROL_STARTS) -> IMPFlow:
        """Compute the untrained controls of the run (θ_k and θ_0) and keep them in ``controls`` (saved with the flow).

        The controls then travel with ``flow.json`` (tickets, Hub data sets), so every report of
        this flow shows them. Returns ``self``.
        """
        for start in starts:
            self.controls[start] = IMPFlow.untrained_control(run_dir, start=start)
        return self

    def control(self, start: str = "rewind") -> IMPFlow | None:
        """The attached control from ``start`` ("rewind" = θ_k, "init" = θ_0) if it covers this flow's levels."""
        c = self.controls.get(start)
        return c if c is not None and c.level_numbers == self.level_numbers else None

    def _prune_fixed(self, weights: Mapping[str, torch.Tensor], settings: LotterySettings, levels: int) -> IMPFlow:
        """Record levels 0…``levels`` of pruning the fixed ``weights`` again and again (no training)."""
        mask = {n: torch.ones_like(weights[n], dtype=torch.bool) for n in self.tensors}
        weights = {n: weights[n] for n in self.tensors}
        for level in range(int(levels) + 1):
            self.add_level(level, mask)
            if level < int(levels):
                mask = settings.next_mask(weights, mask)
        return self

    @classmethod
    def untrained(cls, model: nn.Module, levels: int, settings: LotterySettings | None = None, *,
                  prunable: Sequence[str] | None = None, name: str | None = None) -> IMPFlow:
        """The flow of pruning ``model``'s current weights ``levels`` times by ``settings``: no data, no training.

        ``prunable`` defaults to ``settings.prunable_parameters(model)`` (the family's default set,
        the include/exclude patterns and the preset, e.g. ``prune_preset="rg_paper"``). With a
        freshly initialised model this is one draw of the init-scale null
        (:class:`lottery_rg.flow.null.InitScaleNull` is its closed form).
        """
        settings = settings or LotterySettings()
        model = getattr(model, "module", model)
        prunable = list(prunable) if prunable is not None else settings.prunable_parameters(model)
        flow = cls.from_model(model, prunable, schedule=dict(settings.schedule_dict(), control="untrained",
                                                              control_from="given weights"))
        if name:
            flow.model["name"] = name
        params = dict(model.named_parameters())
        weights = {n: params[n].detach() for n in prunable}
        return flow._prune_fixed(weights, settings, levels)

    # ----------------------------------------------------------------- sharing

    def save_pretrained(self, save_directory: str | os.PathLike, repo_id: str | None = None) -> Path:
        """A data-set folder for the Hub: ``flow.json``, the table ``data/flow_table.csv`` (one row per unit and
        level; ``datasets.load_dataset`` reads it through the card's ``configs``), the plots and a data-set card.

        The card template is ``model_cards/flow_card.md``.
        """
        from huggingface_hub import DatasetCard, DatasetCardData

        from .plots import write_plots

        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        self.save(out / FLOW_FILE)
        self.save_table(out / "data" / "flow_table.csv")
        eigen = stages = nulls = per_level = "(fewer than 3 levels)"
        reports = {}
        if len(self.levels) >= 3:
            from .analysis import flow_report

            block = reports["block"] = flow_report(self, "block")  # once, for the plots and the card
            eigen, stages, per_level = block.table.to_markdown(), self.eigenvalues("stage").to_markdown(), \
                block.table.levels_markdown()
            nulls = block.null_markdown()
        plots = write_plots(out, [], self, ("block",), reports=reports)
        family = self.model.get("family", "")
        arch = self.model.get("architecture", self.label)
        data = DatasetCardData(
            tags=sorted({"imp-flow", "lottery-ticket", "pruning", "lottery_rg", *([family] if family else [])}),
            pretty_name=f"{arch} IMP flow", size_categories=["n<1K"],
            configs=[{"config_name": "default", "data_files": [{"split": "train", "path": "data/flow_table.csv"}]}])
        sched = self.schedule
        card = DatasetCard.from_template(
            data, template_path=card_template("flow_card.md"), model_name=f"{arch}-imp-flow", architecture=arch,
            family=family,
            levels=len(self.levels), density=float(self.densities().iloc[-1]) if self.levels else 1.0,
            schedule=f"{sched.get('pruning', '?')}, {sched.get('schedule', '?')}, {sched.get('prune_fraction', '?')} "
                     f"per level, rewind step {sched.get('rewind_steps', '?')}",
            eigen_table=eigen, stage_table=stages, null_table=nulls, levels_table=per_level, plots=plots,
            schema_version=SCHEMA_VERSION, has_controls=bool(self.controls),
            repo_id=repo_id or "<repo id>")
        card.save(out / "README.md")
        return out

    def push_to_hub(self, repo_id: str, *, token: str | bool | None = None, private: bool | None = None,
                    branch: str | None = None, commit_message: str = "IMP flow") -> str:
        """Upload the flow as a Hub *data set* (``repo_type="dataset"``; the ``save_pretrained`` folder)."""
        import tempfile

        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        if branch:
            api.create_branch(repo_id, branch=branch, repo_type="dataset", exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, repo_id=repo_id)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, repo_type="dataset", revision=branch,
                                     commit_message=commit_message)
        return getattr(info, "commit_url", str(info))

    # ----------------------------------------------------------------- basic views

    def __eq__(self, other) -> bool:
        if not isinstance(other, IMPFlow):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        lv = self.level_numbers
        lv_text = f"{lv[0]}..{lv[-1]}" if lv else "none"
        return (f"IMPFlow({self.label}, {len(self.tensors)} prunable tensors, levels {lv_text}, "
                f"granularities {list(self.units)})")

    @property
    def label(self) -> str:
        m = self.model
        return str(m.get("name") or m.get("architecture") or m.get("family") or "IMP flow")

    @property
    def settings(self) -> LotterySettings:
        """The lottery settings the flow was recorded with (defaults for what was not recorded)."""
        return LotterySettings.from_dict(self.schedule)

    @property
    def level_numbers(self) -> list[int]:
        return [r["level"] for r in self.levels]

    @property
    def granularities(self) -> list[str]:
        return list(self.units)

    @property
    def total(self) -> int:
        """Number of prunable weights."""
        return sum(self.tensors.values())

    def get_units(self, granularity: str = "block") -> list[Unit]:
        try:
            return self.units[granularity]
        except KeyError:
            raise ValueError(f"this flow has no {granularity!r} units; it has {list(self.units)}") from None

    def unit(self, name: str, granularity: str = "block") -> Unit:
        for u in self.get_units(granularity):
            if u.name == name:
                return u
        raise KeyError(f"no {granularity} unit named {name!r}; units: {[u.name for u in self.get_units(granularity)]}")

    def surviving(self, granularity: str | None = None) -> pd.DataFrame:
        """Surviving weights per level (rows) and tensor, or per unit of ``granularity`` (columns)."""
        if not self.levels:
            raise ValueError("the flow has no levels yet")
        tensors = list(self.tensors)
        values = np.array([[r["surviving"][t] for t in tensors] for r in self.levels], dtype=np.int64)
        index = pd.Index(self.level_numbers, name="level")
        if granularity is None:
            counts = pd.DataFrame(values, index=index, columns=tensors)
            counts.columns.name = "tensor"
            return counts
        units = self.get_units(granularity)
        col = {t: i for i, t in enumerate(tensors)}
        sums = np.stack([values[:, [col[p] for p in u.params]].sum(axis=1) for u in units], axis=1)
        out = pd.DataFrame(sums, index=index, columns=[u.name for u in units])
        out.columns.name = "unit"
        return out

    def totals(self, granularity: str = "block") -> pd.Series:
        """Number of prunable weights per unit."""
        units = self.get_units(granularity)
        return pd.Series({u.name: sum(self.tensors[p] for p in u.params) for u in units}, name="total", dtype="int64")

    def stage_tensors(self) -> list[str]:
        """The prunable tensors inside the residual stages (blocks / encoder layers): not stem, head or other."""
        units = self.units.get("stage") or self.units.get("block") or []
        inside = {p for u in units if u.stage is not None and u.kind in ("stage", "block") for p in u.params}
        if not inside:
            raise ValueError(f"{self.label}: no prunable tensor lies in a residual stage, so M cannot be normalised "
                             f"over the stages")
        return [t for t in self.tensors if t in inside]

    def M(self, granularity: str = "block", normalize: str = "all") -> pd.DataFrame:
        """M_i(n) (Eq. 13): rows = levels, columns = units; every row sums to 1.

        ``normalize="all"`` (default) divides by every surviving prunable weight.
        ``normalize="stages"`` divides by the surviving weights of the residual stages only
        and drops the units outside them (stem, head): the normalisation of the paper's
        ResNet-50 Table 2 (Redman et al. 2022), whose four stage shares sum to 1 without stem and fc.
        """
        counts = self.surviving(granularity)
        counts = counts[self._normalized_units(granularity, normalize)]
        return counts.div(counts.sum(axis=1), axis=0).astype(float)

    def _normalized_units(self, granularity: str, normalize: str) -> list[str]:
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        units = self.get_units(granularity)
        if normalize == "all":
            return [u.name for u in units]
        inside = set(self.stage_tensors())
        keep = []
        for u in units:
            n_in = sum(p in inside for p in u.params)
            if n_in == len(u.params):
                keep.append(u.name)
            elif n_in:
                raise ValueError(f"{granularity} unit {u.name!r} straddles the stages and the rest of the model")
        return keep

    def densities(self) -> pd.Series:
        """Surviving fraction of the prunable weights at each level."""
        counts = self.surviving()
        return (counts.sum(axis=1) / self.total).rename("density")

    def metrics(self) -> pd.DataFrame:
        """The recorded metrics, one row per level."""
        return pd.DataFrame([r["metrics"] for r in self.levels], index=pd.Index(self.level_numbers, name="level"))

    # ----------------------------------------------------------------- analysis

    def eigenvalues(self, granularity: str = "block", window: int | None = None, start: int = 0, *,
                    rule: Rule | float | None = None, ddof: int = 0, eigen_tol: float = 0.05,
                    normalize: str = "all", block_length: int | None = None, n_boot: int = N_BOOT,
                    boot_seed: int = BOOTSTRAP_SEED) -> EigenvalueTable:
        """λ_i ± std per unit from ``window`` consecutive IMP applications starting at level ``start``.

        ``window=None`` uses every consecutive pair from ``start`` on (the paper used the
        first 17 applications for VGG-16). ``rule`` is a :class:`ClassRule`, a number k
        (ClassRule(k=k)) or a callable (λ, std) -> class name. ``ddof=0`` (default) gives
        the population standard deviation, ``ddof=1`` the sample one. ``normalize``: see
        :meth:`M`. The ``se`` column is the moving-block-bootstrap standard error of λ over
        the window's ratios (``block_length``, ``n_boot``, ``boot_seed``; see
        :mod:`lottery_rg.flow.uncertainty`); the class uses ``std`` (the paper's rule).
        """
        if ddof not in (0, 1):
            raise ValueError("ddof must be 0 (population std) or 1 (sample std)")
        rule = _rule(rule)
        M = self.M(granularity, normalize)
        used = window_levels(M.index, start, window)
        kept = set(M.columns)
        units = [u for u in self.get_units(granularity) if u.name in kept]
        return eigenvalue_table(M, units, used, granularity=granularity, start=start, window=window, rule=rule,
                                ddof=ddof, eigen_tol=eigen_tol, label=self.label, normalize=normalize,
                                block_length=block_length, n_boot=n_boot, boot_seed=boot_seed)

    def compare(self, other: IMPFlow | Any, granularity: str = "block", *, window: int | None = None, start: int = 0,
                rule: Rule | float | None = None, ddof: int = 0, by: str = "auto", exclude_entry: bool = True,
                labels: tuple[str, str] | None = None, relation: str = "auto", normalize: str = "all",
                alpha: float = 0.05, **kwargs) -> FlowComparison:
        """Compare two flows (or pools of seeds, :class:`~lottery_rg.flow.pool.FlowPool`); see :func:`compare_flows`."""
        return compare_flows(self, other, granularity, window=window, start=start, rule=rule, ddof=ddof, by=by,
                             exclude_entry=exclude_entry, labels=labels, relation=relation, normalize=normalize,
                             alpha=alpha, **kwargs)

    def critical_exponent(self, metric: str = "eval_accuracy", *, accuracy_in_percent: bool = False,
                          **fit_kwargs: Any) -> ScalingFit:
        """Fit Eq. 14 to this flow's levels (see :func:`lottery_rg.flow.scaling.fit_critical_exponent`)."""
        from .scaling import fit_critical_exponent, points_from_flows

        d, e = points_from_flows([self], metric, accuracy_in_percent=accuracy_in_percent)
        return fit_critical_exponent(d, e, **fit_kwargs)

    # ----------------------------------------------------------------- tables

    def to_dataframe(self, granularities: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per (granularity, unit, level).

        Columns: granularity, unit, kind, stage, index, downsample, level, surviving, total,
        density (the unit's surviving fraction), M, model_density (the whole model's
        surviving fraction), then one column per scalar metric (prefixed ``metric_`` when
        the name clashes with a column above).
        """
        granularities = list(granularities or self.units)
        dens = self.densities() if self.levels else pd.Series(dtype=float)
        rows = []
        for g in granularities:
            counts = self.surviving(g) if self.levels else None
            Mg = self.M(g) if self.levels else None
            totals = self.totals(g)
            for u in self.get_units(g):
                for r in self.levels:
                    n = r["level"]
                    s = int(counts.at[n, u.name])
                    rows.append({
                        "granularity": g, "unit": u.name, "kind": u.kind, "stage": u.stage, "index": u.index,
                        "downsample": u.downsample, "level": n, "surviving": s, "total": int(totals[u.name]),
                        "density": s / int(totals[u.name]), "M": float(Mg.at[n, u.name]),
                        "model_density": float(dens.loc[n]),
                    })
        base = ["granularity", "unit", "kind", "stage", "index", "downsample", "level", "surviving", "total",
                "density", "M", "model_density"]
        df = pd.DataFrame(rows, columns=base)
        scalar_keys: list[str] = []
        for r in self.levels:
            for k, v in r["metrics"].items():
                if (v is None or isinstance(v, (int, float, str, bool))) and k not in scalar_keys:
                    scalar_keys.append(k)
        for k in scalar_keys:
            col = f"metric_{k}" if k in base else k
            values = {r["level"]: r["metrics"].get(k) for r in self.levels}
            df[col] = df["level"].map(values)
        for c in ("stage", "index"):
            df[c] = df[c].astype("Int64")
        for c in ("level", "surviving", "total"):
            df[c] = df[c].astype("int64")
        return df

    def to_dataset(self, granularities: Sequence[str] | None = None) -> datasets.Dataset:
        """The :meth:`to_dataframe` table as a ``datasets.Dataset``."""
        import datasets

        return datasets.Dataset.from_pandas(self.to_dataframe(granularities), preserve_index=False)

    def save_table(self, path: str | os.PathLike, granularities: Sequence[str] | None = None) -> Path:
        """Write :meth:`to_dataframe` as CSV (``.csv``) or Parquet (``.parquet`` / ``.pq``)."""
        path = Path(path)
        df = self.to_dataframe(granularities)
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        if suffix == ".csv":
            df.to_csv(path, index=False)
        elif suffix in (".parquet", ".pq"):
            df.to_parquet(path, index=False)
        else:
            raise ValueError(f"save_table writes .csv or .parquet files, got {path.name!r}")
        return path


# --------------------------------------------------------------------------- comparison


def _is_control(flow) -> bool:
    return bool((getattr(flow, "schedule", None) or {}).get("control"))


def compare_flows(a, b, granularity: str = "block", *, window: int | None = None, start: int = 0,
                  rule: Rule | float | None = None, ddof: int = 0, by: str = "auto", exclude_entry: bool = True,
                  labels: tuple[str, str] | None = None, relation: str = "auto", normalize: str = "all",
                  alpha: float = 0.05, paired: bool | str = "auto", margin: float | None = None,
                  margin_fraction: float | None = None, margin_floor: float | None = None,
                  **eigen_kwargs) -> FlowComparison:
    """Compare two flows: an :class:`IMPFlow`, a pool of seeds or a null model (anything with ``eigenvalues``).

    ``by="unit"`` (automatic when both flows have the same unit names): per unit both λ
    with their standard errors and classes, and one of three answers — *different*
    (Holm-adjusted test across seeds), *equivalent* (two one-sided tests against the
    margin: ``margin``, or max(``margin_fraction`` · |λ̄ − 1|, ``margin_floor``)) or *not
    resolved* (with the minimal detectable difference); ``paired`` pairs the seeds of two
    pools of the same runs (auto: same seed labels); single runs are never tested (their
    bootstrap SE is indicative), except that identical flows are equivalent
    (:func:`lottery_rg.flow.eigen.compare_units`). ``by="stage"``
    (automatic when the units differ but the family is the same, e.g. ResNet-20 vs
    ResNet-56): per stage the numbers of relevant / marginal / irrelevant residual blocks,
    each stage's entry block (index 0) excluded when ``exclude_entry``. ``relation``:
    "transfer" (two trained flows; the verdict predicts whether winning tickets transfer),
    "control" (b is a's untrained control, or a is b's; the verdict says what training
    changed), or "auto" (control when either flow's ``schedule["control"]`` is set). Both
    sides use the same window, start, rule, ddof and ``normalize``.
    """
    if not hasattr(b, "eigenvalues") or not hasattr(b, "get_units"):
        raise TypeError(f"compare needs another IMPFlow or FlowPool, got {type(b).__name__}")
    if by not in ("auto", "unit", "stage"):
        raise ValueError("by must be 'auto', 'unit' or 'stage'")
    if relation not in ("auto", "transfer", "control"):
        raise ValueError("relation must be 'auto', 'transfer' or 'control'")
    if relation == "auto":
        relation = "control" if _is_control(a) or _is_control(b) else "transfer"
    la, lb = labels or (a.label, b.label)
    if relation == "control" and _is_control(a) and not _is_control(b):
        # the verdict reads "trained (a) vs control (b)"
        a, b, la, lb = b, a, lb, la
    names_a = [u.name for u in a.get_units(granularity)]
    names_b = [u.name for u in b.get_units(granularity)]
    fa, fb = a.model.get("family"), b.model.get("family")
    kw = dict(window=window, start=start, rule=rule, ddof=ddof, normalize=normalize, **eigen_kwargs)
    if by == "auto":
        if names_a == names_b or sorted(names_a) == sorted(names_b):
            by = "unit"
        elif fa and fb and fa != fb:
            raise ValueError(f"cannot compare a {fa} flow with a {fb} flow: different units and families")
        else:
            by = "stage"
    if by == "unit":
        if sorted(names_a) != sorted(names_b):
            raise ValueError(f"unit-by-unit comparison needs the same {granularity} units in both flows; "
                             f"use by='stage' for different depths")
        return compare_units(a.eigenvalues(granularity, **kw), b.eigenvalues(granularity, **kw), (la, lb),
                             relation=relation, alpha=alpha, paired=paired, margin=margin,
                             margin_fraction=margin_fraction, margin_floor=margin_floor)
    if fa and fb and fa != fb:
        raise ValueError(f"stage-by-stage comparison needs one model family, got {fa} and {fb}")
    return compare_stages(a.eigenvalues("block", **kw), b.eigenvalues("block", **kw), (la, lb), exclude_entry,
                          relation=relation)
