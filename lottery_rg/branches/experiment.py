"""The elastic experiment: move IMP tickets between depths and judge them against baselines (Chen et al. 2021).

For every seed: find tickets by IMP on the source depth (or reuse a run), run IMP on each
target as the reference, transform the source tickets of the chosen levels to every target
(stretch, squeeze, or the RG-guided policy), build the baselines at the transformed
ticket's layerwise densities (random, reinit, one-shot magnitude, SNIP, GraSP), retrain
every ticket, and compare. ``examples/run_elastic.py`` is its command line.

Writes ``results.jsonl``/``results.csv`` (one row per retrained ticket), ``summary.md``
(mean ± std over seeds per method and density, and the compute ratio of ETT versus IMP
on each target) and ``elastic_accuracy_vs_density.png``. Re-running skips finished work.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PrinterCallback, TrainingArguments

from ..errors import check_field_types
from ..hub.ticket import LotteryTicket
from ..io import atomic_write_text
from ..plotting import density_axis, markdown_table, save_figure
from ..run import RunDir
from ..tasks.image import accuracy_metrics, load_image_splits, prepare_data_for_model, prepare_image_task
from ..training.arguments import DataArguments, LotteryArguments, ModelArguments, json_kwargs
from ..training.trainer import LotteryTrainer
from .baselines import baseline_ticket
from .elastic import ElasticTicket

__all__ = ["ElasticArguments", "run_elastic_experiment", "summarize", "write_report", "accuracy_table",
           "compute_table", "plot_accuracy_vs_density", "METHODS"]

logger = logging.getLogger(__name__)
METHODS = ("ett", "random", "reinit", "magnitude", "snip", "grasp", "imp")


@dataclass
class ElasticArguments:
    source: str = field(default="resnet20_cifar", metadata={"help": "Architecture IMP runs on (the source depth)."})
    targets: list[str] = field(default_factory=lambda: ["resnet32_cifar"], metadata={
        "help": "Depths the source tickets are transformed to."})
    ticket_levels: list[int] = field(default_factory=lambda: [3, 6, 9], metadata={
        "help": "Source IMP levels whose tickets are transformed (density (1-p)^level)."})
    seeds: list[int] = field(default_factory=lambda: [0], metadata={"help": "One full experiment per seed."})
    strategy: str = field(default="interpolation", metadata={
        "help": "Stretch order (interpolation, appending) or 'rg' for the RG-guided policy.",
        "choices": ["interpolation", "appending", "rg"]})
    squeeze_strategy: str = field(default="later", metadata={"help": "later, interleaved or earlier.",
                                                             "choices": ["later", "interleaved", "earlier"]})
    methods: list[str] = field(default_factory=lambda: list(METHODS), metadata={
        "help": f"Which tickets to train: {', '.join(METHODS)}."})
    snip_batches: int = field(default=4, metadata={"help": "Batches of data for SNIP and GraSP scores."})
    model_kwargs: dict | str | None = field(default=None, metadata={
        "help": "Keyword arguments of the source and target models, as JSON (e.g. '{\"channels\": [16, 32, 64, "
                "128, 128]}' for narrower VGGs); transformed tickets keep them."})

    def __post_init__(self):
        check_field_types(self)
        self.model_kwargs = json_kwargs(self.model_kwargs, "--model_kwargs")
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {METHODS}")
        if not self.targets:
            raise ValueError("name at least one --targets architecture")


def with_args(args: TrainingArguments, **changes) -> TrainingArguments:
    return dataclasses.replace(args, **changes)


def imp_run(arch: str, out: Path, seed: int, data_args, lottery_args, training_args,
            model_kwargs: dict | None = None) -> Path:
    """IMP on ``arch`` (skipped when complete): the source of tickets or the target's reference."""
    run = out / f"seed{seed}" / "imp" / arch
    if RunDir(run).is_complete(lottery_args.levels):
        return run
    setup = prepare_image_task(ModelArguments(model_name_or_path=arch, model_kwargs=model_kwargs), data_args, seed=seed)
    args = with_args(training_args, output_dir=str(run), seed=seed)
    trainer = LotteryTrainer(args=args, lottery_args=lottery_args, **setup.trainer_kwargs())
    trainer.remove_callback(PrinterCallback)  # one progress bar for the whole experiment
    trainer.run_imp()
    return run


