"""IMP with rewinding: ``LotteryTrainer.run_imp()`` vs a minimal hand-written PyTorch loop (the floor).

Both do the same work: resnet20_cifar on the embedded digits (16x16, tensor data path from
``lottery_rg.tasks.tensor_images``, no augmentation), ``--levels`` pruned levels after the dense one,
global magnitude pruning of 20 % of the surviving conv/fc weights per level, rewind of the
whole state to step ``--rewind`` (fresh optimizer, learning-rate schedule resumed there),
SGD (momentum 0.9, weight decay 5e-4, lr 0.05, linear decay, gradient clipping at 1.0 — the
Trainer's defaults), the mask multiplied in after every step, one evaluation per level.

The floor is ~80 lines of plain PyTorch: no checkpoints, no files, no callbacks. Every
variant runs in a fresh subprocess (alternating floor, lottery, lottery, floor, ...) that
reports: interpreter start-up + imports, set-up (data, model, trainer), the IMP run, and inside
it the time in optimizer steps (forward, backward, clipping, step, mask) — the rest of the run
is the per-level overhead (data loading, evaluation, level bookkeeping, pruning, I/O).

    .venv/bin/python benchmarks/bench_imp_floor.py            # quick: 512 images, 2 epochs/level, 2 repeats
    .venv/bin/python benchmarks/bench_imp_floor.py --train-samples 1437 --epochs 3 --repeats 3
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time

T_START = time.perf_counter()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------------------- worker: common
def load_data(a):
    from lottery_rg.models.resnet import CIFAR_MEAN, CIFAR_STD
    from lottery_rg.tasks.image import embedded_digits
    from lottery_rg.tasks.tensor_images import tensor_image_splits

    dsd = embedded_digits(image_size=a.image_size)
    dsd["train"] = dsd["train"].select(range(min(a.train_samples, len(dsd["train"]))))
    return tensor_image_splits(dsd, a.image_size, CIFAR_MEAN, CIFAR_STD, device=a.device if a.device != "cpu" else None)


def sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- the floor
def lr_factor(a, step: int, total: int) -> float:
    """transformers' linear or cosine schedule with linear warm-up, as a multiplier of the peak rate."""
    if step < a.warmup:
        return step / max(1, a.warmup)
    progress = (step - a.warmup) / max(1, total - a.warmup)
    if a.schedule == "cosine":
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return max(0.0, 1.0 - progress)


