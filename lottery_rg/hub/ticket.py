"""``LotteryTicket``: a mask, the rewind weights it retrains from and the trained weights it is used with.

A ticket folder is an ordinary timm or transformers checkpoint (so people without
lottery_rg can load it, zeros in place) plus lottery_rg's own files:

* ``model.safetensors`` — the weights at the end of the ticket's level (θ_T ⊙ m): the weights
  the card's metrics describe, and the file timm (``hf-hub:``/``local-dir:``) and
  ``AutoModel*.from_pretrained`` read;
* ``rewind.safetensors`` — the ticket proper, θ_k ⊙ m, to retrain from;
* ``mask.safetensors``, ``flow.json``, a ``lottery_rg`` section in ``config.json`` (``format`` 2),
  and for BERT the tokenizer files.

Folders of format 1 (``model.safetensors`` = rewind weights, optional ``trained.safetensors``)
still load. Saving, loading and pushing follow ``huggingface_hub.ModelHubMixin``'s hooks;
only safetensors and JSON are ever read, and ``config.json`` is checked against a schema
(:mod:`lottery_rg.hub.schema`) before anything is built from it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from huggingface_hub import ModelCard, ModelHubMixin
from torch import nn
from torch.utils.hooks import RemovableHandle

from ..flow.core import IMPFlow
from ..flow.plots import write_plots
from ..io import atomic_files, load_state, read_json, save_state, state_from_file, write_json  # errors name files
from ..models.families import ModelFamily, family_of, get_family
from ..pruning.callbacks import MaskCallback, keep_masked
from ..pruning.checks import check_weights as check_state
from ..pruning.masks import Mask, MaskEnforcer, check_mask, load_mask, mask_density, save_mask, surviving
from ..pruning.settings import LotterySettings
from ..redact import redact_run_info
from ..run import LotteryResult, RunDir
from ..stability import InstabilityResult, record_name
from ..version import __version__
from .cards import TICKET_TAGS, ticket_card
from .schema import FORMAT_VERSION, check_prunable, check_tokenizer_config, ticket_architecture, validate_ticket_config

__all__ = ["LotteryTicket", "TICKET_TAGS", "WEIGHTS", "hub_progress_bars"]
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
_ALLOWED = ["*.json", "*.safetensors", "*.md", "*.png", "*.csv", "*.txt"]
WEIGHTS = ("rewind", "trained")
REWIND_FILE, MODEL_FILE, LEGACY_TRAINED_FILE = "rewind.safetensors", "model.safetensors", "trained.safetensors"


class LotteryTicket(ModelHubMixin, library_name="lottery_rg", tags=TICKET_TAGS,
                    repo_url="https://github.com/lottery-rg/lottery_rg"):
    """A lottery ticket: a mask over the prunable weights, the rewind weights θ_k ⊙ m it retrains from, and
    (when known) the trained weights θ_T ⊙ m of its level.

    Args:
        model: the network, holding the weights named by ``weights``.
        mask: bool tensor per prunable parameter; applied to ``model`` on construction.
        level: IMP level the mask comes from (0 = dense).
        lottery: the lottery settings of the run (fraction, schedule, rewind point…).
        flow: the run's :class:`~lottery_rg.flow.IMPFlow`, if known.
        metrics: per-level records ``{"level", "density", "metrics"}`` of the run.
        info: free-form provenance (data set, base model, command, image size, mean/std) used by the card.
        trained_state: ``state_dict`` at the end of this level's training (what the card's metrics describe).
        weights: what ``model`` holds: ``"rewind"`` (θ_k ⊙ m, default) or ``"trained"``.
        rewind_state: the rewind ``state_dict`` when ``model`` holds the trained weights.
        tokenizer: the tokenizer of a BERT ticket (saved into the folder).
    """

    def __init__(self, model: nn.Module, mask: Mask, *, level: int = 0, lottery: dict | None = None,
                 flow: IMPFlow | None = None, metrics: list[dict] | None = None, info: dict | None = None,
                 trained_state: dict | None = None, weights: str = "rewind", rewind_state: dict | None = None,
                 tokenizer: Any = None):
        check_mask(mask, model, source="ticket mask")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        if weights == "trained" and rewind_state is None:
            raise ValueError("a ticket whose model holds the trained weights needs rewind_state (θ_k) as well")
        self.model, self.mask, self.level = model, mask, level
        self.lottery = dict(lottery or {})
        self.flow, self.metrics, self.info = flow, list(metrics or []), dict(info or {})
        self.weights = weights
        if weights == "trained" and trained_state is None:
            trained_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.trained_state, self.rewind_state, self.tokenizer = trained_state, rewind_state, tokenizer
        self._plots: list[str] = []
        self._flow_block = None  # the flow's block-level FlowReport once the folder is written: plots and card share it
        MaskEnforcer(model, mask).apply()

    # ------------------------------------------------------------------ properties
    @property
    def family(self) -> ModelFamily:
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

    def rewind_weights(self) -> dict:
        """θ_k ⊙ m, the weights the ticket retrains from."""
        return self.model.state_dict() if self.weights == "rewind" else self.rewind_state

    def trained_weights(self) -> dict | None:
        """θ_T ⊙ m at the end of the ticket's level (None if unknown)."""
        return self.model.state_dict() if self.weights == "trained" else self.trained_state

    def mask_callback(self) -> MaskCallback:
        """A ``TrainerCallback`` that keeps this ticket's pruned weights at zero in any ``Trainer``."""
        return MaskCallback(self.model, self.mask)

    def keep_masked(self, optimizer: torch.optim.Optimizer) -> RemovableHandle:
        """Keep the pruned weights at zero in a hand-written PyTorch loop: zero them now and after every
        ``optimizer.step()``. Returns the hook handle (``handle.remove()`` stops it)."""
        return keep_masked(optimizer, self.model, self.mask)

    def __repr__(self) -> str:
        return (f"LotteryTicket({self.architecture().get('architecture')}, level={self.level}, "
                f"density={100 * self.density:.2f}%, {len(self.mask)} prunable tensors, model holds {self.weights})")

    # ------------------------------------------------------------------ from a run directory
    @classmethod
    def from_run(cls, run_dir: str | os.PathLike, level: int | None = None, *, max_drop: float = 0.01,
                 metric: str = "eval_accuracy", include_trained: bool = True, weights: str = "rewind",
                 tokenizer: Any = None, check_weights: bool = True) -> LotteryTicket:
        """The ticket of ``level`` of a LotteryTrainer run; by default the sparsest level whose ``metric``
        is within ``max_drop`` of the dense level's (the last level if no metric was recorded).

        The ticket carries the level's trained weights (``include_trained=False`` leaves them out) and the
        run's tokenizer (``RUN/tokenizer``) when there is one; ``weights`` says what ``model`` holds.
        ``check_weights``: refuse weights with NaN/inf values or pruned positions that are not zero (see
        :meth:`from_folder`)."""
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
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        model = get_family(cfg["model"]["family"]).build(cfg["model"])
        load_state(model, run.rewind)
        mask = load_mask(run.mask(level), model, device=_device_of(model))
        if check_weights:
            _check_loaded(model.state_dict(), None, run.rewind)  # θ_k is dense: the mask is applied next
        MaskEnforcer(model, mask).apply()
        trained = state_from_file(run.model(level)) if include_trained or weights == "trained" else None
        if trained is not None and check_weights:
            _check_loaded(trained, mask, run.model(level))
        rewind_state = None
        if weights == "trained":
            rewind_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            load_state(model, run.model(level))
        flow = IMPFlow.from_run_dir(run.root) if run.flow.is_file() else None
        info = dict(cfg.get("info") or {})
        info.setdefault("command", cfg.get("command"))
        for key, bn in (("stability", 0), ("stability_bn", 1)):  # linear mode connectivity travels with the ticket
            path = run.stability(level) / record_name(bn)
            if path.is_file():
                r = InstabilityResult.load(path)
                info[key] = {"instability": r.instability, "loss_barrier": r.loss_barrier, "stable": r.stable(),
                             "seeds": list(r.seeds), "points": len(r.alphas), "bn_batches": r.bn_batches}
        if tokenizer is None and (run.tokenizer / "tokenizer_config.json").is_file():
            tokenizer = _load_tokenizer(run.tokenizer)
        return cls(model, mask, level=level, lottery=cfg["lottery"], flow=flow, metrics=records, info=info,
                   trained_state=trained, weights=weights, rewind_state=rewind_state, tokenizer=tokenizer)

    # ------------------------------------------------------------------ saving (ModelHubMixin hooks)
    def _save_pretrained(self, save_directory: Path) -> None:
        """Write the folder (called by ``save_pretrained`` and ``push_to_hub``; the card comes from
        :meth:`generate_model_card` right after).

        Files are written to a temporary folder first and then moved into place one by one
        (each move atomic), so an interruption never leaves a half-written file.
        """
        save_directory = Path(save_directory)
        (save_directory / "README.md").unlink(missing_ok=True)  # the mixin writes the card only where none is
        with atomic_files(save_directory) as tmp:
            self._write(tmp)
            # a format-1 file left by an earlier save would contradict the card
            (save_directory / LEGACY_TRAINED_FILE).unlink(missing_ok=True)

    def _write(self, out: Path) -> None:
        held = {k: v.detach().clone() for k, v in self.model.state_dict().items()}  # (state_dict() aliases the model)
        rewind = held if self.weights == "rewind" else self.rewind_state
        trained = held if self.weights == "trained" else self.trained_state
        try:
            # model.safetensors (the library's own format, what timm / transformers load): the trained weights
            # the card's metrics describe; without them, the rewind weights (and the card says so)
            _load_into(self.model, trained if trained is not None else rewind)
            MaskEnforcer(self.model, self.mask).apply()
            self.family.save(self.model, out)
            _load_into(self.model, rewind)  # rewind.safetensors: the ticket proper, θ_k ⊙ m, to retrain from
            MaskEnforcer(self.model, self.mask).apply()
            save_state(self.model, out / REWIND_FILE, metadata={"lottery_rg": "rewind", "level": self.level})
        finally:
            _load_into(self.model, held)
        cfg = read_json(out / "config.json")
        cfg["lottery_rg"] = self.lottery_config()
        self._record_preprocessing(cfg)
        write_json(out / "config.json", cfg)
        save_mask(self.mask, out / "mask.safetensors", metadata={"level": self.level})
        if self.tokenizer is not None:
            self.tokenizer.save_pretrained(out)
        if self.flow is not None:
            self.flow.save(out / "flow.json")
        if self.flow is not None and len(self.flow.levels) >= 3:
            from ..flow.analysis import flow_report

            self._flow_block = flow_report(self.flow, "block")
        self._plots = write_plots(out, self._rows(), self.flow,
                                  reports={"block": self._flow_block} if self._flow_block else None)

    def _record_preprocessing(self, cfg: dict) -> None:
        """timm's ``pretrained_cfg``: the input size, mean and std the run really trained with."""
        pcfg = cfg.get("pretrained_cfg")
        if not isinstance(pcfg, dict):
            return
        size = self.info.get("image_size")
        if isinstance(size, int) and size > 0:
            chans = int(self.architecture().get("in_chans", 3))
            pcfg["input_size"] = [chans, size, size]
            pcfg["test_input_size"] = [chans, size, size]
            pcfg["crop_pct"] = 1.0
        for key in ("mean", "std"):
            value = self.info.get(key)
            if isinstance(value, (list, tuple)) and value:
                pcfg[key] = [float(v) for v in value]

    def _rows(self) -> list[dict]:
        return LotteryResult(Path("."), self.metrics).rows()

    def lottery_config(self) -> dict:
        counts = surviving(self.mask)
        arch = {k: v for k, v in self.architecture().items() if k != "config"}  # config.json is the config
        return {
            "version": __version__, "format": FORMAT_VERSION,
            "model_weights": "trained" if self.trained_weights() is not None else "rewind",
            **arch, "level": self.level, "density": self.density,
            "surviving": sum(counts.values()), "prunable_total": sum(m.numel() for m in self.mask.values()),
            "prunable": list(self.mask), "lottery": self.lottery, "info": redact_run_info(self.info),
        }

    def generate_model_card(self, *args, repo_id: str | None = None, plots: list[str] | None = None,
                            **kwargs) -> ModelCard:
        """The model card (Hub metadata plus a body with files, levels, eigenvalues, plots and usage)."""
        return ticket_card(self, repo_id=repo_id, plots=self._plots if plots is None else plots,
                           flow_shown=self._flow_block)

    def model_card(self, repo_id: str | None = None, plots: list[str] | None = None) -> ModelCard:
        """Alias of :meth:`generate_model_card`."""
        return self.generate_model_card(repo_id=repo_id, plots=plots)

    def push_to_hub(self, repo_id: str, *, config: dict | None = None, commit_message: str | None = None,
                    private: bool | None = None, token: str | None = None, branch: str | None = None,
                    create_pr: bool | None = None, allow_patterns: list[str] | str | None = None,
                    ignore_patterns: list[str] | str | None = None, delete_patterns: list[str] | str | None = None,
                    model_card_kwargs: dict | None = None) -> str:
        """Upload the ticket folder (``ModelHubMixin.push_to_hub``'s signature; honours ``HF_ENDPOINT``).

        ``branch`` is created from ``main`` if it does not exist (one branch per level, e.g. ``level-03``).
        ``config`` is accepted for the mixin's sake; a ticket writes its own ``config.json``.
        """
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if branch:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            card_kwargs = {**(model_card_kwargs or {}), "repo_id": repo_id}
            self.save_pretrained(tmp, config=config, model_card_kwargs=card_kwargs)
            info = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=branch, create_pr=create_pr,
                                     allow_patterns=allow_patterns, ignore_patterns=ignore_patterns,
                                     delete_patterns=delete_patterns,
                                     commit_message=commit_message or f"lottery ticket, level {self.level} "
                                     f"({100 * self.density:.2f}% density)")
        return info.commit_url if hasattr(info, "commit_url") else str(info)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, *, force_download: bool = False,
                        token: str | bool | None = None, cache_dir: str | os.PathLike | None = None,
                        local_files_only: bool = False,
                        revision: str | None = None, weights: str = "rewind", include_trained: bool = True,
                        check_weights: bool = True, **model_kwargs) -> LotteryTicket:
        """A ticket from a local folder or a Hub repository (``ModelHubMixin.from_pretrained``'s arguments).

        ``weights``: what ``ticket.model`` holds — ``"rewind"`` (θ_k ⊙ m, to retrain; the default, which
        elastic transfer and retraining expect) or ``"trained"`` (the weights the card's metrics describe).
        Unlike the mixin's own version, no key of ``config.json`` ever becomes a constructor argument: the
        folder's ``config.json`` is validated against the ticket schema and read by :meth:`from_folder` only.
        Weights with NaN/inf values or pruned positions that are not zero are refused, naming the tensor;
        ``check_weights=False`` loads them anyway (pruned positions are then zeroed, NaN stays NaN).
        A load from the local cache prints nothing; a real download shows the Hub's progress bars.
        """
        if model_kwargs:
            raise TypeError(f"LotteryTicket.from_pretrained got unexpected arguments {sorted(model_kwargs)}")
        return cls._from_pretrained(model_id=str(pretrained_model_name_or_path), revision=revision,
                                    cache_dir=cache_dir, force_download=force_download,
                                    local_files_only=local_files_only, token=token, weights=weights,
                                    include_trained=include_trained, check_weights=check_weights)

    @classmethod
    def _from_pretrained(cls, *, model_id: str, revision: str | None, cache_dir, force_download: bool,
                         local_files_only: bool, token, weights: str = "rewind", include_trained: bool = True,
                         check_weights: bool = True, **kwargs) -> LotteryTicket:
        folder = _fetch(model_id, revision=revision, cache_dir=cache_dir, force_download=force_download,
                        local_files_only=local_files_only, token=token)
        return cls.from_folder(folder, include_trained=include_trained, weights=weights, check_weights=check_weights)

    @classmethod
    def from_folder(cls, folder: str | os.PathLike, include_trained: bool = True,
                    weights: str = "rewind", check_weights: bool = True) -> LotteryTicket:
        """A ticket from a local folder. ``weights``: what ``model`` holds, ``"rewind"`` (θ_k ⊙ m, to retrain;
        the default) or ``"trained"`` (θ_T ⊙ m, what the card's metrics describe).

        ``check_weights`` (default): refuse weights holding NaN or infinite values, or a value other than zero
        where the mask prunes, naming the file and the tensors; such weights would be retrained or used as if
        they were the ticket. ``check_weights=False`` loads them as they are (pruned positions are then set to
        zero by the mask; NaN stays NaN), for people who know why."""
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {WEIGHTS}, got {weights!r}")
        folder = Path(folder)
        _refuse_pickles(folder)
        cfg_path = folder / "config.json"
        if not cfg_path.is_file():
            raise FileNotFoundError(f"{folder} has no config.json: not a lottery ticket")
        cfg = read_json(cfg_path)
        meta = validate_ticket_config(cfg, str(cfg_path))  # before anything is built from it
        try:
            model = get_family(meta["family"]).build(ticket_architecture(cfg, meta))
        except (TypeError, ValueError, KeyError) as e:
            raise ValueError(f"{cfg_path}: cannot build the model it describes: {e}") from e
        built = family_of(model).name
        if built != meta["family"]:
            raise ValueError(f"{cfg_path}: lottery_rg.family says {meta['family']!r}, but its architecture builds a "
                             f"{type(model).__name__} (a {built!r} model)")
        mask = load_mask(_require(folder, "mask.safetensors"), model, device=_device_of(model))
        check_prunable(meta, model, mask, str(cfg_path))
        if int(meta.get("format", 1)) >= 2:
            rewind_file = _require(folder, REWIND_FILE)
            trained_file = _require(folder, MODEL_FILE) if meta.get("model_weights") == "trained" else None
        else:  # format 1: model.safetensors = rewind weights, trained.safetensors optional
            rewind_file = _require(folder, MODEL_FILE)
            trained_file = folder / LEGACY_TRAINED_FILE if (folder / LEGACY_TRAINED_FILE).is_file() else None
        if weights == "trained" and trained_file is None:
            raise ValueError(f"{folder} holds no trained weights (only the rewind weights): "
                             f"use weights='rewind' and retrain")
        rewind_state = trained = None
        if trained_file is not None and (include_trained or weights == "trained"):
            load_state(model, trained_file)  # checked against the model like the rewind weights
            trained = {k: v.detach().clone() for k, v in model.state_dict().items()}
            if check_weights:
                _check_loaded(trained, mask, trained_file)
        load_state(model, rewind_file)
        if check_weights:
            _check_loaded(model.state_dict(), mask, rewind_file)
        if weights == "trained":
            rewind_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            _load_into(model, trained)
        flow = IMPFlow.load(folder / "flow.json") if (folder / "flow.json").is_file() else None
        metrics = None
        if flow is not None:
            metrics = [{"level": r["level"], "density": float(d), "metrics": r.get("metrics") or {}}
                       for r, d in zip(flow.levels, flow.densities())]
        tokenizer = None
        if (folder / "tokenizer_config.json").is_file():
            check_tokenizer_config(read_json(folder / "tokenizer_config.json"), str(folder / "tokenizer_config.json"))
            tokenizer = _load_tokenizer(folder)
        return cls(model, mask, level=int(meta.get("level", 0)), lottery=meta.get("lottery"), flow=flow,
                   metrics=metrics, info=meta.get("info"), trained_state=trained, weights=weights,
                   rewind_state=rewind_state, tokenizer=tokenizer)


