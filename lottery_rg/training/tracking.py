"""What a lottery run reports to the Trainer's trackers (TensorBoard, W&B…) beyond every level's own logs."""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer

__all__ = ["log_level", "route_tracker_files"]


def log_level(trainer: Trainer, record: dict) -> dict:
    """Log a finished level (``level``, ``density``, its eval metrics as ``level_eval_*``) through the Trainer's
    own ``log``/``report_to`` machinery, at a global step that grows across levels: the optimizer steps of
    every level so far. TensorBoard / W&B can then plot accuracy against density. Returns the log entry."""
    level = record["level"]
    # every level ends at the same global step T (a rewound level resumes at k): levels 0..n took (n + 1)·T
    steps = (level + 1) * int(record["metrics"].get("train_steps") or 0)
    logs = {"level": float(level), "density": float(record["density"])}
    logs.update({f"level_{k}": float(v) for k, v in record["metrics"].items()
                 if k.startswith("eval_") and isinstance(v, (int, float))})
    held = trainer.state.global_step
    trainer.state.global_step = steps
    try:
        trainer.log(logs)
    finally:
        trainer.state.global_step = held
    return trainer.state.log_history[-1]


def route_tracker_files(trainer: Trainer, run_dir: Path) -> None:
    """TensorBoard event files go to ``RUN/runs/…``, chosen now: every level points ``args.output_dir`` at its
    checkpoint folder (removed when the level is complete), where the callback would otherwise write them."""
    from transformers.integrations import TensorBoardCallback
    from transformers.integrations.integration_utils import default_logdir

    for cb in trainer.callback_handler.callbacks:
        if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
            cb.logging_dir = str(run_dir / default_logdir())
