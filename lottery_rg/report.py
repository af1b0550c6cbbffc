"""The end-of-run report: a table and plots of what each IMP level reached, its flow and its stability."""

from __future__ import annotations

import logging

from .flow.plots import flow_granularities, write_plots
from .run import RunDir
from .stability import plot_instability, stability_table

__all__ = ["write_run_summary"]

logger = logging.getLogger(__name__)


def write_run_summary(result, flow=None) -> str:
    """Write ``summary.csv``, ``summary.md`` and the plots of a run directory; log and return the text."""
    import pandas as pd

    from .io import atomic_write_text

    run = RunDir(result.output_dir)
    rows = result.rows()
    atomic_write_text(run.summary_csv, pd.DataFrame(rows).to_csv(index=False))
    granularities = flow_granularities(flow) if flow is not None else ()
    write_plots(run.root, rows, flow, granularities)
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
        plot_instability(stability, run.root / "stability.png")
        lines += ["### Linear mode connectivity (instability to SGD noise)", "", stability_table(stability), ""]
    text = "\n".join(lines)
    atomic_write_text(run.summary_md, text + "\n")
    logger.info("%s", text)
    return text
