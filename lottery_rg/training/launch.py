"""How the trainer's processes were started: the guards ``LotteryTrainer`` applies before any training.

* :func:`check_parallelism` — FSDP and DeepSpeed shard parameters, and mask enforcement multiplies whole
  tensors in place: both are refused. So is a launch whose processes ``TrainingArguments`` does not see as
  one run (every process would train and write alone).
* :func:`stop_with_launcher` — with one process, ``accelerate launch`` does not forward SIGTERM to the
  script: the kernel is asked to send it when the launcher dies.
* :func:`hold_run_lock` — the process of rank 0 holds the run directory's lock, and every process learns whether it
  got it, so that all stop together; ``examples/run_imp.py`` takes it before it builds data and model.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator
from typing import Any

from ..run import RunDir, RunLockedError

__all__ = ["check_parallelism", "stop_with_launcher", "hold_run_lock"]


@contextlib.contextmanager
def hold_run_lock(run: RunDir, args: Any) -> Iterator[RunDir]:
    """Hold ``run``'s write lock on the process of rank 0 (``args``: the TrainingArguments); every process learns
    whether it was taken and raises ``RunLockedError`` together. Where this process holds it already
    (``examples/run_imp.py`` took it before building the trainer), nothing more is taken."""
    from accelerate.utils import broadcast_object_list

    with contextlib.ExitStack() as held:
        error = None
        if args.process_index == 0 and not run.locked_here():
            try:
                held.enter_context(run.lock())
            except RunLockedError as e:
                error = str(e)
        if args.world_size > 1:
            error = broadcast_object_list([error])[0]
        if error:
            raise RunLockedError(error)
        yield run


def check_parallelism(args: Any) -> None:
    """Refuse FSDP, DeepSpeed, and a world size ``args`` does not see (``args``: the Trainer's TrainingArguments)."""
    fsdp = getattr(args, "fsdp", None)
    if fsdp and fsdp not in ("", [], "no") or os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise ValueError("LotteryTrainer does not support FSDP: masks are enforced on whole parameter tensors and "
                         "FSDP shards them (mask enforcement does not handle sharded parameters). Use DDP "
                         "(accelerate launch --multi_gpu) or a single process.")
    if getattr(args, "deepspeed", None) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        raise ValueError("LotteryTrainer does not support DeepSpeed: masks are enforced on whole parameter tensors "
                         "and DeepSpeed (ZeRO) shards or owns them (mask enforcement does not handle sharded "
                         "parameters). Use DDP (accelerate launch --multi_gpu) or a single process.")
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and getattr(args, "world_size", launched) != launched:
        raise ValueError(f"launched as {launched} processes but TrainingArguments sees world size "
                         f"{args.world_size}: every process would train and write alone. On a CPU-only "
                         f"machine pass --use_cpu (TrainingArguments(use_cpu=True)) to join the gloo ranks.")


def stop_with_launcher() -> None:
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
