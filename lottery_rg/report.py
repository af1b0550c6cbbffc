"""The end-of-run report: a table and plots of what each IMP level reached, its flow and its stability."""

from __future__ import annotations

import logging

from .flow.plots import flow_granularities, write_plots
from .run import RunDir
from .stability import plot_instability, stability_table

__all__ = ["write_run_summary"]

logger = logging.getLogger(__name__)


def _attach_controls(flow, run: RunDir) -> None:
    """Keep the run's untrained controls (θ_k, θ_0 pruned without training) in its flow.json, for every report."""
    try:
        flow.attach_controls(run.root)
    except (FileNotFoundError, ValueError, KeyError) as e:  # a run without its weight files
        logger.info("no untrained controls for %s: %s", run.root, e)
        return
    flow.save(run.flow)


def write_run_summary(result, flow=None) -> str:
    """Write ``summary.csv``, ``summary.md`` and the plots of a run directory; log and return the text.

    The flow part shows every granularity's eigenvalues next to their null models (the run's
    untrained controls θ_k and θ_0, which are also kept in ``flow.json``, and the closed-form
    init-scale null), with λ_i(n) per level. One run resolves nothing: the summary says so,
    and ``lottery-rg flow`` pools seeds.
    """
    import pandas as pd

    from .flow.analysis import flow_report
    from .io import atomic_write_text

    run = RunDir(result.output_dir)
    rows = result.rows()
    atomic_write_text(run.summary_csv, pd.DataFrame(rows).to_csv(index=False))
    granularities = flow_granularities(flow) if flow is not None else ()
    reports = {}
    if flow is not None and len(flow.levels) >= 3:
        _attach_controls(flow, run)
        reports = {g: flow_report(flow, g) for g in granularities}  # once, for the plots and the text
    write_plots(run.root, rows, flow, granularities, reports=reports)
    lines = ["## Lottery run summary", "", result.to_markdown(), ""]
    best = result.best_ticket()
    if best is not None:
        metric = "eval_accuracy"
        lines += [f"Sparsest ticket within 1 accuracy point of the dense network: level {best['level']} "
                  f"at {100 * best['density']:.2f}% density ({100 * best[metric]:.2f}% vs "
                  f"{100 * rows[0][metric]:.2f}% dense).", ""]
    if reports:
        for granularity, shown in reports.items():
            lines += [f"### IMP flow eigenvalues ({granularity})", "", shown.table.to_markdown(), "",
                      shown.null_markdown(), "", shown.table.levels_markdown(), ""]
        lines += ["One seed resolves no comparison: pool 5 seeds with `lottery-rg flow RUN_seed0 … RUN_seed4` "
                  "(examples/run_seeds.sh).", ""]
    stability = list(getattr(result, "stability", None) or [])
    if stability:
        plot_instability(stability, run.root / "stability.png")
        lines += ["### Linear mode connectivity (instability to SGD noise)", "", stability_table(stability), ""]
    text = "\n".join(lines)
    atomic_write_text(run.summary_md, text + "\n")
    logger.info("%s", text)
    return text
