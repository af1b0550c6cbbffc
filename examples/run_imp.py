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

    python examples/run_imp.py examples/configs/resnet20_digits.json          # the same from a file

Every ``TrainingArguments`` flag works. Without ``--dataset_name`` the job runs on
embedded data (scikit-learn's digits; for ``--task fill-mask``, Python's own docs).
Re-running the same command resumes an interrupted run.
"""

import logging
import sys

import datasets
import transformers
from transformers import HfArgumentParser, TrainingArguments

from lottery_rg import LotteryArguments, LotteryTrainer
from lottery_rg.arguments import DataArguments, ModelArguments
from lottery_rg.tasks import prepare_task

logger = logging.getLogger("run_imp")


def parse_args(argv=None):
    parser = HfArgumentParser((ModelArguments, DataArguments, LotteryArguments, TrainingArguments))
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(argv[0])
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(argv[0])
    return parser.parse_args_into_dataclasses(args=argv)


def main(argv=None):
    model_args, data_args, lottery_args, training_args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        level=logging.INFO if training_args.should_log else logging.WARNING)
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    logging.getLogger("lottery_rg").setLevel(logging.INFO)

    setup = prepare_task(model_args, data_args, seed=training_args.seed)
    trainer = LotteryTrainer(args=training_args, lottery_args=lottery_args, **setup.trainer_kwargs())
    trainer.task_info = setup.info
    result = trainer.run_imp()
    if training_args.push_to_hub:
        trainer.push_ticket_to_hub()
    return result


if __name__ == "__main__":
    main()