def retrain(ticket: LotteryTicket, out: Path, data_args, training_args, seed: int, dsd) -> dict:
    """Train a ticket from its rewind weights with its mask enforced; evaluate."""
    train, test, _, collator = prepare_data_for_model(ticket.model, data_args, dsd, with_collator=True)
    args = with_args(training_args, output_dir=str(out), seed=seed, save_strategy="no", push_to_hub=False)
    trainer = LotteryTrainer(model=ticket.model, args=args, mask=ticket.mask, train_dataset=train, eval_dataset=test,
                             data_collator=collator, compute_metrics=accuracy_metrics)
    trainer.remove_callback(PrinterCallback)
    t0 = time.time()
    output = trainer.train()
    metrics = trainer.evaluate()
    return {"eval_accuracy": metrics["eval_accuracy"], "eval_loss": metrics["eval_loss"],
            "train_runtime": output.metrics.get("train_runtime", time.time() - t0), "density": ticket.density}


def imp_cost(run: Path, level: int) -> float:
    """Seconds of training IMP spent to reach ``level`` (levels 0..level)."""
    return sum(RunDir(run).level_metrics(lv).get("train_runtime") or 0.0 for lv in range(level + 1))


def snip_batches(dsd, model, data_args, seed, n, batch_size):
    """``n`` training batches (a fixed random order) for the SNIP and GraSP scores."""
    train, _, _, collator = prepare_data_for_model(model, data_args, dsd, with_collator=True)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(train), generator=g).tolist()
    batches = []
    for b in range(n):
        idx = order[b * batch_size:(b + 1) * batch_size]
        if not idx:
            break
        rows = collator([train[i] for i in idx]) if collator is not None else train[idx]
        batches.append({"pixel_values": rows["pixel_values"], "labels": rows["labels"]})
    return batches


@dataclass
class _Context:
    """What every job of one experiment shares."""

    ea: ElasticArguments
    data_args: DataArguments
    training_args: TrainingArguments  # quiet copies of the user's
    out: Path
    dsd: object  # one train/test split for every seed, depth and method


def run_elastic_experiment(ea: ElasticArguments, data_args: DataArguments, lottery_args: LotteryArguments,
                           training_args: TrainingArguments) -> str:
    """Run (or resume) the whole experiment in ``training_args.output_dir``; returns the report's text."""
    out = Path(training_args.output_dir)
    bad = [lv for lv in ea.ticket_levels if not 0 < lv <= lottery_args.levels]
    if bad:
        raise ValueError(f"--ticket_levels {bad} outside the IMP levels 1..{lottery_args.levels}")
    out.mkdir(parents=True, exist_ok=True)
    quiet = with_args(training_args, disable_tqdm=True, logging_strategy="no", report_to="none")
    ctx = _Context(ea, data_args, quiet, out, load_image_splits(data_args))
    results = out / "results.jsonl"
    done = {(r["seed"], r["target"], r["level"], r["method"]) for r in map(json.loads, results.open())} \
        if results.is_file() else set()
    jobs = [(s, t, lv, m) for s in ea.seeds for t in ea.targets for lv in ea.ticket_levels for m in ea.methods]
    bar = tqdm(total=len(jobs), desc="elastic tickets", initial=sum(j in done for j in jobs))
    for seed in ea.seeds:
        bar.set_postfix_str(f"seed {seed}: IMP runs")
        source_run, target_runs = _imp_runs(ctx, seed, lottery_args)
        for target in ea.targets:
            for level in ea.ticket_levels:
                todo = [m for m in ea.methods if (seed, target, level, m) not in done]
                for row in _transfer(ctx, seed, target, level, todo, source_run, target_runs.get(target), bar):
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    bar.update(1)
    bar.close()
    return write_report(out, ea)


