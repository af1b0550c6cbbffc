#!/usr/bin/env python
"""Elastic Lottery Tickets: move tickets between depths and judge them against baselines.

The experiment itself is :mod:`lottery_rg.branches.experiment`; this script parses its flags::

    python examples/run_elastic.py --source resnet20_cifar --targets resnet32_cifar \\
        --ticket_levels 3 6 9 --seeds 0 1 --levels 9 --output_dir runs/elastic-20-32 \\
        --num_train_epochs 10 --per_device_train_batch_size 64 --learning_rate 0.1 \\
        --optim sgd --optim_args momentum=0.9 --weight_decay 5e-4

    python examples/run_elastic.py examples/configs/elastic_20_32.json    # the same from a file

Writes ``results.csv``, ``summary.md`` and ``elastic_accuracy_vs_density.png``; re-running skips finished work.
A refusal is one line on stderr and exit status 2 (``LOTTERY_RG_DEBUG=1`` shows the traceback).
"""

import gc
import logging

gc.disable()  # start-up without garbage collections over the ~10^6 objects torch and transformers import
try:
    from transformers import TrainingArguments

    from lottery_rg import DataArguments, LotteryArguments, RunDir
    from lottery_rg.branches.experiment import ElasticArguments, run_elastic_experiment
    from lottery_rg.errors import command, note_output_dir
    from lottery_rg.training.arguments import parse_args
finally:
    gc.freeze()  # they live as long as the program: out of every later collection's view
    gc.enable()


@command("run_elastic.py")  # a refusal: one line and exit status 2, no traceback (LOTTERY_RG_DEBUG=1 shows it)
def main(argv=None):
    ea, data_args, lottery_args, training_args = parse_args(
        (ElasticArguments, DataArguments, LotteryArguments, TrainingArguments), argv)
    note_output_dir(training_args.output_dir)
    # the experiment's folder holds one IMP run per depth and seed: a path through a file or read-only storage is
    # refused before anything is built
    RunDir(training_args.output_dir).check_writable(run=False)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("lottery_rg").setLevel(logging.INFO)
    return run_elastic_experiment(ea, data_args, lottery_args, training_args)


if __name__ == "__main__":
    main()
