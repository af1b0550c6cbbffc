"""Honest results for ``--fast auto``: the demo configuration under several seeds in fp32 and in fast mode.

``--run`` trains the whole demo (``examples/configs/resnet20_digits.json``, every level) once per seed and mode,
``--jobs`` at a time, each with one thread (``OMP_NUM_THREADS=1``) under ``nice``; a run that was interrupted is
resumed by running the same command again (finished runs are skipped). ``--report`` reads the run folders and
prints, per figure, the mean ± sample standard deviation over seeds of each mode, the seed-to-seed spread (the
largest difference between two seeds of one mode, the larger of the two modes), the difference of the means,
and whether it lies within the spread:

* the final accuracy (last level), the mean accuracy of the pruned levels, and the accuracy of every level;
* the ticket density: the sparsest level within one accuracy point of the dense network;
* the flow's eigenvalue λ of every stage (``IMPFlow.eigenvalues("stage")``, all levels).

Modes: ``fp32`` (``--fast off``: fp32, contiguous — the demo before ``--fast``), ``fast`` (``--fast auto``: on a CPU
with AVX512-BF16/AMX bf16 autocast + channels-last), ``cl`` (``--fast off --channels_last true``: what
``--fast auto`` picks on a CPU without native bf16).

    .venv/bin/python benchmarks/fast_seeds.py --run --seeds 0 1 2 --modes fp32 fast --jobs 2
    .venv/bin/python benchmarks/fast_seeds.py --report --seeds 0 1 2 --modes fp32 fast
    .venv/bin/python benchmarks/fast_seeds.py --run --report --root runs/fast-seeds-20 -- --levels 20  # 20 levels
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "examples" / "configs" / "resnet20_digits.json"
MODES = {"fp32": ["--fast", "off"], "fast": ["--fast", "auto"], "cl": ["--fast", "off", "--channels_last", "true"]}


def run_dir(a, mode: str, seed: int) -> Path:
    return Path(a.root) / f"{mode}-seed{seed}"


def command(a, mode: str, seed: int) -> list[str]:
    return ["nice", "-n", str(a.nice), sys.executable, str(ROOT / "examples" / "run_imp.py"), str(a.config),
            "--seed", str(seed), "--output_dir", str(run_dir(a, mode, seed)), "--disable_tqdm", "true",
            *MODES[mode], *a.extra]


def finished(a, mode: str, seed: int) -> bool:
    from lottery_rg import RunDir

    d = RunDir(run_dir(a, mode, seed))
    if not d.is_run():
        return False
    levels = int(a.extra[a.extra.index("--levels") + 1]) if "--levels" in a.extra else \
        int(d.read_config().get("levels", 0))
    return all(d.is_complete(n) for n in range(levels + 1)) and d.summary_md.is_file()


def run_all(a) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    todo = [(m, s) for s in a.seeds for m in a.modes if not finished(a, m, s)]
    print(f"{len(todo)} run(s) to do, {a.jobs} at a time; load average {os.getloadavg()[0]:.2f}", flush=True)
    running: dict = {}
    while todo or running:
        while todo and len(running) < a.jobs:
            mode, seed = todo.pop(0)
            out = run_dir(a, mode, seed)
            out.parent.mkdir(parents=True, exist_ok=True)
            log = open(out.parent / f"{mode}-seed{seed}.log", "a")
            proc = subprocess.Popen(command(a, mode, seed), cwd=ROOT, env=env, stdout=log, stderr=log)
            running[proc.pid] = (proc, mode, seed, time.time(), os.getloadavg()[0], log)
            print(f"  started {mode} seed {seed} (pid {proc.pid})", flush=True)
        pid, status = os.wait()
        if pid not in running:
            continue
        proc, mode, seed, t0, load0, log = running.pop(pid)
        log.close()
        rc = os.waitstatus_to_exitcode(status)
        wall = time.time() - t0
        record = {"mode": mode, "seed": seed, "returncode": rc, "wall_s": round(wall, 1), "load_start": load0,
                  "load_end": os.getloadavg()[0], "ended": time.strftime("%Y-%m-%d %H:%M:%S")}
        with open(Path(a.root) / "runs.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"  {mode} seed {seed}: exit {rc} after {wall:.0f} s; load average {os.getloadavg()[0]:.2f}",
              flush=True)


def figures(path: Path) -> dict:
    """The compared figures of one finished run."""
    import warnings

    from lottery_rg import IMPFlow, RunDir

    d = RunDir(path)
    result = d.result()
    rows = result.rows()
    out = {f"accuracy level {r['level']}": r["eval_accuracy"] for r in rows}
    out["final accuracy"] = rows[-1]["eval_accuracy"]
    out["mean accuracy, levels 1-N"] = sum(r["eval_accuracy"] for r in rows[1:]) / max(1, len(rows) - 1)
    best = result.best_ticket(0.01)
    out["ticket density"] = best["density"] if best else float("nan")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = IMPFlow.from_run_dir(path).eigenvalues("stage").table
    for unit, lam in table["lambda"].items():
        out[f"λ {unit}"] = float(lam)
    out["train_runtime_s"] = sum(r["metrics"].get("train_runtime") or 0.0 for r in d.records())
    return out


def report(a) -> str:
    data = {m: [figures(run_dir(a, m, s)) for s in a.seeds if finished(a, m, s)] for m in a.modes}
    if any(len(v) < 2 for v in data.values()):
        raise SystemExit(f"need at least 2 finished seeds per mode, have {({m: len(v) for m, v in data.items()})}")
    base, others = a.modes[0], a.modes[1:]
    keys = [k for k in data[base][0] if k != "train_runtime_s"]
    key_order = [k for k in keys if k.startswith("λ")] + ["final accuracy", "mean accuracy, levels 1-N",
                                                          "ticket density"] + \
        [k for k in keys if k.startswith("accuracy level")]
    lines = []
    for other in others:
        lines += [f"{other} vs {base}, {len(data[base])} and {len(data[other])} seeds (mean ± sample sd; spread = the "
                  f"largest difference between two seeds of one mode, the larger of the two):", "",
                  f"| figure | {base} | {other} | difference of means | seed-to-seed spread | within the spread |",
                  "|---|---:|---:|---:|---:|:---:|"]
        disagree = []
        for k in key_order:
            xa, xb = [r[k] for r in data[base]], [r[k] for r in data[other]]
            ma, mb = statistics.mean(xa), statistics.mean(xb)
            spread = max(max(xa) - min(xa), max(xb) - min(xb))
            diff = mb - ma
            ok = abs(diff) <= spread
            if not ok:
                disagree.append(k)
            pct = "accuracy" in k or "density" in k
            val = (lambda v: f"{100 * v:.2f}%") if pct else (lambda v: f"{v:.4f}")
            gap = (lambda v: f"{100 * v:.2f} pts") if pct else (lambda v: f"{v:.4f}")
            lines.append(f"| {k} | {val(ma)} ± {gap(statistics.stdev(xa))} | {val(mb)} ± {gap(statistics.stdev(xb))} "
                         f"| {'+' if diff >= 0 else '-'}{gap(abs(diff))} | {gap(spread)} | "
                         f"{'yes' if ok else '**no**'} |")
        ta = statistics.mean(r["train_runtime_s"] for r in data[base])
        tb = statistics.mean(r["train_runtime_s"] for r in data[other])
        lines += ["", f"training time (sum of train_runtime over levels, mean over seeds): {base} {ta:.0f} s, "
                  f"{other} {tb:.0f} s ({tb / ta:.2f}x; runs shared the machine, see runs.jsonl for the load)",
                  f"figures outside the spread: {', '.join(disagree) if disagree else 'none'}", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="store_true", help="train the missing runs")
    p.add_argument("--report", action="store_true", help="compare the finished runs")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--modes", nargs="+", choices=list(MODES), default=["fp32", "fast"],
                   help="the first is the reference the others are compared with")
    p.add_argument("--root", default=str(ROOT / "runs" / "fast-seeds"))
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--nice", type=int, default=10)
    p.add_argument("extra", nargs="*", help="more run_imp.py flags (after --)")
    a = p.parse_args(argv)
    if not (a.run or a.report):
        p.error("give --run, --report or both")
    if a.run:
        run_all(a)
    if a.report:
        print(report(a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
