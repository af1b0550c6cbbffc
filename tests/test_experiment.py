"""The elastic experiment's report: tables and plot from result rows (no training)."""

import json

import pandas as pd
import pytest
from transformers import TrainingArguments

from lottery_rg import DataArguments, LotteryArguments
from lottery_rg.branches.experiment import (
    ElasticArguments,
    accuracy_table,
    compute_table,
    run_elastic_experiment,
    write_report,
)


def rows():
    out = []
    for seed, (ett, rnd, snip, imp) in enumerate([(0.99, 0.95, 0.60, 0.98), (0.97, 0.93, 0.70, 1.00)]):
        base = {"seed": seed, "source": "resnet20_cifar", "target": "resnet32_cifar", "level": 6, "mapping": {}}
        out += [
            {**base, "method": "ett", "eval_accuracy": ett, "density": 0.262, "train_runtime": 10.0,
             "transform_seconds": 1.0, "source_imp_seconds": 100.0},
            {**base, "method": "random", "eval_accuracy": rnd, "density": 0.262},
            {**base, "method": "snip", "eval_accuracy": snip, "density": 0.262},
            {**base, "method": "imp", "eval_accuracy": imp, "density": 0.262, "imp_seconds": 150.0},
        ]
    return out


def test_accuracy_table_reports_mean_std_and_the_margin_over_the_best_baseline():
    table = accuracy_table(pd.DataFrame(rows()), "resnet32_cifar", ["ett", "random", "snip", "imp"])
    header, _, line = table.splitlines()
    assert header == "| level | density (ETT) | ett | random | snip | imp | ETT − best baseline |"
    # ett 98.0 ± 1.4 (two seeds), best baseline random 94.0: +4.0 points
    assert line == "| 6 | 26.2% | 98.0 ± 1.4 | 94.0 ± 1.4 | 65.0 ± 7.1 | 99.0 ± 1.4 | +4.0 |"


def test_compute_table_counts_the_source_run_once_per_target():
    table = compute_table(pd.DataFrame(rows()), n_targets=2)
    line = [c.strip() for c in table.splitlines()[2].strip("|").split("|")]
    # ETT given a ticket: 1 + 10 = 11 s; with half of the 100 s source run: 61 s; IMP on target 150 s
    assert line == ["resnet32_cifar", "6", "150", "61", "2.46", "11", "13.6"]


def test_write_report_writes_csv_markdown_and_plot(tmp_path):
    with (tmp_path / "results.jsonl").open("w") as f:
        for r in rows():
            f.write(json.dumps(r) + "\n")
    text = write_report(tmp_path, ElasticArguments(targets=["resnet32_cifar"]))
    assert "### resnet20_cifar → resnet32_cifar" in text and "IMP / ETT" in text
    assert (tmp_path / "summary.md").read_text().strip() == text.strip()
    assert len(pd.read_csv(tmp_path / "results.csv")) == 8
    assert (tmp_path / "elastic_accuracy_vs_density.png").stat().st_size > 1000


def test_bad_experiment_settings_fail_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="unknown methods"):
        ElasticArguments(methods=["ett", "lottery"])
    args = TrainingArguments(str(tmp_path / "out"), use_cpu=True, report_to="none")
    with pytest.raises(ValueError, match=r"--ticket_levels \[12\] outside the IMP levels 1..3"):
        run_elastic_experiment(ElasticArguments(ticket_levels=[12]), DataArguments(), LotteryArguments(levels=3), args)
    assert not (tmp_path / "out").exists()
