"""Training-step cost of keeping a mask: ``LotteryTrainer`` vs the plain ``Trainer`` vs ``torch.nn.utils.prune``.

Three variants train the same CIFAR ResNet-20 (``timm.create_model("resnet20_cifar")``, same
initial weights) on the same batches (64 images of 32x32 from the embedded digits, same
shuffling seed) with the same optimizer (SGD, momentum 0.9, weight decay 5e-4, lr 0.05):

* ``plain``       – ``transformers.Trainer`` (with the same cross-entropy ``compute_loss``
                     as LotteryTrainer), dense, no mask: the baseline;
* ``lottery``     – ``LotteryTrainer`` with a 20 %-density global magnitude mask set on its
                     ``MaskCallback``: one fused ``_foreach_mul_`` after every optimizer step;
* ``lottery_noguard`` – ``lottery`` without the divergence guard's per-step check of the loss
                     (``DivergenceGuard.add``): the guard's own cost is lottery / lottery_noguard;
* ``torch_prune`` – the plain Trainer on a model re-parametrised by
                     ``torch.nn.utils.prune.custom_from_mask`` with the same mask (weight =
                     weight_orig * weight_mask recomputed in a forward pre-hook every step).

Only the training steps are timed: a callback records the time from ``on_step_begin`` to
``on_step_end`` (forward, backward, clipping, optimizer step, mask enforcement, scheduler,
zero_grad; not data loading, logging or Trainer start-up), as wall time and as process CPU
time (which leaves out the time spent waiting for a core on a shared machine). Each round
builds a fresh trainer per variant and runs their ``trainer.train()`` in threads that take
turns step by step (ABCABC..., one running at a time, order rotated between rounds), so the
variants see the same machine load; the first ``--warmup`` steps of every run are discarded.
Ratios are taken within a round (median step time over median step time) and the table
reports medians over rounds. A micro-benchmark then times ``MaskEnforcer.apply()`` against one
forward+backward and one optimizer step on the same batch, interleaved, to explain the ratio.

    .venv/bin/python benchmarks/bench_mask_step.py                  # defaults (a few minutes)
    .venv/bin/python benchmarks/bench_mask_step.py --rounds 2 --steps 5 --micro-iters 5   # quick check
"""

from __future__ import annotations

import argparse
import copy
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402

import lottery_rg  # noqa: E402,F401  (registers resnet20_cifar in timm)
from lottery_rg import LotteryArguments, LotteryTrainer  # noqa: E402
from lottery_rg.models.families import prunable_parameters  # noqa: E402
from lottery_rg.pruning.masks import MaskEnforcer, apply_mask, magnitude_prune, mask_density  # noqa: E402

VARIANTS = ("plain", "lottery", "lottery_noguard", "torch_prune")


# ---------------------------------------------------------------------------- data, model, mask
class TensorImages(torch.utils.data.Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        return {"pixel_values": self.x[i], "labels": self.y[i]}


def make_data(kind: str, image_size: int, n: int, seed: int) -> TensorImages:
    if kind == "synthetic":
        g = torch.Generator().manual_seed(seed)
        return TensorImages(torch.randn(n, 3, image_size, image_size, generator=g),
                            torch.randint(0, 10, (n,), generator=g))
    import numpy as np

    from lottery_rg.models.resnet import CIFAR_MEAN, CIFAR_STD
    from lottery_rg.tasks.image import embedded_digits

    train = embedded_digits(image_size=image_size)["train"]
    x = torch.from_numpy(np.stack([np.asarray(im, dtype=np.float32) for im in train["image"]])).permute(0, 3, 1, 2)
    x = (x / 255.0 - torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)) / torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return TensorImages(x.contiguous(), torch.tensor(train["label"]))


def make_model(name: str, seed: int):
    import timm

    torch.manual_seed(seed)
    return timm.create_model(name)


def make_mask(model, density: float) -> dict:
    """Global magnitude mask of the given density over the default prunable tensors (convs + fc)."""
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    weights = {n: params[n].detach() for n in names}
    full = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    return magnitude_prune(weights, full, total - round(density * total))


