"""One figure saver and one table writer for every report lottery_rg writes.

Figures are built with ``matplotlib.figure.Figure`` (no pyplot, no global backend switch),
so plotting from lottery_rg never changes the user's matplotlib backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

__all__ = ["save_figure", "density_axis", "log_axis", "markdown_table", "format_cell", "plot_metric_vs_density"]


def save_figure(fig, path):
    """Write a matplotlib ``Figure`` as PNG (creating the folder) and return the path; ``None``: return the figure."""
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


def log_axis(ax, which: str = "y") -> None:
    """A logarithmic axis labelled in plain text (0.1, 0.02, …) with matplotlib's usual choice of ticks.

    The default labels are mathtext (``$10^{-2}$``), whose parser costs ~20 ms per label:
    most of the drawing time of a small figure, and so of the end-of-run summary.
    """
    from matplotlib.ticker import LogFormatter

    class PlainLogFormatter(LogFormatter):  # LogFormatter picks the ticks to label; the text is plain
        def __call__(self, x, pos=None):
            return f"{x:g}" if super().__call__(x, pos) else ""

    getattr(ax, f"set_{which}scale")("log")
    axis = getattr(ax, f"{which}axis")
    axis.set_major_formatter(PlainLogFormatter())
    axis.set_minor_formatter(PlainLogFormatter(labelOnlyBase=False))


def format_cell(v: Any, digits: int = 4) -> str:
    """Plain text of one table cell: numbers to ``digits`` decimals, NaN as '–', booleans as yes/no."""
    import numpy as np

    if v is None or (type(v).__name__ == "NAType"):
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(header: Sequence[Any], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub-markdown table; cells are written as given (format them first, e.g. with :func:`format_cell`)."""
    lines = ["| " + " | ".join(str(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def plot_metric_vs_density(rows: list[dict], path: str | Path | None, metric: str = "eval_accuracy",
                           title: str | None = None):
    """Metric (in %) against density of the prunable weights (log axis, sparser to the right)."""
    from matplotlib.figure import Figure

    pts = [(100 * r["density"], 100 * r[metric]) for r in rows if metric in r]
    if not pts:
        return None
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
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
    return save_figure(fig, path)
