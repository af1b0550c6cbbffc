"""``LotteryTrainer``: iterative magnitude pruning with rewinding as a ``transformers.Trainer``.

One call to :meth:`LotteryTrainer.run_imp` trains level 0 (dense), then levels 1…N, each pruned once
more by magnitude from the previous level's trained weights and rewound to step k (Frankle et al. 2020,
"Linear mode connectivity and the lottery ticket hypothesis"). Every level is an ordinary
``Trainer.train`` run, so every ``TrainingArguments`` flag, callback, logger and ``accelerate launch``
setup works. The mask is enforced by :class:`MaskCallback` after each optimizer step; the rewind point
is :class:`~lottery_rg.training.rewind.RewindPoint`'s; an interrupted level resumes from its last
Trainer checkpoint; level directories appear atomically. The run directory and its settings lock are
:class:`~lottery_rg.run.RunDir`'s, pushes :mod:`lottery_rg.hub.push`'s, the launcher guards
:mod:`lottery_rg.training.launch`'s.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from accelerate.utils import gather_object
from torch import nn
from transformers import Trainer, TrainingArguments
from transformers.trainer_utils import TrainOutput, set_seed

from ..errors import UsageError
from ..hub.push import own_training_args, push_run_tickets
from ..io import state_from_file
from ..models.families import family_of
from ..pruning.callbacks import MaskCallback
from ..pruning.checks import nonfinite_tensors
from ..pruning.masks import Mask, broadcast_mask, check_mask, full_mask, load_mask, mask_digest, surviving
from ..redact import redact, redact_run_info
from ..report import write_run_summary
from ..run import LotteryResult, RunDir, drop_checkpoints_after, last_complete_checkpoint
from ..stability import InstabilityResult, linear_mode_connectivity, load_results, second_seed
from .arguments import LotteryArguments
from .calibration import calibration_batches
from .divergence import DivergenceGuard, NonFiniteLossError
from .flags import check_training_arguments, timm_arguments
from .launch import check_parallelism, hold_run_lock, stop_with_launcher
from .level_loss import LevelLoss
from .precision import channels_last_batch, choose_precision, first_image_size, to_channels_last
from .record import hub_progress, load_or_create_flow, run_record
from .rewind import RewindPoint
from .tracking import log_level, reported_at, route_tracker_files

__all__ = ["LotteryTrainer"]

logger = logging.getLogger(__name__)



class LotteryTrainer(Trainer):
    """A ``Trainer`` that finds lottery tickets by IMP with rewinding.

    Args:
        model: a model of a registered family (timm ResNets, CIFAR ResNets and VGGs, ViTs; ``transformers`` BERT).
        args: ordinary ``TrainingArguments``; ``output_dir`` becomes the run directory.
        lottery_args: :class:`~lottery_rg.training.arguments.LotteryArguments`.
        mask: start from a ticket's mask (level 0 trains it; plain ``train()`` keeps it).
        run_info: provenance for the run record and model cards (data set, base model, command, locked flags).
        fast: ``"auto"`` chooses bf16 and channels-last for this machine (``--fast``; see
            :mod:`lottery_rg.training.precision`), ``"off"`` takes ``args`` as they are.
        channels_last: train the model and its image batches in channels-last memory format (``--channels_last``;
            convolutional families only).
        **kwargs: anything ``Trainer`` accepts (datasets, collator, compute_metrics, callbacks…),
            except ``optimizers``/``model_init``: IMP needs a fresh optimizer per level.
    """

    def __init__(self, model: nn.Module | None = None, args: TrainingArguments | None = None,
                 lottery_args: LotteryArguments | None = None, *, mask: Mask | None = None,
                 run_info: dict | None = None, fast: str = "off", channels_last: bool = False, **kwargs):
        if kwargs.get("optimizers", (None, None)) != (None, None):
            raise ValueError("LotteryTrainer creates a fresh optimizer for every level; choose it through "
                             "TrainingArguments (--optim, --learning_rate, …) or override create_optimizer")
        if kwargs.get("model_init") is not None:
            raise ValueError("LotteryTrainer needs a model, not model_init: every level rewinds the same network")
        if model is None:
            raise ValueError("LotteryTrainer needs a model")
        self.lottery_args = lottery_args or LotteryArguments()
        self.settings = self.lottery_args.settings()  # the typed settings every level shares
        # provenance for model cards (data set, base model, command), secrets redacted before anything records it
        self.run_info = redact_run_info(run_info)
        self.family = family_of(model)
        self.prunable = self.settings.prunable_parameters(model)  # family default, patterns, preset
        if args is not None:  # every flag is honoured or refused (lottery_rg.training.flags)
            check_training_arguments(args, self.family.library)
        # tickets, not Trainer checkpoints, go to the Hub (token and repository are checked now, before training);
        # the Trainer's copy of the arguments holds no token (it is pickled into every checkpoint)
        args, self.push_tickets, self._hub_token = own_training_args(args, timm_model=self.family.library == "timm")
        # a timm model's label smoothing and activation checkpointing are lottery_rg's (recorded as given)
        args, self.timm_flags = timm_arguments(args, model) if args is not None and self.family.library == "timm" \
            else (args, {})
        # bf16 / channels-last (--fast, --channels_last): chosen, and the model laid out, before the Trainer sees it
        bf16_possible = fast == "auto" or (args is not None and args.bf16)  # the CPU bf16 hazard needs the image size
        args, self.precision = choose_precision(
            args, model, fast=fast, channels_last=channels_last,
            image_size=first_image_size(kwargs.get("train_dataset")) if bf16_possible else None)
        if self.precision.channels_last:
            to_channels_last(model)
        super().__init__(model=model, args=args, **kwargs)
        check_parallelism(self.args)
        self._is_hf_model = self.family.library == "transformers"
        if not self._is_hf_model:  # timm models take pixel_values and return logits
            self.label_names = ["labels"]
        self.initial_mask = None
        if mask is not None:  # start from a ticket: level 0 trains (and plain train() keeps) this mask
            check_mask(mask, self.model, source="the mask given to LotteryTrainer")
            order = {n: i for i, (n, _) in enumerate(self.model.named_parameters())}
            self.prunable = sorted(mask, key=order.__getitem__)  # the ticket's prunable set
            self.initial_mask = {n: mask[n].clone() for n in mask}
        self.mask: Mask = self.initial_mask or full_mask(self.model, self.prunable)
        self.mask_callback = MaskCallback(self.model, self.mask)
        self.add_callback(self.mask_callback)
        self.rewind_point = RewindPoint(self)
        self.add_callback(self.rewind_point)
        self.level_loss = LevelLoss(self)  # the whole level's training loss, across interruptions
        self.add_callback(self.level_loss)
        self.divergence_guard = DivergenceGuard(self)  # a non-finite loss stops the level at once
        self.add_callback(self.divergence_guard)
        self.run = RunDir(self.args.output_dir)  # levels point args.output_dir at their checkpoints
        route_tracker_files(self, self.run_dir)
        self.current_level: int | None = None
        self._lr_offset = 0
        self._steps_per_level = 0  # T, once run_imp knows it
        self._tracker_offset = 0  # level n's steps reach the trackers at n·T + step (see log)
        self.flow = None
        self.push_failures: list[str] = []  # Hub targets whose push failed (a re-run pushes them)
        self.level_log_history: dict[int, list] = {}  # each level's log_history (the Trainer keeps the last one)

    # ------------------------------------------------------------------ Trainer hooks
    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None) -> Any:
        if self._is_hf_model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pixels = inputs["pixel_values"]
        logits = model(channels_last_batch(pixels) if self.precision.channels_last else pixels)
        loss = F.cross_entropy(logits, inputs["labels"],
                               label_smoothing=float(self.timm_flags.get("label_smoothing_factor", 0.0)))
        return (loss, {"logits": logits}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any],
                      num_items_in_batch: torch.Tensor | int | None = None) -> torch.Tensor:
        """``Trainer.training_step``; the level's loss account gets the loss (summed on the device, no host sync),
        and a non-finite loss stops the level (:class:`~lottery_rg.training.divergence.DivergenceGuard`)."""
        loss = super().training_step(model, inputs, num_items_in_batch)
        self.level_loss.add(loss)
        self.divergence_guard.add(loss)
        return loss

    def log(self, logs: dict, *args, **kwargs) -> None:
        """``Trainer.log`` with secrets redacted from every text value (TensorBoard text, ``log_history``). The
        trackers see level n's step s at the level step n·T + s (T: optimizer steps of one level), so the levels'
        curves follow each other; ``log_history`` keeps the Trainer's own step."""
        with reported_at(self, self.state.global_step + self._tracker_offset):
            return super().log(redact(logs), *args, **kwargs)

    def evaluate(self, *args, **kwargs) -> dict:
        """``Trainer.evaluate``, plus the family's derived metrics (a masked-LM's perplexity)."""
        metrics = super().evaluate(*args, **kwargs)
        metrics.update(self.family.derived_metrics(self.model, metrics))
        return metrics

    def create_scheduler(self, num_training_steps: int, optimizer: torch.optim.Optimizer | None = None) -> Any:
        fresh = self.lr_scheduler is None
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if fresh and self._lr_offset:
            # a rewound level starts at step k: the schedule resumes there (a checkpoint, if one
            # is loaded afterwards, overrides this with its own saved state)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                for _ in range(self._lr_offset):
                    scheduler.step()
        return scheduler

    # ------------------------------------------------------------------ IMP
    @property
    def run_dir(self) -> Path:
        """The run directory (``args.output_dir``; levels temporarily point the Trainer at checkpoints/)."""
        return self.run.root

    def run_imp(self) -> LotteryResult:
        """Run (or resume) every level; returns the per-level results.

        The run directory has one writer: its lock is held until this returns (a second run on it stops at
        once). Before any training, the settings are compared with the recorded ones and every completed
        level is verified; the process stops with its launcher (``accelerate launch`` told to stop).
        """
        self.run.check_writable()  # a file, read-only storage, a folder of other files: refused before the lock
        with hold_run_lock(self.run, self.args):  # already held when examples/run_imp.py took it first
            stop_with_launcher()
            return self._run_imp()

    def _run_imp(self) -> LotteryResult:
        la = self.lottery_args
        total_steps = self._steps_per_level = self._check_steps()
        stability_seed = second_seed(la.stability_seed, self.args.seed) if la.stability_levels else None
        # every check before anything is written: the settings, then every completed level
        new_config = json.loads(json.dumps(self.run_config(total_steps), default=str))  # compare as it reads back
        changed = self.run.check_config(new_config)
        done = self.run.verify_completed(self.model, self.settings.rewind_steps)  # before anything builds on them
        self.accelerator.wait_for_everyone()  # every process has checked before the files change
        if self.is_world_process_zero():
            if changed:  # no level is complete: the unfinished work of the old settings is discarded
                removed = self.run.discard_unfinished()
                logger.warning("no level of %s was complete, so its settings may change (%s); starting over%s",
                               self.run_dir, changed.split(": ", 1)[-1],
                               f" (removed {', '.join(p.name for p in removed)})" if removed else "")
            self.run.record_config(new_config, replace=changed is not None)
            self.run.remove_stale_temporaries()  # of writers a kill interrupted (the checks have passed)
            logger.info("%s", self.precision.describe())  # the choice --fast made, once every check has passed
        self.accelerator.wait_for_everyone()
        self.flow = load_or_create_flow(self.run.flow, self.model, self.prunable, self.settings)
        result = LotteryResult(self.run_dir)
        for level in range(la.levels + 1):
            if level in done:
                rec = done[level]
                logger.info("level %d already complete (density %.4f): skipped", level, rec["density"])
                if not any(r["level"] == level for r in self.flow.levels):  # interrupted before flow.json
                    self.flow.add_level(level, load_mask(self.run.mask(level), self.model), rec.get("metrics"))
                    if self.is_world_process_zero():
                        self.flow.save(self.run.flow)
            else:
                rec = self._run_level(level)
            result.levels.append(rec)
        # a run once extended further keeps those levels: fewer --levels reads them, and the summary shows them
        result.levels += [rec for n, rec in sorted(done.items()) if n > la.levels]
        self.current_level = None
        for level in la.stability_levels or []:
            self.linear_mode_connectivity(level, seed=stability_seed, num_points=la.stability_points,
                                          recalibrate_bn=la.stability_bn_batches)
        result.stability = load_results(self.run_dir)  # this call's analyses and any earlier ones
        if self.is_world_process_zero():
            write_run_summary(result, self.flow)
            if self.push_tickets:
                self.push_ticket_to_hub()
        self.accelerator.wait_for_everyone()
        return result

    def _check_steps(self) -> int:
        """Optimizer steps of one level (T), refused when nothing would train or the rewind point is not before T."""
        total, k = self.training_steps(), self.settings.rewind_steps
        if total < 1:
            n = len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else "?"
            raise UsageError(f"a level would take 0 optimizer steps ({n} training examples, --per_device_train_"
                             f"batch_size {self.args.per_device_train_batch_size}, --num_train_epochs "
                             f"{self.args.num_train_epochs}, --max_steps {self.args.max_steps}): train for at least "
                             f"one step")
        if k >= total:
            raise UsageError(f"--rewind_steps {k} is not before the end of training: a level has {total} optimizer "
                             f"steps (--num_train_epochs {self.args.num_train_epochs} of "
                             f"{len(self.train_dataset) if hasattr(self.train_dataset, '__len__') else '?'} examples "
                             f"at --per_device_train_batch_size {self.args.per_device_train_batch_size}); choose "
                             f"--rewind_steps below {total}, or train longer")
        return total

    # ------------------------------------------------------------------ linear mode connectivity
    def linear_mode_connectivity(self, level: int, *, seed: int | None = None, num_points: int = 11,
                                 recalibrate_bn: int = 0) -> InstabilityResult:
        """Instability of ``level``'s ticket to SGD noise (Frankle et al. 2020), the second copy trained with the
        SGD noise of ``seed`` (default ``--seed`` + 1); see :func:`lottery_rg.stability.linear_mode_connectivity`."""
        return linear_mode_connectivity(self, level, seed_b=second_seed(seed, self.args.seed), num_points=num_points,
                                        recalibrate_bn=recalibrate_bn)

    def retrain_level(self, level: int, seed: int, work: str | os.PathLike | None = None) -> TrainOutput:
        """Train ``level``'s ticket again from its rewind point exactly as the level was trained, except for the
        seed of the SGD noise (data order, augmentation, dropout); with ``--seed`` it reproduces the level's weights.
        The model holds the result; Trainer checkpoints go to ``work`` (default ``RUN/checkpoints/retrain_XX``), so
        an interrupted call resumes."""
        if not self.run.mask(level).is_file():
            raise ValueError(f"level {level} of {self.run_dir} is not complete: nothing to retrain")
        mask = load_mask(self.run.mask(level), self.model)
        self.mask = mask
        self.current_level = None
        work = Path(work) if work is not None else self.run.checkpoints(f"retrain_{int(level):02d}")
        return self._train_from_start(mask, work, rewound=True, seed=int(seed), what=f"retraining level {level}")

    def calibration_batches(self, n: int) -> Iterator[dict[str, Any]]:
        """``n`` training batches in a fixed order, the same on every process (no sharding)."""
        return calibration_batches(self.train_dataset, self.data_collator, self.args.per_device_train_batch_size, n,
                                   device=self.args.device, model=self.model, label_names=self.label_names or (),
                                   remove_unused_columns=self.args.remove_unused_columns)

    # ------------------------------------------------------------------ the Hub
    def push_to_hub(self, commit_message: str | None = None, blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs) -> str:
        """Push the run's ticket folder (the sparsest level within one accuracy point of dense) to ``hub_model_id``
        (branch ``revision``), never the run directory or Trainer checkpoints; errors are raised."""
        if not self.run.records():
            raise ValueError(f"{self.run_dir} has no completed level: run run_imp() before push_to_hub()")
        return self.push_ticket_to_hub(branch=revision, token=token, private=private, commit_message=commit_message,
                                       raise_errors=True)

    def push_ticket_to_hub(self, level: int | None = None, branch: str | None = None, *, token: str | None = None,
                           private: bool | None = None, commit_message: str | None = None,
                           raise_errors: bool = False) -> str | None:
        """Push a level's ticket (default: the sparsest within one accuracy point of dense) to the Hub; the final
        push (no ``level``, no ``branch``) with ``--push_levels`` first pushes every level branch not yet there.
        See :func:`lottery_rg.hub.push.push_run_tickets`; failed targets are kept in ``self.push_failures``."""
        return push_run_tickets(self.run_dir, self.args.hub_model_id or self.run_dir.name, level, branch,
                                every_level=self.lottery_args.push_levels, token=token or self._hub_token,
                                private=self.args.hub_private_repo if private is None else private,
                                commit_message=commit_message, tokenizer=self._tokenizer(),
                                failures=self.push_failures, raise_errors=raise_errors,
                                progress=hub_progress(self.args))

    def _tokenizer(self):
        """The tokenizer (``processing_class``) the run trains with, if it can be saved; else None."""
        tok = self.processing_class
        return tok if tok is not None and hasattr(tok, "save_pretrained") else None

    # ------------------------------------------------------------------ one level
    def training_steps(self) -> int:
        """Optimizer steps of one full level (T), as the Trainer will compute them."""
        return self.set_initial_training_values(self.args, self.get_train_dataloader())[-1]

    def _run_level(self, level: int) -> dict:
        la, run = self.lottery_args, self.run
        self.current_level = level
        mask = self._mask_for_level(level)
        self.mask = mask
        # counted and hashed once (each is a pass over the mask, the hash a copy to the host)
        counts, total = surviving(mask), {n: int(m.numel()) for n, m in mask.items()}
        density = sum(counts.values()) / max(1, sum(total.values()))
        digest = mask_digest(mask)
        # every process logs its own digest: the evidence that all ranks prune to the same mask
        logger.info("mask digest %s (process %d) for level %d/%d at density %.4f", digest,
                    self.args.process_index, level, la.levels, density)
        if self.is_world_process_zero():
            logger.info("level %d/%d: training at density %.2f%%", level, la.levels, 100 * density)
        work = run.checkpoints(f"level_{level:02d}")
        self._tracker_offset = level * self._steps_per_level
        try:
            train_output = self._train_from_start(mask, work, rewound=level > 0, seed=self.args.seed,
                                                  what=f"level {level}")
        except NonFiniteLossError:
            self._tracker_offset = 0
            if level == 0 and self.settings.rewind_steps and self.is_world_process_zero():
                # θ_k of a level 0 that diverged: the next attempt saves it again
                for path in (run.rewind, run.rewind_state):
                    path.unlink(missing_ok=True)
            raise
        metrics = {"train_loss": train_output.training_loss, "train_steps": train_output.global_step,
                   "train_runtime": train_output.metrics.get("train_runtime")}
        if self.eval_dataset is not None:
            metrics.update(self.evaluate())
        digests = gather_object([digest])  # every process's
        if len(set(digests)) != 1:  # cannot happen after broadcast_mask; a cheap guard for the invariant
            raise RuntimeError(f"level {level}: processes hold different masks ({digests})")
        record = {
            "level": level, "density": density,
            "target_density": self.settings.target_density(level),
            "metrics": metrics, "mask_digest": digests[0], "mask_digest_per_process": digests,
            "surviving": counts, "total": total,
        }
        if self.is_world_process_zero():
            record = run.write_level(level, mask, self.model, record)  # with the weights' digests
            if self.flow is not None:
                self.flow.add_level(level, counts, metrics)  # counts: one host transfer, already made
                self.flow.save(run.flow)
            shutil.rmtree(work, ignore_errors=True)
            if self.push_tickets and la.push_levels:
                self.push_ticket_to_hub(level, branch=f"level-{level:02d}")
            acc = metrics.get("eval_accuracy")
            logger.info("level %d/%d done: density %.2f%%%s", level, la.levels, 100 * record["density"],
                        f", eval accuracy {100 * acc:.2f}%" if acc is not None else "")
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            self.run.save_tokenizer(self._tokenizer())  # tickets made from the run later carry it
        history = list(self.state.log_history)
        self.level_log_history[level] = history + [log_level(self, record)]  # the level, for the trackers
        self._tracker_offset = 0
        return record

    def _train_from_start(self, mask: Mask, work: Path, *, rewound: bool, seed: int, what: str):
        """One training run with ``mask`` enforced, resumable from the Trainer checkpoints in ``work``.

        ``rewound``: start from θ_k ⊙ m at step k with a fresh optimizer (every level after
        the dense one, and every stability copy); otherwise the dense level-0 start.
        ``seed`` fixes the SGD noise (data order, augmentation, dropout): the run's own seed
        for IMP levels, another one for a second copy in the linear-mode-connectivity test.
        """
        root = self.run_dir
        last = last_complete_checkpoint(work)
        self._drop_checkpoints_after(work, last)
        if last is None and rewound:
            resume = self.rewind_point.rewind(mask, work)
        elif last is None:
            resume = None
            self.rewind_point.start_dense()
        else:
            resume = str(last)
            logger.info("%s: resuming from %s", what, last)
        self.mask_callback.set_mask(self.model, mask)
        self._lr_offset = self.settings.rewind_steps if rewound else 0
        self.optimizer, self.lr_scheduler = None, None  # fresh optimizer every level (Frankle et al. 2020)
        self.args.output_dir = str(work)
        # accelerate seeds the data order from torch's initial seed when the dataloader is built: every level
        # (fresh or resumed) sees the same data order, and a resumed level the order it was interrupted in
        set_seed(seed)
        # the level's own loss account (training_step adds, checkpoints carry it): a resumed level reports the
        # loss of the whole level
        self.level_loss.begin(last, level_start=self._lr_offset)
        self.divergence_guard.begin(what)
        try:
            out = self.train(resume_from_checkpoint=resume)
            loss = self.level_loss.mean(self.state)
            # a loss can stay finite while a buffer (BatchNorm statistics…) is not; live tensors, no layout copies
            bad = nonfinite_tensors(self.model.state_dict(keep_vars=True))
            if bad:
                raise NonFiniteLossError(self.divergence_guard.nonfinite_weights_message(bad))
        except NonFiniteLossError as e:
            if self.is_world_process_zero():
                shutil.rmtree(work, ignore_errors=True)  # its checkpoints hold the diverging weights
            raise NonFiniteLossError(f"{e}. Nothing of {what} was recorded, and its checkpoints (which hold the "
                                     f"diverging weights) were removed from {work}") from None
        finally:
            self.level_loss.stop()
            self.args.output_dir = str(root)
        return out._replace(training_loss=loss)

    def _mask_for_level(self, level: int) -> Mask:
        if level == 0:
            return self.initial_mask or full_mask(self.model, self.prunable)
        # prune where the weights live (the GPU, when there is one): no host copy of every weight
        device = next(self.model.parameters()).device
        prev_mask = load_mask(self.run.mask(level - 1), self.model, device=device)
        weights = state_from_file(self.run.model(level - 1), list(prev_mask), device=device)
        return broadcast_mask(self.settings.next_mask(weights, prev_mask))

    def _drop_checkpoints_after(self, work: Path, last: Path | None) -> None:
        """Remove checkpoint folders a kill left half-written, so the Trainer never mixes them in."""
        self.accelerator.wait_for_everyone()  # every process has chosen ``last`` before anything is removed
        if self.is_world_process_zero():
            drop_checkpoints_after(work, last)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ run bookkeeping
    def run_config(self, total_steps: int) -> dict:
        """The run's record (``lottery_config.json``): see :func:`lottery_rg.training.record.run_record`."""
        return run_record(self, total_steps)