# ---------------------------------------------------------------------------- trainers
def cross_entropy_loss(model, inputs, return_outputs=False):
    logits = model(inputs["pixel_values"])
    loss = F.cross_entropy(logits, inputs["labels"])
    return (loss, {"logits": logits}) if return_outputs else loss


class PlainTrainer(Trainer):
    """The plain Trainer with exactly LotteryTrainer's loss for timm models."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        return cross_entropy_loss(model, inputs, return_outputs)


def _thread_faults() -> int:
    try:
        return resource.getrusage(resource.RUSAGE_THREAD).ru_minflt
    except (AttributeError, OSError):  # not Linux
        return 0


def configure_malloc() -> str:
    """One glibc malloc arena with fixed thresholds, so every training thread reuses freed memory.

    glibc gives each new thread its own arena; in this harness a trainer's thread arena could
    keep returning its activation buffers to the OS and fault them back in on every step (7,000
    page faults, ~12 ms of system time per ResNet-20 step were measured for whichever variant
    got such an arena), a bias of the harness that has nothing to do with masks. A training
    process running in its main thread does not pay it; with a single arena no variant does.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = [libc.mallopt(-8, 1),           # M_ARENA_MAX: all threads share the main arena
              libc.mallopt(-3, 32 << 20),    # M_MMAP_THRESHOLD: fixed (no dynamic adjustment)
              libc.mallopt(-1, 1 << 30)]     # M_TRIM_THRESHOLD: keep freed memory for reuse
    except (OSError, AttributeError):
        return "malloc left as is (no glibc mallopt)"
    return "glibc: one arena, fixed mmap/trim thresholds" if all(ok) else f"mallopt partly failed {ok}"


class Lockstep:
    """Turn-taking between trainers running in threads: exactly one runs at any time.

    A trainer hands the turn to the next one at the end of each optimizer step and waits for
    its own turn before doing anything else, so the variants' steps alternate ABCABC... on one
    timeline (slow drifts of a shared machine hit all variants alike) and never overlap.
    """

    def __init__(self, n: int):
        self.cond = threading.Condition()
        self.turn = 0
        self.active = [True] * n

    def wait(self, i: int) -> None:
        with self.cond:
            self.cond.wait_for(lambda: self.turn == i)

    def _pass(self, i: int) -> None:
        n = len(self.active)
        for d in range(1, n + 1):
            if self.active[(i + d) % n]:
                self.turn = (i + d) % n
                break
        self.cond.notify_all()

    def pass_on(self, i: int) -> None:
        with self.cond:
            self._pass(i)

    def finish(self, i: int) -> None:
        with self.cond:
            self.active[i] = False
            self._pass(i)


class StepTimer(TrainerCallback):
    """Wall and process-CPU seconds from on_step_begin to on_step_end of every optimizer step.

    CPU time does not count the time the process waits for a core, so on a machine shared with
    other jobs it is the lower-noise measure; wall time is what a user sees. With a
    :class:`Lockstep`, hands the turn on after each step and waits for the next turn.
    """

    def __init__(self, lockstep: Lockstep | None = None, index: int = 0):
        self.wall: list[float] = []
        self.cpu: list[float] = []
        self.faults: list[int] = []  # minor page faults of the training thread during the step
        self._t0 = self._c0 = self._f0 = None
        self.lockstep, self.index = lockstep, index

    def on_step_begin(self, args, state, control, **kwargs):
        self._f0 = _thread_faults()
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kwargs):
        self.wall.append(time.perf_counter() - self._t0)
        self.cpu.append(time.process_time() - self._c0)
        self.faults.append(_thread_faults() - self._f0)
        if self.lockstep is not None:
            self.lockstep.pass_on(self.index)
            self.lockstep.wait(self.index)


