"""A run that cannot be corrupted: one writer, locked settings, verified levels, checked inputs, honest losses."""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import TrainerCallback
from utils import PYTHON, ROOT, make_trainer, subprocess_env, training_args

from lottery_rg import DataArguments, IMPFlow, LotteryArguments, LotteryTrainer, ModelArguments, RunDir
from lottery_rg.models import get_family
from lottery_rg.run import RunLockedError
from lottery_rg.tasks import prepare_task


def task_trainer(out, lottery=None, data=None, **train_kw) -> LotteryTrainer:
    """A trainer built like run_imp.py builds it (model and data flags recorded with the run)."""
    data_args = DataArguments(**{"max_train_samples": 128, "max_eval_samples": 64, "image_size": 16, **(data or {})})
    setup = prepare_task(ModelArguments(model_name_or_path="resnet14_cifar"), data_args, seed=train_kw.get("seed", 0))
    lottery_args = LotteryArguments(**(lottery or {"levels": 1}))
    return LotteryTrainer(args=training_args(out, **train_kw), lottery_args=lottery_args, run_info=setup.info,
                          **setup.trainer_kwargs())


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    task_trainer(out).run_imp()
    return out


# ---------------------------------------------------------------------------- one writer
def test_a_second_writer_stops_at_once_naming_the_holder(tmp_path):
    run = RunDir(tmp_path / "run")
    code = ("import sys, time; from lottery_rg import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([PYTHON, "-c", code, str(run.root)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=rf"process {holder.pid} on host {socket.gethostname()}"):
            make_trainer(run.root, {"levels": 1}).run_imp()
    finally:
        holder.kill()
        holder.wait()
    assert not run.level(0).exists() and not run.config.exists()
    make_trainer(run.root, {"levels": 1}).run_imp()  # the lock went with its holder
    assert run.is_complete(1)


def test_a_lock_this_process_holds_is_refused_to_a_second_lock_but_accepted_by_run_imp(tmp_path):
    """examples/run_imp.py takes the lock before it builds data and model; run_imp() then works under it."""
    run = RunDir(tmp_path / "run")
    with run.lock():
        with pytest.raises(RunLockedError, match=rf"process {os.getpid()} "):
            with RunDir(run.root).lock():
                pass
        make_trainer(run.root, {"levels": 1}).run_imp()
    assert run.is_complete(1)


def test_the_lock_dies_with_its_holder_even_under_kill_9(tmp_path):
    code = ("import sys, time; from lottery_rg import RunDir\n"
            "with RunDir(sys.argv[1]).lock():\n    print('held', flush=True); time.sleep(120)\n")
    holder = subprocess.Popen([PYTHON, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=subprocess_env())
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"process {holder.pid} "):
            with RunDir(tmp_path).lock():
                pass
    finally:
        holder.kill()
        holder.wait()
    with RunDir(tmp_path).lock():  # no stale lock after kill -9
        pass


# ---------------------------------------------------------------------------- settings cannot drift
@pytest.mark.parametrize("change, flag", [
    (dict(learning_rate=0.5), "--learning_rate: 0.05 recorded, 0.5 now"),
    (dict(seed=7), "--seed: 0 recorded, 7 now"),
    (dict(optim="adamw_torch", optim_args=None), "--optim: 'sgd' recorded, 'adamw_torch' now"),
    (dict(weight_decay=0.1), "--weight_decay: 0.0005 recorded, 0.1 now"),
    (dict(per_device_train_batch_size=16), "--per_device_train_batch_size: 32 recorded, 16 now"),
    (dict(lr_scheduler_type="cosine"), "--lr_scheduler_type: 'linear' recorded, 'cosine' now"),
    (dict(data={"max_eval_samples": 32}), "--max_eval_samples: 64 recorded, 32 now"),
    (dict(data={"augment": True}), "--augment: False recorded, True now"),
])
def test_changed_settings_are_refused_with_both_values(finished, change, flag):
    before = RunDir(finished).config.read_bytes()
    data = change.pop("data", None)
    with pytest.raises(ValueError, match="other settings") as err:
        task_trainer(finished, {"levels": 2}, data=data, **change).run_imp()
    assert flag in str(err.value)
    assert RunDir(finished).config.read_bytes() == before and not RunDir(finished).level(2).exists()


def test_free_settings_and_more_levels_are_accepted(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    task_trainer(out, {"levels": 2}, logging_steps=3, save_steps=7, report_to="none").run_imp()
    assert RunDir(out).is_complete(2) and RunDir(out).read_config()["levels"] == 2
    # fewer levels read the run: nothing is trained, the summary and the config keep all three levels
    result = task_trainer(out, {"levels": 1}).run_imp()
    assert [r["level"] for r in result.levels] == [0, 1, 2]
    assert RunDir(out).read_config()["levels"] == 2 and len(RunDir(out).summary_csv.read_text().splitlines()) == 4


# ---------------------------------------------------------------------------- verified before built upon
@pytest.mark.parametrize("damage", ["truncated mask", "truncated model", "mask changed", "record unreadable"])
def test_a_damaged_level_is_refused_with_its_path(finished, tmp_path, damage):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    run = RunDir(out)
    if damage == "truncated mask":
        data = run.mask(1).read_bytes()
        run.mask(1).write_bytes(data[: len(data) // 2])
    elif damage == "truncated model":
        data = run.model(1).read_bytes()
        run.model(1).write_bytes(data[:-100])
    elif damage == "mask changed":
        mask = load_file(run.mask(1))
        name = next(iter(mask))
        mask[name] = ~mask[name]
        save_file(mask, run.mask(1))
    else:
        run.metrics(1).write_text('{"level": 1, "dens')
    with pytest.raises(ValueError, match=rf"level 1 of .* is damaged.*Delete {run.level(1)}"):
        task_trainer(out, {"levels": 2}).run_imp()
    assert not run.level(2).exists()


def test_train_loss_of_a_resumed_level_is_the_whole_levels_loss(tmp_path):
    class Crash(TrainerCallback):
        def __init__(self, trainer):
            self.trainer = trainer

        def on_step_end(self, args, state, control, **kwargs):
            if self.trainer.current_level == 1 and state.global_step == 7:
                raise KeyboardInterrupt("simulated interruption")

    kw = dict(save_strategy="steps", save_steps=2, train_samples=256)
    ref = make_trainer(tmp_path / "ref", {"levels": 1, "rewind_steps": 2}, **kw)
    ref.run_imp()
    crashed = make_trainer(tmp_path / "run", {"levels": 1, "rewind_steps": 2}, **kw)
    crashed.add_callback(Crash(crashed))
    with pytest.raises(KeyboardInterrupt):
        crashed.run_imp()
    assert not RunDir(tmp_path / "run").is_complete(1)
    make_trainer(tmp_path / "run", {"levels": 1, "rewind_steps": 2}, **kw).run_imp()
    a = RunDir(tmp_path / "ref").record(1)["metrics"]
    b = RunDir(tmp_path / "run").record(1)["metrics"]
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-6)
    assert load_file(RunDir(tmp_path / "ref").mask(1)).keys() == load_file(RunDir(tmp_path / "run").mask(1)).keys()


def test_a_damaged_flow_file_is_rebuilt_from_the_levels(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    good = IMPFlow.load(RunDir(out).flow)
    RunDir(out).flow.write_text('{"schema_version": 1, "lev')
    result = task_trainer(out, {"levels": 1}).run_imp()  # nothing to train; the flow is derived data
    assert IMPFlow.load(RunDir(out).flow).level_numbers == good.level_numbers == [0, 1]
    assert [r["level"] for r in result.levels] == [0, 1]


# ---------------------------------------------------------------------------- inputs are checked, culprits named
def test_a_foreign_folder_is_refused_and_left_untouched(tmp_path):
    (tmp_path / "flow.json").write_text('{"not": "a flow"}')
    with pytest.raises(ValueError, match="not a lottery_rg run.*flow.json"):
        make_trainer(tmp_path, {"levels": 1}).run_imp()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flow.json"]
    with pytest.raises(ValueError, match=str(tmp_path / "flow.json")):
        IMPFlow.load(tmp_path)


@pytest.mark.parametrize("make, message", [
    (lambda: DataArguments(image_size=0), "--image_size 0 is not usable"),
    (lambda: DataArguments(max_train_samples=0), "--max_train_samples 0 is not usable"),
    (lambda: DataArguments(max_eval_samples=-1), "--max_eval_samples -1 is not usable"),
    (lambda: ModelArguments(model_kwargs="{patch_size: 4}"), "--model_kwargs must be a JSON object"),
    (lambda: get_family("bert").scratch_kwargs({"num_hidden_layers": 0}, 64),
     r"--model_kwargs num_hidden_layers must be an integer in \[1, 1000\]"),
    (lambda: get_family("bert").scratch_kwargs({"hidden_layers": 2}, 64), r"\['hidden_layers'\] are not BertConfig"),
    (lambda: LotteryArguments(prune_include=["("]), r"--prune_include '\(' is not a regular expression"),
    (lambda: LotteryArguments(prune_exclude=["fc[" ]), r"--prune_exclude 'fc\[' is not a regular expression"),
])
def test_bad_values_are_refused_naming_the_flag(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_single_split_save_to_disk_folder_loads(tmp_path):
    from utils import digits

    from lottery_rg.tasks.image import load_image_datasets

    digits()["train"].select(range(50)).save_to_disk(str(tmp_path / "single"))
    dsd = load_image_datasets(str(tmp_path / "single"), test_fraction=0.2)
    assert len(dsd["train"]) == 40 and len(dsd["test"]) == 10


def test_truncated_files_are_named(tmp_path):
    from lottery_rg.io import load_state, read_json, state_from_file

    (tmp_path / "w.safetensors").write_bytes(b"\x10\x00\x00")
    (tmp_path / "s.json").write_text('{"global_st')
    with pytest.raises(ValueError, match="w.safetensors"):
        state_from_file(tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="w.safetensors"):
        load_state(torch.nn.Linear(2, 2), tmp_path / "w.safetensors")
    with pytest.raises(ValueError, match="s.json"):
        read_json(tmp_path / "s.json")


# ---------------------------------------------------------------------------- real processes
ARGS = ["--model_name_or_path", "resnet14_cifar", "--image_size", "16", "--max_train_samples", "256",
        "--max_eval_samples", "64", "--levels", "1", "--num_train_epochs", "4", "--per_device_train_batch_size", "16",
        "--learning_rate", "0.05", "--optim", "sgd", "--report_to", "none", "--save_strategy", "steps",
        "--save_steps", "4", "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--seed", "0"]
SCRIPT = str(ROOT / "examples" / "run_imp.py")


def _wait(predicate, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def _lock_is_free(path) -> bool:
    try:
        with RunDir(path).lock():
            return True
    except RunLockedError:
        return False


@pytest.mark.slow
def test_two_runs_on_one_directory_the_second_stops_at_once(tmp_path):
    out = tmp_path / "run"
    long = [*ARGS, "--num_train_epochs", "200"]  # the same command twice; the first is still training
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([PYTHON, SCRIPT, "--output_dir", str(out), *long], env=subprocess_env(),
                                 stdout=log, stderr=subprocess.STDOUT)
    try:
        assert _wait(lambda: RunDir(out).checkpoints("level_00").is_dir() or RunDir(out).config.is_file(), 300), \
            "the first run never started"
        second = subprocess.run([PYTHON, SCRIPT, "--output_dir", str(out), *long], env=subprocess_env(),
                                capture_output=True, text=True, timeout=300)
        assert first.poll() is None, "the first run ended before the second started"
        assert second.returncode != 0
        assert f"being written by process {first.pid} on host {socket.gethostname()}" in second.stderr
        assert "level 0/1: training" not in second.stdout  # refused before any training
    finally:
        first.kill()
        first.wait()
    assert _lock_is_free(out)


@pytest.mark.slow
def test_sigterm_to_the_launcher_stops_the_trainer_and_the_level_resumes(tmp_path):
    accelerate = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1",
                  "--mixed_precision", "no", "--dynamo_backend", "no"]
    ref = tmp_path / "ref"
    assert subprocess.run([PYTHON, SCRIPT, "--output_dir", str(ref), *ARGS], env=subprocess_env(),
                          capture_output=True, timeout=600).returncode == 0
    out = tmp_path / "run"
    launcher = subprocess.Popen([*accelerate, SCRIPT, "--output_dir", str(out), *ARGS], env=subprocess_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        level1 = RunDir(out).checkpoints("level_01")
        assert _wait(lambda: level1.is_dir() and any(level1.glob("checkpoint-*")), 300), "level 1 never started"
        os.kill(launcher.pid, signal.SIGTERM)  # a scheduler stopping the job
        launcher.wait(timeout=30)
        assert _wait(lambda: _lock_is_free(out), 20), "the trainer kept running after its launcher was stopped"
    finally:
        launcher.kill()
    assert not RunDir(out).is_complete(1)
    resumed = subprocess.run([PYTHON, SCRIPT, "--output_dir", str(out), *ARGS], env=subprocess_env(),
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for level in (0, 1):
        a, b = load_file(RunDir(ref).mask(level)), load_file(RunDir(out).mask(level))
        assert all(torch.equal(a[n], b[n]) for n in a)
        a, b = load_file(RunDir(ref).model(level)), load_file(RunDir(out).model(level))
        assert all(torch.equal(a[n], b[n]) for n in a), f"level {level} weights differ after the stop and resume"
