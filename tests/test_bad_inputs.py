"""A catalogue of bad inputs: each is refused with one line on stderr naming the culprit, exit status 2 (or the
documented status), before the work starts, and nothing is written (the tree is compared before and after).

Most cases run in this process (``main(argv)`` with stderr captured); a few run the real scripts in a subprocess.
``LOTTERY_RG_DEBUG=1`` brings the traceback back.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import importlib.util
import io
import json
import os
import pickle
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from utils import PYTHON, ROOT, subprocess_env

from lottery_rg import DataArguments, LotteryArguments, LotteryTrainer, ModelArguments, RunDir
from lottery_rg.cli import main as cli_main
from lottery_rg.errors import UsageError, command, describe
from lottery_rg.io import read_json
from lottery_rg.pruning.settings import LotterySettings


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bad_inputs_{name}", ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    gc.unfreeze()  # the scripts freeze their long-lived objects (the program's choice): not this test process's
    return module


@pytest.fixture(scope="module")
def run_imp():
    return _load("run_imp")


@pytest.fixture(scope="module")
def run_elastic():
    return _load("run_elastic")


def tree(path: Path) -> dict[str, bytes | None]:
    """Every file (with its bytes) and folder under ``path``; {} when it does not exist."""
    if not path.exists():
        return {}
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in sorted(path.rglob("*"))}


def call(main, argv) -> tuple[int, list[str]]:
    """Run an entry point in this process: its exit status and the non-empty lines it wrote on stderr."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
            code = 0 if code is None or not isinstance(code, int) else code
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        finally:
            gc.unfreeze()  # run_imp.py freezes the objects of its run; the later tests expect a collector as it was
    return code, [line for line in err.getvalue().splitlines() if line.strip()]


def assert_one_line(code, lines, expected, status=2):
    assert code == status, (code, lines)
    assert len(lines) == 1, lines
    assert "Traceback" not in lines[0] and "error:" in lines[0], lines
    for part in ([expected] if isinstance(expected, str) else expected):
        assert part in lines[0], (part, lines[0])


BASE = ["--max_train_samples", "64", "--max_eval_samples", "32", "--image_size", "16", "--levels", "1",
        "--num_train_epochs", "1", "--per_device_train_batch_size", "32", "--optim", "sgd", "--report_to", "none",
        "--disable_tqdm", "true", "--save_strategy", "no"]


@pytest.fixture
def no_work(monkeypatch):
    """The builders of data and model watched: a refusal before the work never gets there."""
    import lottery_rg.tasks
    import lottery_rg.tasks.mlm

    built = []

    def watch(module, name):
        real = getattr(module, name)

        def watched(*a, **kw):
            built.append(name)
            return real(*a, **kw)

        monkeypatch.setattr(module, name, watched)

    watch(lottery_rg.tasks, "prepare_image_task")
    watch(lottery_rg.tasks.mlm, "prepare_mlm_task")
    return built


