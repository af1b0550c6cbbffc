"""``LotteryTicket``: a mask plus the rewind weights it trains from, shareable on the Hub.

A ticket folder is an ordinary timm or transformers checkpoint (so people without
lottery_rg can load it, zeros in place) with three additions: ``mask.safetensors``,
``flow.json`` and a ``lottery_rg`` section in ``config.json``. Saving, loading and pushing
follow ``huggingface_hub.ModelHubMixin``; only safetensors and JSON are ever read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import ModelCard, ModelHubMixin
from torch import nn

from ..branches.stability import InstabilityResult, record_name
from ..flow.core import IMPFlow
from ..flow.plots import write_plots
from ..io import load_state, read_json, state_from_file
from ..models.families import family_of, get_family
from ..pruning.callbacks import MaskCallback
from ..pruning.masks import Mask, MaskEnforcer, check_mask, load_mask, mask_density, save_mask, surviving
from ..pruning.settings import LotterySettings
from ..run import LotteryResult, RunDir
from ..version import __version__
from .cards import TICKET_TAGS, ticket_card

__all__ = ["LotteryTicket", "TICKET_TAGS"]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_ALLOWED = ["*.json", "*.safetensors", "*.md", "*.png", "*.csv", "*.txt"]


class LotteryTicket(ModelHubMixin, library_name="lottery_rg", tags=TICKET_TAGS,
                    repo_url="https://github.com/lottery-rg/lottery_rg"):
    """A lottery ticket: ``model`` holds θ_k ⊙ m, ``mask`` says which prunable weights survive.

    Args:
        model: the network, with the rewind weights loaded.
        mask: bool tensor per prunable parameter; applied to ``model`` on construction.
        level: IMP level the mask comes from (0 = dense).
        lottery: the lottery settings of the run (fraction, schedule, rewind point…).
        flow: the run's :class:`~lottery_rg.flow.IMPFlow`, if known.
        metrics: per-level records ``{"level", "density", "metrics"}`` of the run.
        info: free-form provenance (data set, base model, command) used by the model card.
        trained_state: optional ``state_dict`` at the end of this level's training.
    """

    def __init__(self, model: nn.Module, mask: Mask, *, level: int = 0, lottery: dict | None = None,
                 flow=None, metrics: list[dict] | None = None, info: dict | None = None,
                 trained_state: dict | None = None):
        check_mask(mask, model, source="ticket mask")
        self.model, self.mask, self.level = model, mask, level
        self.lottery = dict(lottery or {})
        self.flow, self.metrics, self.info = flow, list(metrics or []), dict(info or {})
        self.trained_state = trained_state
        MaskEnforcer(model, mask).apply()

    # ------------------------------------------------------------------ properties
    @property
    def family(self):
        return family_of(self.model)

    @property
    def density(self) -> float:
        return mask_density(self.mask)

    def architecture(self) -> dict:
        return {"family": self.family.name, **self.family.architecture(self.model)}

    @property
    def settings(self) -> LotterySettings:
        """The lottery settings of the run this ticket comes from."""
        return LotterySettings.from_dict(self.lottery)

    def mask_callback(self):
        """A ``TrainerCallback`` that keeps this ticket's pruned weights at zero in any ``Trainer``."""
        return MaskCallback(self.model, self.mask)

    def __repr__(self) -> str:
        return (f"LotteryTicket({self.architecture().get('architecture')}, level={self.level}, "
                f"density={100 * self.density:.2f}%, {len(self.mask)} prunable tensors)")

    # ------------------------------------------------------------------ from a run directory
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, level: int | None = None, *, max_drop: float = 0.01,
                 metric: str = "eval_accuracy", include_trained: bool = False) -> LotteryTicket:
        """The ticket of ``level`` of a LotteryTrainer run; by default the sparsest level whose ``metric``
        is within ``max_drop`` of the dense level's (the last level if no metric was recorded)."""
        run = RunDir(run_dir)
        cfg = run.read_config()
        records = run.records()
        if not records:
            raise ValueError(f"{run.root} has no completed level yet")
        if level is None:
            best = LotteryResult(run.root, records).best_ticket(max_drop, metric)
            level = best["level"] if best else records[-1]["level"]
        if not run.is_complete(level):
            raise ValueError(f"{run.root} has no completed level {level} (completed: {[r['level'] for r in records]})")
        model = get_family(cfg["model"]["family"]).build(cfg["model"])
        load_state(model, run.rewind)
        mask = load_mask(run.mask(level), model)
        trained = state_from_file(run.model(level)) if include_trained else None
        flow = IMPFlow.from_run_dir(run.root) if run.flow.is_file() else None
        info = dict(cfg.get("info") or {})
        info.setdefault("command", cfg.get("command"))
        for key, bn in (("stability", 0), ("stability_bn", 1)):  # linear mode connectivity travels with the ticket
            path = run.stability(level) / record_name(bn)
            if path.is_file():
                r = InstabilityResult.load(path)
                info[key] = {"instability": r.instability, "loss_barrier": r.loss_barrier, "stable": r.stable(),
                             "seeds": list(r.seeds), "points": len(r.alphas), "bn_batches": r.bn_batches}
        return cls(model, mask, level=level, lottery=cfg["lottery"], flow=flow, metrics=records, info=info,
                   trained_state=trained)

    # ------------------------------------------------------------------ saving
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the folder (called by ``save_pretrained`` and ``push_to_hub``).

        Files are written to a temporary folder first and then moved into place one by one
        (each move atomic), so an interruption never leaves a half-written file.
        """
        save_directory = Path(save_directory)
        tmp = Path(tempfile.mkdtemp(prefix=".ticket-", dir=save_directory))
        try:
            self._write(tmp)
            for item in sorted(tmp.iterdir(), key=lambda p: p.name == "README.md"):
                target = save_directory / item.name
                if target.is_dir():
                    shutil.rmtree(target)
                os.replace(item, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _write(self, out: Path) -> None:
        MaskEnforcer(self.model, self.mask).apply()
        self.family.save(self.model, out)
        cfg = read_json(out / "config.json")
        cfg["lottery_rg"] = self.lottery_config()
        (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
        save_mask(self.mask, out / "mask.safetensors", metadata={"level": self.level})
        if self.trained_state is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in self.trained_state.items()}, out / "trained.safetensors")
        if self.flow is not None:
            self.flow.save(out / "flow.json")
        plots = write_plots(out, self._rows(), self.flow)
        self.model_card(plots=plots).save(out / "README.md")

    def _rows(self) -> list[dict]:
        return LotteryResult(Path("."), self.metrics).rows()

    def lottery_config(self) -> dict:
        counts = surviving(self.mask)
        arch = {k: v for k, v in self.architecture().items() if k != "config"}  # config.json is the config
        return {
            "version": __version__, **arch, "level": self.level, "density": self.density,
            "surviving": sum(counts.values()), "prunable_total": sum(m.numel() for m in self.mask.values()),
            "prunable": list(self.mask), "lottery": self.lottery, "info": self.info,
        }

    def model_card(self, repo_id: str | None = None, plots: list[str] | None = None) -> ModelCard:
        """The model card (Hub metadata plus a body with levels, eigenvalues, plots and usage)."""
        return ticket_card(self, repo_id=repo_id, plots=plots)

    def push_to_hub(self, repo_id: str, *, branch: str | None = None, token: str | None = None,
                    private: bool | None = None, commit_message: str | None = None, **kwargs) -> str:
        """Upload the ticket folder with the real ``huggingface_hub`` client (honours ``HF_ENDPOINT``).

        ``branch`` is created from ``main`` if it does not exist (one branch per level, e.g. ``level-03``).
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp)
            card = ModelCard.load(Path(tmp) / "README.md")
            card.text = card.text.replace("<this folder or repo id>", repo_id)
            card.save(Path(tmp) / "README.md")
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=branch,
                                     commit_message=commit_message or f"lottery ticket, level {self.level} "
                                     f"({100 * self.density:.2f}% density)", **kwargs)
        return info.commit_url if hasattr(info, "commit_url") else str(info)

    # ------------------------------------------------------------------ loading
    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, **kwargs) -> LotteryTicket:
        folder = _fetch(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)
        return cls.from_folder(folder, include_trained=kwargs.get("include_trained", False))

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, include_trained: bool = False) -> LotteryTicket:
        folder = Path(folder)
        _refuse_pickles(folder)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder} has no config.json: not a lottery ticket")
        cfg = read_json(cfg_path)
        meta = cfg.get("lottery_rg")
        if not isinstance(meta, dict):
            raise ValueError(f"{cfg_path} has no 'lottery_rg' section: not a lottery ticket (a plain checkpoint?)")
        try:
            family = get_family(meta.get("family"))
        except ValueError as e:
            raise ValueError(f"{cfg_path}: {e}") from None
        arch = {k: v for k, v in meta.items() if k in ("library", "architecture", "num_classes", "in_chans",
                                                        "model_args", "config")}
        if arch.get("library") == "transformers":
            arch["config"] = {k: v for k, v in cfg.items() if k != "lottery_rg"}
        model = family.build(arch)
        load_state(model, _require(folder, "model.safetensors"))
        mask = load_mask(_require(folder, "mask.safetensors"), model)
        flow = IMPFlow.load(folder / "flow.json") if (folder / "flow.json").is_file() else None
        trained = None
        if include_trained and (folder / "trained.safetensors").is_file():
            trained = state_from_file(folder / "trained.safetensors")
        metrics = None
        if flow is not None:
            metrics = [{"level": r["level"], "density": float(d), "metrics": r.get("metrics") or {}}
                       for r, d in zip(flow.levels, flow.densities())]
        return cls(model, mask, level=int(meta.get("level", 0)), lottery=meta.get("lottery"), flow=flow,
                   metrics=metrics, info=meta.get("info"), trained_state=trained)