def run_floor(a, train, test, timing):
    import timm
    import torch
    import torch.nn.functional as F

    from lottery_rg.models.families import prunable_parameters

    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = timm.create_model(a.model).to(dev, memory_format=fmt)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    mask = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}  # in the weights' memory format
    x, y = train.pixels.to(dev).contiguous(memory_format=fmt), train.labels.to(dev)
    steps_per_epoch = math.ceil(len(y) / a.batch_size)
    total = steps_per_epoch * a.epochs
    rewind = None
    accs = []
    for level in range(a.levels + 1):
        if level:  # prune 20 % of the surviving weights, smallest |w| over all tensors (one threshold)
            alive = torch.cat([params[n].detach()[mask[n]].abs() for n in names])
            k = math.ceil(0.2 * alive.numel())
            thr = alive.kthvalue(k).values
            mask = {n: mask[n] & (params[n].detach().abs() > thr) for n in names}
            model.load_state_dict(rewind)
        with torch.no_grad():
            for n in names:
                params[n].mul_(mask[n])
        opt = torch.optim.SGD(model.parameters(), lr=a.lr, momentum=0.9, weight_decay=5e-4)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(a, s, total))
        start = a.rewind if level else 0
        for _ in range(start):
            sched.step()
        g = torch.Generator().manual_seed(a.seed)
        model.train()
        for step in range(start, total):
            if step % steps_per_epoch == 0 or step == start:
                perm = torch.randperm(len(y), generator=g).to(dev)
            i = step % steps_per_epoch
            idx = perm[i * a.batch_size:(i + 1) * a.batch_size]
            xb, yb = x[idx], y[idx]
            sync(a.device)
            t0, c0 = time.perf_counter(), time.process_time()
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
                loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            with torch.no_grad():
                for n in names:
                    params[n].mul_(mask[n])
            opt.zero_grad(set_to_none=True)
            sync(a.device)
            timing["steps"] += time.perf_counter() - t0
            timing["steps_cpu"] += time.process_time() - c0
            timing["n_steps"] += 1
            if level == 0 and step + 1 == a.rewind:
                rewind = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.eval()
        with torch.no_grad(), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            correct = sum(int((model(test.pixels[j:j + 256].to(dev)).argmax(-1) == test.labels[j:j + 256].to(dev))
                              .sum()) for j in range(0, len(test), 256))
        accs.append(correct / len(test))
        assert all(not params[n].detach()[~mask[n]].any() for n in names)
    density = sum(int(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    return {"accuracy": accs, "final_density": density}


# ---------------------------------------------------------------------------- LotteryTrainer
def run_lottery(a, train, test, collate, timing, out_dir):
    import timm
    import torch
    from transformers import PrinterCallback, TrainerCallback, TrainingArguments

    from lottery_rg import LotteryArguments, LotteryTrainer
    from lottery_rg.tasks.image import accuracy_metrics

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            sync(a.device)
            self.t0, self.c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            sync(a.device)
            timing["steps"] += time.perf_counter() - self.t0
            timing["steps_cpu"] += time.process_time() - self.c0
            timing["n_steps"] += 1

    torch.manual_seed(a.seed)
    model = timm.create_model(a.model)
    if a.channels_last:  # batches too: the data path hands them out channels-last
        for ds in (train, test):
            ds.pixels = ds.pixels.contiguous(memory_format=torch.channels_last)
    args = TrainingArguments(
        output_dir=out_dir, num_train_epochs=a.epochs, per_device_train_batch_size=a.batch_size,
        per_device_eval_batch_size=256, learning_rate=a.lr, lr_scheduler_type=a.schedule, warmup_steps=a.warmup,
        optim="sgd", optim_args="momentum=0.9",
        weight_decay=5e-4, report_to="none", save_strategy="no", logging_strategy="no", disable_tqdm=True,
        dataloader_pin_memory=False, seed=a.seed, use_cpu=a.device == "cpu", bf16=a.bf16)
    trainer = LotteryTrainer(model=model, args=args, lottery_args=LotteryArguments(levels=a.levels, rewind_steps=a.rewind),
                             train_dataset=train, eval_dataset=test, data_collator=collate,
                             compute_metrics=accuracy_metrics, channels_last=a.channels_last)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(StepTimer())
    timing["setup_trainer"] = time.perf_counter() - timing.pop("_t_setup")
    import gc

    if a.gc_freeze:  # a collection first: the frozen heap then holds no garbage
        gc.collect()
    gc.freeze()  # what examples/run_imp.py does: later full collections skip every object that exists now
    result = trainer.run_imp()
    return {"accuracy": [r["metrics"].get("eval_accuracy") for r in result.levels],
            "final_density": result.levels[-1]["density"]}


def worker(a) -> None:
    import gc
    import tempfile

    t_imp = time.perf_counter()
    freeze = a.worker == "floor" and a.floor_freeze
    if freeze:  # what examples/run_imp.py does: no collections during the imports, then a frozen heap
        gc.disable()
    exec(IMPORTS[a.worker])  # each variant imports only what it uses (the floor: no transformers, no Trainer)
    if freeze:
        gc.freeze()
        gc.enable()
    import torch

    torch.set_num_threads(a.threads)
    timing = {"steps": 0.0, "steps_cpu": 0.0, "n_steps": 0, "gc": 0.0, "n_gc": 0, "summary": 0.0, "summary_cpu": 0.0}
    if a.worker == "lottery":
        import logging

        import transformers

        import lottery_rg.training.trainer as trainer_module

        transformers.logging.set_verbosity_error()
        logging.getLogger("lottery_rg").setLevel(logging.WARNING)
        summary = trainer_module.write_run_summary

        def timed_summary(*args, **kw):  # the end-of-run report: summary.md/.csv and the PNG plots
            t, c = time.perf_counter(), time.process_time()
            try:
                return summary(*args, **kw)
            finally:
                timing["summary"] += time.perf_counter() - t
                timing["summary_cpu"] += time.process_time() - c

        trainer_module.write_run_summary = timed_summary
    imports = time.perf_counter() - t_imp
    collect = gc.collect

    def timed_collect(*args, **kw):  # what the Trainer's free_memory / release_memory cost per level
        t = time.perf_counter()
        try:
            return collect(*args, **kw)
        finally:
            timing["gc"] += time.perf_counter() - t
            timing["n_gc"] += 1

    gc.collect = timed_collect
    t0 = time.perf_counter()
    train, test, collate = load_data(a)
    data = time.perf_counter() - t0
    timing["_t_setup"] = time.perf_counter()
    t1, c1 = time.perf_counter(), time.process_time()
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w") as null:
        stdout, sys.stdout = sys.stdout, null
        try:
            res = run_floor(a, train, test, timing) if a.worker == "floor" else \
                run_lottery(a, train, test, collate, timing, tmp)
        finally:
            sys.stdout = stdout
    run, run_cpu = time.perf_counter() - t1, time.process_time() - c1
    setup = timing.pop("setup_trainer", 0.0)
    timing.pop("_t_setup", None)
    print("RESULT " + json.dumps({"imports": imports, "data": data, "setup": setup, "run": run - setup,
                                  "run_cpu": run_cpu - setup,
                                  "since_script_start": time.perf_counter() - T_START, **timing, **res}))


# ---------------------------------------------------------------------------- parent
class Child:
    """A subprocess whose own wall time and CPU time (user + system, from ``wait4``) are measured."""

    def __init__(self, cmd, threads: int, cpu: int | None = None):
        import tempfile

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
        self.out, self.err = tempfile.TemporaryFile("w+"), tempfile.TemporaryFile("w+")
        pin = (lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(cmd, stdout=self.out, stderr=self.err, env=env, cwd=ROOT, text=True,
                                     preexec_fn=pin)

    def wait(self) -> tuple[float, float, str, str, int]:
        if not hasattr(self, "wall"):
            self.reaped(*os.wait4(self.proc.pid, 0)[1:])
        self.out.seek(0)
        self.err.seek(0)
        return self.wall, self.cpu, self.out.read(), self.err.read(), self.proc.returncode

    def reaped(self, status: int, ru) -> None:
        """Record the end of the process (call as soon as ``wait4`` returns it)."""
        self.wall = time.perf_counter() - self.t0
        self.cpu = ru.ru_utime + ru.ru_stime
        self.proc.returncode = os.waitstatus_to_exitcode(status)


def reap(*children: Child) -> None:
    """Wait for all of them, recording each one's end when it happens (not when its turn to be waited on comes)."""
    pending = {c.proc.pid: c for c in children}
    while pending:
        pid, status, ru = os.wait4(-1, 0)
        if pid in pending:
            pending.pop(pid).reaped(status, ru)


def start_worker(a, variant: str, cpu: int | None = None, extra: tuple[str, ...] = ()) -> Child:
    return Child([sys.executable, os.path.abspath(__file__), "--worker", variant] + a.passthrough + list(extra),
                 a.threads, cpu)


def worker_result(child: Child, variant: str) -> dict:
    wall, cpu, stdout, stderr, rc = child.wait()
    line = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if rc or not line:
        raise RuntimeError(f"{variant} worker failed ({rc}):\n{stderr[-3000:]}")
    r = json.loads(line[-1][7:])
    r["process"], r["process_cpu"] = wall, cpu
    r["startup"] = wall - r["since_script_start"] + r["imports"]  # interpreter + imports
    return r


def measure(a, variant: str) -> dict:
    return worker_result(start_worker(a, variant), variant)


def start_demo(a, cpu: int | None = None, extra: tuple[str, ...] = ()) -> Child:
    """The demo as a user runs it: ``python examples/run_imp.py CONFIG --levels N --tensor_data`` (+ ``extra``)."""
    import tempfile

    out = tempfile.mkdtemp(prefix="bench_demo_")
    child = Child([sys.executable, os.path.join(ROOT, "examples", "run_imp.py"), a.demo, "--levels", str(a.levels),
                   "--tensor_data", "--output_dir", out, "--seed", str(a.seed), *extra], a.threads, cpu)
    child.run_dir = out
    return child


def demo_result(child: Child, a) -> dict:
    import shutil

    try:
        wall, cpu, _, stderr, rc = child.wait()
        if rc:
            raise RuntimeError(f"demo failed ({rc}):\n{stderr[-3000:]}")
        records = []
        for n in range(a.levels + 1):
            with open(os.path.join(child.run_dir, f"level_{n:02d}", "metrics.json")) as f:
                records.append(json.load(f))
    finally:
        shutil.rmtree(child.run_dir, ignore_errors=True)
    return {"process": wall, "process_cpu": cpu, "train_runtime": sum(r["metrics"]["train_runtime"] for r in records),
            "n_steps": sum(r["metrics"]["train_steps"] - (a.rewind if r["level"] else 0) for r in records),
            "accuracy": [r["metrics"].get("eval_accuracy") for r in records], "final_density": records[-1]["density"]}


def demo_settings(a) -> None:
    """The floor's settings from the demo's configuration file (same model, data, schedule and rewind step)."""
    with open(a.demo) as f:
        cfg = json.load(f)
    a.model, a.image_size = cfg["model_name_or_path"], cfg.get("image_size", a.image_size)
    a.train_samples, a.epochs = cfg.get("max_train_samples", 10 ** 9), cfg["num_train_epochs"]
    a.batch_size, a.lr = cfg["per_device_train_batch_size"], cfg["learning_rate"]
    a.schedule, a.warmup = cfg.get("lr_scheduler_type", "linear"), cfg.get("warmup_steps", 0)
    a.rewind, a.seed = cfg.get("rewind_steps", 0), cfg.get("seed", a.seed)
    floor_does = {"augment": False, "pruning": "global", "prune_fraction": 0.2, "optim": "sgd"}
    other = {k: cfg[k] for k, v in floor_does.items() if cfg.get(k, v) != v}
    if other:
        raise SystemExit(f"the floor does {floor_does}; {a.demo} asks for {other}")


# What each worker imports before it loads the data: the floor needs torch, timm, datasets (the digits) and three
# small lottery_rg modules; LotteryTrainer needs the same plus transformers' Trainer and the rest of lottery_rg.
_DATA_IMPORTS = ("import torch, timm, datasets; import lottery_rg.models.resnet, lottery_rg.models.families, "
                 "lottery_rg.tasks.image, lottery_rg.tasks.tensor_images")
IMPORTS = {"floor": _DATA_IMPORTS, "lottery": _DATA_IMPORTS + "; from lottery_rg import LotteryTrainer"}


def import_time(a, variant: str) -> float:
    """Wall seconds of a fresh interpreter that only imports what the variant needs."""
    child = Child([sys.executable, "-c", IMPORTS[variant]], a.threads)
    wall, _, _, stderr, rc = child.wait()
    if rc:
        raise RuntimeError(f"importing for {variant} failed ({rc}):\n{stderr[-3000:]}")
    return wall


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--image-size", type=int, default=16)
    p.add_argument("--train-samples", type=int, default=512)
    p.add_argument("--epochs", type=int, default=2, help="epochs per level")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--levels", type=int, default=3, help="pruned levels after the dense one")
    p.add_argument("--rewind", type=int, default=4, help="rewind step k")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both (the Trainer's --bf16)")
    p.add_argument("--channels-last", action="store_true",
                   help="model and batches in channels-last memory format in both (LotteryTrainer's channels_last)")
    p.add_argument("--fast-vs-fp32", action="store_true",
                   help="with --demo: the demo with --fast auto, the demo with --fast off (fp32, as before --fast) and "
                        "the floor (fp32) in one run, in pairs: fast|fp32, fp32|floor, floor|fast per repeat (side by "
                        "side with --side-by-side); --floor-fast adds the floor in bf16 + channels-last")
    p.add_argument("--floor-fast", action="store_true", help="with --fast-vs-fp32: also the floor in bf16 + channels-last")
    p.add_argument("--gc-freeze", action="store_true",
                   help="LotteryTrainer: gc.collect() before the gc.freeze() that precedes run_imp() (as examples/run_imp.py freezes the heap, without the collect)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.05, help="peak learning rate")
    p.add_argument("--schedule", choices=("linear", "cosine"), default="linear")
    p.add_argument("--warmup", type=int, default=0, help="warm-up steps")
    p.add_argument("--demo", metavar="CONFIG", nargs="?", const=os.path.join(ROOT, "examples", "configs",
                                                                          "resnet20_digits.json"),
                   help="compare the demo as users run it (examples/run_imp.py CONFIG --levels N --tensor_data, "
                        "checkpoints, logging, progress bars and summary included) with the floor on the same "
                        "settings; default CONFIG: the make demo configuration")
    p.add_argument("--side-by-side", action="store_true",
                   help="with --demo and --threads 1: run the floor and the demo at the same time, each pinned to its "
                        "own core (swapped every repeat), so that both see the same machine; a shared VM's speed "
                        "drifts by several per cent between minutes")
    p.add_argument("--floor-freeze", action="store_true",
                   help="give the floor examples/run_imp.py's garbage-collector handling too (no collections while importing, "
                        "then gc.freeze()), to see how much of the comparison that handling is")
    p.add_argument("--worker", choices=("floor", "lottery"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.demo:
        demo_settings(a)
    argv = sys.argv[1:] if argv is None else argv
    a.passthrough = [x for i, x in enumerate(argv) if x != "--worker" and (i == 0 or argv[i - 1] != "--worker")]
    return a


def summarize(results: dict, a) -> tuple[str, dict]:
    levels = a.levels + 1
    keys = ("process", "process_cpu", "bare_imports", "startup", "data", "setup", "run", "run_cpu", "steps",
            "steps_cpu", "gc", "summary", "summary_cpu")
    med = {v: {k: statistics.median(r[k] for r in rs) for k in keys} for v, rs in results.items()}
    for v in med:
        med[v]["overhead_per_level"] = (med[v]["run"] - med[v]["steps"] - med[v]["summary"]) / levels
        med[v]["overhead_per_level_cpu"] = (med[v]["run_cpu"] - med[v]["steps_cpu"] - med[v]["summary_cpu"]) / levels
        med[v]["n_steps"] = results[v][0]["n_steps"]
        med[v]["accuracy"] = results[v][0]["accuracy"]
        med[v]["final_density"] = results[v][0]["final_density"]
    f, l = med["floor"], med["lottery"]
    rows = [("whole process (wall s)", "process"), ("whole process (CPU s)", "process_cpu"),
            ("interpreter + own imports only (s)", "bare_imports"),
            ("start-up + imports in the worker (s)", "startup"), ("data (decode once, s)", "data"),
            ("trainer/model set-up (s)", "setup"), ("IMP run (s)", "run"), ("  in optimizer steps (s)", "steps"),
            ("  overhead per level, outside steps and summary (s)", "overhead_per_level"),
            ("  end-of-run summary: tables + plots (s)", "summary"), ("  gc.collect inside the run (s)", "gc"),
            ("IMP run (CPU s)", "run_cpu"), ("  in optimizer steps (CPU s)", "steps_cpu"),
            ("  overhead per level, outside steps and summary (CPU s)", "overhead_per_level_cpu"),
            ("  end-of-run summary (CPU s)", "summary_cpu")]
    out = ["| measure | floor (plain PyTorch) | LotteryTrainer | ratio |", "|---|---:|---:|---:|"]
    for label, k in rows:
        ratio = l[k] / f[k] if f[k] else float("nan")
        out.append(f"| {label} | {f[k]:.3f} | {l[k]:.3f} | {ratio:.2f} |")
    out.append(f"| optimizer steps | {f['n_steps']} | {l['n_steps']} | |")
    out.append(f"| final density | {f['final_density']:.4f} | {l['final_density']:.4f} | |")
    return "\n".join(out), med


def demo_main(a) -> None:
    print(f"demo {os.path.relpath(a.demo, ROOT)} with --levels {a.levels} --tensor_data vs the floor on the same "
          f"settings ({a.model}, {a.image_size}px, {a.epochs} epochs/level, batch {a.batch_size}, lr {a.lr} "
          f"{a.schedule}, warm-up {a.warmup}, rewind to step {a.rewind}), {a.threads} thread(s), {a.repeats} "
          f"repeat(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {"floor": [], "demo": []}
    cores = sorted(os.sched_getaffinity(0))
    side_by_side = a.side_by_side and len(cores) >= 2 * a.threads
    if a.side_by_side and not side_by_side:
        print(f"  (--side-by-side needs {2 * a.threads} cores, this machine lends {len(cores)}: one after the other)")
    for r in range(a.repeats):
        if side_by_side:  # both at once, each pinned to its own core(s); the cores swap every repeat
            c0, c1 = (cores[0], cores[-1]) if r % 2 == 0 else (cores[-1], cores[0])
            pin = a.threads == 1
            floor, demo = start_worker(a, "floor", c0 if pin else None), start_demo(a, c1 if pin else None)
            reap(floor, demo)
            done = {"floor": worker_result(floor, "floor"), "demo": demo_result(demo, a)}
        else:  # one after the other, alternating which goes first
            done = {}
            for v in (("floor", "demo") if r % 2 == 0 else ("demo", "floor")):
                done[v] = measure(a, "floor") if v == "floor" else demo_result(start_demo(a), a)
        for v, res in done.items():
            results[v].append(res)
            print(f"  repeat {r + 1} {v:5s}: process {res['process']:.2f} s ({res['process_cpu']:.2f} CPU s), "
                  f"{res['n_steps']} steps, accuracy per level {', '.join(f'{x:.3f}' for x in res['accuracy'])}",
                  flush=True)
    for r in results["floor"]:
        r["training"] = r["steps"]  # what Trainer.train() also covers: the steps (and their data, logs, checkpoints)
        r["rest"] = r["process"] - r["steps"]
    for r in results["demo"]:
        r["training"] = r["train_runtime"]
        r["rest"] = r["process"] - r["train_runtime"]
    keys = ("process", "process_cpu", "training", "rest")
    med = {v: {k: statistics.median(x[k] for x in rs) for k in keys} for v, rs in results.items()}
    f, d = med["floor"], med["demo"]
    pairs = [dm["process"] / fl["process"] for fl, dm in zip(results["floor"], results["demo"])]
    print()
    print("| measure | floor (plain PyTorch) | demo (examples/run_imp.py) | ratio |\n|---|---:|---:|---:|")
    for label, k in (("whole process (wall s)", "process"), ("whole process (CPU s)", "process_cpu"),
                     ("training: optimizer steps / all of Trainer.train() (s)", "training"),
                     ("everything else: start-up, data, evaluation, pruning, files, summary (s)", "rest")):
        print(f"| {label} | {f[k]:.2f} | {d[k]:.2f} | {d[k] / f[k]:.3f} |")
    print(f"| optimizer steps | {results['floor'][0]['n_steps']} | {results['demo'][0]['n_steps']} | |")
    print(f"| final density | {results['floor'][0]['final_density']:.4f} | "
          f"{results['demo'][0]['final_density']:.4f} | |")
    cpu_pairs = [dm["process_cpu"] / fl["process_cpu"] for fl, dm in zip(results["floor"], results["demo"])]
    print(f"\nper pair, demo/floor: wall {', '.join(f'{x:.3f}' for x in pairs)}; "
          f"CPU {', '.join(f'{x:.3f}' for x in cpu_pairs)}")
    print(f"whole-run ratio demo/floor: {d['process'] / f['process']:.3f} (wall), "
          f"{d['process_cpu'] / f['process_cpu']:.3f} (CPU); load average {os.getloadavg()[0]:.2f}")


# --fast-vs-fp32: what each variant runs
FAST_VARIANTS = {
    "fast": ("demo", ("--fast", "auto")),         # the demo as users run it now (config: "fast": "auto")
    "fp32": ("demo", ("--fast", "off")),          # the demo before --fast: fp32, contiguous
    "floor": ("floor", ()),                       # the plain PyTorch loop, fp32
    "floor_fast": ("floor", ("--bf16", "--channels-last")),  # the plain loop in bf16 + channels-last
}


def fast_main(a) -> None:
    """Fast demo vs fp32 demo vs the floor, in pairs (each pair at the same time with --side-by-side)."""
    import itertools

    names = ["fast", "fp32", "floor"] + (["floor_fast"] if a.floor_fast else [])
    pairs = list(itertools.combinations(names, 2))
    cores = sorted(os.sched_getaffinity(0))
    side_by_side = a.side_by_side and a.threads == 1 and len(cores) >= 2
    print(f"demo {os.path.relpath(a.demo, ROOT)} --levels {a.levels}: {', '.join(names)} in pairs "
          f"{', '.join('|'.join(p) for p in pairs)} x {a.repeats} repeat(s), "
          f"{'side by side, one core each' if side_by_side else 'one after the other'}, {a.threads} thread(s); "
          f"load average {os.getloadavg()[0]:.2f}", flush=True)

    def start(name, cpu):
        kind, extra = FAST_VARIANTS[name]
        return start_demo(a, cpu, extra) if kind == "demo" else start_worker(a, "floor", cpu, extra)

    def result(name, child):
        if FAST_VARIANTS[name][0] == "demo":
            r = demo_result(child, a)
            r["training"] = r["train_runtime"]
        else:
            r = worker_result(child, "floor")
            r["training"] = r["steps"]
        r["rest"] = r["process"] - r["training"]
        return r

    results = {n: [] for n in names}
    ratios = {p: {"process": [], "process_cpu": [], "training": []} for p in pairs}
    for r in range(a.repeats):
        for i, (x, y) in enumerate(pairs):
            swap = (r + i) % 2
            cx, cy = (cores[-1], cores[0]) if swap else (cores[0], cores[-1])
            if side_by_side:
                kx, ky = start(x, cx), start(y, cy)
                reap(kx, ky)
                rx, ry = result(x, kx), result(y, ky)
            else:
                first, second = (y, x) if swap else (x, y)
                done = {first: result(first, start(first, None))}
                done[second] = result(second, start(second, None))
                rx, ry = done[x], done[y]
            for n, res in ((x, rx), (y, ry)):
                results[n].append(res)
            for k in ratios[(x, y)]:
                ratios[(x, y)][k].append(rx[k] / ry[k])
            print(f"  repeat {r + 1} {x}|{y}: {rx['process']:.1f} s | {ry['process']:.1f} s "
                  f"(wall ratio {rx['process'] / ry['process']:.3f}; training {rx['training']:.1f} | "
                  f"{ry['training']:.1f} s); accuracy per level {x} "
                  f"{', '.join(f'{v:.3f}' for v in rx['accuracy'])}, {y} {', '.join(f'{v:.3f}' for v in ry['accuracy'])}"
                  f"; load average {os.getloadavg()[0]:.2f}", flush=True)
    keys = ("process", "process_cpu", "training", "rest")
    med = {n: {k: statistics.median(x[k] for x in rs) for k in keys} for n, rs in results.items()}
    print()
    print("| measure (median over all runs) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for label, k in (("whole process (wall s)", "process"), ("whole process (CPU s)", "process_cpu"),
                     ("training: all of Trainer.train() / the floor's optimizer steps (s)", "training"),
                     ("everything else (s)", "rest")):
        print(f"| {label} | " + " | ".join(f"{med[n][k]:.2f}" for n in names) + " |")
    print("| optimizer steps | " + " | ".join(str(results[n][0]["n_steps"]) for n in names) + " |")
    print("| final density | " + " | ".join(f"{results[n][0]['final_density']:.4f}" for n in names) + " |")
    print("| final accuracy | " + " | ".join(f"{results[n][0]['accuracy'][-1]:.3f}" for n in names) + " |")
    print()
    print("| pair | whole process, wall (median of pair ratios) | CPU | training | pair ratios (wall) |")
    print("|---|---:|---:|---:|---|")
    for (x, y), rs in ratios.items():
        print(f"| {x} / {y} | {statistics.median(rs['process']):.3f} | {statistics.median(rs['process_cpu']):.3f} | "
              f"{statistics.median(rs['training']):.3f} | {', '.join(f'{v:.3f}' for v in rs['process'])} |")
    fast = statistics.median(ratios[("fast", "fp32")]["process"])
    print(f"\nwhole demo, fast / fp32: {fast:.3f} (target <= 0.6: {'met' if fast <= 0.6 else 'NOT met'}); "
          f"fast / floor: {statistics.median(ratios[('fast', 'floor')]['process']):.3f}; load average "
          f"{os.getloadavg()[0]:.2f}")


def main():
    a = parse()
    if a.worker:
        return worker(a)
    if a.demo and a.fast_vs_fp32:
        return fast_main(a)
    if a.demo:
        return demo_main(a)
    print(f"{a.model} on {a.train_samples} digits {a.image_size}px, {a.levels + 1} levels x {a.epochs} epochs, "
          f"batch {a.batch_size}, rewind to step {a.rewind}, {a.threads} thread(s), device {a.device}, "
          f"{a.repeats} repeat(s); load average {os.getloadavg()[0]:.2f}", flush=True)
    results = {"floor": [], "lottery": []}
    for r in range(a.repeats):
        order = ("floor", "lottery") if r % 2 == 0 else ("lottery", "floor")
        for v in order:
            res = measure(a, v)
            res["bare_imports"] = import_time(a, v)
            results[v].append(res)
            print(f"  repeat {r + 1} {v:8s}: process {res['process']:.2f} s, run {res['run']:.2f} s, steps "
                  f"{res['steps']:.2f} s ({res['n_steps']} steps), accuracy per level "
                  f"{', '.join(f'{x:.3f}' for x in res['accuracy'])}", flush=True)
    table, med = summarize(results, a)
    print()
    print(table)
    f, l = med["floor"], med["lottery"]
    print(f"\nwhole-process CPU ratio LotteryTrainer/floor: {l['process_cpu'] / f['process_cpu']:.2f}; IMP run CPU "
          f"{l['run_cpu'] / f['run_cpu']:.2f}, without the summary "
          f"{(l['run_cpu'] - l['summary_cpu']) / f['run_cpu']:.2f}")
    print(f"whole-run ratio LotteryTrainer/floor: {l['process'] / f['process']:.2f} (process), "
          f"{l['run'] / f['run']:.2f} (IMP run only), {(l['run'] - l['summary']) / f['run']:.2f} (IMP run without the "
          f"end-of-run summary); per-step ratio "
          f"{(l['steps'] / l['n_steps']) / (f['steps'] / f['n_steps']):.3f}; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
