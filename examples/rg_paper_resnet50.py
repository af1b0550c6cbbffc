"""Table 2 of the RG paper from an *untrained* ResNet-50: the stage pattern without data or training.

Redman et al. (ICML 2022) report the IMP eigenvalues of ResNet-50's four stages (Table 2, ImageNet row:
1.15 ± 0.01, 1.09 ± 0.02, 1.02 ± 0.01, 0.95 ± 0.02; first 17 IMP applications). This script prunes the
weights of a freshly initialised timm ``resnet50`` — no data, no training — by the same global rule (20 %
per level, 17 levels) under the paper's convention (``--prune_preset rg_paper``: the stage convolutions
incl. down-sampling are pruned, stem and fc stay dense, M is normalised over what is prunable), for
several initialisation seeds, and adds the closed-form init-scale null. For contrast it also runs
lottery_rg's default prunable set (stem and fc pruned too) read with ``normalize="stages"``.

    python examples/rg_paper_resnet50.py --seeds 5 --out docs/img/flow

Nothing is downloaded; each seed takes about a minute on one CPU core.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

TABLE2 = {  # Redman et al. 2022, Table 2 (ResNet-50 pre-trained with simCLR), λ ± std over the levels
    "ImageNet": [(1.15, 0.01), (1.09, 0.02), (1.02, 0.01), (0.95, 0.02)],
    "CIFAR-10": [(1.11, 0.01), (1.06, 0.01), (1.01, 0.01), (0.98, 0.002)],
    "CIFAR-100": [(1.08, 0.03), (1.04, 0.02), (1.00, 0.01), (0.99, 0.01)],
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet50")
    ap.add_argument("--levels", type=int, default=17, help="IMP applications (the paper: 17)")
    ap.add_argument("--seeds", type=int, default=5, help="initialisation seeds 0..N-1")
    ap.add_argument("--out", default=None, help="folder for rg_paper_<model>.json / .txt / .png")
    args = ap.parse_args(argv)

    import timm

    from lottery_rg.flow import FlowPool, IMPFlow
    from lottery_rg.flow.null import InitScaleNull
    from lottery_rg.pruning.settings import LotterySettings

    paper = LotterySettings(prune_fraction=0.2, pruning="global", prune_preset="rg_paper")
    default = LotterySettings(prune_fraction=0.2, pruning="global")
    flows, defaults = [], []
    t0 = time.time()
    for seed in range(args.seeds):
        torch.manual_seed(seed)
        model = timm.create_model(args.model, pretrained=False)
        flows.append(IMPFlow.untrained(model, args.levels, paper, name=f"untrained {args.model} seed {seed}"))
        defaults.append(IMPFlow.untrained(model, args.levels, default, name=f"untrained {args.model} seed {seed}"))
        print(f"seed {seed}: {time.time() - t0:.0f} s", flush=True)
    pool, pool_default = FlowPool(flows, [f"seed{s}" for s in range(args.seeds)]), \
        FlowPool(defaults, [f"seed{s}" for s in range(args.seeds)])
    t = pool.eigenvalues("stage")
    t_default = pool_default.eigenvalues("stage", normalize="stages")
    null = InitScaleNull(flows[0]).eigenvalues("stage")
    prunable = flows[0].tensors
    m0 = flows[0].M("stage").iloc[0]

    # the stage units are the model family's (its Layout names them); under the preset they are all there is
    stages = [s for s in t.table.index if s in m0.index]
    rows = []
    for i, s in enumerate(stages):
        per_seed_std = [st.table.at[s, "std"] for st in t.per_seed]
        rows.append({
            "stage": s, "M0": float(m0[s]),
            "lambda": float(t.table.at[s, "lambda"]), "se_seeds": float(t.table.at[s, "se"]),
            "std_levels": float(np.mean(per_seed_std)), "class": t.table.at[s, "class"],
            "lambda_null": float(null.table.at[s, "lambda"]), "std_null": float(null.table.at[s, "std"]),
            "lambda_default_stages": float(t_default.table.at[s, "lambda"]),
            "shift_preset": float(t.table.at[s, "lambda"] - t_default.table.at[s, "lambda"]),
            "paper_imagenet": TABLE2["ImageNet"][i][0], "paper_imagenet_std": TABLE2["ImageNet"][i][1],
        })
    head = ["stage", "M(0)", "λ untrained, rg_paper preset (± std over levels; SE over seeds)",
            "class", "λ init-scale null (closed form)", "λ default set, normalize=stages", "preset − default",
            "Table 2 ImageNet (simCLR, trained)"]
    lines = [f"Untrained timm {args.model}: {args.seeds} initialisation seeds, {args.levels} IMP applications of 20 % "
             f"global magnitude pruning, no data, no training; {len(prunable)} prunable tensors under the rg_paper "
             f"preset (stem and fc dense).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        lines.append(f"| {r['stage']} | {r['M0']:.4f} | {r['lambda']:.3f} ± {r['std_levels']:.3f} "
                     f"(SE {r['se_seeds']:.4f}) | {r['class']} | {r['lambda_null']:.3f} ± {r['std_null']:.3f} | "
                     f"{r['lambda_default_stages']:.3f} | {r['shift_preset']:+.4f} | "
                     f"{r['paper_imagenet']:.2f} ± {r['paper_imagenet_std']:.2f} |")
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"rg_paper_{args.model}.json").write_text(json.dumps(rows, indent=1))
        (out / f"rg_paper_{args.model}.txt").write_text(text + "\n")
        _plot(rows, out / f"rg_paper_{args.model}.png", args)
        print(f"wrote {out}/rg_paper_{args.model}.{{json,txt,png}}")
    return 0


def _plot(rows, path, args) -> None:
    from matplotlib.figure import Figure

    from lottery_rg.plotting import save_figure

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    ax.errorbar(x - 0.12, [r["lambda"] for r in rows], yerr=[r["std_levels"] for r in rows], fmt="o", capsize=3,
                label=f"untrained {args.model}, rg_paper preset ({args.seeds} seeds, ± std over levels)")
    ax.plot(x, [r["lambda_null"] for r in rows], "k_", markersize=18, markeredgewidth=2,
            label="init-scale null (closed form)")
    for k, (task, vals) in enumerate(TABLE2.items()):
        ax.errorbar(x + 0.12 + 0.06 * k, [v for v, _ in vals], yerr=[s for _, s in vals], fmt="s", capsize=3,
                    markerfacecolor="none", label=f"paper Table 2, {task} (trained)")
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(x)
    ax.set_xticklabels([f"stage {i + 1}" for i in range(len(rows))])
    ax.set_ylabel("λ (mean of M(n+1)/M(n))")
    ax.set_title("ResNet-50 stage eigenvalues: untrained weights vs the paper's Table 2", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7)
    save_figure(fig, path)


if __name__ == "__main__":
    raise SystemExit(main())