def _imp_runs(ctx: _Context, seed: int, lottery_args: LotteryArguments) -> tuple[Path, dict[str, Path]]:
    """IMP on the source (its tickets) and on each target (the reference and the baselines' weights)."""
    ea = ctx.ea
    source_run = imp_run(ea.source, ctx.out, seed, ctx.data_args, lottery_args, ctx.training_args, ea.model_kwargs)
    needs_target = any(m in ea.methods for m in ("imp", "random", "magnitude", "snip", "grasp"))
    targets = {t: imp_run(t, ctx.out, seed, ctx.data_args, lottery_args, ctx.training_args, ea.model_kwargs)
               for t in ea.targets} if needs_target else {}
    return source_run, targets


def _transfer(ctx: _Context, seed: int, target: str, level: int, methods: list[str], source_run: Path,
              target_run: Path | None, bar):
    """Transform the source ticket of ``level`` to ``target``, then one result row per method (yielded)."""
    if not methods:
        return
    ea = ctx.ea
    source_ticket = LotteryTicket.from_run(source_run, level=level)
    et = ElasticTicket(source_ticket)
    t0 = time.time()
    ett = et.to(target, strategy=ea.strategy, squeeze_strategy=ea.squeeze_strategy)
    transform_seconds = time.time() - t0
    dense = LotteryTicket.from_run(target_run, level=0).model if target_run is not None else None  # target's θ_k
    for method in methods:
        bar.set_postfix_str(f"seed {seed} {target} level {level}: {method}")
        row = {"seed": seed, "source": ea.source, "target": target, "level": level, "method": method,
               "source_density": source_ticket.density, "strategy": ea.strategy,
               "mapping": {str(k): v for k, v in et.last_result.mapping.items()}}
        if method == "imp":
            rec = RunDir(target_run).record(level)
            row.update(density=rec["density"], eval_accuracy=rec["metrics"]["eval_accuracy"],
                       eval_loss=rec["metrics"]["eval_loss"], imp_seconds=imp_cost(target_run, level))
            yield row
            continue
        ticket = ett if method == "ett" else _baseline(ctx, method, ett, dense, seed)
        run_dir = ctx.out / f"seed{seed}" / "retrain" / target / f"level{level}" / method
        row.update(retrain(ticket, run_dir, ctx.data_args, ctx.training_args, seed, ctx.dsd))
        if method == "ett":
            row.update(transform_seconds=transform_seconds, source_imp_seconds=imp_cost(source_run, level))
        yield row


def _baseline(ctx: _Context, method: str, ett: LotteryTicket, dense, seed: int) -> LotteryTicket:
    """A baseline ticket at the transformed ticket's exact layerwise densities, on the target's own weights."""
    if dense is None:
        raise ValueError(f"baseline {method} needs the target's IMP run (add 'imp')")
    batches = snip_batches(ctx.dsd, dense, ctx.data_args, seed, ctx.ea.snip_batches,
                           ctx.training_args.per_device_train_batch_size) if method in ("snip", "grasp") else None
    return baseline_ticket(method, ett, dense, batches=batches, seed=seed)


def _mean_sd(r) -> str:
    sd = "" if r["n"] < 2 or r["sd"] != r["sd"] else f" ± {100 * r['sd']:.1f}"
    return f"{100 * r['acc']:.1f}{sd}"


def accuracy_table(df, target: str, methods: list[str]) -> str:
    """Accuracy (%) per level and method for one target, mean ± std over seeds, and ETT's margin."""
    agg = _aggregate(df)
    sub = agg[agg["target"] == target]
    rows = []
    for level in sorted(set(sub["level"])):
        row = sub[sub["level"] == level].set_index("method")
        cells = [_mean_sd(row.loc[m]) if m in row.index else "" for m in methods]
        baselines = [row.loc[m, "acc"] for m in methods if m in row.index and m not in ("ett", "imp")]
        dens = row.loc["ett", "density"] if "ett" in row.index else row["density"].iloc[0]
        gap = f"{100 * (row.loc['ett', 'acc'] - max(baselines)):+.1f}" if "ett" in row.index and baselines else ""
        rows.append([level, f"{100 * dens:.1f}%", *cells, gap])
    return markdown_table(["level", "density (ETT)", *methods, "ETT − best baseline"], rows)