# ------------------------------------------------------------------------------- flags of examples/run_imp.py
FLAG_CASES = [
    (["--num_train_epochs", "0"], "--num_train_epochs 0"),
    (["--num_train_epochs", "0", "--rewind_steps", "0"], "--num_train_epochs 0"),
    (["--num_train_epochs", "-1"], "--num_train_epochs -1"),
    (["--optim_args", "momentum=abc"], ["--optim_args", "momentum=abc", "not a number"]),
    (["--optim_args", "momentum"], ["--optim_args", "not key=value"]),
    (["--optim", "adamw_torch", "--optim_args", "momentum=0.9"], ["--optim adamw_torch does not read momentum"]),
    (["--optim_args", "foo=1"], "does not read foo"),
    (["--optim", "no_such_optimizer"], "--optim"),
    (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size 0"),
    (["--per_device_eval_batch_size", "0"], "--per_device_eval_batch_size 0"),
    (["--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps 0"),
    (["--learning_rate", "-1"], "--learning_rate -1"),
    (["--learning_rate", "nan"], "--learning_rate nan"),
    (["--learning_rate", "abc"], "--learning_rate"),
    (["--weight_decay", "inf"], "--weight_decay inf"),
    (["--fp16"], "--fp16"),
    (["--fp16_full_eval"], "--fp16_full_eval"),
    (["--resume_from_checkpoint", "/nonexistent"], "--resume_from_checkpoint /nonexistent"),
    (["--load_best_model_at_end", "--eval_strategy", "epoch", "--save_strategy", "epoch"],
     "--load_best_model_at_end"),
    (["--auto_find_batch_size"], "--auto_find_batch_size"),
    (["--save_only_model"], "--save_only_model"),
    (["--hub_strategy", "checkpoint"], "--hub_strategy checkpoint"),
    (["--hub_revision", "v1"], "--hub_revision v1"),
    (["--levels", "0"], "--levels"),
    (["--levels", "three"], "--levels"),
    (["--prune_fraction", "1.5"], "--prune_fraction"),
    (["--prune_fraction", "0"], "--prune_fraction"),
    (["--pruning", "sideways"], "--pruning"),
    (["--schedule", "cubic"], "--schedule"),
    (["--rewind_steps", "-3"], "--rewind_steps"),
    (["--prune_include", "("], "--prune_include"),
    (["--test_fraction", "1.5"], "--test_fraction"),
    (["--mlm_probability", "0"], "--mlm_probability"),
    (["--task", "translation"], "--task"),
    (["--model_name_or_path", "no_such_model_xyz"], "no_such_model_xyz"),
    (["--model_kwargs", "{not json"], "--model_kwargs"),
    (["--bogus_flag", "3"], "--bogus_flag"),
    (["--neftune_noise_alpha", "5"], "--neftune_noise_alpha"),
    (["--use_liger_kernel"], "--use_liger_kernel"),
    (["--label_names", "label"], "--label_names"),
    (["--activation_checkpointing", "--activation_checkpointing_kwargs", '{"use_reentrant": false}'],
     "--activation_checkpointing_kwargs"),
    (["--max_steps", "0", "--num_train_epochs", "0"], "--num_train_epochs 0"),
    (["--split_seed", "-1"], "--split_seed -1"),
    (["--train_file", "/nonexistent.txt"], "--train_file /nonexistent.txt: no such file"),
    (["--dataloader_num_workers", "-1"], "--dataloader_num_workers -1"),
    (["--report_to", "nosuchtracker"], "--report_to nosuchtracker"),
    (["--lr_scheduler_kwargs", "{bad"], "--lr_scheduler_kwargs {bad: not a JSON object"),
    (["--image_size", "0"], "--image_size 0"),
    (["--max_train_samples", "0"], "--max_train_samples 0"),
    (["--stability_levels", "5"], "--stability_levels [5]"),
    (["--stability_points", "1"], "--stability_points"),
    (["--seed", "x"], "--seed"),
    (["--lr_scheduler_type", "wobbly"], "--lr_scheduler_type"),
]


@pytest.mark.parametrize("extra, expected", FLAG_CASES, ids=[" ".join(c[0])[:40] for c in FLAG_CASES])
def test_a_bad_flag_is_one_line_before_any_work(run_imp, no_work, tmp_path, extra, expected):
    out = tmp_path / "run"
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(out), *extra])
    assert_one_line(code, lines, expected)
    assert not no_work, "the data and the model were built before the refusal"
    assert tree(tmp_path) == {}


def test_a_rewind_point_beyond_training_is_refused_naming_both_and_writes_nothing(run_imp, tmp_path):
    """The steps per level are known once the data set is: refused then, before anything is written."""
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path / "run"), "--rewind_steps", "1000"])
    assert_one_line(code, lines, ["--rewind_steps 1000", "2 optimizer steps", "below 2"])
    assert tree(tmp_path) == {}