def _require(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise FileNotFoundError(f"{folder} has no {name}: an incomplete lottery ticket")
    return path


def _refuse_pickles(folder: Path) -> None:
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in _PICKLE_SUFFIXES)
    if pickles and not (folder / "model.safetensors").is_file():
        raise ValueError(f"{folder} holds only pickle files ({', '.join(pickles)}); lottery_rg loads "
                         f"safetensors and JSON only and will not unpickle them")


def _fetch(model_id: str, *, revision=None, cache_dir=None, force_download=False, local_files_only=False,
           token=None) -> Path:
    """A local folder as is; a Hub repo through ``snapshot_download`` (safetensors/JSON/cards only)."""
    if os.path.isdir(model_id):
        return Path(model_id)
    from huggingface_hub import HfApi, snapshot_download

    folder = Path(snapshot_download(model_id, revision=revision, cache_dir=cache_dir, token=token,
                                    force_download=force_download, local_files_only=local_files_only,
                                    allow_patterns=_ALLOWED))
    if not (folder / "model.safetensors").is_file():
        files = HfApi(token=token).list_repo_files(model_id, revision=revision)
        pickles = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
        if pickles:
            raise ValueError(f"{model_id} holds only pickle files ({', '.join(pickles)}); lottery_rg loads "
                             f"safetensors and JSON only and will not unpickle them")
    return folder
