"""``LotteryTrainer``: iterative magnitude pruning with rewinding as a ``transformers.Trainer``.

One call to :meth:`LotteryTrainer.run_imp` trains level 0 (dense), then levels 1…N, each
pruned once more by magnitude from the previous level's trained weights and rewound to
step k (SCIENCE §1). Every level is an ordinary ``Trainer.train`` run, so every
``TrainingArguments`` flag, callback, logger and ``accelerate launch`` setup works.

How the pieces map onto the Trainer:

* the mask is enforced by :class:`MaskCallback` in ``on_optimizer_step`` (one fused
  in-place multiply after each optimizer step);
* the rewind point θ_k is captured at step k of level 0 (the whole ``state_dict``,
  BatchNorm statistics included) together with the ``TrainerState`` of that step;
* a rewound level starts from a checkpoint holding θ_k ⊙ m and the step-k state but no
  optimizer state, so the Trainer resumes at step k (same data position, learning-rate
  schedule fast-forwarded to k in :meth:`create_scheduler`) with a fresh optimizer;
* an interrupted level resumes from its last regular Trainer checkpoint;
* level directories appear atomically, so a level is complete or absent.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import os
import shutil
import signal
import sys
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainerCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, set_seed

from ..branches.stability import linear_mode_connectivity, load_results
from ..flow.core import IMPFlow
from ..hub.push import PushLedger, check_push_access, own_training_args, push_summary
from ..hub.ticket import LotteryTicket, run_tokenizer_dir
from ..io import (
    atomic_dir,
    atomic_path,
    check_safetensors,
    load_state,
    read_json,
    save_state,
    state_from_file,
    write_json,
)
from ..models.families import family_of, prunable_parameters
from ..pruning.callbacks import MaskCallback
from ..pruning.masks import (
    Mask,
    MaskEnforcer,
    broadcast_mask,
    check_mask,
    full_mask,
    load_mask,
    mask_digest,
    save_mask,
    surviving,
)
from ..report import write_run_summary
from ..run import LotteryResult, RunDir, RunLockedError
from ..version import __version__
from .arguments import LotteryArguments
from .precision import channels_last_batch, choose_precision, to_channels_last

__all__ = ["LotteryTrainer", "last_complete_checkpoint", "FREE_TRAINING_ARGUMENTS"]

logger = logging.getLogger(__name__)

# TrainingArguments that cannot change what a level computes: they may differ between the invocations of one run.
# Every other TrainingArguments field (optimizer and its hyper-parameters, schedule, seeds, batch sizes, steps,
# precision, data loading that draws random numbers, device) is recorded when a run starts and locked.
FREE_TRAINING_ARGUMENTS = frozenset({
    "output_dir", "logging_steps", "logging_strategy", "logging_first_step", "logging_nan_inf_filter", "log_level",
    "log_level_replica", "log_on_each_node", "disable_tqdm", "report_to", "run_name", "project", "trackio_space_id",
    "trackio_bucket_id", "trackio_static_space_id", "push_to_hub", "hub_model_id", "hub_strategy", "hub_token",
    "hub_private_repo", "hub_always_push", "hub_revision", "save_steps", "save_strategy", "save_total_limit",
    "save_on_each_node", "eval_strategy", "eval_steps", "eval_delay", "eval_on_start", "eval_accumulation_steps",
    "eval_do_concat_batches", "eval_use_gather_object", "batch_eval_metrics", "dataloader_pin_memory",
    "dataloader_prefetch_factor", "ddp_timeout", "ddp_find_unused_parameters", "skip_memory_metrics",
    "resume_from_checkpoint", "do_train", "do_eval", "do_predict", "include_num_input_tokens_seen", "debug",
    "local_rank", "torch_empty_cache_steps", "restore_callback_states_from_checkpoint", "enable_jit_checkpoint",
})
LOSS_FILE = "lottery_rg_loss.json"  # in a Trainer checkpoint: the training loss summed since the level began


def last_complete_checkpoint(work: str | os.PathLike) -> Path | None:
    """The newest Trainer checkpoint in ``work`` that was written to the end, or None.

    ``Trainer`` writes a checkpoint folder file by file and ``trainer_state.json`` last, so a
    process killed while saving leaves a folder without a readable state: resuming from it
    would fail (or worse, load half a model). Such folders are skipped.
    """
    work = Path(work)
    if not work.is_dir():
        return None
    found = []
    for p in work.iterdir():
        step = p.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
        if p.is_dir() and p.name.startswith(PREFIX_CHECKPOINT_DIR + "-") and step.isdigit():
            found.append((int(step), p))
    for _, p in sorted(found, reverse=True):
        try:
            json.loads((p / "trainer_state.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if any((p / f).is_file() for f in ("model.safetensors", "pytorch_model.bin")) or \
                any(p.glob("model*.safetensors")):
            return p
    return None


class _RewindCapture(TrainerCallback):
    """Saves θ_k and the TrainerState at step k of level 0."""

    def __init__(self, trainer: LotteryTrainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        k = t.settings.rewind_steps
        if t.current_level == 0 and k > 0 and state.global_step == k:
            t._save_rewind_point(state)


class LotteryTrainer(Trainer):
    """A ``Trainer`` that finds lottery tickets by IMP with rewinding.

    Args:
        model: a timm ResNet (incl. the CIFAR ResNets) or a ``transformers`` BERT model.
        args: ordinary ``TrainingArguments``; ``output_dir`` becomes the run directory.
        lottery_args: :class:`~lottery_rg.arguments.LotteryArguments`.
        fast: ``"auto"`` chooses bf16 and channels-last for this machine (``--fast``; see
            :mod:`lottery_rg.training.precision`), ``"off"`` takes ``args`` as they are.
        channels_last: train the model and its image batches in channels-last memory format (``--channels_last``).
        **kwargs: anything ``Trainer`` accepts (datasets, collator, compute_metrics, callbacks…),
            except ``optimizers``/``model_init``: IMP needs a fresh optimizer per level.
    """

    def __init__(self, model=None, args=None, lottery_args: LotteryArguments | None = None, *,
                 mask: Mask | None = None, run_info: dict | None = None, fast: str = "off",
                 channels_last: bool = False, **kwargs):
        if kwargs.get("optimizers", (None, None)) != (None, None):
            raise ValueError("LotteryTrainer creates a fresh optimizer for every level; choose it through "
                             "TrainingArguments (--optim, --learning_rate, …) or override create_optimizer")
        if kwargs.get("model_init") is not None:
            raise ValueError("LotteryTrainer needs a model, not model_init: every level rewinds the same network")
        if model is None:
            raise ValueError("LotteryTrainer needs a model")
        self.lottery_args = lottery_args or LotteryArguments()
        self.settings = self.lottery_args.settings()  # the typed settings every level shares
        self.run_info = dict(run_info or {})  # provenance for model cards: data set, base model, command
        self.family = family_of(model)
        self.prunable = prunable_parameters(model, self.settings.prune_include, self.settings.prune_exclude)
        # tickets, not Trainer checkpoints, go to the Hub: the Trainer gets a copy of the arguments that never pushes
        # checkpoint folders (the caller's object is left as it is); token and repository are checked now, before
        # any training
        args, self.push_tickets = own_training_args(args, timm_model=self.family.library == "timm")
        args, self.precision = choose_precision(args, model, fast=fast, channels_last=channels_last)
        if self.precision.channels_last:
            to_channels_last(model)
        if self.push_tickets:
            check_push_access(args.hub_model_id or Path(args.output_dir).name, token=args.hub_token,
                              private=args.hub_private_repo)
        super().__init__(model=model, args=args, **kwargs)
        _refuse_unsupported_parallelism(self.args)
        if self.is_world_process_zero():
            logger.info("%s", self.precision.describe())
        launched = int(os.environ.get("WORLD_SIZE", "1"))
        if launched > 1 and self.args.world_size != launched:
            raise ValueError(f"launched as {launched} processes but TrainingArguments sees world size "
                             f"{self.args.world_size}: every process would train and write alone. On a CPU-only "
                             f"machine pass --use_cpu (TrainingArguments(use_cpu=True)) to join the gloo ranks.")
        if self.args.load_best_model_at_end:
            raise ValueError("--load_best_model_at_end would replace a level's trained weights and break IMP")
        self._is_hf_model = self.family.library == "transformers"
        if not self._is_hf_model:  # timm models take pixel_values and return logits
            self.label_names = ["labels"]
            self._signature_columns = ["image", "label", "pixel_values", "labels"]
        self.initial_mask = None
        if mask is not None:  # start from a ticket: level 0 trains (and plain train() keeps) this mask
            check_mask(mask, self.model, source="the mask given to LotteryTrainer")
            order = {n: i for i, (n, _) in enumerate(self.model.named_parameters())}
            self.prunable = sorted(mask, key=order.__getitem__)  # the ticket's prunable set
            self.initial_mask = {n: mask[n].clone() for n in mask}
        self.mask: Mask = self.initial_mask or full_mask(self.model, self.prunable)
        self.mask_callback = MaskCallback(self.model, self.mask)
        self.add_callback(self.mask_callback)
        self.add_callback(_RewindCapture(self))
        self.run = RunDir(self.args.output_dir)  # levels point args.output_dir at their checkpoints
        self._route_tracker_files()
        self.current_level: int | None = None
        self._lr_offset = 0
        self.flow = None
        self.push_failures: list[str] = []  # Hub targets whose push failed (a re-run pushes them)
        self.level_log_history: dict[int, list] = {}  # each level's log_history (the Trainer keeps the last one)

    # ------------------------------------------------------------------ Trainer hooks
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if self._is_hf_model:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        pixels = inputs["pixel_values"]
        logits = model(channels_last_batch(pixels) if self.precision.channels_last else pixels)
        loss = F.cross_entropy(logits, inputs["labels"])
        return (loss, {"logits": logits}) if return_outputs else loss

    def evaluate(self, *args, **kwargs) -> dict:
        """``Trainer.evaluate``, plus perplexity for masked-language models."""
        metrics = super().evaluate(*args, **kwargs)
        if self.family.task(self.model) == "fill-mask" and "eval_loss" in metrics:
            from ..tasks.text import perplexity

            metrics["eval_perplexity"] = perplexity(metrics["eval_loss"])
        return metrics

    def create_scheduler(self, num_training_steps: int, optimizer=None):
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
        foreign = self.run.foreign_content()
        if foreign:
            raise ValueError(f"{self.run_dir} holds files that are not a lottery_rg run ({', '.join(foreign[:5])}); "
                             f"nothing was written there. Choose an empty or new --output_dir")
        with contextlib.ExitStack() as held:
            self._hold_run_lock(held)
            _stop_with_launcher()
            return self._run_imp()

    def _run_imp(self) -> LotteryResult:
        la, k = self.lottery_args, self.settings.rewind_steps
        total_steps = self.training_steps()
        if k >= total_steps:
            raise ValueError(f"--rewind_steps {k} is not before the end of training "
                             f"({total_steps} optimizer steps per level); rewind to an earlier step")
        stability_seed = self._stability_seed(la.stability_seed) if la.stability_levels else None
        self._check_or_write_run_config(total_steps)
        done = self._verify_completed_levels()
        self.flow = self._load_or_create_flow()
        result = LotteryResult(self.run_dir)
        # every Trainer.train() runs a full gc.collect() (accelerate's free_memory) at its start and end, and the
        # end-of-run figures allocate enough to set off full collections too; with the long-lived objects (model,
        # data, libraries) frozen out of the collector's view, each costs a fraction.
        with _long_lived_objects_frozen():
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

    def _hold_run_lock(self, held: contextlib.ExitStack) -> None:
        """Rank 0 takes the run's lock; every rank learns whether it got it (so all stop together)."""
        error = None
        if self.is_world_process_zero():
            try:
                held.enter_context(self.run.lock())
            except RunLockedError as e:
                error = str(e)
        error = _broadcast_object(error)
        if error:
            raise RunLockedError(error)

    def _verify_completed_levels(self) -> dict[int, dict]:
        """Every completed level is checked before anything is built on it (files, shapes, mask digest), and so is
        the rewind point the later levels start from; returns the completed levels' records."""
        done = {n: self.run.verify_level(n, self.model) for n in self.run.level_numbers()}
        if done:
            try:
                check_safetensors(self.run.rewind)
                if self.settings.rewind_steps > 0:
                    read_json(self.run.rewind_state)
            except ValueError as e:
                raise ValueError(f"the rewind point of {self.run_dir} is damaged: {e}. Delete {self.run_dir} "
                                 f"(every level depends on it) to start again") from None
        return done

    # ------------------------------------------------------------------ linear mode connectivity
    def _stability_seed(self, seed: int | None) -> int:
        seed = self.args.seed + 1 if seed is None else int(seed)
        if seed == self.args.seed:
            raise ValueError(f"the second copy of the stability analysis needs SGD noise of its own: --stability_seed "
                             f"{seed} equals --seed; choose another")
        return seed

    def linear_mode_connectivity(self, level: int, *, seed: int | None = None, num_points: int = 11,
                                 recalibrate_bn: int = 0):
        """Instability of ``level``'s ticket to SGD noise (Frankle et al. 2020).

        See :func:`lottery_rg.branches.stability.linear_mode_connectivity`; the second copy
        uses the SGD noise of ``seed`` (default ``--seed`` + 1).
        """
        return linear_mode_connectivity(self, level, seed_b=self._stability_seed(seed), num_points=num_points,
                                        recalibrate_bn=recalibrate_bn)

    def retrain_level(self, level: int, seed: int, work: str | os.PathLike | None = None):
        """Train ``level``'s ticket again from its rewind point, with the SGD noise of ``seed``.

        Exactly the level's own training (θ_k ⊙ m at step k, fresh optimizer, schedule from
        step k) except for the seed of the data order, augmentation and dropout: with the
        run's ``--seed`` it reproduces the level's weights. The model holds the result;
        Trainer checkpoints go to ``work`` (default ``OUTPUT_DIR/checkpoints/retrain_XX``),
        so an interrupted call resumes. Returns the ``TrainOutput``.
        """
        if not self.run.mask(level).is_file():
            raise ValueError(f"level {level} of {self.run_dir} is not complete: nothing to retrain")
        mask = load_mask(self.run.mask(level), self.model)
        self.mask = mask
        self.current_level = None
        work = Path(work) if work is not None else self.run.checkpoints(f"retrain_{int(level):02d}")
        return self._train_from_start(mask, work, rewound=True, seed=int(seed), what=f"retraining level {level}")

    def calibration_batches(self, n: int):
        """``n`` training batches in a fixed order, the same on every process (no sharding)."""
        import datasets
        from torch.utils.data import DataLoader, RandomSampler

        dataset, collator = self.train_dataset, self.data_collator
        if isinstance(dataset, datasets.Dataset):
            dataset = self._remove_unused_columns(dataset, description="training")
        else:
            collator = self._get_collator_with_removed_columns(collator, description="training")
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, batch_size=self.args.per_device_train_batch_size, sampler=sampler,
                            collate_fn=collator)
        for i, batch in enumerate(loader):
            if i >= n:
                break
            yield self._prepare_inputs(batch)

    # ------------------------------------------------------------------ the Hub
    def hub_repo_id(self) -> str:
        return self.args.hub_model_id or Path(self.run_dir).name

    def push_to_hub(self, commit_message: str | None = None, blocking: bool = True, token: str | None = None,
                    revision: str | None = None, private: bool | None = None, **kwargs) -> str:
        """Push the run's ticket (the sparsest level within one accuracy point of dense) to ``hub_model_id``.

        Never the run directory, Trainer checkpoints or pickled arguments: the ticket folder only
        (see :class:`~lottery_rg.LotteryTicket`). ``revision`` pushes to that branch. Errors are raised.
        """
        if not self.run.records():
            raise ValueError(f"{self.run_dir} has no completed level: run run_imp() before push_to_hub()")
        return self.push_ticket_to_hub(branch=revision, token=token, private=private, commit_message=commit_message,
                                       raise_errors=True)

    def push_ticket_to_hub(self, level: int | None = None, branch: str | None = None, *, token: str | None = None,
                           private: bool | None = None, commit_message: str | None = None,
                           raise_errors: bool = False) -> str | None:
        """Push a level's ticket (default: the sparsest within one accuracy point of dense) to the Hub.

        Pushes are recorded in ``RUN/hub_pushes.json``. The final push of a run (no ``level``, no ``branch``) with
        ``--push_levels`` first pushes every level branch not yet on the Hub (a resumed run catches up on
        whatever failed before). A failed push is logged and recorded, training goes on, and the final
        push reports what was and was not pushed (``self.push_failures``); ``raise_errors=True`` raises instead.
        """
        repo = self.hub_repo_id()
        ledger = PushLedger(self.run_dir, repo)
        final = level is None and branch is None
        targets = []
        if final and self.lottery_args.push_levels:
            targets = [(r["level"], f"level-{r['level']:02d}") for r in self.run.records()
                       if not ledger.has(f"level-{r['level']:02d}", r["level"])]
        targets.append((level, branch))
        url = None
        for lv, br in targets:
            target = br or "main"
            try:
                ticket = LotteryTicket.from_run(self.run_dir, lv, tokenizer=self._tokenizer())
                url = ticket.push_to_hub(repo, branch=br, token=token or self.args.hub_token,
                                         private=self.args.hub_private_repo if private is None else private,
                                         commit_message=commit_message)
            except Exception as e:  # noqa: BLE001  (a network or Hub error must not cost the training results)
                if raise_errors:
                    raise
                logger.warning("could not push %s of %s to %s: %s: %s (training results are intact; re-run the same "
                               "command to push it)", "the ticket" if lv is None else f"level {lv}", self.run_dir,
                               f"{repo}@{target}", type(e).__name__, e)
                self.push_failures.append(target)
                continue
            ledger.record(target, ticket.level, url)
            self.push_failures = [t for t in self.push_failures if t != target]
            logger.info("pushed the level-%d ticket to %s%s", ticket.level, repo, f" (branch {br})" if br else "")
        if final:
            message = push_summary(ledger, self.push_failures)
            (logger.warning if self.push_failures else logger.info)("%s", message)
        return url

    def _tokenizer(self):
        """The tokenizer (``processing_class``) the run trains with, if it can be saved; else None."""
        tok = self.processing_class
        return tok if tok is not None and hasattr(tok, "save_pretrained") else None

    def _save_tokenizer(self) -> None:
        """Keep the run's tokenizer in ``RUN/tokenizer`` (once), so tickets made from the run later carry it."""
        tok, folder = self._tokenizer(), run_tokenizer_dir(self.run_dir)
        if tok is None or (folder / "tokenizer_config.json").is_file():
            return
        with atomic_dir(folder) as tmp:
            tok.save_pretrained(str(tmp))

    # ------------------------------------------------------------------ trackers
    def _level_done(self, level: int, record: dict) -> None:
        """After a level: keep the tokenizer, report the level to the trackers, keep the level's log history."""
        if self.is_world_process_zero():
            self._save_tokenizer()
        self._log_level(record)

    def _log_level(self, record: dict) -> None:
        """Log a finished level (``level``, ``density``, its eval metrics as ``level_eval_*``) through the Trainer's
        own ``log``/``report_to`` machinery, at a global step that grows across levels: the optimizer steps of
        every level so far. TensorBoard / W&B can then plot accuracy against density."""
        level = record["level"]
        # every level ends at the same global step T (a rewound level resumes at k): levels 0..n took (n + 1)·T
        steps = (level + 1) * int(record["metrics"].get("train_steps") or 0)
        history = list(self.state.log_history)
        logs = {"level": float(level), "density": float(record["density"])}
        logs.update({f"level_{k}": float(v) for k, v in record["metrics"].items()
                     if k.startswith("eval_") and isinstance(v, (int, float))})
        held = self.state.global_step
        self.state.global_step = steps
        try:
            self.log(logs)
        finally:
            self.state.global_step = held
        self.level_log_history[level] = history + [self.state.log_history[-1]]

    def _route_tracker_files(self) -> None:
        """TensorBoard event files go to ``RUN/runs/…``, chosen now: every level points ``args.output_dir`` at its
        checkpoint folder (removed when the level is complete), where the callback would otherwise write them."""
        from transformers.integrations import TensorBoardCallback
        from transformers.integrations.integration_utils import default_logdir

        for cb in self.callback_handler.callbacks:
            if isinstance(cb, TensorBoardCallback) and cb.logging_dir is None:
                cb.logging_dir = str(self.run_dir / default_logdir())

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
            print(f"[lottery_rg] level {level}/{la.levels}: training at density {100 * density:.2f}%", flush=True)
        work = run.checkpoints(f"level_{level:02d}")
        train_output = self._train_from_start(mask, work, rewound=level > 0, seed=self.args.seed,
                                              what=f"level {level}")
        metrics = {"train_loss": train_output.training_loss, "train_steps": train_output.global_step,
                   "train_runtime": train_output.metrics.get("train_runtime")}
        if self.eval_dataset is not None:
            metrics.update(self.evaluate())
        digests = _gather_digests(digest)
        if len(set(digests)) != 1:  # cannot happen after broadcast_mask; a cheap guard for the invariant
            raise RuntimeError(f"level {level}: processes hold different masks ({digests})")
        record = {
            "level": level, "density": density,
            "target_density": self.settings.target_density(level),
            "metrics": metrics, "mask_digest": digests[0], "mask_digest_per_process": digests,
            "surviving": counts, "total": total,
        }
        if self.is_world_process_zero():
            with atomic_dir(run.level(level)) as tmp:
                save_mask(mask, tmp / run.mask(level).name, metadata={"level": level})
                save_state(self.model, tmp / run.model(level).name, metadata={"level": level})
                write_json(tmp / run.metrics(level).name, record)
            if self.flow is not None:
                self.flow.add_level(level, counts, metrics)  # counts: one host transfer, already made
                self.flow.save(run.flow)
            shutil.rmtree(work, ignore_errors=True)
            if self.push_tickets and la.push_levels:
                self.push_ticket_to_hub(level, branch=f"level-{level:02d}")
            acc = metrics.get("eval_accuracy")
            print(f"[lottery_rg] level {level}/{la.levels} done: density {100 * record['density']:.2f}%"
                  + (f", eval accuracy {100 * acc:.2f}%" if acc is not None else ""), flush=True)
        self.accelerator.wait_for_everyone()
        self._level_done(level, record)
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
            resume = self._rewind(mask, work)
        elif last is None:
            resume = None
            self._start_dense()
        else:
            resume = str(last)
            logger.info("%s: resuming from %s", what, last)
        self.mask_callback.set_mask(self.model, mask)
        self._lr_offset = self.settings.rewind_steps if rewound else 0
        self.optimizer, self.lr_scheduler = None, None  # fresh optimizer every level (SCIENCE §1.5)
        self.args.output_dir = str(work)
        # accelerate seeds the data order from torch's initial seed when the dataloader is built: every level
        # (fresh or resumed) sees the same data order, and a resumed level the order it was interrupted in
        set_seed(seed)
        self._loss_carry = _loss_carry(last)
        try:
            out = self.train(resume_from_checkpoint=resume)
        finally:
            self.args.output_dir = str(root)
        carry_sum, carry_steps = self._loss_carry
        self._loss_carry = None
        if carry_steps:  # resumed mid-way: the Trainer's loss covers only the steps since the checkpoint
            steps = self.state.global_step - self._initial_global_step
            loss = (carry_sum + out.training_loss * steps) / (carry_steps + steps)
            out = out._replace(training_loss=loss)
        return out

    def _save_checkpoint(self, model, trial):
        """Also record the training loss summed since the level began, so a resumed level reports the loss of
        the whole level (written before the Trainer's files: a checkpoint is complete only with both)."""
        carry = getattr(self, "_loss_carry", None)
        if carry is not None and self.is_world_process_zero():
            ckpt = Path(self.args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            ckpt.mkdir(parents=True, exist_ok=True)
            so_far = self._total_loss_scalar + float(self._tr_loss.item())
            write_json(ckpt / LOSS_FILE, {"step": self.state.global_step, "loss_sum": carry[0] + so_far,
                                          "steps": carry[1] + self.state.global_step - self._initial_global_step})
        return super()._save_checkpoint(model, trial)

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
        if self.is_world_process_zero() and work.is_dir():
            keep = -1 if last is None else int(last.name.split("-")[1])
            for p in work.glob(PREFIX_CHECKPOINT_DIR + "-*"):
                step = p.name.split("-")[1]
                if p.is_dir() and step.isdigit() and int(step) > keep:
                    logger.warning("removing incomplete checkpoint %s (interrupted while saving)", p)
                    shutil.rmtree(p, ignore_errors=True)
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------ the rewind point
    def _start_dense(self) -> None:
        """Level 0 starts from the model as given (θ_0); with k = 0 that is also the rewind point.

        With k > 0, θ_0 is kept too (``init.safetensors``): the untrained control of the flow can start there.
        """
        start = self.run.rewind if self.settings.rewind_steps == 0 else self.run.init
        if start.is_file():
            load_state(self.model, start)
        elif self.is_world_process_zero():
            save_state(self.model, start, metadata={"step": 0})
        self.accelerator.wait_for_everyone()

    def _rewind(self, mask: Mask, work: Path) -> str | None:
        """Put the model at θ_k ⊙ m; returns the step-k checkpoint to resume from (None for k = 0)."""
        k, rewind = self.settings.rewind_steps, self.run.rewind
        if not rewind.is_file():
            raise FileNotFoundError(f"{rewind} is missing: the rewind point of level 0 was not saved")
        load_state(self.model, rewind)  # θ_k: parameters and buffers
        MaskEnforcer(self.model, mask).apply()
        if k == 0:
            return None
        # a checkpoint at step k without optimizer state: the Trainer resumes at k with a fresh optimizer
        ckpt = work / f"checkpoint-{k}"
        if self.is_world_process_zero():
            with atomic_dir(ckpt) as tmp:
                save_state(self.model, tmp / "model.safetensors")
                shutil.copyfile(self.run.rewind_state, tmp / "trainer_state.json")
        self.accelerator.wait_for_everyone()
        return str(ckpt)

    def _save_rewind_point(self, state) -> None:
        if self.is_world_process_zero():
            save_state(self.model, self.run.rewind, metadata={"step": state.global_step})
            with atomic_path(self.run.rewind_state) as tmp:
                state.save_to_json(tmp)

    # ------------------------------------------------------------------ run bookkeeping
    def locked_settings(self) -> dict:
        """Every setting that changes what a level computes, by the flag that sets it (see the README)."""
        training = {k: v for k, v in self.args.to_dict().items() if k not in FREE_TRAINING_ARGUMENTS}
        arguments = self.run_info.get("arguments") or {}
        return {"training": training, "processes": {"world_size": self.args.world_size},
                "precision": self.precision.locked(), **{k: dict(v) for k, v in arguments.items()}}

    def run_config(self, total_steps: int) -> dict:
        return {
            "lottery_rg_version": __version__,
            "model": {"family": self.family.name, **self.family.architecture(self.model)},
            "lottery": self.settings.to_dict(),
            "levels": self.lottery_args.levels,
            "prunable": self.prunable,
            "info": {k: v for k, v in self.run_info.items() if k != "arguments"},
            "settings": self.locked_settings(),
            "precision": self.precision.to_dict(),  # what --fast chose and why (bf16 and layout are locked)
            "command": self.run_info.get("command") or _command_line(),
            "training": {"steps_per_level": total_steps, "seed": self.args.seed,
                         "learning_rate": self.args.learning_rate, "optim": str(self.args.optim),
                         "train_batch_size": self.args.per_device_train_batch_size * max(1, self.args.world_size)},
        }

    def _check_or_write_run_config(self, total_steps: int) -> None:
        root, path = self.run_dir, self.run.config
        new = json.loads(json.dumps(self.run_config(total_steps), default=str))  # compare as it reads back
        if path.is_file():
            old = read_json(path)
            old["lottery"] = {k: v for k, v in old.get("lottery", {}).items() if k not in ("levels", "push_levels")}
            for key in ("model", "lottery", "prunable"):
                if old.get(key) != new[key]:
                    diff = _describe_difference(old.get(key), new[key])
                    raise ValueError(f"{root} holds a lottery run with different {key} settings ({diff}); "
                                     f"use another --output_dir or delete that one")
            # the data a run trains on (data set, image size, sequence length…): levels must not mix two of them
            old_data, new_data = old.get("info") or {}, new.get("info") or {}
            shared = sorted((set(old_data) & set(new_data)) - {"command"})
            if any(old_data[k] != new_data[k] for k in shared):
                diff = _describe_difference({k: old_data[k] for k in shared}, {k: new_data[k] for k in shared})
                raise ValueError(f"{root} holds a lottery run on other data ({diff}); use another --output_dir "
                                 f"or delete that one")
            changed = _changed_settings(old.get("settings"), new["settings"])
            if changed:
                raise ValueError(f"{root} holds a run made with other settings, and a run's settings cannot change "
                                 f"between invocations (the levels would mix two experiments):\n  "
                                 + "\n  ".join(changed)
                                 + "\nRun with the recorded values, or use another --output_dir")
            if old.get("training", {}).get("steps_per_level") != total_steps:
                raise ValueError(f"{root} holds a run with {old['training']['steps_per_level']} steps per level, "
                                 f"this one has {total_steps}; use another --output_dir")
        elif self.run.has_levels():
            raise ValueError(f"{root} holds level directories but no {path.name}: not a lottery_rg run")
        self.accelerator.wait_for_everyone()  # every process has checked before the file changes
        if self.is_world_process_zero():
            old = read_json(path) if path.is_file() else None
            if old is None or old.get("levels", 0) < new["levels"] or "settings" not in old:
                # a new run, or the same run extended to more levels (fewer levels only read it); runs recorded
                # before settings were locked get them recorded now
                record = new if old is None else dict(old, levels=max(old.get("levels", 0), new["levels"]),
                                                      settings=old.get("settings") or new["settings"])
                root.mkdir(parents=True, exist_ok=True)
                write_json(path, record)
        self.accelerator.wait_for_everyone()

    def _load_or_create_flow(self) -> IMPFlow:
        """``flow.json``, or a new flow; the flow is derived from the level files (run_imp adds every completed
        level it lacks), so an unreadable ``flow.json`` is rebuilt rather than fatal."""
        if self.run.flow.is_file():
            try:
                return IMPFlow.load(self.run.flow)
            except ValueError as e:
                logger.warning("%s; rebuilding the flow from the completed levels", e)
        return IMPFlow.from_model(self.model, self.prunable, schedule=self.settings.schedule_dict())


def _command_line() -> str:
    import shlex

    return " ".join(shlex.quote(a) for a in ["python", *sys.argv])


def _gather_digests(digest: str) -> list[str]:
    """The mask digest of every process (one entry outside torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return [digest]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, digest)
    return out


def _describe_difference(old, new) -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        parts = [f"{k}: {old.get(k)!r} on disk vs {new.get(k)!r} now" for k in keys if old.get(k) != new.get(k)]
        return "; ".join(parts[:4])
    if isinstance(old, list) and isinstance(new, list):
        return f"{len(old)} prunable tensors on disk vs {len(new)} now"
    return f"{old!r} vs {new!r}"


def _changed_settings(old: dict | None, new: dict) -> list[str]:
    """One line per locked setting whose recorded value differs from this invocation's."""
    if not old:
        return []
    lines = []
    for group in sorted(set(old) | set(new)):
        a, b = old.get(group) or {}, new.get(group) or {}
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                name = "number of processes" if group == "processes" else f"--{key}"
                lines.append(f"{name}: {a.get(key)!r} recorded, {b.get(key)!r} now")
    return lines


def _loss_carry(checkpoint: Path | None) -> tuple[float, int]:
    """(loss summed since the level began, steps) at ``checkpoint``; (0, 0) for a level that starts now."""
    if checkpoint is None or not (checkpoint / LOSS_FILE).is_file():
        return 0.0, 0
    data = read_json(checkpoint / LOSS_FILE)
    return float(data["loss_sum"]), int(data["steps"])


@contextlib.contextmanager
def _long_lived_objects_frozen():
    """Keep the objects that exist now out of every garbage collection until the block ends (:func:`gc.freeze`).

    No gc.collect() first: it would walk the whole heap once more (0.3-0.7 s here) to free the little cyclic
    garbage there is, which the first collection after the block frees instead. A heap the program froze
    itself (``imports_without_collection(freeze=True)`` in ``examples/run_imp.py``) stays frozen afterwards.
    """
    frozen_by_caller = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not frozen_by_caller:
            gc.unfreeze()


def _broadcast_object(obj):
    """Rank 0's ``obj`` on every process (itself outside torch.distributed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _stop_with_launcher() -> None:
    """Stop when the ``accelerate launch`` that started this process is told to stop.

    With one process, ``accelerate launch`` runs the script as a child and does not forward SIGTERM (a
    scheduler's stop) to it: the launcher would die and leave the trainer running as an orphan, beside the
    next restart. On Linux the kernel can send the child SIGTERM when its launcher dies (``PR_SET_PDEATHSIG``);
    it is asked to only when the parent is ``accelerate``, so a trainer started from a shell is left alone. A
    level stopped this way resumes like any other.
    """
    if not sys.platform.startswith("linux"):
        return
    ppid = os.getppid()
    try:
        with open(f"/proc/{ppid}/cmdline", "rb") as f:
            parent = f.read().split(b"\0")
    except OSError:
        return
    if not any(part.endswith((b"/accelerate", b"accelerate")) or b"accelerate.commands" in part
               for part in parent[:3]):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGTERM))
    if os.getppid() != ppid:  # the launcher died before the request
        os.kill(os.getpid(), signal.SIGTERM)


def _refuse_unsupported_parallelism(args) -> None:
    """FSDP and DeepSpeed shard parameters; mask enforcement multiplies whole tensors in place. Refuse them."""
    fsdp = getattr(args, "fsdp", None)
    if fsdp and fsdp not in ("", [], "no") or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise ValueError("LotteryTrainer does not support FSDP: masks are enforced on whole parameter tensors and "
                         "FSDP shards them (mask enforcement does not handle sharded parameters). Use DDP "
                         "(accelerate launch --multi_gpu) or a single process.")
    if getattr(args, "deepspeed", None) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ValueError("LotteryTrainer does not support DeepSpeed: masks are enforced on whole parameter tensors "
                         "and DeepSpeed (ZeRO) shards or owns them (mask enforcement does not handle sharded "
                         "parameters). Use DDP (accelerate launch --multi_gpu) or a single process.")
