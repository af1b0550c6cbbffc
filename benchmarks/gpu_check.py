"""One prepared device check for a machine with one GPU (H100/H200): correctness and speed of lottery_rg on CUDA.

Writes ONE report, ``gpu_check.json`` + ``gpu_check.md``, to ``$OUT`` (or ``--out DIR``):

1. ``pytest``: ``tests/test_device.py`` and every test marked ``gpu``;
2. ``imp_resume``: ``examples/run_imp.py`` on resnet20_cifar, 32 px digits, 3 levels (``--fast auto`` on CUDA:
   bf16 + channels-last on compute capability 8+, ``--full_determinism``): densities 1 / 0.8 / 0.64 / 0.512, pruned weights zero in every saved level, and
   a run killed (SIGKILL) in the middle of level 1 then rerun gives the same masks and final model bit for
   bit as an uninterrupted run;
3. ``step_ratio``: time per training step, LotteryTrainer (20 % density mask) / plain Trainer, for
   ResNet-20 and a BERT-base-shaped masked LM (target <= 1.02 each);
4. ``global_prune``: one global magnitude-pruning step over 85.5 M BERT-base-shaped weights on the
   device, ours vs ``torch.nn.utils.prune.global_unstructured`` (target >= 20x faster and <= 100 ms);
5. ``imp_throughput``: images/s of a whole ``LotteryTrainer.run_imp()`` vs a plain PyTorch IMP loop on the
   same model and data (``benchmarks/bench_imp_floor.py``; target >= 0.9x);
6. ``fast_switches``: one training step in fp32, channels-last, bf16 autocast and both, side by side, for
   ResNet-20 and timm's ResNet-18 at 16 and 32 px (``benchmarks/bench_fast_step.py``), and what ``--fast auto``
   chooses on this device; recorded (the issue's step targets are for the development CPU), passes when every
   variant ran and kept its pruned weights at zero.

    bash benchmarks/gpu_check.sh                               # on the GPU machine (installs, then runs this)
    python benchmarks/gpu_check.py --device cpu --quick --out /tmp/gc   # dry run on a CPU, small sizes

Each section is timed and fails on its own (the report records the error); the process exits 0
once the report is written, 1 if a check failed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
for p in (str(ROOT), str(BENCH)):
    if p not in sys.path:
        sys.path.insert(0, p)


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join([str(ROOT), e.get("PYTHONPATH", "")])
    e.setdefault("TOKENIZERS_PARALLELISM", "false")
    e.setdefault("HF_HUB_OFFLINE", "1")
    return e


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


# ---------------------------------------------------------------------------- 1. pytest
def check_pytest(a) -> dict:
    runs = {"tests/test_device.py": [str(ROOT / "tests" / "test_device.py")]}
    if not a.quick:
        runs["tests/test_precision.py"] = ["-m", "not slow", str(ROOT / "tests" / "test_precision.py")]
        runs["-m gpu tests"] = ["-m", "gpu", str(ROOT / "tests")]
    out = {}
    ok = True
    for name, args in runs.items():
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args], cwd=ROOT, env=env(),
                           capture_output=True, text=True, timeout=a.section_timeout)
        lines = [ln for ln in p.stdout.strip().splitlines() if ln.strip()]
        summary = lines[-1] if lines else p.stderr[-300:]
        passed = p.returncode in (0, 5)  # 5: nothing selected (no gpu tests collected)
        if a.device.startswith("cuda") and "skipped" in summary:  # on the GPU a skipped CUDA test proves nothing
            passed = False
        ok &= passed
        out[name] = {"returncode": p.returncode, "summary": summary, "seconds": round(time.perf_counter() - t0, 1),
                     "failures": [ln for ln in lines if ln.startswith(("FAILED", "ERROR"))][:20]}
    return {"passed": ok, "runs": out}


# ---------------------------------------------------------------------------- 2. IMP run, kill -9, resume
def imp_command(a, out_dir: Path) -> list[str]:
    s = a.sizes
    cmd = [sys.executable, str(ROOT / "examples" / "run_imp.py"), "--model_name_or_path", "resnet20_cifar",
           "--output_dir", str(out_dir), "--levels", "3", "--image_size", str(s.imp_image_size),
           "--num_train_epochs", str(s.imp_epochs), "--per_device_train_batch_size", str(s.imp_batch),
           "--per_device_eval_batch_size", "256", "--learning_rate", "0.05", "--optim", "sgd",
           "--optim_args", "momentum=0.9", "--weight_decay", "5e-4", "--rewind_steps", str(s.imp_rewind),
           "--save_strategy", "steps", "--save_steps", str(s.imp_save_steps), "--logging_steps", "50",
           "--report_to", "none", "--seed", "0", "--disable_tqdm", "true", "--full_determinism", "true",
           "--max_train_samples", str(s.imp_train_samples), "--max_eval_samples", "256"]
    if a.device == "cpu":
        cmd += ["--use_cpu", "true"]
    elif a.bf16:
        cmd += ["--fast", "auto"]  # bf16 + channels-last where the GPU has bf16 (compute capability >= 8.0)
    return cmd


def _level_files(run: Path, level: int):
    from lottery_rg import RunDir
    from lottery_rg.io import state_from_file
    from lottery_rg.pruning.masks import load_mask

    r = RunDir(run)
    return load_mask(r.mask(level)), state_from_file(r.model(level)), r.record(level)


def check_imp_resume(a, work: Path) -> dict:
    import torch

    full, killed = work / "imp_full", work / "imp_killed"
    log = {}
    t0 = time.perf_counter()
    p = subprocess.run(imp_command(a, full), cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=a.section_timeout)
    log["uninterrupted_seconds"] = round(time.perf_counter() - t0, 1)
    if p.returncode:
        raise RuntimeError(f"run_imp.py failed ({p.returncode}): {p.stderr[-2000:]}")
    # second run: SIGKILL once level 1 has written a regular checkpoint after the rewind one
    t0 = time.perf_counter()
    proc = subprocess.Popen(imp_command(a, killed), cwd=ROOT, env=env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    from lottery_rg import RunDir

    ckpts = RunDir(killed).checkpoints("level_01")
    killed_at = None
    deadline = time.time() + a.section_timeout
    while proc.poll() is None and time.time() < deadline:
        steps = [int(c.name.split("-")[1]) for c in ckpts.glob("checkpoint-*") if c.name.split("-")[1].isdigit()] \
            if ckpts.is_dir() else []
        if any(s > a.sizes.imp_rewind for s in steps):
            os.killpg(proc.pid, signal.SIGKILL)
            killed_at = max(steps)
            break
        time.sleep(0.02)
    proc.wait()
    log["killed_at_checkpoint_step"] = killed_at
    log["killed_level_01_complete"] = RunDir(killed).is_complete(1)
    p = subprocess.run(imp_command(a, killed), cwd=ROOT, env=env(), capture_output=True, text=True,
                       timeout=a.section_timeout)
    log["killed_and_resumed_seconds"] = round(time.perf_counter() - t0, 1)
    if p.returncode:
        raise RuntimeError(f"resumed run_imp.py failed ({p.returncode}): {p.stderr[-2000:]}")
    log["resumed_from_checkpoint"] = "resuming from" in p.stderr
    densities, zero, same_masks, same_models = [], True, True, True
    for level in range(4):
        m_a, s_a, rec = _level_files(full, level)
        m_b, s_b, _ = _level_files(killed, level)
        densities.append(rec["density"])
        zero &= all(not s_a[n][~m].any() for n, m in m_a.items()) and all(not s_b[n][~m].any() for n, m in m_b.items())
        same_masks &= all(torch.equal(m_a[n], m_b[n]) for n in m_a)
        same_models &= set(s_a) == set(s_b) and all(torch.equal(s_a[k], s_b[k]) for k in s_a)
    expected = [1.0, 0.8, 0.64, 0.512]
    dens_ok = all(abs(d - e) < 1e-3 for d, e in zip(densities, expected))
    log["precision"] = RunDir(full).read_config().get("precision")
    log.update({"densities": densities, "densities_ok": dens_ok, "pruned_weights_zero": bool(zero),
                "masks_identical_after_kill": bool(same_masks), "final_models_identical_after_kill": bool(same_models),
                "kill_happened_mid_level_1": killed_at is not None and not log["killed_level_01_complete"]})
    log["passed"] = bool(dens_ok and zero and same_masks and same_models and log["kill_happened_mid_level_1"])
    return log


# ---------------------------------------------------------------------------- 3. step ratio
def step_ratio(a, kind: str, work: Path) -> dict:
    import copy

    import bench_mask_step as bms
    import torch
    from transformers import PrinterCallback, Trainer, TrainingArguments

    from lottery_rg import LotteryArguments, LotteryTrainer

    s = a.sizes
    torch.set_num_threads(a.threads)
    if kind == "resnet20":
        data = bms.make_data("synthetic", s.step_image_size, max(4 * s.step_batch, 256), 0)
        base = bms.make_model("resnet20_cifar", 0)
        batch, plain_cls = s.step_batch, bms.PlainTrainer
    else:
        from transformers import BertConfig, BertForMaskedLM

        cfg = BertConfig(**s.bert) if s.bert else BertConfig()  # BertConfig() is bert-base: 12 x 768
        torch.manual_seed(0)
        base = BertForMaskedLM(cfg)
        g = torch.Generator().manual_seed(0)
        n, L = max(4 * s.bert_batch, 64), s.bert_seq
        ids = torch.randint(5, cfg.vocab_size, (n, L), generator=g)
        labels = torch.where(torch.rand(n, L, generator=g) < 0.15, ids, torch.full_like(ids, -100))
        data = [{"input_ids": ids[i], "attention_mask": torch.ones(L, dtype=torch.long), "labels": labels[i]}
                for i in range(n)]
        batch, plain_cls = s.bert_batch, Trainer
    mask = bms.make_mask(base, 0.2)

    class SyncTimer(bms.StepTimer):  # CUDA runs asynchronously: time the work, not the launches
        def on_step_begin(self, args, state, control, **kw):
            sync(a.device)
            super().on_step_begin(args, state, control, **kw)

        def on_step_end(self, args, state, control, **kw):
            sync(a.device)
            super().on_step_end(args, state, control, **kw)

    def targs(out):
        return TrainingArguments(
            output_dir=out, max_steps=s.step_warmup + s.step_steps, per_device_train_batch_size=batch,
            learning_rate=0.05 if kind == "resnet20" else 1e-4, optim="sgd" if kind == "resnet20" else "adamw_torch",
            weight_decay=5e-4 if kind == "resnet20" else 0.01, report_to="none", save_strategy="no",
            logging_strategy="no", disable_tqdm=True, dataloader_pin_memory=False, seed=0,
            use_cpu=a.device == "cpu", bf16=a.bf16 and a.device != "cpu", remove_unused_columns=False,
            label_names=["labels"])

    per_round = {"plain": [], "lottery": []}
    for r in range(s.step_rounds):
        order = ("plain", "lottery") if r % 2 == 0 else ("lottery", "plain")
        lock = bms.Lockstep(2)
        timers = [SyncTimer(lock, i) for i in range(2)]
        trainers = []
        for v, t in zip(order, timers):
            model = copy.deepcopy(base)
            out = str(work / f"step_{kind}_{v}_{r}")
            if v == "lottery":
                tr = LotteryTrainer(model=model, args=targs(out), lottery_args=LotteryArguments(), train_dataset=data)
                tr.mask = mask
                tr.mask_callback.set_mask(tr.model, mask)
            else:
                tr = plain_cls(model=model, args=targs(out), train_dataset=data)
            tr.remove_callback(PrinterCallback)
            tr.add_callback(t)
            trainers.append(tr)
        bms.train_in_lockstep(trainers, lock, a.threads)
        for v, tr, t in zip(order, trainers, timers):
            per_round[v].append(statistics.median(t.wall[s.step_warmup:]))
        params = dict(trainers[order.index("lottery")].model.named_parameters())
        if not all(not params[n][~m.to(params[n].device)].any() for n, m in mask.items()):
            raise RuntimeError(f"{kind}: pruned weights are not zero after LotteryTrainer steps")
        del trainers
    ratios = [l / p for l, p in zip(per_round["lottery"], per_round["plain"])]
    ratio = statistics.median(ratios)
    return {"ms_per_step_plain": 1e3 * statistics.median(per_round["plain"]),
            "ms_per_step_lottery": 1e3 * statistics.median(per_round["lottery"]),
            "ratio": ratio, "per_round": ratios, "target": 1.02, "passed": ratio <= 1.02,
            "batch": batch, "parameters_M": sum(p.numel() for p in base.parameters()) / 1e6}


def check_step_ratio(a, work: Path) -> dict:
    out = {kind: step_ratio(a, kind, work) for kind in ("resnet20", "bert_mlm")}
    out["passed"] = all(v["passed"] for v in out.values())
    return out


# ---------------------------------------------------------------------------- 4. global prune
def check_global_prune(a) -> dict:
    import bench_global_prune as bgp
    import torch
    from torch import nn
    from torch.nn.utils import prune

    from lottery_rg.pruning.masks import next_mask

    s = a.sizes
    torch.set_num_threads(a.threads)
    mods = bgp.build_modules(SimpleNamespace(seed=0, layers=s.prune_layers, hidden=s.prune_hidden,
                                             intermediate=s.prune_intermediate))
    weights = {n: m.weight.detach().to(a.device) for n, m in mods.items()}
    del mods
    n_weights = sum(w.numel() for w in weights.values())
    full = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}

    def ours():
        return next_mask(weights, full, 0.2)

    def torch_prune():
        lins = []
        for w in weights.values():
            lin = nn.utils.skip_init(nn.Linear, w.shape[1], w.shape[0], bias=False, device=a.device)
            with torch.no_grad():
                lin.weight.copy_(w)
            lins.append(lin)
        sync(a.device)
        t0 = time.perf_counter()
        prune.global_unstructured([(m, "weight") for m in lins], pruning_method=prune.L1Unstructured, amount=0.2)
        sync(a.device)
        dt = time.perf_counter() - t0
        return dt, {n: m.weight_mask.bool() for n, m in zip(weights, lins)}

    times = {"ours": [], "torch": []}
    masks = {}
    for r in range(s.prune_repeats + 1):  # first round: warm-up (CUDA context, kernels)
        for name in (("ours", "torch") if r % 2 == 0 else ("torch", "ours")):
            if name == "ours":
                sync(a.device)
                t0 = time.perf_counter()
                m = ours()
                sync(a.device)
                dt = time.perf_counter() - t0
            else:
                dt, m = torch_prune()
            if r:
                times[name].append(dt)
            masks[name] = m
            del m
    removed = {k: sum(int((~v).sum()) for v in m.values()) for k, m in masks.items()}
    k_ours = math.ceil(0.2 * n_weights)
    t_ours, t_torch = statistics.median(times["ours"]), statistics.median(times["torch"])
    speedup = t_torch / t_ours
    peak = torch.cuda.max_memory_allocated() / 2 ** 20 if a.device.startswith("cuda") else None
    return {"weights": n_weights, "ours_ms": 1e3 * t_ours, "torch_ms": 1e3 * t_torch, "speedup": speedup,
            "ours_ms_all": [1e3 * t for t in times["ours"]], "torch_ms_all": [1e3 * t for t in times["torch"]],
            "removed": removed, "removed_expected": k_ours, "masks_on_device": all(
                m.device.type == a.device.split(":")[0] for m in masks["ours"].values()),
            "cuda_peak_allocated_MiB": peak,
            "targets": {"speedup_min": 20, "ours_ms_max": 100},
            "passed": removed["ours"] == k_ours and speedup >= 20 and 1e3 * t_ours <= 100}


# ---------------------------------------------------------------------------- 5. images/s of IMP vs a plain loop
def check_imp_throughput(a) -> dict:
    import bench_imp_floor as bif

    s = a.sizes
    argv = ["--device", a.device, "--threads", str(a.threads), "--image-size", str(s.floor_image_size),
            "--train-samples", str(s.floor_train_samples), "--epochs", str(s.floor_epochs),
            "--batch-size", str(s.floor_batch), "--levels", "3", "--rewind", str(s.floor_rewind)]
    if a.bf16 and a.device != "cpu":
        argv += ["--bf16", "--channels-last"]
    fa = bif.parse(argv)
    results = {"floor": [], "lottery": []}
    for r in range(s.floor_repeats):
        for v in (("floor", "lottery") if r % 2 == 0 else ("lottery", "floor")):
            res = bif.measure(fa, v)
            res["bare_imports"] = 0.0
            results[v].append(res)
    table, med = bif.summarize(results, fa)
    images = {v: med[v]["n_steps"] * s.floor_batch for v in med}
    ips = {v: images[v] / med[v]["run"] for v in med}
    ratio = ips["lottery"] / ips["floor"]
    return {"images_per_s_floor": ips["floor"], "images_per_s_lottery": ips["lottery"], "ratio": ratio,
            "in_steps_ratio": (med["lottery"]["steps"] / med["floor"]["steps"]),
            "overhead_per_level_s": {v: med[v]["overhead_per_level"] for v in med},
            "gc_collect_s": {v: med[v]["gc"] for v in med}, "summary_s": med["lottery"]["summary"],
            "ratio_without_summary": images["lottery"] / (med["lottery"]["run"] - med["lottery"]["summary"]) / ips["floor"],
            "table": table, "target": 0.9, "passed": ratio >= 0.9}


# ---------------------------------------------------------------------------- 6. bf16 and channels-last
def check_fast_switches(a) -> dict:
    import bench_fast_step as bfs
    import timm
    import torch

    from lottery_rg.training.precision import bf16_support, choose_precision

    s = a.sizes
    torch.set_num_threads(a.threads)
    native, why = bf16_support(torch.device(a.device))
    with tempfile.TemporaryDirectory() as tmp:
        from transformers import TrainingArguments

        targs = TrainingArguments(output_dir=tmp, use_cpu=a.device == "cpu", report_to="none")
        _, choice = choose_precision(targs, timm.create_model("resnet20_cifar"), fast="auto")
    results, diverged = [], []
    for model in ("resnet20_cifar", "resnet18"):
        for size in s.fast_sizes:
            try:
                results.append(bfs.measure(model, size, batch=s.fast_batch, cycles=s.fast_cycles,
                                           warmup=s.fast_warmup, device=a.device))
            except bfs.Diverged as e:  # a finding, not a crash: the report names the variant and its losses
                diverged.append({"model": model, "image_size": size, "error": str(e)})
    return {"native_bf16": native, "why": why, "fast_auto_choice": choice.to_dict(),
            "table": bfs.table(results) if results else "", "results": results, "diverged": diverged,
            "passed": not diverged}


# ---------------------------------------------------------------------------- sizes, report
def sizes(a) -> SimpleNamespace:
    if a.quick:
        return SimpleNamespace(
            imp_image_size=16, imp_epochs=1, imp_batch=32, imp_rewind=1, imp_save_steps=1, imp_train_samples=128,
            step_image_size=16, step_batch=16, step_rounds=2, step_steps=3, step_warmup=1,
            bert=dict(num_hidden_layers=2, hidden_size=64, intermediate_size=256, num_attention_heads=2,
                      vocab_size=1000), bert_batch=4, bert_seq=32,
            prune_layers=1, prune_hidden=256, prune_intermediate=1024, prune_repeats=2,
            floor_image_size=16, floor_train_samples=128, floor_epochs=1, floor_batch=32, floor_rewind=1,
            floor_repeats=1, fast_batch=16, fast_cycles=2, fast_warmup=1, fast_sizes=(16,))
    return SimpleNamespace(
        imp_image_size=32, imp_epochs=4, imp_batch=128, imp_rewind=10, imp_save_steps=10, imp_train_samples=1437,
        step_image_size=32, step_batch=128, step_rounds=6, step_steps=30, step_warmup=5,
        bert=None, bert_batch=32, bert_seq=128,
        prune_layers=12, prune_hidden=768, prune_intermediate=3072, prune_repeats=5,
        floor_image_size=32, floor_train_samples=1437, floor_epochs=4, floor_batch=128, floor_rewind=10,
        floor_repeats=2, fast_batch=128, fast_cycles=20, fast_warmup=3, fast_sizes=(16, 32))


SECTIONS = ("pytest", "imp_resume", "step_ratio", "global_prune", "imp_throughput", "fast_switches")


def environment(a) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": a.device,
            "host": platform.node(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "quick": a.quick, "bf16": a.bf16,
            "threads": a.threads}
    for mod in ("transformers", "accelerate", "timm", "datasets"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001
            info[mod] = f"unavailable: {e}"
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["cuda"] = torch.version.cuda
    return info


def markdown(report: dict) -> str:
    env_ = report["environment"]
    lines = [f"# lottery_rg GPU check ({env_.get('gpu', env_['device'])}, {env_['date']})", "",
             f"torch {env_['torch']}, transformers {env_.get('transformers')}, python {env_['python']}, "
             f"quick={env_['quick']}, bf16={env_['bf16']}", "",
             "| check | result | key numbers | seconds |", "|---|---|---|---:|"]
    for name in SECTIONS:
        sec = report["checks"].get(name)
        if sec is None:
            continue
        status = sec["status"]
        r = sec.get("result", {})
        if name == "pytest":
            key = "; ".join(f"{k}: {v['summary']}" for k, v in r.get("runs", {}).items())
        elif name == "imp_resume":
            key = (f"densities {[round(d, 4) for d in r.get('densities', [])]}, zero {r.get('pruned_weights_zero')}, "
                   f"killed at step {r.get('killed_at_checkpoint_step')}, masks same {r.get('masks_identical_after_kill')}"
                   f", model same {r.get('final_models_identical_after_kill')}")
        elif name == "step_ratio":
            key = "; ".join(f"{k}: {v['ratio']:.3f} ({v['ms_per_step_lottery']:.1f} vs {v['ms_per_step_plain']:.1f} ms)"
                            for k, v in r.items() if isinstance(v, dict)) + " (target <= 1.02)"
        elif name == "global_prune":
            key = (f"{r.get('weights', 0) / 1e6:.1f} M weights: ours {r.get('ours_ms', float('nan')):.1f} ms, torch "
                   f"{r.get('torch_ms', float('nan')):.1f} ms, {r.get('speedup', float('nan')):.1f}x "
                   f"(target >= 20x, <= 100 ms)")
        elif name == "imp_throughput":
            key = (f"{r.get('images_per_s_lottery', float('nan')):.0f} vs {r.get('images_per_s_floor', float('nan')):.0f}"
                   f" images/s: {r.get('ratio', float('nan')):.2f}x (target >= 0.9x)")
        else:
            ratios = [f"{x['model']} {x['image_size']}px " + (
                      f"{x['variants']['bf16+channels_last']['ratio']:.2f}x" if "bf16+channels_last" in x["variants"]
                      else "not run (CPU bf16 hazard)") for x in r.get("results", [])]
            key = (f"native bf16 {r.get('native_bf16')}; bf16+channels-last / fp32 per step: " + ", ".join(ratios))
        if status == "error":
            key = sec["error"].splitlines()[-1][:200]
        lines.append(f"| {name} | {status} | {key} | {sec['seconds']:.0f} |")
    if "table" in report["checks"].get("imp_throughput", {}).get("result", {}):
        lines += ["", "IMP run vs plain PyTorch loop:", "", report["checks"]["imp_throughput"]["result"]["table"]]
    if "table" in report["checks"].get("fast_switches", {}).get("result", {}):
        lines += ["", "One training step, ms (ratio to fp32), variants side by side:", "",
                  report["checks"]["fast_switches"]["result"]["table"]]
    for d in report["checks"].get("fast_switches", {}).get("result", {}).get("diverged", []):
        lines.append(f"- **diverged**: {d['model']} at {d['image_size']} px: {d['error']}")
    lines += ["", f"overall: **{'PASS' if report['passed'] else 'FAIL'}**, {report['seconds']:.0f} s"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    p.add_argument("--quick", action="store_true", help="small sizes (a CPU dry run in a few minutes)")
    p.add_argument("--out", default=os.environ.get("OUT") or ".", help="report folder (default $OUT)")
    p.add_argument("--only", nargs="*", choices=SECTIONS, help="run only these sections")
    p.add_argument("--no-bf16", dest="bf16", action="store_false", help="fp32 instead of bf16 autocast on CUDA")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: 1 on cpu, 8 on cuda)")
    p.add_argument("--section-timeout", type=int, default=300)
    a = p.parse_args(argv)
    import torch

    a.device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    a.threads = a.threads or (1 if a.device == "cpu" else 8)
    a.bf16 = a.bf16 and a.device != "cpu"
    a.sizes = sizes(a)
    torch.set_num_threads(a.threads)
    import logging

    import transformers

    transformers.logging.set_verbosity_error()
    logging.getLogger("lottery_rg").setLevel(logging.WARNING)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"environment": environment(a), "sizes": vars(a.sizes), "checks": {}}
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(tmp)
        funcs = {"pytest": lambda: check_pytest(a), "imp_resume": lambda: check_imp_resume(a, work),
                 "step_ratio": lambda: check_step_ratio(a, work), "global_prune": lambda: check_global_prune(a),
                 "imp_throughput": lambda: check_imp_throughput(a), "fast_switches": lambda: check_fast_switches(a)}
        for name in a.only or SECTIONS:
            t0 = time.perf_counter()
            print(f"[gpu_check] {name} ...", flush=True)
            try:
                res = funcs[name]()
                sec = {"status": "pass" if res.get("passed") else "fail", "result": res}
            except Exception:  # noqa: BLE001 (recorded in the report; the other checks still run)
                sec = {"status": "error", "error": traceback.format_exc()[-4000:], "result": {}}
            sec["seconds"] = round(time.perf_counter() - t0, 1)
            report["checks"][name] = sec
            print(f"[gpu_check] {name}: {sec['status']} ({sec['seconds']} s)", flush=True)
            if a.device.startswith("cuda"):
                torch.cuda.empty_cache()
            (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))  # partial report survives
    report["seconds"] = round(time.perf_counter() - t_all, 1)
    report["passed"] = all(s["status"] == "pass" for s in report["checks"].values())
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "gpu_check.md").write_text(md)
    print(md)
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
