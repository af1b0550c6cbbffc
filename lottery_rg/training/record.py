"""What a run records about itself: the settings record (``lottery_config.json``), the flow it accumulates, and
how loud its Hub pushes are. Kept apart from the trainer, which only trains levels: these read its state once per
run and write nothing themselves."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import nn

from ..flow.core import IMPFlow
from ..redact import redact, redact_command, without_secrets
from ..version import __version__
from .arguments import FREE_TRAINING_ARGUMENTS

if TYPE_CHECKING:
    from ..pruning.settings import LotterySettings

__all__ = ["run_record", "load_or_create_flow", "hub_progress"]

logger = logging.getLogger(__name__)


def run_record(trainer: Any, total_steps: int) -> dict:
    """A ``LotteryTrainer``'s record: model, lottery settings, prunable tensors, data, and every locked setting
    (every flag that changes what a level computes: all but ``FREE_TRAINING_ARGUMENTS``) by the flag that sets
    it. Secrets are redacted, and secret-named flags (``--hub_token`` …) are no settings: the lock leaves them out."""
    args = trainer.args
    training = {k: v for k, v in {**args.to_dict(), **trainer.timm_flags}.items()
                if k not in FREE_TRAINING_ARGUMENTS}
    locked = without_secrets({"training": training, "processes": {"world_size": args.world_size},
                              "precision": trainer.precision.locked(),  # channels-last (bf16 is in training)
                              **{k: dict(v) for k, v in (trainer.run_info.get("arguments") or {}).items()}})
    return redact({
        "lottery_rg_version": __version__,
        "model": {"family": trainer.family.name, **trainer.family.architecture(trainer.model)},
        "lottery": trainer.settings.to_dict(),
        "levels": trainer.lottery_args.levels,
        "prunable": trainer.prunable,
        "info": {k: v for k, v in trainer.run_info.items() if k != "arguments"},
        "settings": locked,
        "precision": trainer.precision.to_dict(),  # what --fast chose and why (bf16 and layout are locked)
        "command": trainer.run_info.get("command") or redact_command(["python", *sys.argv]),
        "training": {"steps_per_level": total_steps, "seed": args.seed,
                     "learning_rate": args.learning_rate, "optim": str(args.optim),
                     "train_batch_size": args.per_device_train_batch_size * max(1, args.world_size)},
    })


def load_or_create_flow(path: Path, model: nn.Module, prunable: list[str], settings: LotterySettings) -> IMPFlow:
    """``flow.json``, or a new flow; the flow is derived from the level files (run_imp adds every completed level
    it lacks), so an unreadable ``flow.json`` is rebuilt rather than fatal."""
    if path.is_file():
        try:
            return IMPFlow.load(path)
        except ValueError as e:
            logger.warning("%s; rebuilding the flow from the completed levels", e)
    return IMPFlow.from_model(model, prunable, schedule=settings.schedule_dict())


def hub_progress(args: Any) -> bool:
    """The Hub's progress bars follow the Trainer's: shown unless ``--disable_tqdm``, and only at log level INFO
    or more verbose (``--log_level info``; the scripts keep WARNING, so a push prints no bars there)."""
    return not args.disable_tqdm and args.get_process_log_level() <= logging.INFO
