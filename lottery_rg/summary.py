"""The end-of-run report: a table and plots of what each IMP level reached, and its flow."""

from __future__ import annotations

import logging
from pathlib import Path

__all__ = ["write_run_summary", "write_plots", "flow_granularities", "plot_metric_vs_density", "density_axis",
           "save_figure"]

logger = logging.getLogger(__name__)


def save_figure(fig, path):
    """Write a matplotlib ``Figure`` as PNG (creating the folder) and return the path; ``None``: return the figure."""
    import os

    if path is None:
        return fig
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(os.fspath(path), dpi=120, bbox_inches="tight", format="png")
    return path


def density_axis(ax, densities_percent, invert: bool = True) -> None:
    """A logarithmic density axis (percent) with plain tick labels (100, 50, 20, 10, …), sparser to the right."""
    from matplotlib.ticker import FuncFormatter

    lo = min([float(d) for d in densities_percent] or [1.0])
    ax.set_xscale("log")
    ax.set_xticks([t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01) if t >= 0.8 * lo])
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    if invert:
        ax.invert_xaxis()


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
    density_axis(ax, d)
    ax.set_xlabel("density of prunable weights (%)")
    ax.set_ylabel(metric.replace("eval_", "").replace("_", " ") + " (%)")
    ax.set_title(title or "accuracy vs density")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def flow_granularities(flow) -> tuple[str, ...]:
    """Stages and blocks for multi-stage networks; blocks and matrices for single-stage ones (BERT)."""
    stages = {u.stage for u in flow.get_units("stage") if u.kind == "stage"}
    return ("stage", "block") if len(stages) > 1 else ("block", "tensor")


def write_plots(out: str | Path, rows: list[dict], flow=None, granularities: tuple[str, ...] = ("block",)) -> list[str]:
    """The PNGs a run, a ticket or a flow carries: accuracy vs density, M_i(n) and eigenvalues per granularity."""
    out, written = Path(out), []
    if any("eval_accuracy" in r for r in rows):
        plot_metric_vs_density(rows, out / "accuracy_vs_density.png")
        written.append("accuracy_vs_density.png")
    if flow is not None and len(flow.levels) >= 3:
        from .flow_plots import plot_eigenvalues, plot_M_vs_level

        for g in granularities:
            plot_M_vs_level(flow, g, out / f"flow_M_{g}.png")
            plot_eigenvalues(flow.eigenvalues(g), out / f"eigenvalues_{g}.png")
            written += [f"flow_M_{g}.png", f"eigenvalues_{g}.png"]
    return written


def write_run_summary(result, flow=None) -> str:
    """Write ``summary.csv``, ``summary.md`` and the plots of a run directory; print and return the text."""
    import pandas as pd

    out = Path(result.output_dir)
    rows = result.rows()
    pd.DataFrame(rows).to_csv(out / "summary.csv", index=False)
    granularities = flow_granularities(flow) if flow is not None else ()
    write_plots(out, rows, flow, granularities)
    lines = ["## Lottery run summary", "", result.to_markdown(), ""]
    best = result.best_ticket()
    if best is not None:
        metric = "eval_accuracy"
        lines += [f"Sparsest ticket within 1 accuracy point of the dense network: level {best['level']} "
                  f"at {100 * best['density']:.2f}% density ({100 * best[metric]:.2f}% vs "
                  f"{100 * rows[0][metric]:.2f}% dense).", ""]
    if flow is not None and len(flow.levels) >= 3:
        for granularity in granularities:
            lines += [f"### IMP flow eigenvalues ({granularity})", "", flow.eigenvalues(granularity).to_markdown(), ""]
    stability = list(getattr(result, "stability", None) or [])
    if stability:
        from .stability import plot_instability, stability_table

        plot_instability(stability, out / "stability.png")
        lines += ["### Linear mode connectivity (instability to SGD noise)", "", stability_table(stability), ""]
    text = "\n".join(lines)
    (out / "summary.md").write_text(text + "\n")
    print(text, flush=True)
    return text
