#!/usr/bin/env python
"""Find lottery tickets by iterative magnitude pruning with rewinding (IMP).

Images (timm ResNets, CIFAR ResNets and VGGs, Vision Transformers) or masked-language models (BERT), on one process or
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
Re-running the same command resumes an interrupted run, and pushes whatever did not reach
the Hub before (the script exits with status 3 while something is not pushed). A refusal is one line on stderr
and exit status 2 (``LOTTERY_RG_DEBUG=1`` shows the traceback); see :mod:`lottery_rg.errors`.
"""

import contextlib
import gc
import logging
import sys


@contextlib.contextmanager
def long_lived_objects():
    """Create objects that live as long as the program without garbage collections over them, then freeze them
    out of every later collection (:func:`gc.freeze`). torch, datasets and transformers make ~10^6 objects while
    they import (~0.8 s of collections here), and every ``Trainer.train`` starts with a full collection. The
    program's choice: lottery_rg itself leaves the collector alone."""
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        gc.enable()


with long_lived_objects():
    import datasets
    import transformers
    from transformers import TrainingArguments

    from lottery_rg import LotteryArguments, LotteryTrainer, RunDir
    from lottery_rg.errors import command, note_output_dir
    from lottery_rg.redact import RedactingFilter, redact_command
    from lottery_rg.tasks import detect_task, prepare_task
    from lottery_rg.training.arguments import DataArguments, ModelArguments
    from lottery_rg.training.arguments import parse_args as parse_args_into
    from lottery_rg.training.flags import check_training_arguments
    from lottery_rg.training.launch import hold_run_lock

logger = logging.getLogger("lottery_rg.run_imp")


def parse_args(argv=None):
    return parse_args_into((ModelArguments, DataArguments, LotteryArguments, TrainingArguments), argv)


def setup_logging() -> None:
    """lottery_rg's own logger at INFO on every process (one handler, not the root's: each process logs its mask
    digest); transformers, datasets and the HTTP libraries stay at WARNING, so a push does not print every
    request. The level lines on stdout come from the main process only."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
    handler.addFilter(RedactingFilter())  # a --hub_token (or HF_TOKEN) never reaches a log
    library = logging.getLogger("lottery_rg")
    library.handlers[:] = [handler]
    library.setLevel(logging.INFO)
    library.propagate = False
    transformers.utils.logging.set_verbosity_warning()
    datasets.utils.logging.set_verbosity_warning()
    for name in ("httpx", "httpcore", "urllib3", "huggingface_hub", "filelock", "fsspec"):
        logging.getLogger(name).setLevel(logging.WARNING)


@command("run_imp.py")  # a refusal: one line and exit status 2, no traceback (LOTTERY_RG_DEBUG=1 shows it)
def main(argv=None):
    model_args, data_args, lottery_args, training_args = parse_args(argv)
    # the flags a model of this kind cannot honour (timm: --neftune_noise_alpha, --label_names …), before any work
    task = model_args.task or detect_task(model_args.model_name_or_path, model_args.revision)
    check_training_arguments(training_args, "timm" if task == "image-classification" else "transformers")
    setup_logging()
    run = RunDir(training_args.output_dir)
    note_output_dir(run.root)
    run.check_writable()  # a file, read-only storage, a folder of other files: refused before anything is built
    # the lock first: a directory another run is writing is refused before the data and the model are built
    with hold_run_lock(run, training_args):
        with long_lived_objects():  # the model, the data and the trainer live as long as the run
            setup = prepare_task(model_args, data_args, seed=training_args.seed)
            world = training_args.world_size
            launcher = f"accelerate launch --num_processes {world}" if world > 1 else "python"  # one: no launcher
            info = {**setup.info, "command": f"{launcher} {redact_command(sys.argv)}"}
            trainer = LotteryTrainer(args=training_args, lottery_args=lottery_args, run_info=info,
                                     **setup.trainer_kwargs())
        result = trainer.run_imp()  # with --push_to_hub, also pushes the ticket (and with --push_levels every level)
    failed = getattr(trainer, "push_failures", [])
    if failed:  # the training results are on disk; running the same command again pushes what is missing
        logger.error("not pushed to the Hub: %s (run the same command again to push)", ", ".join(failed))
        sys.exit(3)
    return result


if __name__ == "__main__":
    main()