def train_in_lockstep(trainers: list, lockstep: Lockstep, threads: int) -> None:
    """Run ``trainer.train()`` of every trainer in its own thread, taking turns step by step."""
    errors = []

    def run(i, trainer):
        torch.set_num_threads(threads)  # the intra-op thread count is per calling thread
        lockstep.wait(i)
        try:
            trainer.train()
        except BaseException as e:  # noqa: BLE001 (re-raised in the main thread)
            errors.append(e)
        finally:
            lockstep.finish(i)

    workers = [threading.Thread(target=run, args=(i, t)) for i, t in enumerate(trainers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]


def training_args(output_dir: str, a) -> TrainingArguments:
    return TrainingArguments(
        output_dir=output_dir, max_steps=a.warmup + a.steps, per_device_train_batch_size=a.batch_size,
        learning_rate=0.05, optim="sgd", optim_args="momentum=0.9", weight_decay=5e-4, report_to="none",
        save_strategy="no", logging_strategy="no", disable_tqdm=True, dataloader_pin_memory=False,
        dataloader_num_workers=0, seed=a.seed, use_cpu=True, remove_unused_columns=False, label_names=["labels"],
    )


def build_trainer(variant: str, base_model, mask: dict, data, output_dir: str, a, timer: StepTimer):
    from torch.nn.utils import prune

    model = copy.deepcopy(base_model)
    args = training_args(output_dir, a)
    if variant.startswith("lottery"):
        trainer = LotteryTrainer(model=model, args=args, lottery_args=LotteryArguments(), train_dataset=data)
        trainer.mask = mask
        trainer.mask_callback.set_mask(trainer.model, mask)
        if variant == "lottery_noguard":  # the same trainer without the per-step loss check
            trainer.divergence_guard.add = lambda loss: None
    else:
        if variant == "torch_prune":
            modules = dict(model.named_modules())
            for name, m in mask.items():
                prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", m)
        trainer = PlainTrainer(model=model, args=args, train_dataset=data)
    trainer.remove_callback(PrinterCallback)  # no end-of-training metrics print (disable_tqdm installs it)
    trainer.add_callback(timer)  # last: its on_step_end runs after every other callback's
    return trainer


def check_masked(variant: str, model, mask: dict) -> tuple[bool, float]:
    """(pruned weights are exactly zero, fraction of the masked weights that are non-zero)."""
    modules = dict(model.named_modules())
    zero, nonzero, total = True, 0, 0
    for name, m in mask.items():
        mod_name, attr = name.rsplit(".", 1)
        w = getattr(modules[mod_name], attr).detach()  # torch_prune: the re-parametrised weight
        if variant != "plain":
            zero &= bool((w[~m] == 0).all())
        nonzero += int((w != 0).sum())
        total += w.numel()
    return zero, nonzero / total


# ---------------------------------------------------------------------------- micro-benchmark
def micro_benchmark(base_model, mask: dict, data, a) -> dict[str, float]:
    """Median seconds of: forward+backward (dense / torch-prune re-parametrised), SGD step, MaskEnforcer.apply."""
    from torch.nn.utils import prune

    x = torch.stack([data[i]["pixel_values"] for i in range(a.batch_size)])
    y = torch.stack([data[i]["labels"] for i in range(a.batch_size)])
    dense = copy.deepcopy(base_model).train()
    zeroed = copy.deepcopy(base_model).train()
    apply_mask(zeroed, mask)  # same values as the masked variants, no hooks
    reparam = copy.deepcopy(base_model).train()
    modules = dict(reparam.named_modules())
    for name, m in mask.items():
        prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", m)
    opt = torch.optim.SGD(dense.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    enforcer = MaskEnforcer(dense, mask)
    loss = F.cross_entropy(dense(x), y).detach()

    def guard_check():  # what DivergenceGuard.add does with each loss on the CPU
        if not bool(torch.isfinite(loss).all()):
            raise RuntimeError("not finite")

    def fwd_bwd(model):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    fwd_bwd(dense)
    ops = {
        "forward+backward (dense)": lambda: fwd_bwd(dense),
        "forward+backward (80% zeros, no hooks)": lambda: fwd_bwd(zeroed),
        "forward+backward (torch prune hooks)": lambda: fwd_bwd(reparam),
        "SGD momentum step": opt.step,
        "MaskEnforcer.apply()": enforcer.apply,
        "divergence check of the loss": guard_check,
    }
    times = {k: [] for k in ops}
    keys = list(ops)
    for i in range(a.micro_iters + 2):
        for k in keys[i % len(keys):] + keys[:i % len(keys)]:
            t0, c0 = time.perf_counter(), time.process_time()
            ops[k]()
            if i >= 2:
                times[k].append((time.perf_counter() - t0, time.process_time() - c0))
    return {k: (statistics.median(t for t, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--data", choices=("digits", "synthetic"), default="digits")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--density", type=float, default=0.2, help="surviving fraction of the prunable weights")
    p.add_argument("--rounds", type=int, default=8,
                   help="rounds; each trains a fresh trainer of every variant, steps alternating (order rotates)")
    p.add_argument("--steps", type=int, default=15, help="timed optimizer steps per variant and round")
    p.add_argument("--warmup", type=int, default=3, help="untimed first steps of every training run")
    p.add_argument("--micro-iters", type=int, default=40, help="repeats of each op in the micro-benchmark")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads (default 1: on a shared machine, parallel regions wait for "
                        "descheduled workers and measure the neighbours rather than the code)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mallopt", action="store_true",
                   help="leave glibc's per-thread arenas alone (see configure_malloc; biases single variants)")
    a = p.parse_args()
    malloc_note = "malloc left as is (--no-mallopt)" if a.no_mallopt else configure_malloc()

    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("lottery_rg").setLevel(logging.WARNING)
    torch.set_num_threads(a.threads)
    data = make_data(a.data, a.image_size, max(4 * a.batch_size, 256), a.seed)
    base = make_model(a.model, a.seed)
    mask = make_mask(base, a.density)
    n_params = sum(p.numel() for p in base.parameters())
    print(f"{a.model}: {n_params / 1e6:.3f} M parameters, {len(mask)} masked tensors at density "
          f"{mask_density(mask):.4f}; {a.data} data {len(data)} x {tuple(data[0]['pixel_values'].shape)}, batch "
          f"{a.batch_size}; {a.rounds} rounds x {a.steps} timed steps (+{a.warmup} warm-up) per variant; "
          f"torch {torch.__version__}, transformers {transformers.__version__}, {a.threads} thread(s); {malloc_note}; "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    clocks = ("wall", "cpu")
    per_round = {c: {v: [] for v in VARIANTS} for c in clocks}  # median step time of each run
    faults = {v: [] for v in VARIANTS}
    checks: dict[str, tuple[bool, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(a.rounds):
            order = VARIANTS[r % len(VARIANTS):] + VARIANTS[:r % len(VARIANTS)]
            lockstep = Lockstep(len(order))
            timers = [StepTimer(lockstep, i) for i in range(len(order))]
            trainers = [build_trainer(v, base, mask, data, os.path.join(tmp, f"{v}-{r}"), a, t)
                        for v, t in zip(order, timers)]
            train_in_lockstep(trainers, lockstep, a.threads)
            line = []
            for v, trainer, timer in zip(order, trainers, timers):
                if len(timer.wall) != a.warmup + a.steps:
                    raise RuntimeError(f"{v}: timed {len(timer.wall)} steps, expected {a.warmup + a.steps}")
                for c in clocks:
                    per_round[c][v].append(statistics.median(getattr(timer, c)[a.warmup:]))
                faults[v].extend(timer.faults[a.warmup:])
                checks[v] = check_masked(v, trainer.model, mask)
                line.append(f"{v} {1e3 * per_round['wall'][v][-1]:6.1f} ms (CPU {1e3 * per_round['cpu'][v][-1]:6.1f})")
            del trainers
            print(f"  round {r + 1:2d} ({'>'.join(order)}): " + ", ".join(line), flush=True)

    # sanity: the masked variants really train with their pruned weights at zero
    for v in ("lottery", "lottery_noguard", "torch_prune"):
        if not checks[v][0]:
            raise RuntimeError(f"{v}: pruned weights are not zero after training; the benchmark would be wrong")
    base_nz = check_masked("plain", base, mask)[1]

    def ratios(c, v, ref="plain"):
        return [x / b for x, b in zip(per_round[c][v], per_round[c][ref])]

    print()
    print("| variant         | wall ms/step | wall ratio to plain | CPU ms/step | CPU ratio to plain | page faults/step "
          "| non-zero masked weights |")
    print("|-----------------|-------------:|--------------------:|------------:|-------------------:|-----------------:"
          "|------------------------:|")
    med = {c: {v: statistics.median(ratios(c, v)) for v in VARIANTS} for c in clocks}
    for v in VARIANTS:
        print(f"| {v:<15} | {1e3 * statistics.median(per_round['wall'][v]):12.1f} | {med['wall'][v]:19.3f} "
              f"| {1e3 * statistics.median(per_round['cpu'][v]):11.1f} | {med['cpu'][v]:18.3f} "
              f"| {statistics.mean(faults[v]):16.0f} | {100 * checks[v][1]:22.1f}% |")
    print("(ms/step: median over rounds of each run's median step; ratio: median over rounds of the within-round ratio;"
          " page faults: mean per timed step)")
    for v in ("lottery", "torch_prune"):
        for c in clocks:
            print(f"  per-round {c:4s} ratio {v}/plain: {', '.join(f'{x:.3f}' for x in ratios(c, v))}")
    lt = {c: statistics.median(ratios(c, "lottery", "torch_prune")) for c in clocks}
    guard = {c: statistics.median(ratios(c, "lottery", "lottery_noguard")) for c in clocks}
    print()
    verdict = "met" if max(med["wall"]["lottery"], med["cpu"]["lottery"]) <= 1.03 else "MISSED"
    print(f"lottery / plain = {med['wall']['lottery']:.3f} wall, {med['cpu']['lottery']:.3f} CPU (target <= 1.03: "
          f"{verdict}); torch_prune / plain = {med['wall']['torch_prune']:.3f} wall, {med['cpu']['torch_prune']:.3f} "
          f"CPU; lottery / torch_prune = {lt['wall']:.3f} wall, {lt['cpu']:.3f} CPU")
    print(f"divergence guard: lottery / lottery_noguard = {guard['wall']:.3f} wall, {guard['cpu']:.3f} CPU")
    print(f"pruned weights exactly zero after training: lottery {checks['lottery'][0]}, torch_prune "
          f"{checks['torch_prune'][0]} (initial model: {100 * base_nz:.1f}% non-zero)")

    print(f"\nmicro-benchmark: batch {a.batch_size}, {a.micro_iters} interleaved repeats, medians", flush=True)
    micro = micro_benchmark(base, mask, data, a)
    fb, fb_cpu = micro["forward+backward (dense)"]
    print("| operation                              | wall ms | vs dense fwd+bwd | CPU ms | vs dense fwd+bwd |")
    print("|----------------------------------------|--------:|-----------------:|-------:|-----------------:|")
    for k, (t, c) in micro.items():
        print(f"| {k:<38} | {1e3 * t:7.3f} | {100 * t / fb:15.2f}% | {1e3 * c:6.3f} | {100 * c / fb_cpu:15.2f}% |")
    enf = micro["MaskEnforcer.apply()"][0]
    step = fb + micro["SGD momentum step"][0]
    print(f"MaskEnforcer.apply() adds {100 * enf / step:.2f}% to forward+backward+SGD step (so lottery/plain should "
          f"be ~{1 + enf / step:.4f}); the prune hooks add "
          f"{100 * (micro['forward+backward (torch prune hooks)'][0] / fb - 1):.1f}% wall / "
          f"{100 * (micro['forward+backward (torch prune hooks)'][1] / fb_cpu - 1):.1f}% CPU to forward+backward")
    g = micro["divergence check of the loss"][0]
    print(f"the divergence check of the loss adds {100 * g / step:.3f}% to forward+backward+SGD step")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
