#!/usr/bin/env python
"""Find lottery tickets by iterative magnitude pruning with rewinding (IMP).

Images (timm ResNets, CIFAR ResNets) or masked-language models (BERT), on one process or
many::

    accelerate launch examples/run_imp.py \\
        --model_name_or_path resnet20_cifar --output_dir runs/resnet20-digits \\
        --levels 8 --prune_fraction 0.2 --rewind_steps 20 --pruning global \\
        --num_train_epochs 10 --per_device_train_batch_size 64 --learning_rate 0.1 \\
        --optim sgd --optim_args momentum=0.9 --weight_decay 5e-4

    accelerate launch --multi_gpu --num_processes 2 examples/run_imp.py ...   # two processes (gloo on CPU)

    python examples/run_imp.py examples/configs/resnet20_digits.json --levels 3   # a config file, flags override it

Every ``TrainingArguments`` flag works. Without ``--dataset_name`` the job runs on
embedded data (scikit-learn's digits; for ``--task fill-mask``, Python's own docs).
Re-running the same command resumes an interrupted run.
"""

import logging
import shlex
import sys

import datasets
import transformers
from transformers import TrainingArguments

from lottery_rg import LotteryArguments, LotteryTrainer
from lottery_rg.tasks import prepare_task
from lottery_rg.training.arguments import DataArguments, ModelArguments
from lottery_rg.training.arguments import parse_args as parse_args_into

logger = logging.getLogger("run_imp")


def parse_args(argv=None):
    return parse_args_into((ModelArguments, DataArguments, LotteryArguments, TrainingArguments), argv)


def main(argv=None):
    model_args, data_args, lottery_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    logging.getLogger("lottery_rg").setLevel(logging.INFO)

    setup = prepare_task(model_args, data_args, seed=training_args.seed)
    world = training_args.world_size
    launcher = f"accelerate launch --num_processes {world}" if world > 1 else "accelerate launch"
    info = {**setup.info, "command": " ".join([launcher, *map(shlex.quote, sys.argv)])}
    trainer = LotteryTrainer(args=training_args, lottery_args=lottery_args, run_info=info, **setup.trainer_kwargs())
    return trainer.run_imp()  # with --push_to_hub, also pushes the ticket (and with --push_levels every level)


if __name__ == "__main__":
    main()
