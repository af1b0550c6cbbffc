"""One global magnitude-pruning step: ``lottery_rg.pruning.masks.next_mask`` vs ``torch.nn.utils.prune``.

The prunable tensors are shaped like BERT-base's (per layer Q, K, V, attention output
768x768, intermediate 3072x768, output 768x3072; plus the pooler 768x768: 85.5 M float32
weights, 342 MB), held as ``nn.Linear`` modules so that torch's API applies, and filled
with N(0, 0.02) (BERT's initializer range) from a fixed seed.

Each measurement runs in a fresh subprocess that builds the weights, records its RSS,
resets the kernel's peak-RSS counter (``/proc/self/clear_refs``), makes the one pruning
call and reads the peak back: "peak extra" is peak RSS minus the RSS right before the call
(with ``--malloc mmap`` the workers use a fixed glibc mmap threshold, so freed buffers go back
to the OS and the peak counts only live allocations; times are then not representative).
Methods are interleaved (ours, torch, torch, ours, ...) and the table reports medians of wall
and CPU time. Afterwards the masks of both methods are compared: the
same number of pruned weights, and any difference must be a tie at the threshold magnitude.

    .venv/bin/python benchmarks/bench_global_prune.py            # defaults: BERT-base shapes, 5 repeats
    .venv/bin/python benchmarks/bench_global_prune.py --layers 2 --repeats 1   # quick check
    .venv/bin/python benchmarks/bench_global_prune.py --profile ours   # where the time goes (cProfile, in-process)
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

METHODS = {
    "ours": "lottery_rg next_mask",
    "torch": "torch prune.global_unstructured",
}


def tensor_shapes(layers: int, hidden: int, intermediate: int) -> list[tuple[str, tuple[int, int]]]:
    """(name, (out_features, in_features)) of BERT-base's prunable matrices."""
    out = []
    for i in range(layers):
        p = f"bert.encoder.layer.{i}"
        for part in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            out.append((f"{p}.{part}.weight", (hidden, hidden)))
        out.append((f"{p}.intermediate.dense.weight", (intermediate, hidden)))
        out.append((f"{p}.output.dense.weight", (hidden, intermediate)))
    out.append(("bert.pooler.dense.weight", (hidden, hidden)))
    return out


def build_modules(args):
    """name -> nn.Linear (no bias), weights N(0, 0.02) filled in place (no temporaries)."""
    import torch
    from torch import nn

    g = torch.Generator().manual_seed(args.seed)
    modules = {}
    for name, (out_f, in_f) in tensor_shapes(args.layers, args.hidden, args.intermediate):
        lin = nn.utils.skip_init(nn.Linear, in_f, out_f, bias=False)
        with torch.no_grad():
            lin.weight.normal_(0.0, 0.02, generator=g)
        modules[name] = lin
    return modules


# ---------------------------------------------------------------------------- memory probes
def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1))


def rss_bytes() -> int:
    return _status_kb("VmRSS") * 1024


def reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


class PeakSampler:
    """Fallback when VmHWM cannot be reset: sample RSS every millisecond in a thread."""

    def __init__(self):
        import threading

        self.peak, self._stop = rss_bytes(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())


# ---------------------------------------------------------------------------- one measurement
def make_call(method: str, modules: dict, amount: float):
    """The one pruning step of ``method`` on ``modules``, as a no-argument callable returning name -> mask."""
    import torch

    if method == "ours":
        from lottery_rg.pruning.masks import next_mask

        weights = {n: m.weight for n, m in modules.items()}
        mask = {n: torch.ones(m.weight.shape, dtype=torch.bool) for n, m in modules.items()}  # level 0: dense
        return lambda: next_mask(weights, mask, amount)

    from torch.nn.utils import prune

    params = [(m, "weight") for m in modules.values()]

    def call():
        prune.global_unstructured(params, pruning_method=prune.L1Unstructured, amount=amount)
        return {n: m.weight_mask for n, m in modules.items()}
    return call


def worker(args) -> None:
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    modules = build_modules(args)
    names = list(modules)
    call = make_call(args.worker, modules, args.amount)
    gc.collect()
    rss0 = rss_bytes()
    hwm_ok = reset_peak_rss()
    sampler = None if hwm_ok else PeakSampler().__enter__()
    t0, c0 = time.perf_counter(), time.process_time()
    new_mask = call()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    if hwm_ok:
        peak = _status_kb("VmHWM") * 1024
    else:
        sampler.__exit__(None, None, None)
        peak = sampler.peak
    gc.collect()
    kept = rss_bytes() - rss0  # still held after the call (new mask; torch: also weight_orig/weight_mask/weight)
    flat = np.concatenate([new_mask[n].detach().bool().numpy().ravel() for n in names])
    if args.mask_out:
        np.save(args.mask_out, np.packbits(flat))
    print(json.dumps({
        "method": args.worker, "seconds": seconds, "cpu": cpu, "rss0": rss0, "peak_extra": peak - rss0, "kept": kept,
        "pruned": int(flat.size - np.count_nonzero(flat)), "numel": int(flat.size),
        "peak_probe": "VmHWM" if hwm_ok else "sampling",
    }))


