"""Command lines: ``lottery-rg flow RUN ...`` (the RG analysis of a run) and ``lottery-rg stability RUN ...``
(linear-mode-connectivity results), also as ``python -m lottery_rg.flow`` and ``python -m lottery_rg.stability``.

The IMP job itself is ``examples/run_imp.py`` (an ``accelerate launch`` script in the style of the
transformers examples); the elastic experiment is ``examples/run_elastic.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .flow import ClassRule, IMPFlow
from .models.families import GRANULARITIES

__all__ = ["main", "flow_main", "stability_main"]


def _flow_parser(prog: str = "lottery-rg flow") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description="RG analysis of an IMP run: IMP-flow eigenvalues and classes, comparison with another run, "
                    "critical-exponent fit (Eq. 14) and plots.",
    )
    p.add_argument("run", help="IMP run directory, flow.json file, or Hub repository id")
    p.add_argument("--revision", default=None, help="Hub revision when RUN is a repository id")
    p.add_argument("--granularity", default="block", choices=GRANULARITIES)
    p.add_argument("--window", type=int, default=None, help="number of IMP applications used (default: all)")
    p.add_argument("--start", type=int, default=0, help="first level of the window (default 0)")
    p.add_argument("--ddof", type=int, default=0, choices=(0, 1), help="0: population std (default), 1: sample std")
    p.add_argument("--k", type=float, default=1.0, help="class rule: marginal when |λ−1| ≤ k·std (default 1)")
    p.add_argument("--compare", metavar="OTHER", default=None, help="another run directory / flow.json / repo id")
    p.add_argument("--by", choices=("auto", "unit", "stage"), default="auto", help="comparison mode")
    p.add_argument("--include-entry", action="store_true",
                   help="stage comparison: count each stage's entry block too (excluded by default, as in the paper)")
    p.add_argument("--fit", action="store_true", help="fit the critical exponent (Eq. 14) to error vs density")
    p.add_argument("--metric", default="eval_accuracy", help="accuracy metric for --fit (a fraction in [0, 1])")
    p.add_argument("--plots", metavar="OUT_DIR", default=None, help="write PNG plots to this directory")
    p.add_argument("--x", dest="x_unit", default=None, help="x unit of the flow projection plot")
    p.add_argument("--y", dest="y_unit", default=None, help="y unit of the flow projection plot")
    p.add_argument("--table", metavar="PATH", default=None, help="write the flat flow table (.csv or .parquet)")
    p.add_argument("--control", action="store_true",
                   help="also compute the untrained control flow (the rewind weights pruned without training) "
                        "and compare the run against it")
    return p


def flow_main(argv: Sequence[str] | None = None, prog: str = "python -m lottery_rg.flow") -> int:
    """RG analysis of a run: eigenvalues, control, comparison, Eq. 14 fit, plots (``lottery-rg flow``)."""
    args = _flow_parser(prog).parse_args(argv)
    rc = 0
    try:
        flow = IMPFlow.from_pretrained(args.run, revision=args.revision)
        other = IMPFlow.from_pretrained(args.compare) if args.compare else None
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not flow.levels:
        print(f"{args.run}: the flow has no levels yet", file=sys.stderr)
        return 1
    rule = ClassRule(k=args.k)
    dens = flow.densities()
    print(f"IMP flow of {flow.label} from {args.run}: levels {flow.level_numbers[0]}–{flow.level_numbers[-1]}, "
          f"density {100 * dens.iloc[0]:.2f} % → {100 * dens.iloc[-1]:.2f} %, schedule {flow.schedule or 'unrecorded'}")
    print()
    table = flow.eigenvalues(args.granularity, window=args.window, start=args.start, rule=rule, ddof=args.ddof)
    print(table.to_markdown())
    if args.control:
        try:
            control = IMPFlow.untrained_control(args.run)
        except (FileNotFoundError, ValueError) as e:
            print(f"error: the control needs a run directory with rewind.safetensors: {e}", file=sys.stderr)
            return 2
        print("\nUntrained control (rewind weights pruned by the same schedule, no training):\n")
        print(control.eigenvalues(args.granularity, window=args.window, start=args.start, rule=rule,
                                  ddof=args.ddof).to_markdown())
        print()
        print(flow.compare(control, args.granularity, window=args.window, start=args.start, rule=rule, ddof=args.ddof,
                           by="unit", labels=("trained IMP", "untrained control")).to_markdown())
    if other is not None:
        print()
        cmp = flow.compare(other, args.granularity, window=args.window, start=args.start, rule=rule,
                           ddof=args.ddof, by=args.by, exclude_entry=not args.include_entry,
                           labels=(f"{flow.label} [{args.run}]", f"{other.label} [{args.compare}]"))
        print(cmp.to_markdown())
    fit = None
    if args.fit:
        print()
        try:
            fit = flow.critical_exponent(args.metric)
            print(f"Critical exponent (Eq. 14, {args.metric}):\n")
            print(fit.to_markdown())
        except (ValueError, RuntimeError) as e:
            print(f"critical-exponent fit failed: {e}", file=sys.stderr)
            rc = 1
    if args.table:
        print(f"\nwrote {flow.save_table(args.table)}")
    if args.plots:
        from .flow import plots as flow_plots

        out = Path(args.plots)
        out.mkdir(parents=True, exist_ok=True)
        written = [flow_plots.plot_M_vs_level(flow, args.granularity, out / f"M_vs_level_{args.granularity}.png"),
                   flow_plots.plot_eigenvalues(table, out / f"eigenvalues_{args.granularity}.png")]
        x_unit, y_unit = args.x_unit, args.y_unit
        if x_unit is None or y_unit is None:
            lam = table.lambdas.dropna()
            if len(lam) >= 2:
                x_unit = x_unit or str(lam.idxmax())
                y_unit = y_unit or str(lam.drop(x_unit, errors="ignore").idxmin())
        if x_unit and y_unit:
            flows, labels = [flow], [flow.label]
            if other is not None:
                names = {u.name for u in other.get_units(args.granularity)}
                if x_unit in names and y_unit in names:
                    flows.append(other)
                    labels.append(f"{other.label} [{args.compare}]")
            written.append(flow_plots.plot_flow_projection(
                flows, x_unit, y_unit, args.granularity, out / f"flow_projection_{args.granularity}.png",
                labels=labels))
        try:
            from .flow.scaling import points_from_flows

            d, _ = points_from_flows([flow], args.metric)
            if d.size:
                written.append(flow_plots.plot_error_vs_density([flow], fit, out / "error_vs_density.png",
                                                                metric=args.metric))
        except ValueError as e:
            print(f"error-vs-density plot skipped: {e}", file=sys.stderr)
        print()
        for w in written:
            print(f"wrote {w}")
    return rc


def stability_main(argv: Sequence[str] | None = None, prog: str = "python -m lottery_rg.stability") -> int:
    """The table and plot of the linear-mode-connectivity analyses of one or more runs (``lottery-rg stability``)."""
    from .branches.stability import load_results, plot_instability, stability_table

    ap = argparse.ArgumentParser(prog=prog,
                                 description="Linear-mode-connectivity results of one or more IMP runs (computed by "
                                             "run_imp.py --stability_levels): a table and a plot.")
    ap.add_argument("runs", nargs="+", help="IMP run directories")
    ap.add_argument("--levels", type=int, nargs="*", default=None, help="only these levels")
    ap.add_argument("--plot", metavar="PNG", default=None, help="write the plot here")
    args = ap.parse_args(argv)
    results = []
    for run in args.runs:
        found = load_results(run)
        if not found:
            print(f"error: {run} holds no stability analysis (run_imp.py ... --stability_levels L ...)",
                  file=sys.stderr)
            return 2
        results += [r for r in found if args.levels is None or r.level in args.levels]
    print(stability_table(results))
    if args.plot:
        print(f"\nwrote {plot_instability(results, args.plot)}")
    return 0


COMMANDS = {"flow": flow_main, "stability": stability_main}


def main(argv: Sequence[str] | None = None) -> int:
    """``lottery-rg COMMAND ...`` (console entry point)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print("usage: lottery-rg {flow,stability} ...\n\n"
              "  flow RUN       IMP-flow eigenvalues and classes, comparison, control, Eq. 14 fit, plots\n"
              "  stability RUN  linear-mode-connectivity results of one or more runs\n\n"
              "`lottery-rg COMMAND --help` describes each.", file=sys.stderr)
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:], prog=f"lottery-rg {argv[0]}")
