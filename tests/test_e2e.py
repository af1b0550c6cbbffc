"""The real command line: resume after ``kill -9`` and a two-process ``accelerate launch`` run."""

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import torch
from safetensors.torch import load_file
from utils import PYTHON, ROOT, subprocess_env

SCRIPT = str(ROOT / "examples" / "run_imp.py")
ARGS = [
    "--model_name_or_path", "resnet14_cifar", "--image_size", "16", "--max_train_samples", "256",
    "--max_eval_samples", "64", "--levels", "2", "--rewind_steps", "2", "--num_train_epochs", "3",
    "--per_device_train_batch_size", "32", "--learning_rate", "0.05", "--optim", "sgd",
    "--optim_args", "momentum=0.9", "--report_to", "none", "--save_strategy", "steps", "--save_steps", "3",
    "--logging_steps", "50", "--disable_tqdm", "true", "--dataloader_pin_memory", "false", "--seed", "0",
]


def run(out, extra=(), **kw):
    return subprocess.run([PYTHON, SCRIPT, "--output_dir", str(out), *ARGS, *extra], env=subprocess_env(),
                          capture_output=True, text=True, timeout=600, **kw)


def masks(out):
    return {lvl: load_file(out / f"level_{lvl:02d}" / "mask.safetensors") for lvl in range(3)}


def assert_level_dirs_complete(out):
    for d in out.glob("level_*"):
        if d.name.endswith((".partial", ".old")):
            continue
        assert {p.name for p in d.iterdir()} == {"mask.safetensors", "model.safetensors", "metrics.json"}, d


@pytest.mark.slow
def test_resume_after_kill_9_gives_the_same_masks(tmp_path):
    ref = tmp_path / "uninterrupted"
    done = run(ref)
    assert done.returncode == 0, done.stderr[-3000:]

    out = tmp_path / "killed"
    proc = subprocess.Popen([PYTHON, SCRIPT, "--output_dir", str(out), *ARGS], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    target = out / "checkpoints" / "level_01"
    while time.time() < deadline and proc.poll() is None:
        if target.is_dir() and any(p.name.startswith("checkpoint-") and int(p.name.split("-")[1]) > 2
                                   for p in target.iterdir() if not p.name.endswith(".partial")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (out / "level_00").is_dir() and not (out / "level_02").exists()
    assert_level_dirs_complete(out)
    # a kill while the Trainer saves leaves a folder with weights but no trainer_state.json: make sure one exists
    half = target / "checkpoint-999"
    half.mkdir(parents=True, exist_ok=True)
    (half / "model.safetensors").write_bytes(b"truncated")

    resumed = run(out)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "level 0 already complete" in resumed.stderr
    assert "resuming from" in resumed.stderr
    assert "removing incomplete checkpoint" in resumed.stderr and "checkpoint-999" in resumed.stderr
    a, b = masks(ref), masks(out)
    for level in a:
        assert a[level].keys() == b[level].keys()
        assert all(torch.equal(a[level][n], b[level][n]) for n in a[level]), f"level {level} masks differ"
    assert_level_dirs_complete(out)
    # the resumed level reports the loss of the whole level, as the uninterrupted run does
    loss = [json.loads((d / "level_01" / "metrics.json").read_text())["metrics"]["train_loss"] for d in (ref, out)]
    assert loss[1] == pytest.approx(loss[0], rel=1e-6)


@pytest.mark.slow
def test_two_processes_hold_identical_masks_and_one_writes(tmp_path):
    accelerate = shutil.which("accelerate", path=os.path.dirname(PYTHON))
    out = tmp_path / "ddp"
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", SCRIPT, "--output_dir", str(out), *ARGS,
           "--stability_levels", "2", "--stability_points", "3"]
    proc = subprocess.run(cmd, env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stdout + proc.stderr
    for level in range(3):
        metrics = json.loads((out / f"level_{level:02d}" / "metrics.json").read_text())
        digests = metrics["mask_digest_per_process"]
        assert len(digests) == 2 and digests[0] == digests[1], digests
        done = f"lottery_rg.training.trainer: level {level}/2 done"
        assert log.count(done) == 1, "only the main process reports and writes"
        for rank in (0, 1):
            assert f"mask digest {digests[0]} (process {rank})" in log
    assert_level_dirs_complete(out)
    assert json.loads((out / "lottery_config.json").read_text())["training"]["train_batch_size"] == 64
    # the linear-mode-connectivity copy trains on both ranks; one record, one report
    record = json.loads((out / "stability" / "level_02" / "stability.json").read_text())
    assert record["seeds"] == [0, 1] and len(record["accuracy"]) == 3
    assert log.count("lottery_rg.stability: stability of level 2: instability") == 1


@pytest.mark.slow
def test_run_elastic_end_to_end(tmp_path):
    script = str(ROOT / "examples" / "run_elastic.py")
    args = ["--source", "resnet14_cifar", "--targets", "resnet20_cifar", "--ticket_levels", "1", "2", "--levels", "2",
            "--seeds", "0", "--output_dir", str(tmp_path), "--image_size", "16", "--max_train_samples", "128",
            "--max_eval_samples", "64", "--num_train_epochs", "1", "--per_device_train_batch_size", "32",
            "--learning_rate", "0.05", "--optim", "sgd", "--report_to", "none", "--save_strategy", "no"]
    proc = subprocess.run([PYTHON, script, *args], env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"ett", "random", "reinit", "magnitude", "snip", "grasp", "imp"}
    for level in (1, 2):
        ett = next(r for r in rows if r["level"] == level and r["method"] == "ett")
        assert ett["mapping"] == {"1": [0, 1, 1], "2": [0, 1, 1], "3": [0, 1, 1]}
        for r in rows:
            if r["level"] == level and r["method"] in ("random", "reinit", "magnitude", "snip", "grasp"):
                assert r["density"] == pytest.approx(ett["density"]), r["method"]
    assert "ETT − best baseline" in (tmp_path / "summary.md").read_text()
    assert (tmp_path / "elastic_accuracy_vs_density.png").stat().st_size > 1000
    again = subprocess.run([PYTHON, script, *args], env=subprocess_env(), capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and len((tmp_path / "results.jsonl").read_text().splitlines()) == len(rows)