def run_worker(method: str, args, mask_out: str | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", method, "--layers", str(args.layers), "--hidden", str(args.hidden),
           "--intermediate", str(args.intermediate), "--amount", str(args.amount), "--seed", str(args.seed),
           "--threads", str(args.threads)]
    if mask_out:
        cmd += ["--mask-out", mask_out]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.threads)
    if args.malloc == "mmap":
        # fixed mmap threshold: every large buffer is mmapped and unmapped on free, so RSS follows the
        # live allocations exactly (at the price of page faults on every temporary: slower for both)
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{method} worker failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- mask comparison
def compare_masks(args, path_ours: str, path_torch: str) -> dict:
    import numpy as np

    modules = build_modules(args)
    mags = np.concatenate([m.weight.detach().abs().numpy().ravel() for m in modules.values()])
    del modules
    n = mags.size
    ours = np.unpackbits(np.load(path_ours))[:n].astype(bool)
    theirs = np.unpackbits(np.load(path_torch))[:n].astype(bool)
    pruned_ours, pruned_torch = n - int(ours.sum()), n - int(theirs.sum())
    threshold_ours = float(mags[~ours].max())  # largest magnitude each method removed
    threshold_torch = float(mags[~theirs].max())
    diff = ours != theirs
    n_diff = int(diff.sum())
    lo, hi = min(threshold_ours, threshold_torch), max(threshold_ours, threshold_torch)
    diff_mags = mags[diff]
    diff_are_ties = bool(n_diff == 0 or (diff_mags.min() >= lo and diff_mags.max() <= hi))
    # a magnitude mask keeps nothing smaller than what it removed
    consistent = bool(mags[ours].min() >= threshold_ours and mags[theirs].min() >= threshold_torch)
    ties = int(np.count_nonzero((mags >= lo) & (mags <= hi)))
    # the two count rules: ours ceil(amount * surviving) exactly, torch round(amount * n)
    expected_ours = math.ceil(Fraction(repr(args.amount)) * n)
    expected_torch = round(args.amount * n)
    return {"pruned_ours": pruned_ours, "pruned_torch": pruned_torch, "differing": n_diff,
            "expected_ours": expected_ours, "expected_torch": expected_torch,
            "threshold_ours": threshold_ours, "threshold_torch": threshold_torch,
            "weights_at_threshold": ties, "differences_are_ties": diff_are_ties, "both_are_magnitude_masks": consistent}


def verdict(c: dict) -> str:
    counts_follow_rules = c["pruned_ours"] == c["expected_ours"] and c["pruned_torch"] == c["expected_torch"]
    if not (c["differences_are_ties"] and c["both_are_magnitude_masks"] and counts_follow_rules):
        return "MASKS DISAGREE"
    if c["pruned_ours"] == c["pruned_torch"]:
        return "SAME MASK (up to ties)" if c["differing"] else "IDENTICAL MASKS"
    return (f"same up to ties and the count rule (ours ceil = {c['expected_ours']:,}, "
            f"torch round = {c['expected_torch']:,})")


def profile(args) -> None:
    """cProfile of one in-process pruning call on fresh weights (C ops show up as built-in methods)."""
    import cProfile
    import pstats

    import torch

    torch.set_num_threads(args.threads)
    call = make_call(args.profile, build_modules(args), args.amount)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.runcall(call)
    print(f"{METHODS[args.profile]}: {time.perf_counter() - t0:.3f} s under cProfile")
    pstats.Stats(prof).sort_stats("tottime").print_stats(12)