def compute_table(df, n_targets: int) -> str | None:
    """Seconds of training: ETT (source IMP shared by the targets + transform + one retraining) vs IMP on target."""
    ett, imp = df[df["method"] == "ett"], df[df["method"] == "imp"]
    rows = []
    for (target, level), g in ett.groupby(["target", "level"]):
        i = imp[(imp["target"] == target) & (imp["level"] == level)]
        if not len(i):
            continue
        given = (g["transform_seconds"] + g["train_runtime"]).mean()
        ett_s = given + (g["source_imp_seconds"] / n_targets).mean()
        imp_s = i["imp_seconds"].mean()
        rows.append([target, level, f"{imp_s:.0f}", f"{ett_s:.0f}", f"{imp_s / ett_s:.2f}", f"{given:.0f}",
                     f"{imp_s / given:.1f}"])
    if not rows:
        return None
    return markdown_table(["target", "level", "IMP on target", "ETT", "IMP / ETT", "ETT given a ticket",
                           "IMP / ETT given a ticket"], rows)


def _aggregate(df):
    return df.groupby(["target", "level", "method"]).agg(
        acc=("eval_accuracy", "mean"), sd=("eval_accuracy", "std"), density=("density", "mean"),
        n=("seed", "nunique")).reset_index()


def plot_accuracy_vs_density(df, path: Path | None):
    """One panel per target: accuracy against density for every method (error bars: std over seeds)."""
    from matplotlib.figure import Figure

    agg, methods = _aggregate(df), [m for m in METHODS if m in set(df["method"])]
    targets = list(dict.fromkeys(df["target"]))
    fig = Figure(figsize=(6 * len(targets), 4.2))
    for ax, target in zip(fig.subplots(1, len(targets), squeeze=False)[0], targets):
        sub = agg[agg["target"] == target]
        for k, m in enumerate(methods):
            r = sub[sub["method"] == m].sort_values("density")
            if len(r):
                ax.errorbar(100 * r["density"], 100 * r["acc"], yerr=100 * r["sd"].fillna(0), marker="o",
                            capsize=3, label=m.upper() if m in ("ett", "imp", "snip") else m, color=f"C{k}")
        density_axis(ax, 100 * sub["density"])
        ax.set_xlabel("density of prunable weights (%)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{df[df['target'] == target]['source'].iloc[0]} → {target}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def summarize(df, out: Path, n_targets: int) -> str:
    """Markdown tables (accuracy per method and density, compute ratio) and the accuracy-vs-density plot."""
    methods = [m for m in METHODS if m in set(df["method"])]
    lines = ["## Elastic tickets: accuracy (%) after retraining, mean ± std over seeds", ""]
    for target in dict.fromkeys(df["target"]):
        source = df[df["target"] == target]["source"].iloc[0]
        lines += [f"### {source} → {target}", "", accuracy_table(df, target, methods), ""]
    compute = compute_table(df, n_targets)
    if compute:
        lines += ["### Compute: ETT versus IMP on the target (seconds of training, mean over seeds)", "",
                  f"ETT = the source IMP run up to that level, shared by the {n_targets} target(s), + transform + "
                  "one retraining; 'given a ticket' leaves out the source IMP run (it already exists).", "",
                  compute, ""]
    plot_accuracy_vs_density(df, out / "elastic_accuracy_vs_density.png")
    lines.append("![accuracy vs density](elastic_accuracy_vs_density.png)")
    return "\n".join(lines)


def write_report(out: Path, ea: ElasticArguments) -> str:
    import pandas as pd

    rows = [json.loads(line) for line in (out / "results.jsonl").open()]
    df = pd.DataFrame(rows)
    df.drop(columns=["mapping"]).to_csv(out / "results.csv", index=False)
    text = summarize(df, out, n_targets=len(ea.targets))
    atomic_write_text(out / "summary.md", text + "\n")
    logger.info("%s", text)
    return text
