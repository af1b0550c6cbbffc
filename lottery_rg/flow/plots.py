"""Plots of the IMP flow (Redman et al. 2022, Fig. 2), its eigenvalues, and error versus density.

Figures are built with :class:`matplotlib.figure.Figure` and written through the Agg
renderer, so importing this module never changes the pyplot backend. matplotlib itself is
imported by the first plot (0.4 s), not by a training run or a ticket load that draws nothing.
Each function writes a PNG to ``path`` and returns the path; with ``path=None`` it returns
the ``Figure`` instead (for notebooks).

Colours of the classes follow the paper: relevant red, irrelevant green, marginal cyan.
Error-versus-density plots use a logarithmic density axis that *decreases* to the right
(dense network on the left, as IMP proceeds left to right), like Rosenfeld et al. and
Redman et al. 2022, Fig. 3; pass ``invert_x=False`` for an increasing axis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ..plotting import density_axis, log_axis, plot_metric_vs_density, save_figure
from .eigen import CLASSES, UNDETERMINED, EigenvalueTable

__all__ = ["CLASS_COLORS", "plot_flow_projection", "plot_eigenvalues", "plot_error_vs_density", "plot_M_vs_level",
           "plot_lambda_vs_level", "plot_gamma_profile", "write_plots", "flow_granularities"]

CLASS_COLORS = {"relevant": "tab:red", "marginal": "tab:cyan", "irrelevant": "tab:green", UNDETERMINED: "tab:gray"}
_MARKERS = ("^", "o", "*", "s", "D", "v", "P", "X")


def _colors(n: int) -> list:
    """n distinguishable colours: the default cycle up to 10, tab20 up to 20, then viridis."""
    import matplotlib

    if n <= 10:
        return [f"C{i}" for i in range(n)]
    if n <= 20:
        cmap = matplotlib.colormaps["tab20"]
        return [cmap(i) for i in range(n)]
    cmap = matplotlib.colormaps["viridis"]
    return [cmap(i / max(n - 1, 1)) for i in range(n)]


def _is_flow(x) -> bool:
    # duck-typed: this module sits below flow.core, which imports it to write a flow's figures
    return hasattr(x, "eigenvalues") and hasattr(x, "densities")


def _as_flows(flows) -> list:
    if _is_flow(flows):
        return [flows]
    flows = list(flows)
    if not flows or not all(_is_flow(f) for f in flows):
        raise TypeError("expected an IMPFlow or a list of IMPFlow objects")
    return flows


def plot_flow_projection(flow, x_unit: str, y_unit: str, granularity: str = "block", path=None, *,
                         labels: Sequence[str] | None = None, title: str | None = None, normalize: str = "all"):
    """Fig. 2 of Redman et al. 2022: M_y against M_x across the IMP levels of one or several flows.

    Consecutive levels are joined by arrows; the first level is marked blue and the last
    red (as in the paper). ``flow`` may be a list of flows (same units) to overlay, each
    with its own marker and a legend entry from ``labels`` (default: the flows' labels).
    """
    if hasattr(flow, "flows"):  # a FlowPool: one trajectory per seed
        labels = list(labels) if labels is not None else list(flow.labels)
        flow = list(flow.flows)
    flows = _as_flows(flow)
    labels = list(labels) if labels is not None else [f.label for f in flows]
    if len(labels) != len(flows):
        raise ValueError(f"{len(flows)} flows but {len(labels)} labels")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 5.0))
    ax = fig.add_subplot()
    colors = [f"C{i}" for i in range(10)]
    for i, (f, label) in enumerate(zip(flows, labels)):
        M = f.M(granularity, normalize)
        for u in (x_unit, y_unit):
            if u not in M.columns:
                raise ValueError(f"{label}: no {granularity} unit {u!r}; units: {list(M.columns)}")
        x, y = M[x_unit].to_numpy(float), M[y_unit].to_numpy(float)
        c, mk = colors[i % len(colors)], _MARKERS[i % len(_MARKERS)]
        ax.plot(x, y, linestyle="none", marker=mk, color=c, markersize=5, alpha=0.8, label=label)
        for j in range(len(x) - 1):
            ax.annotate("", xy=(x[j + 1], y[j + 1]), xytext=(x[j], y[j]),
                        arrowprops=dict(arrowstyle="->", color=c, lw=1.0, shrinkA=2, shrinkB=2))
        ax.plot(x[:1], y[:1], linestyle="none", marker=mk, markersize=11, markerfacecolor="none",
                markeredgecolor="blue", markeredgewidth=2)
        ax.plot(x[-1:], y[-1:], linestyle="none", marker=mk, markersize=11, markerfacecolor="none",
                markeredgecolor="red", markeredgewidth=2)
    levels = flows[0].level_numbers
    ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="blue",
            label=f"first level ({levels[0]})" if len(flows) == 1 else "first level")
    ax.plot([], [], linestyle="none", marker="o", markerfacecolor="none", markeredgecolor="red",
            label=f"last level ({levels[-1]})" if len(flows) == 1 else "last level")
    norm = " (over the stages)" if normalize == "stages" else ""
    ax.set_xlabel(f"M of {x_unit}{norm}")
    ax.set_ylabel(f"M of {y_unit}{norm}")
    ax.set_title(title or f"IMP flow projection ({granularity} granularity)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def _null_markers(ax, xs, report) -> None:
    """The init-scale null (black bar) and the untrained controls (hollow markers) of a NullReport."""
    t = report.table
    ax.plot(xs, t["lambda_null"].to_numpy(float), linestyle="none", marker="_", markersize=16, markeredgewidth=2.2,
            color="black", label="init-scale null (closed form)", zorder=4)
    for key, (mk, name) in {"rewind": ("s", "θ_k control"), "init": ("D", "θ_0 control")}.items():
        if f"lambda_{key}" in t:
            ax.plot(xs + (0.18 if key == "rewind" else -0.18), t[f"lambda_{key}"].to_numpy(float), linestyle="none",
                    marker=mk, markersize=5, markerfacecolor="none", markeredgecolor="0.3", label=name, zorder=3)
    moved = [i for i, v in enumerate(t["verdict"]) if v == "different"]
    if moved:
        ax.plot(xs[moved], t["lambda"].to_numpy(float)[moved], linestyle="none", marker="o", markersize=13,
                markerfacecolor="none", markeredgecolor="orange", markeredgewidth=1.8,
                label="moved beyond the null", zorder=5)


def plot_eigenvalues(flow_or_table, path=None, *, granularity: str = "block", title: str | None = None,
                     **eigen_kwargs):
    """λ per unit with error bars, coloured by class, and a horizontal line at λ = 1.

    ``flow_or_table`` is an :class:`~lottery_rg.flow.IMPFlow` or a
    :class:`~lottery_rg.flow.FlowPool` (its eigenvalues are computed with ``granularity``
    and ``eigen_kwargs``: window, start, rule, ddof, normalize) or an
    :class:`~lottery_rg.flow.EigenvalueTable`. One run: the error bars are the spread
    (std) of the per-level ratios, the quantity the class rule uses. Pooled seeds: the
    bars are the standard error of the mean λ across seeds, each seed's λ is drawn as a
    small grey cross and the marker of a unit whose class is not the same in every seed
    is hollow. A :class:`~lottery_rg.flow.analysis.NullReport` adds its null models: the
    init-scale null as a black bar, the θ_k / θ_0 controls as hollow squares / diamonds, and an
    orange ring around every unit that training moved beyond the null.
    """
    report = None
    if hasattr(flow_or_table, "null") and hasattr(flow_or_table, "trained"):  # a NullReport
        report, table = flow_or_table, flow_or_table.trained
    elif _is_flow(flow_or_table):
        table = flow_or_table.eigenvalues(granularity, **eigen_kwargs)
    elif isinstance(flow_or_table, EigenvalueTable):
        table = flow_or_table
    else:
        raise TypeError("plot_eigenvalues needs an IMPFlow, an EigenvalueTable or a NullReport")
    t = table.table
    n = len(t)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(5.0, 0.35 * n + 2.0), 4.5))
    ax = fig.add_subplot()
    xs = np.arange(n)
    pooled = "stable" in t.columns and getattr(table, "per_seed", None)
    bars = t["se"] if pooled else t["std"]
    if pooled:
        ax.errorbar(xs, t["lambda"].to_numpy(float), yerr=np.nan_to_num(t["std"].to_numpy(float)), fmt="none",
                    ecolor="0.75", elinewidth=4, alpha=0.6, label="± within-run std (class rule)", zorder=0)
        for i, st in enumerate(table.per_seed):
            ax.plot(xs, st.table["lambda"].to_numpy(float), linestyle="none", marker="x", markersize=4,
                    color="0.55", label="each seed" if i == 0 else None, zorder=1)
    for cls in list(CLASSES) + [UNDETERMINED]:
        sel = (t["class"] == cls).to_numpy()
        if not sel.any():
            continue
        if pooled:
            for stable in (True, False):
                sub = sel & (t["stable"].to_numpy(bool) == stable)
                if not sub.any():
                    continue
                ax.errorbar(xs[sub], t["lambda"].to_numpy(float)[sub],
                            yerr=np.nan_to_num(bars.to_numpy(float)[sub]), fmt="o", color=CLASS_COLORS[cls],
                            ecolor=CLASS_COLORS[cls], capsize=3, zorder=2,
                            markerfacecolor=CLASS_COLORS[cls] if stable else "white",
                            label=cls if stable else f"{cls} (not in every seed)")
        else:
            ax.errorbar(xs[sel], t["lambda"].to_numpy(float)[sel], yerr=np.nan_to_num(bars.to_numpy(float)[sel]),
                        fmt="o", color=CLASS_COLORS[cls], ecolor=CLASS_COLORS[cls], capsize=3, label=cls)
    if report is not None:
        _null_markers(ax, xs, report)
    ax.axhline(1.0, color="black", lw=0.8, ls="--")
    ax.set_xticks(xs)
    ax.set_xticklabels([str(u) for u in t.index], rotation=90 if n > 6 else 30, fontsize=8,
                       ha="center" if n > 6 else "right")
    if pooled:
        ax.set_ylabel(f"λᵢ, mean over {table.n_seeds} seeds ± SE")
    else:
        ax.set_ylabel("λᵢ (mean of Mᵢ(n+1) / Mᵢ(n)) ± std")
    lv = table.levels
    norm = ", M over the stages" if getattr(table, "normalize", "all") == "stages" else ""
    seeds = f", {table.n_seeds} seeds" if pooled else ""
    ax.set_title(title or f"IMP-flow eigenvalues ({table.granularity}, levels {lv[0]}–{lv[-1]}{seeds}{norm})")
    ax.grid(axis="y", alpha=0.3)
    if pooled or report is not None:  # more entries: keep them off the data
        fig.set_size_inches(fig.get_size_inches()[0] + 2.5, fig.get_size_inches()[1])
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    else:
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _runs(points_or_flows, metric: str, labels):
    """[(density %, error %, label)] from flows, one (d, e) pair, or a list of (d, e) pairs."""
    from .scaling import points_from_flows

    obj = points_or_flows
    if _is_flow(obj):
        obj = [obj]
    if isinstance(obj, (list, tuple)) and obj and all(_is_flow(f) for f in obj):
        runs = points_from_flows(obj, metric, per_run=True)
        names = [f.label for f in obj]
    elif isinstance(obj, (list, tuple)) and len(obj) == 2 and all(np.ndim(v) == 1 for v in obj) \
            and np.size(obj[0]) == np.size(obj[1]) and np.asarray(obj[0]).dtype != object:
        runs = [(np.asarray(obj[0], float), np.asarray(obj[1], float))]
        names = ["data"]
    elif isinstance(obj, (list, tuple)) and obj and all(isinstance(r, (list, tuple)) and len(r) == 2 for r in obj):
        runs = [(np.asarray(d, float), np.asarray(e, float)) for d, e in obj]
        names = [f"run {i}" for i in range(len(runs))]
    else:
        raise TypeError("expected IMPFlow(s), a (density, error) pair, or a list of (density, error) pairs")
    if labels is not None:
        names = list(labels)
        if len(names) != len(runs):
            raise ValueError(f"{len(runs)} runs but {len(names)} labels")
    return [(d, e, n) for (d, e), n in zip(runs, names)]


def plot_error_vs_density(points_or_flows, fit=None, path=None, *, metric: str = "eval_accuracy",
                          labels: Sequence[str] | None = None, invert_x: bool = True, title: str | None = None):
    """Error (%) against density (%) on a log density axis, with the fitted Eq. 14 curve.

    ``points_or_flows``: flow(s) (points from ``metric``, a fraction), a ``(density,
    error)`` pair of arrays in percent, or a list of such pairs (one per run). ``fit`` is
    a :class:`~lottery_rg.flow.scaling.ScalingFit` or None. The density axis decreases to the
    right unless ``invert_x=False``.
    """
    runs = _runs(points_or_flows, metric, labels)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.5))
    ax = fig.add_subplot()
    d_all = [d for d, _, _ in runs if d.size]
    for i, (d, e, name) in enumerate(runs):
        ax.plot(d, e, linestyle="none", marker=_MARKERS[i % len(_MARKERS)], color=f"C{i % 10}", label=name, alpha=0.8)
    if fit is not None:
        lo = min([float(np.min(d)) for d in d_all] + [float(np.min(fit.density))])
        grid = np.logspace(np.log10(lo), np.log10(100.0), 300)
        p = fit.params
        ax.plot(grid, fit.predict(grid), color="black", lw=1.5,
                label=((rf"Eq. 14: $\gamma$ = {p['gamma']:.3f} ± {fit.stderr['gamma']:.2g}"
                        if getattr(fit, "gamma_determined", True)
                        else rf"Eq. 14: $\gamma$ not determined (stopped at {p['gamma']:.3g}"
                        + (", its bound)" if "gamma" in fit.at_bounds else ")")) + ", "
                       rf"$\epsilon_{{np}}$ = {p['eps_np']:.2f}, $\epsilon^\dagger$ = {p['eps_dagger']:.1f}, "
                       rf"p = {p['p']:.2g}"))
    density_axis(ax, [float(np.min(d)) for d in d_all], invert=invert_x)
    ax.set_xlabel("density (% of prunable weights remaining)")
    ax.set_ylabel("error (%) = 100 − accuracy")
    prof = getattr(fit, "__dict__", {}).get("_profiles") if fit is not None else None
    if prof and title is None:
        title = "Error versus density\n" + next(iter(prof.values())).describe().split(" (")[0] + \
            f" ({next(iter(prof.values())).kind}, profile likelihood)"
    ax.set_title(title or "Error versus density", fontsize=9 if prof else None)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7 if len(runs) > 3 else 8, loc="upper left")
    return save_figure(fig, path)


def plot_gamma_profile(profile, path=None, *, title: str | None = None):
    """The profile deviance of γ (Eq. 14) with the χ² threshold: the interval is where the curve lies below it.

    ``profile`` is a :class:`~lottery_rg.flow.scaling.GammaProfile` (``fit.profile()``).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 4.0))
    ax = fig.add_subplot()
    g, dev = np.asarray(profile.gamma), np.asarray(profile.deviance)
    ax.plot(g, dev, marker="o", markersize=3, color="C0", label="profile deviance n·ln(RSS(γ)/RSS_min)")
    ax.axhline(profile.threshold, color="C3", ls="--", lw=1,
               label=f"χ²₁ {100 * profile.level:.0f} % = {profile.threshold:.2f}")
    for end in (profile.low, profile.high):
        if np.isfinite(end):
            ax.axvline(end, color="0.4", ls=":", lw=1)
    ax.set_xlabel("γ")
    ax.set_ylabel("deviance")
    ax.set_ylim(bottom=-0.05 * max(profile.threshold, 1.0), top=min(np.nanmax(dev), 10 * profile.threshold) * 1.05)
    ax.set_title(title or profile.describe().split(" (")[0] + f" — {profile.kind}", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def plot_M_vs_level(flow, granularity: str = "block", path=None, *, units: Sequence[str] | None = None,
                    title: str | None = None, normalize: str = "all"):
    """M_i(n) against level n on a log y axis: eigenfunctions are straight lines (slope log λ_i).

    For a :class:`~lottery_rg.flow.FlowPool` the mean over the seeds is drawn with ± SE bars.
    """
    pooled = hasattr(flow, "flows")
    if pooled:
        M, M_se = flow.M(granularity, normalize)
    else:
        M, M_se = flow.M(granularity, normalize), None
    if units is not None:
        missing = [u for u in units if u not in M.columns]
        if missing:
            raise ValueError(f"no {granularity} units {missing}; units: {list(M.columns)}")
        M = M[list(units)]
        M_se = M_se[list(units)] if M_se is not None else None
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.0, 4.5))
    ax = fig.add_subplot()
    levels = M.index.to_numpy()
    colors = _colors(M.shape[1])
    for i, col in enumerate(M.columns):
        y = M[col].to_numpy(float)
        y = np.where(y > 0, y, np.nan)  # M = 0 cannot be drawn on a log axis
        if M_se is not None:
            ax.errorbar(levels, y, yerr=np.nan_to_num(M_se[col].to_numpy(float)), marker=_MARKERS[i % len(_MARKERS)],
                        markersize=3, color=colors[i], label=str(col), capsize=2)
        else:
            ax.plot(levels, y, marker=_MARKERS[i % len(_MARKERS)], markersize=3, color=colors[i], label=str(col))
    log_axis(ax, "y")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("IMP level n")
    ax.set_ylabel("Mᵢ(n)" + (" (mean ± SE over seeds)" if pooled else "")
                  + (", over the stages" if normalize == "stages" else ""))
    ax.set_title(title or f"IMP flow of {flow.label} ({granularity} granularity)")
    ax.grid(alpha=0.3, which="both")
    ncol = 1 if M.shape[1] <= 12 else 2 if M.shape[1] <= 30 else 3
    ax.legend(fontsize=6 if M.shape[1] > 12 else 8, ncol=ncol, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def plot_lambda_vs_level(table_or_report, path=None, *, units: Sequence[str] | None = None,
                         title: str | None = None):
    """λ_i(n) = M_i(n+1)/M_i(n) against the level n, one line per unit: the drift the single λ hides.

    ``table_or_report``: an :class:`~lottery_rg.flow.EigenvalueTable` (pooled: mean ± SE over
    seeds) or a :class:`~lottery_rg.flow.analysis.NullReport` (adds each unit's init-scale
    null λ_i(n) as a dashed line of the same colour). An eigenfunction is a flat line.
    """
    report = table_or_report if hasattr(table_or_report, "null") and hasattr(table_or_report, "trained") else None
    table = report.trained if report is not None else table_or_report
    if getattr(table, "ratios", None) is None:
        raise TypeError("plot_lambda_vs_level needs an EigenvalueTable with per-level ratios or a NullReport")
    R = table.ratios
    se = getattr(table, "ratios_se", None)
    names = list(units) if units is not None else list(R.columns)
    missing = [u for u in names if u not in R.columns]
    if missing:
        raise ValueError(f"no units {missing}; units: {list(R.columns)}")
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    colors = _colors(len(names))
    x = R.index.to_numpy()
    for i, u in enumerate(names):
        y = R[u].to_numpy(float)
        if se is not None:
            ax.errorbar(x, y, yerr=np.nan_to_num(se[u].to_numpy(float)), color=colors[i], marker=_MARKERS[i % 8],
                        markersize=3, capsize=2, label=str(u))
        else:
            ax.plot(x, y, color=colors[i], marker=_MARKERS[i % 8], markersize=3, label=str(u))
        if report is not None and report.null.ratios is not None:
            ax.plot(report.null.ratios.index.to_numpy(), report.null.ratios[u].to_numpy(float), color=colors[i],
                    ls="--", lw=1.0, alpha=0.8)
    if report is not None:
        ax.plot([], [], color="0.3", ls="--", lw=1.0, label="init-scale null")
    ax.axhline(1.0, color="black", lw=0.8, ls=":")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("IMP level n (ratio of levels n+1 and n)")
    seeds = getattr(table, "n_seeds", 0) if getattr(table, "per_seed", None) else 0
    ax.set_ylabel("λᵢ(n) = Mᵢ(n+1) / Mᵢ(n)" + (f", mean ± SE over {seeds} seeds" if seeds else ""))
    ax.set_title(title or f"Per-level eigenvalues of {table.label} ({table.granularity})")
    ax.grid(alpha=0.3)
    ncol = 1 if len(names) <= 12 else 2 if len(names) <= 30 else 3
    ax.legend(fontsize=6 if len(names) > 12 else 8, ncol=ncol, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return save_figure(fig, path)


def flow_granularities(flow) -> tuple[str, ...]:
    """Stages and blocks for multi-stage networks; blocks and matrices for single-stage ones (BERT)."""
    stages = {u.stage for u in flow.get_units("stage") if u.kind == "stage"}
    return ("stage", "block") if len(stages) > 1 else ("block", "tensor")


def write_plots(out, rows: list[dict], flow=None, granularities: tuple[str, ...] = ("block",),
                reports: Mapping | None = None) -> list[str]:
    """The PNGs a run, a ticket or a flow carries: accuracy vs density, M_i(n) and eigenvalues per granularity.
    ``reports``: granularity -> :class:`~lottery_rg.flow.analysis.FlowReport` the caller has already computed."""
    from pathlib import Path

    from .analysis import flow_report

    out, written = Path(out), []
    if any("eval_accuracy" in r for r in rows):
        plot_metric_vs_density(rows, out / "accuracy_vs_density.png")
        written.append("accuracy_vs_density.png")
    if flow is not None and len(flow.levels) >= 3:
        for g in granularities:
            plot_M_vs_level(flow, g, out / f"flow_M_{g}.png")
            shown = (reports[g] if reports and g in reports else flow_report(flow, g)).shown
            plot_eigenvalues(shown, out / f"eigenvalues_{g}.png")
            plot_lambda_vs_level(shown, out / f"lambda_vs_level_{g}.png")
            written += [f"flow_M_{g}.png", f"eigenvalues_{g}.png", f"lambda_vs_level_{g}.png"]
    return written

