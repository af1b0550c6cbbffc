"""The end-of-run report: a table and plots of what each IMP level reached, and its flow."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["write_run_summary", "plot_metric_vs_density"]

logger = logging.getLogger(__name__)


def plot_metric_vs_density(rows: list[dict], path: str | Path, metric: str = "eval_accuracy",
                           title: str | None = None) -> None:
    """Metric (in %) against density of the prunable weights (log axis, sparser to the right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [(100 * r["density"], 100 * r[metric]) for r in rows if metric in r]
    if not pts:
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    d, v = zip(*pts)
    ax.plot(d, v, "o-", color="C0", label="IMP ticket (each level)")
    ax.axhspan(v[0] - 1, v[0] + 1, color="C2", alpha=0.15, label="dense ± 1 point")
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("density of prunable weights (%)")
    ax.set_ylabel(metric.replace("eval_", "").replace("_", " ") + " (%)")
    ax.set_title(title or "accuracy vs density")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_run_summary(result, flow=None) -> str:
    """Write ``summary.csv``, ``summary.md``, ``accuracy_vs_density.png`` and flow plots; return the text."""
    import pandas as pd

    out = Path(result.output_dir)
    rows = result.rows()
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    metric = "eval_accuracy" if any("eval_accuracy" in r for r in rows) else None
    if metric:
        plot_metric_vs_density(rows, out / "accuracy_vs_density.png", metric)
    lines = ["## Lottery run summary", "", result.to_markdown(), ""]
    best = result.best_ticket() if metric else None
    if best is not None:
        lines.append(f"Sparsest ticket within 1 accuracy point of the dense network: level {best['level']} "
                     f"at {100 * best['density']:.2f}% density ({100 * best[metric]:.2f}% vs "
                     f"{100 * rows[0][metric]:.2f}% dense).")
        lines.append("")
    if flow is not None and len(flow.levels) >= 3:
        from .flow_plots import plot_eigenvalues, plot_M_vs_level

        stages = {u.stage for u in flow.get_units("stage") if u.kind == "stage"}
        for granularity in (("stage", "block") if len(stages) > 1 else ("block", "tensor")):
            table = flow.eigenvalues(granularity)
            lines += [f"### IMP flow eigenvalues ({granularity})", "", table.to_markdown(), ""]
            plot_eigenvalues(table, out / f"eigenvalues_{granularity}.png")
            plot_M_vs_level(flow, granularity, out / f"flow_M_{granularity}.png")
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text, flush=True)
    return text