PREPARATION_CASES = [
    (["--dataset_name", "{tmp}/nowhere"], "--dataset_name"),
    (["--dataset_name", "{tmp}/nowhere", "--model_name_or_path", "embedded-bert"], "--dataset_name"),
    (["--model_kwargs", '{{"depth": 3}}'], ["--model_kwargs", "depth"]),
    (["--model_kwargs", '{{"nonsense": 3}}'], ["--model_kwargs", "nonsense"]),
    (["--prune_include", "nomatch_xyz"], "nomatch_xyz"),
]


@pytest.mark.parametrize("extra, expected", PREPARATION_CASES, ids=[" ".join(c[0]) for c in PREPARATION_CASES])
def test_a_refusal_while_preparing_the_task_writes_nothing(run_imp, tmp_path, extra, expected):
    """Found while the data or the model is prepared (the lock is held by then): still one line, nothing written."""
    extra = [a.format(tmp=tmp_path) for a in extra]
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path / "run"), *extra])
    assert_one_line(code, lines, expected)
    assert tree(tmp_path) == {}


# ------------------------------------------------------------------------------- config files
CONFIG_CASES = [
    ("bad.json", "{levels: 3", "cannot read the config file"),
    ("list.json", "[1, 2]", "must hold a mapping"),
    ("unknown.json", json.dumps({"levles": 3}), "unknown arguments ['levles']"),
    ("type.json", json.dumps({"rewind_steps": "three"}), "--rewind_steps"),
    ("type2.json", json.dumps({"prune_fraction": [0.2]}), "prune_fraction"),
    ("bad.yaml", "levels: [3\n", "cannot read the config file"),
    ("missing.json", None, "cannot read the config file"),
    ("binary.json", pickle.dumps({"levels": 3}), "cannot read the config file"),
]


@pytest.mark.parametrize("name, content, expected", CONFIG_CASES, ids=[c[0] for c in CONFIG_CASES])
def test_a_bad_config_file_is_one_line_naming_it(run_imp, no_work, tmp_path, name, content, expected):
    config = tmp_path / "configs" / name
    config.parent.mkdir()
    if isinstance(content, bytes):
        config.write_bytes(content)
    elif content is not None:
        config.write_text(content)
    before = tree(tmp_path)
    code, lines = call(run_imp.main, [str(config), *BASE, "--output_dir", str(tmp_path / "run")])
    assert_one_line(code, lines, expected)
    assert not no_work
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------- the output directory
def test_output_dir_that_is_a_file(run_imp, no_work, tmp_path):
    (tmp_path / "f").write_text("x")
    before = tree(tmp_path)
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path / "f")])
    assert_one_line(code, lines, ["--output_dir", "is a file"])
    assert not no_work and tree(tmp_path) == before


def test_output_dir_under_a_file(run_imp, no_work, tmp_path):
    (tmp_path / "f").write_text("x")
    before = tree(tmp_path)
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path / "f" / "run")])
    assert_one_line(code, lines, ["--output_dir", "is a file"])
    assert not no_work and tree(tmp_path) == before


def test_output_dir_of_other_files(run_imp, no_work, tmp_path):
    (tmp_path / "thesis.tex").write_text("x")
    before = tree(tmp_path)
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path)])
    assert_one_line(code, lines, ["thesis.tex", "not a lottery_rg run"])
    assert not no_work and tree(tmp_path) == before


def test_output_dir_without_write_permission_is_named(run_imp, no_work, tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == tmp_path else real(p, mode, **kw))
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(tmp_path / "run")])
    assert_one_line(code, lines, ["--output_dir", "no permission"])
    assert not no_work and tree(tmp_path) == {}