def _load_into(model: nn.Module, state: dict) -> None:
    """Copy ``state`` into ``model`` (tied weights may appear once: safetensors drops the duplicates)."""
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"weights do not fit {type(model).__name__}: unexpected {sorted(unexpected)[:5]}")


def _check_loaded(state: dict, mask: Mask | None, path: Path) -> None:
    """Refuse a ticket's weights with NaN/inf values or (with ``mask``) pruned positions that are not zero."""
    check_state(state, mask, str(path), "These weights cannot be used as a ticket; load them with "
                "check_weights=False only if you know why")


def _load_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)


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


@contextlib.contextmanager
def hub_progress_bars(show: bool) -> Iterator[None]:
    """``huggingface_hub``'s progress bars off inside (``show=False``), as they were afterwards; ``show=True``
    leaves them as the user set them (``HF_HUB_DISABLE_PROGRESS_BARS``, ``disable_progress_bars()``)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    if show or are_progress_bars_disabled():
        yield
        return
    disable_progress_bars()
    try:
        yield
    finally:
        enable_progress_bars()


def _fetch(model_id: str, *, revision=None, cache_dir=None, force_download=False, local_files_only=False,
           token=None) -> Path:
    """A local folder as is; a Hub repo through ``snapshot_download`` (safetensors/JSON/cards only). Progress
    bars only when something is downloaded: a dry run first asks whether every file is in the cache."""
    if os.path.isdir(model_id):
        return Path(model_id)
    from huggingface_hub import HfApi, snapshot_download

    kwargs = dict(revision=revision, cache_dir=cache_dir, token=token, force_download=force_download,
                  local_files_only=local_files_only, allow_patterns=_ALLOWED)
    try:  # a dry run cannot run offline (local_files_only, HF_HUB_OFFLINE, Hub down): then nothing downloads
        with hub_progress_bars(False):
            cached = local_files_only or not any(f.will_download for f in
                                                 snapshot_download(model_id, dry_run=True, **kwargs))
    except Exception:  # noqa: BLE001  (the real call below reads the cache or says what is wrong)
        cached = True
    with hub_progress_bars(not cached):
        folder = Path(snapshot_download(model_id, **kwargs))
    if not (folder / "model.safetensors").is_file():
        files = HfApi(token=token).list_repo_files(model_id, revision=revision)
        pickles = [f for f in files if f.endswith(_PICKLE_SUFFIXES)]
        if pickles:
            raise ValueError(f"{model_id} holds only pickle files ({', '.join(pickles)}); lottery_rg loads "
                             f"safetensors and JSON only and will not unpickle them")
    return folder


def _device_of(model: nn.Module):
    """Where the model's parameters live: the ticket's mask goes there too."""
    return next(model.parameters()).device
