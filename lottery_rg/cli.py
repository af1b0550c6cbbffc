"""Command lines: ``lottery-rg flow RUN ...`` (the RG analysis of a run) and ``lottery-rg stability RUN ...``
(linear-mode-connectivity results), also as ``python -m lottery_rg flow ...`` / ``python -m lottery_rg stability``.

The IMP job itself is ``examples/run_imp.py`` (an ``accelerate launch`` script in the style of the
transformers examples); the elastic experiment is ``examples/run_elastic.py``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from .errors import ArgumentParser, UsageError, command
from .flow import CONTROL_STARTS, NORMALIZATIONS, ClassRule, FlowPool, IMPFlow
from .models.families import GRANULARITIES

__all__ = ["main", "flow_main", "stability_main"]


def _flow_parser(prog: str = "lottery-rg flow") -> argparse.ArgumentParser:
    p = ArgumentParser(  # one-line errors
        prog=prog,
        description="RG analysis of an IMP run: IMP-flow eigenvalues and classes next to their null models (the "
                    "untrained controls θ_k and θ_0 and the closed-form init-scale null), the training effect with "
                    "three answers (different / equivalent / not resolved), λ_i(n) per level with a trend test, "
                    "comparison with another run, critical-exponent fit (Eq. 14) and plots. Several RUNs (seeds of "
                    "one configuration, e.g. from examples/run_seeds.sh) are pooled: λ as mean ± standard error "
                    "across seeds, which is the uncertainty every verdict uses.",
    )
    p.add_argument("run", nargs="+", help="IMP run directory, flow.json file, or Hub repository id; several: the "
                                          "seeds of one configuration, pooled")
    p.add_argument("--revision", default=None, help="Hub revision when RUN is a repository id")
    p.add_argument("--granularity", default="block", choices=GRANULARITIES)
    p.add_argument("--window", type=int, default=None, help="number of IMP applications used (default: all)")
    p.add_argument("--start", type=int, default=0, help="first level of the window (default 0)")
    p.add_argument("--ddof", type=int, default=0, choices=(0, 1), help="0: population std (default), 1: sample std")
    p.add_argument("--k", type=float, default=1.0, help="class rule: marginal when |λ−1| ≤ k·std (default 1)")
    p.add_argument("--normalize", choices=NORMALIZATIONS, default="all",
                   help="denominator of M: 'all' prunable weights (Eq. 13, default) or the residual 'stages' only "
                        "(stem and head outside the denominator; to prune them not at all, train with "
                        "--prune_preset rg_paper, the paper's convention)")
    p.add_argument("--compare", metavar="OTHER", nargs="+", default=None,
                   help="another run directory / flow.json / repo id (several: its seeds, pooled)")
    p.add_argument("--by", choices=("auto", "unit", "stage"), default="auto", help="comparison mode")
    p.add_argument("--relation", choices=("auto", "transfer", "control"), default="auto",
                   help="what --compare compares: two trained flows ('transfer': the verdict predicts whether "
                        "tickets transfer, only on equivalence) or a flow and its control; auto detects a control")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="level of the tests (Holm-adjusted difference tests; two one-sided equivalence tests)")
    p.add_argument("--margin", type=float, default=None,
                   help="a fixed equivalence margin for λ differences (default: per unit, --margin-fraction of "
                        "|λ̄ − 1|, at least --margin-floor)")
    p.add_argument("--margin-fraction", type=float, default=0.25,
                   help="default margin: this fraction of the distance |λ̄ − 1| to the class boundary (0.25)")
    p.add_argument("--margin-floor", type=float, default=0.005, help="smallest default margin (0.005)")
    p.add_argument("--null-seed", type=int, default=0,
                   help="seed of the fresh initialisation whose per-tensor laws define the init-scale null (0)")
    p.add_argument("--block-length", type=int, default=None,
                   help="moving-block bootstrap block length for single-run SEs (indicative only; default ⌈n^(1/3)⌉)")
    p.add_argument("--n-boot", type=int, default=2000, help="bootstrap resamples (default 2000, seed 0)")
    p.add_argument("--include-entry", action="store_true",
                   help="stage comparison: count each stage's entry block too (excluded by default, as in the paper)")
    p.add_argument("--fit", action="store_true",
                   help="fit the critical exponent (Eq. 14) to error vs density (every seed's points together), "
                        "with a profile-likelihood interval for γ")
    p.add_argument("--metric", default="eval_accuracy", help="accuracy metric for --fit (a fraction in [0, 1])")
    p.add_argument("--plots", metavar="OUT_DIR", default=None, help="write PNG plots to this directory")
    p.add_argument("--x", dest="x_unit", default=None, help="x unit of the flow projection plot")
    p.add_argument("--y", dest="y_unit", default=None, help="y unit of the flow projection plot")
    p.add_argument("--table", metavar="PATH", default=None,
                   help="write the flat flow table (.csv or .parquet; the first RUN's)")
    p.add_argument("--report-table", metavar="PATH", default=None,
                   help="write the null-model report (one row per unit) as .csv")
    p.add_argument("--per-seed", action="store_true", help="also print every seed's own eigenvalue table")
    p.add_argument("--control", action="store_true",
                   help="also print the full unit-by-unit comparison of the run against its untrained control "
                        "(--control-from); the report always shows both controls when the weight files exist")
    p.add_argument("--control-from", choices=CONTROL_STARTS, default="rewind",
                   help="weights the --control comparison prunes: 'rewind' = θ_k (rewind.safetensors, default) or "
                        "'init' = θ_0 (init.safetensors)")
    return p


def _controls(runs: Sequence[str], flows, pooled: bool) -> dict:
    """θ_k and θ_0 controls for run directories (pooled with the runs' labels); {} where weights are missing."""
    out = {}
    for start in CONTROL_STARTS:
        try:
            got = [IMPFlow.untrained_control(r, start=start) for r in runs]
        except (FileNotFoundError, ValueError, KeyError):
            got = [f.control(start) for f in flows]  # carried in flow.json, if at all
            if any(c is None for c in got):
                continue
        out[start] = FlowPool(got, list(runs), label=got[0].label, check=False) if pooled else got[0]
    return out


@command("lottery-rg flow", returns_status=True)  # a refusal: one line, exit status 2 (LOTTERY_RG_DEBUG=1: traceback)
def flow_main(argv: Sequence[str] | None = None, prog: str = "lottery-rg flow") -> int:
    """RG analysis of a run or of several seeds: eigenvalues, null models, comparison, Eq. 14 fit, plots."""
    from .flow.analysis import null_report
    from .flow.null import InitScaleNull

    args = _flow_parser(prog).parse_args(argv)
    rc = 0
    # a refusal (a missing run, an unreadable flow.json …) is one line from the handler of @command
    flows = [IMPFlow.from_pretrained(r, revision=args.revision) for r in args.run]
    others = [IMPFlow.from_pretrained(r) for r in args.compare] if args.compare else []
    pool = FlowPool(flows, args.run) if len(flows) > 1 else None
    other_pool = FlowPool(others, args.compare) if len(others) > 1 else None
    for r, f in zip(args.run, flows):
        if not f.levels:
            print(f"{prog}: error: {r}: the flow has no levels yet (finish a level first)", file=sys.stderr)
            return 1
    flow = flows[0]
    subject = pool if pool is not None else flow
    other = other_pool if other_pool is not None else (others[0] if others else None)
    rule = ClassRule(k=args.k)
    ekw = dict(window=args.window, start=args.start, rule=rule, ddof=args.ddof, normalize=args.normalize,
               block_length=args.block_length, n_boot=args.n_boot)
    mkw = dict(alpha=args.alpha, margin=args.margin, margin_fraction=args.margin_fraction,
               margin_floor=args.margin_floor)
    for r, f in zip(args.run, flows):
        dens = f.densities()
        print(f"IMP flow of {f.label} from {r}: levels {f.level_numbers[0]}–{f.level_numbers[-1]}, "
              f"density {100 * dens.iloc[0]:.2f} % → {100 * dens.iloc[-1]:.2f} %, "
              f"schedule {f.schedule or 'unrecorded'}")
    print()
    table = subject.eigenvalues(args.granularity, **ekw)
    if pool is not None and args.per_seed:
        for r, t in zip(args.run, table.per_seed):
            print(f"[{r}]\n")
            print(t.to_markdown())
            print()
    print(table.to_markdown())
    print()
    print(table.levels_markdown())
    controls = _controls(args.run, flows, pool is not None)
    report = None
    try:
        null = InitScaleNull(subject, seed=args.null_seed)
    except (ValueError, KeyError, TypeError) as e:
        print(f"\ninit-scale null: not available ({e}); the report below has no null model", file=sys.stderr)
    else:
        report = null_report(subject, args.granularity, controls=controls, null=null, **mkw, **ekw)
        print()
        print(report.to_markdown())
        if args.report_table:
            out = Path(args.report_table)
            out.parent.mkdir(parents=True, exist_ok=True)
            report.to_frame().to_csv(out, index=False)
            print(f"\nwrote {out}")
    if args.control:
        control = controls.get(args.control_from)
        if control is None:
            raise UsageError("--control: the control needs run directories with rewind.safetensors (and "
                             "init.safetensors for --control-from init), or flows that carry their controls")
        theta = "θ_0" if args.control_from == "init" else "the rewind weights θ_k"
        print(f"\nUntrained control ({theta} pruned by the same schedule, no training):\n")
        print(control.eigenvalues(args.granularity, **ekw).to_markdown())
        print()
        print(subject.compare(control, args.granularity, by="unit", relation="control",
                              labels=("trained IMP", control.label), **mkw, **ekw).to_markdown())
    if other is not None:
        print()
        la = f"{subject.label} [{', '.join(args.run)}]"
        lb = f"{other.label} [{', '.join(args.compare)}]"
        cmp = subject.compare(other, args.granularity, by=args.by, exclude_entry=not args.include_entry,
                              relation=args.relation, labels=(la, lb), **mkw, **ekw)
        print(cmp.to_markdown())
    fit = None
    if args.fit:
        print()
        try:
            fit = subject.critical_exponent(args.metric)
            fit.profile()  # the profile-likelihood interval of γ (or a one-sided bound), printed with the fit
            n_runs = f" ({len(flows)} runs pooled)" if pool is not None else ""
            print(f"Critical exponent (Eq. 14, {args.metric}){n_runs}:\n")
            print(fit.to_markdown())
        except (ValueError, RuntimeError) as e:
            print(f"critical-exponent fit failed: {e}", file=sys.stderr)
            rc = 1
    if args.table:
        print(f"\nwrote {flow.save_table(args.table)}")
    if args.plots:
        _flow_plots(args, flows, subject, report if report is not None else table, other, fit)
    return rc


def _flow_plots(args, flows, subject, shown, other, fit) -> None:
    from .flow import plots as flow_plots

    out = Path(args.plots)
    out.mkdir(parents=True, exist_ok=True)
    g = args.granularity
    table = getattr(shown, "trained", shown)
    written = [flow_plots.plot_M_vs_level(subject, g, out / f"M_vs_level_{g}.png", normalize=args.normalize),
               flow_plots.plot_eigenvalues(shown, out / f"eigenvalues_{g}.png"),
               flow_plots.plot_lambda_vs_level(shown, out / f"lambda_vs_level_{g}.png")]
    x_unit, y_unit = args.x_unit, args.y_unit
    if x_unit is None or y_unit is None:
        lam = table.lambdas.dropna()
        if len(lam) >= 2:
            x_unit = x_unit or str(lam.idxmax())
            y_unit = y_unit or str(lam.drop(x_unit, errors="ignore").idxmin())
    if x_unit and y_unit:
        proj, labels = list(flows), [str(r) for r in args.run]
        if other is not None:
            names = {u.name for u in other.get_units(g)}
            if x_unit in names and y_unit in names:
                extra = list(getattr(other, "flows", [other]))
                proj += extra
                labels += [str(r) for r in args.compare][:len(extra)]
        written.append(flow_plots.plot_flow_projection(proj, x_unit, y_unit, g, out / f"flow_projection_{g}.png",
                                                       labels=labels, normalize=args.normalize))
    try:
        from .flow.scaling import points_from_flows

        d, _ = points_from_flows(flows, args.metric)
        if d.size:
            written.append(flow_plots.plot_error_vs_density(flows, fit, out / "error_vs_density.png",
                                                            metric=args.metric,
                                                            labels=[str(r) for r in args.run]))
    except ValueError as e:
        print(f"error-vs-density plot skipped: {e}", file=sys.stderr)
    if fit is not None:
        written.append(flow_plots.plot_gamma_profile(fit.profile(), out / "gamma_profile.png"))
    print()
    for w in written:
        print(f"wrote {w}")


@command("lottery-rg stability", returns_status=True)
def stability_main(argv: Sequence[str] | None = None, prog: str = "lottery-rg stability") -> int:
    """The table and plot of the linear-mode-connectivity analyses of one or more runs (``lottery-rg stability``)."""
    from .stability import load_results, plot_instability, stability_table

    ap = ArgumentParser(prog=prog,
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
            raise UsageError(f"{run} holds no stability analysis (run_imp.py ... --stability_levels L ...)")
        results += [r for r in found if args.levels is None or r.level in args.levels]
    print(stability_table(results))
    if args.plot:
        print(f"\nwrote {plot_instability(results, args.plot)}")
    return 0


COMMANDS = {"flow": flow_main, "stability": stability_main}


@command("lottery-rg", returns_status=True)
def main(argv: Sequence[str] | None = None) -> int:
    """``lottery-rg COMMAND ...`` (console entry point)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print("usage: lottery-rg {flow,stability} ...\n\n"
              "  flow RUN       IMP-flow eigenvalues and classes, comparison, control, Eq. 14 fit, plots\n"
              "  stability RUN  linear-mode-connectivity results of one or more runs\n\n"
              "`lottery-rg COMMAND --help` describes each.")
        return 0
    if not argv or argv[0] not in COMMANDS:
        given = f"unknown command {argv[0]!r}" if argv else "no command given"
        print(f"lottery-rg: error: {given}: use `lottery-rg flow RUN ...` or `lottery-rg stability RUN ...` "
              f"(lottery-rg --help describes them)", file=sys.stderr)
        return 2
    return COMMANDS[argv[0]](argv[1:], prog=f"lottery-rg {argv[0]}")