def test_a_busy_directory_is_refused_before_data_and_model(run_imp, no_work, tmp_path):
    run = tmp_path / "run"
    code = ("import sys, time; from lottery_rg import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([PYTHON, "-c", code, str(run)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        before = tree(tmp_path)
        status, lines = call(run_imp.main, [*BASE, "--output_dir", str(run)])
        assert_one_line(status, lines, [f"process {holder.pid}", "one writer"])
        assert not no_work, "the data and the model were built before the lock was asked for"
        assert tree(tmp_path) == before
    finally:
        holder.kill()
        holder.wait()


# ------------------------------------------------------------------------------- a finished run, resumed wrongly
@pytest.fixture(scope="module")
def finished(run_imp, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(out)])
    assert code == 0, lines
    assert RunDir(out).is_complete(1)
    return out


@pytest.fixture
def finished_copy(finished, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(finished, copy)
    return copy


RESUME_CASES = [
    (["--learning_rate", "0.5"], "--learning_rate: 5e-05 recorded, 0.5 now"),
    (["--seed", "7"], "--seed: 42 recorded, 7 now"),
    (["--image_size", "8"], "other data"),
    (["--prune_fraction", "0.5"], "prune_fraction"),
    (["--model_name_or_path", "resnet14_cifar"], "different model settings"),
]


@pytest.mark.parametrize("extra, expected", RESUME_CASES, ids=[" ".join(c[0]) for c in RESUME_CASES])
def test_a_changed_setting_on_a_finished_run_is_refused_and_writes_nothing(run_imp, finished_copy, extra,
                                                                            expected):
    before = tree(finished_copy)
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(finished_copy), *extra])
    assert_one_line(code, lines, expected)
    assert tree(finished_copy) == before


def test_a_refused_resume_does_not_record_more_levels(run_imp, finished_copy):
    """A damaged level refuses the resume; lottery_config.json still says 1 level (before: rewritten to 2)."""
    mask = next(finished_copy.glob("level_01/mask*"))
    mask.write_bytes(mask.read_bytes()[:-7] + b"garbage")
    before = tree(finished_copy)
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(finished_copy), "--levels", "2"])
    assert_one_line(code, lines, "level_01")
    assert tree(finished_copy) == before
    assert read_json(finished_copy / "lottery_config.json")["levels"] == 1


def test_a_run_without_run_info_names_what_is_missing(finished_copy):
    """Must 8: a LotteryTrainer built in Python, without run_info, on a run made by run_imp.py."""
    from utils import training_args

    from lottery_rg.tasks import prepare_task

    setup = prepare_task(ModelArguments(), DataArguments(max_train_samples=64, max_eval_samples=32, image_size=16))
    trainer = LotteryTrainer(args=training_args(finished_copy, seed=42, learning_rate=5e-5, save_strategy="no"),
                             lottery_args=LotteryArguments(levels=1), **setup.trainer_kwargs())
    before = tree(finished_copy)
    with pytest.raises(UsageError) as e:
        trainer.run_imp()
    message = str(e.value)
    assert "\n" not in message and "run_info" in message and "prepare_task" in message
    assert "--image_size" not in message
    assert tree(finished_copy) == before