# ---------------------------------------------------------------------------- main
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layers", type=int, default=12, help="encoder layers (12 = BERT-base, 85.5 M weights)")
    p.add_argument("--hidden", type=int, default=768)
    p.add_argument("--intermediate", type=int, default=3072)
    p.add_argument("--amount", type=float, default=0.2, help="fraction of the surviving weights to remove")
    p.add_argument("--repeats", type=int, default=5, help="subprocess runs per method (interleaved)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch intra-op threads in the workers (default 1: on a shared machine, parallel regions "
                        "wait for descheduled workers and measure the neighbours rather than the code)")
    p.add_argument("--malloc", choices=("default", "mmap"), default="default",
                   help="default: glibc as users get it (peak includes memory the allocator keeps); mmap: fixed "
                        "mmap threshold so the peak counts exactly the live allocations of the call")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-verify", action="store_true", help="skip the mask comparison")
    p.add_argument("--profile", choices=sorted(METHODS),
                   help="only profile one method's pruning step in-process (cProfile) and exit")
    p.add_argument("--worker", choices=sorted(METHODS), help=argparse.SUPPRESS)
    p.add_argument("--mask-out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)
    if args.profile:
        return profile(args)

    import torch

    shapes = tensor_shapes(args.layers, args.hidden, args.intermediate)
    numel = sum(a * b for _, (a, b) in shapes)
    weight_bytes = 4 * numel
    print(f"{len(shapes)} prunable tensors, {numel / 1e6:.2f} M float32 weights ({weight_bytes / 2**20:.0f} MiB); "
          f"remove {args.amount:g} of them; torch {torch.__version__}, {args.threads} thread(s), "
          f"{args.repeats} interleaved repeat(s); load average {os.getloadavg()[0]:.2f}", flush=True)

    results: dict[str, list[dict]] = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp:
        paths = {m: os.path.join(tmp, f"{m}.npy") for m in METHODS}
        for r in range(args.repeats):
            order = ["ours", "torch"] if r % 2 == 0 else ["torch", "ours"]
            for m in order:
                res = run_worker(m, args, paths[m] if r == 0 else None)
                results[m].append(res)
                print(f"  repeat {r + 1}: {METHODS[m]:<32} {res['seconds']:8.3f} s (CPU {res['cpu']:7.3f} s)  "
                      f"peak extra {res['peak_extra'] / 2**20:7.0f} MiB  ({res['peak_probe']})", flush=True)
        check = None if args.no_verify else compare_masks(args, paths["ours"], paths["torch"])

    med = {m: statistics.median(x["seconds"] for x in results[m]) for m in METHODS}
    cpu = {m: statistics.median(x["cpu"] for x in results[m]) for m in METHODS}
    mem = {m: statistics.median(x["peak_extra"] for x in results[m]) for m in METHODS}
    kept = {m: statistics.median(x["kept"] for x in results[m]) for m in METHODS}
    w = max(len(v) for v in METHODS.values())
    print()
    print(f"| {'method':<{w}} | median s | min-max s       | median CPU s | peak extra MiB | x weights | kept after MiB |")
    print(f"|{'-' * (w + 2)}|---------:|-----------------|-------------:|---------------:|----------:|---------------:|")
    for m, label in METHODS.items():
        ts = [x["seconds"] for x in results[m]]
        print(f"| {label:<{w}} | {med[m]:8.3f} | {min(ts):7.3f}-{max(ts):7.3f} | {cpu[m]:12.3f} | "
              f"{mem[m] / 2**20:14.0f} | {mem[m] / weight_bytes:9.2f} | {kept[m] / 2**20:14.0f} |")
    ratio, cpu_ratio = med["torch"] / med["ours"], cpu["torch"] / cpu["ours"]
    per_repeat = [t["seconds"] / o["seconds"] for o, t in zip(results["ours"], results["torch"])]
    print()
    print(f"time ratio torch/ours: {ratio:.1f}x wall (per repeat: {', '.join(f'{x:.1f}' for x in per_repeat)}), "
          f"{cpu_ratio:.1f}x CPU; target >= 10x: "
          + ("not judged with --malloc mmap (every temporary is page-faulted in: times are not representative)"
             if args.malloc == "mmap" else ('met' if min(ratio, cpu_ratio) >= 10 else 'MISSED')))
    copies = mem["ours"] / weight_bytes
    print(f"our peak extra memory: {copies:.2f} copies of the weights; target <= 1.0: "
          f"{'met' if copies <= 1.0 else 'MISSED'}; torch: {mem['torch'] / weight_bytes:.2f} copies")
    if check is not None:
        print(f"masks: pruned ours {check['pruned_ours']:,} / torch {check['pruned_torch']:,}; "
              f"{check['differing']:,} weights differ; {check['weights_at_threshold']} weight(s) at the threshold(s) "
              f"|w| = {check['threshold_ours']:.9g} (torch's: {check['threshold_torch']:.9g}); differences only among "
              f"ties: {check['differences_are_ties']}; both keep nothing smaller than what they remove: "
              f"{check['both_are_magnitude_masks']} -> {verdict(check)}")
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
