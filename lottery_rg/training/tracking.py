"""What a lottery run reports to the Trainer's trackers (TensorBoard, W&B…) beyond every level's own logs.

Every level is a ``Trainer.train`` run from step 0 (level 0) or the rewind step k (later levels) to step T, so the
Trainer's own step starts again at every level. Trackers get the *level step* instead: optimizer step s of level n
is reported at ``n·T + s`` (``LotteryTrainer.log``, through :func:`reported_at`), so the levels' curves follow one
another on one axis, and a level's summary (``level``, ``density``, ``level_eval_*``) is reported at the end of its
steps, ``(n + 1)·T``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from transformers import Trainer

__all__ = ["reported_at", "log_level", "route_tracker_files"]


@contextlib.contextmanager
def reported_at(trainer: Trainer, step: int) -> Iterator[None]:
    """Inside, ``trainer.state.global_step`` reads ``step``: what the ``on_log`` callbacks (the trackers) see.
    The entries ``Trainer.log`` adds to ``state.log_history`` meanwhile keep the Trainer's own step."""
    held = trainer.state.global_step
    if step == held:
        yield
        return
    first = len(trainer.state.log_history)
    trainer.state.global_step = step
    try:
        yield
    finally:
        trainer.state.global_step = held
        for entry in trainer.state.log_history[first:]:
            if entry.get("step") == step:
                entry["step"] = held


def log_level(trainer: Trainer, record: dict) -> dict:
    """Log a finished level (``level``, ``density``, its eval metrics as ``level_eval_*``) through the Trainer's
    own ``log``/``report_to`` machinery, at the level's last step T (which ``LotteryTrainer.log`` reports at the
    level step ``(level + 1)·T``): TensorBoard / W&B can then plot accuracy against density. Returns the log
    entry."""
    logs = {"level": float(record["level"]), "density": float(record["density"])}
    logs.update({f"level_{k}": float(v) for k, v in record["metrics"].items()
                 if k.startswith("eval_") and isinstance(v, (int, float))})
    held = trainer.state.global_step
    trainer.state.global_step = int(record["metrics"].get("train_steps") or held)  # every level ends at step T
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