def test_a_corrected_setting_is_accepted_until_a_first_level_is_complete(tmp_path):
    """A run stopped before its first level was complete may be re-run with corrected settings (nothing is there
    to protect); the unfinished work of the old settings is discarded. Once a level is complete, it may not."""
    from transformers import TrainerCallback
    from utils import make_trainer

    class Crash(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            raise RuntimeError("crashed in the first level")

    out = tmp_path / "run"
    with pytest.raises(RuntimeError, match="crashed"):
        make_trainer(out, {"levels": 1}, callbacks=[Crash()], learning_rate=0.5).run_imp()
    assert RunDir(out).config.is_file() and not RunDir(out).level_numbers()
    make_trainer(out, {"levels": 1}, learning_rate=0.05).run_imp()
    assert RunDir(out).is_complete(1)
    assert read_json(out / "lottery_config.json")["settings"]["training"]["learning_rate"] == 0.05
    with pytest.raises(UsageError, match="--learning_rate: 0.05 recorded, 0.5 now"):
        make_trainer(out, {"levels": 2}, learning_rate=0.5).run_imp()
    assert read_json(out / "lottery_config.json")["levels"] == 1


# ------------------------------------------------------------------------------- the lottery-rg command
def test_lottery_rg_flow_on_a_pickle_named_flow_json(tmp_path):
    bad = tmp_path / "flow.json"
    bad.write_bytes(pickle.dumps({"units": [1, 2, 3]}))
    code, lines = call(cli_main, ["flow", str(bad)])
    assert_one_line(code, lines, [str(bad), "not a JSON text file"])


CLI_CASES = [
    ([], "no command given"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["flow"], "the following arguments are required"),
    (["flow", "{tmp}/nowhere"], "nowhere"),
    (["flow", "{tmp}/empty"], "empty"),
    (["flow", "{finished}", "--granularity", "atom"], "--granularity"),
    (["flow", "{finished}", "--window", "x"], "--window"),
    (["flow", "{finished}", "--bogus"], "--bogus"),
    (["stability", "{tmp}/nowhere"], "nowhere"),
    (["stability"], "the following arguments are required"),
]


@pytest.mark.parametrize("argv, expected", CLI_CASES, ids=[" ".join(c[0]) or "(none)" for c in CLI_CASES])
def test_lottery_rg_refusals_are_one_line(finished, tmp_path, argv, expected):
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, finished=finished) for a in argv]
    before = tree(finished), tree(tmp_path)
    code, lines = call(cli_main, argv)
    assert_one_line(code, lines, expected)
    assert (tree(finished), tree(tmp_path)) == before


# ------------------------------------------------------------------------------- examples/run_elastic.py
ELASTIC_CASES = [
    (["--methods", "teleport"], "teleport"),
    (["--output_dir", "{file}"], "is a file"),
    (["--levels", "0"], "--levels"),
    (["--model_kwargs", "[1"], "--model_kwargs"),
]


@pytest.mark.parametrize("extra, expected", ELASTIC_CASES, ids=[" ".join(c[0]) for c in ELASTIC_CASES])
def test_run_elastic_refusals_are_one_line(run_elastic, tmp_path, extra, expected):
    (tmp_path / "f").write_text("x")
    extra = [a.format(file=tmp_path / "f") for a in extra]
    before = tree(tmp_path)
    code, lines = call(run_elastic.main, ["--output_dir", str(tmp_path / "exp"), "--report_to", "none", *extra])
    assert_one_line(code, lines, expected)
    assert tree(tmp_path) == before


# ------------------------------------------------------------------------------- Python API calls
API_CASES = [
    (lambda: LotteryArguments(levels="3"), "LotteryArguments(levels='3')"),
    (lambda: LotteryArguments(prune_fraction="0.2"), "prune_fraction"),
    (lambda: LotteryArguments(levels=0), "--levels"),
    (lambda: LotteryArguments(prune_include="conv"), "prune_include"),
    (lambda: LotteryArguments(stability_levels=[1.5]), "stability_levels"),
    (lambda: LotterySettings(prune_fraction="0.2"), "prune_fraction"),
    (lambda: DataArguments(test_fraction=2.0), "--test_fraction"),
    (lambda: DataArguments(image_size="16"), "image_size"),
    (lambda: ModelArguments(task="translation"), "--task"),
    (lambda: ModelArguments(model_kwargs="{oops"), "--model_kwargs"),
]


@pytest.mark.parametrize("make, expected", API_CASES, ids=[c[1] for c in API_CASES])
def test_a_bad_python_call_names_the_field(make, expected):
    with pytest.raises(ValueError) as e:
        make()
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize("flag, value", [("resume_from_checkpoint", "/nonexistent"), ("fp16", True),
                                         ("neftune_noise_alpha", 5.0), ("load_best_model_at_end", True)])
def test_a_lottery_trainer_built_in_python_refuses_what_it_would_ignore(tmp_path, flag, value):
    from utils import make_trainer

    extra = {"eval_strategy": "epoch", "save_strategy": "epoch"} if flag == "load_best_model_at_end" else {}
    with pytest.raises(UsageError, match=f"--{flag}"):
        make_trainer(tmp_path / "run", **{flag: value, **extra})
    assert tree(tmp_path) == {}


def test_a_ticket_from_a_folder_that_is_not_a_run(tmp_path):
    from lottery_rg import LotteryTicket

    (tmp_path / "empty").mkdir()
    with pytest.raises((ValueError, OSError)) as e:
        LotteryTicket.from_run(tmp_path / "empty")
    assert "empty" in str(e.value) and "\n" not in str(e.value)


def test_read_json_names_the_path_of_a_binary_file(tmp_path):
    path = tmp_path / "flow.json"
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(ValueError, match=f"{path}.*not a JSON text file"):
        read_json(path)


def test_a_ticket_from_a_folder_that_is_not_one(tmp_path):
    from lottery_rg import LotteryTicket

    (tmp_path / "ticket").mkdir()
    with pytest.raises((ValueError, OSError)) as e:
        LotteryTicket.from_pretrained(str(tmp_path / "ticket"))
    assert "ticket" in str(e.value)


# ------------------------------------------------------------------------------- operating-system errors, named
@pytest.mark.parametrize("exc, status, expected", [
    (OSError(errno.ENOSPC, "No space left on device", "/data/run/level_03/model.safetensors"), 1,
     ["no space left", "level_03/model.safetensors", "free some space"]),
    (RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 64; basic_ios::clear: iostream error"),
     1, ["the disk is most likely full", "free some space"]),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598"), 1,
     ["the disk is most likely full"]),
    (OSError(errno.EROFS, "Read-only file system", "/ro/run/.lottery_rg.lock"), 1, ["/ro/run", "read-only"]),
    (FileExistsError(errno.EEXIST, "File exists", "/data/run"), 2, ["/data/run", "already exists as a file"]),
    (PermissionError(errno.EACCES, "Permission denied", "/data/run"), 1, ["/data/run", "no permission"]),
    (KeyboardInterrupt(), 130, ["interrupted", "run the same command again"]),
    (UsageError("--levels must be at least 1"), 2, ["--levels must be at least 1"]),
    (ValueError("line one\nline two"), 2, ["line one; line two"]),
    (ZeroDivisionError("division by zero"), 1, ["ZeroDivisionError", "LOTTERY_RG_DEBUG=1"]),
])
def test_the_one_handler_names_each_error(exc, status, expected):
    @command("prog")
    def main(argv):
        raise exc

    code, lines = call(main, [])
    assert_one_line(code, lines, expected, status=status)
    assert describe(exc)[0] == status


def test_debug_switch_lets_the_traceback_through(monkeypatch):
    @command("prog")
    def main(argv):
        raise ValueError("bad")

    monkeypatch.setenv("LOTTERY_RG_DEBUG", "1")
    with pytest.raises(ValueError, match="bad"):
        main([])


# ------------------------------------------------------------------------------- real processes
def _script(args, env=None, timeout=300):
    return subprocess.run([PYTHON, *args], capture_output=True, text=True, env={**subprocess_env(), **(env or {})},
                          timeout=timeout, cwd=ROOT)


def test_the_script_in_a_real_process_exits_2_with_one_line(tmp_path):
    start = time.monotonic()
    p = _script(["examples/run_imp.py", *BASE, "--output_dir", str(tmp_path / "run"), "--per_device_train_batch_size",
                 "0"])
    assert p.returncode == 2, p.stderr
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("run_imp.py: error: --per_device_train_batch_size 0"), lines
    assert tree(tmp_path) == {}
    assert time.monotonic() - start >= 0  # (no wall-clock claim: the machine is shared)


def test_the_debug_switch_in_a_real_process(tmp_path):
    p = _script(["examples/run_imp.py", *BASE, "--output_dir", str(tmp_path / "run"), "--levels", "0"],
                env={"LOTTERY_RG_DEBUG": "1"})
    assert p.returncode != 0 and "Traceback" in p.stderr and "--levels" in p.stderr


def test_lottery_rg_in_a_real_process(tmp_path):
    p = _script(["-m", "lottery_rg", "flow", str(tmp_path / "nowhere")])
    lines = [line for line in p.stderr.splitlines() if line.strip()]
    assert p.returncode == 2 and len(lines) == 1 and "nowhere" in lines[0], p.stderr


def _read_only(path: Path) -> list[str] | None:
    """A command prefix that runs under a read-only bind mount of ``path`` (a user namespace), or None."""
    if not shutil.which("unshare"):
        return None
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind -o ro {path} {path} && touch {path}/x"],
                           capture_output=True, text=True)
    if "Read-only" not in probe.stderr:
        return None
    return ["unshare", "-rm", "sh", "-c", f'mount --bind -o ro {path} {path} && exec "$@"', "sh"]


def _under_read_only(run: Path, tmp_path: Path):
    prefix = _read_only(run)
    if prefix is None:
        if os.environ.get("LOTTERY_RG_REQUIRE_READ_ONLY"):  # CI's machine can: there the test must run
            pytest.fail("LOTTERY_RG_REQUIRE_READ_ONLY is set but no folder can be mounted read-only (unshare -rm)")
        pytest.skip("no user namespaces here to mount a folder read-only")
    env = {**subprocess_env(), "MPLCONFIGDIR": str(tmp_path / "mpl")}

    def under_read_only(*args):
        return subprocess.run([*prefix, PYTHON, *args], capture_output=True, text=True, env=env, timeout=600,
                              cwd=ROOT)

    return under_read_only


def test_a_finished_run_is_read_on_read_only_storage(finished, tmp_path):
    """The flow command and LotteryTicket.from_run on a read-only mount of a finished run; a resume there is
    refused in one line."""
    under_read_only = _under_read_only(finished, tmp_path)
    before = tree(finished)
    code = ("import sys; from lottery_rg import LotteryTicket; from lottery_rg.cli import main\n"
            "assert main(['flow', sys.argv[1]]) == 0\n"
            "print(type(LotteryTicket.from_run(sys.argv[1])).__name__)")
    read = under_read_only("-c", code, str(finished))
    assert read.returncode == 0 and "LotteryTicket" in read.stdout, read.stderr
    again = under_read_only("examples/run_imp.py", *BASE, "--output_dir", str(finished), "--levels", "2")
    lines = [line for line in again.stderr.splitlines() if line.strip()]
    assert again.returncode == 2 and len(lines) == 1 and "read-only" in lines[0], again.stderr
    assert tree(finished) == before


@pytest.mark.slow
def test_a_stability_table_is_read_on_read_only_storage(run_imp, tmp_path):
    run = tmp_path / "run"
    code, lines = call(run_imp.main, [*BASE, "--output_dir", str(run), "--stability_levels", "1"])
    assert code == 0, lines
    under_read_only = _under_read_only(run, tmp_path)
    before = tree(run)
    stability = under_read_only("-m", "lottery_rg", "stability", str(run))
    assert stability.returncode == 0 and "instability" in stability.stdout.lower(), stability
    assert tree(run) == before


# ------------------------------------------------------------------------------- the shipped configs
CONFIGS = sorted((ROOT / "examples" / "configs").glob("*.json"))


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_parses(run_imp, run_elastic, tmp_path, config):
    """The configs the docs tell users to run are accepted as they are (a flag removed from the code fails here)."""
    argv = [str(config), "--output_dir", str(tmp_path / "run")]
    if "source" in json.loads(config.read_text()):  # an elastic experiment
        parsed = run_elastic.parse_args((run_elastic.ElasticArguments, DataArguments, LotteryArguments,
                                         run_elastic.TrainingArguments), argv)
    else:
        parsed = run_imp.parse_args(argv)
    assert parsed[-1].output_dir == str(tmp_path / "run")
    assert not any(tmp_path.iterdir()), "parsing writes nothing"
