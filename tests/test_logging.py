"""The example script logs at the library's level, keeps the HTTP and framework loggers quiet, prints each
level once."""

import subprocess

from utils import PYTHON, ROOT, subprocess_env


def test_run_imp_prints_each_level_once_and_no_http_lines(tmp_path):
    cmd = [PYTHON, str(ROOT / "examples" / "run_imp.py"), "--model_name_or_path", "resnet14_cifar",
           "--image_size", "16", "--max_train_samples", "64", "--max_eval_samples", "32", "--levels", "1",
           "--num_train_epochs", "1", "--per_device_train_batch_size", "32", "--output_dir", str(tmp_path / "run"),
           "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true", "--eval_strategy", "no"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for level in (0, 1):
        assert text.count(f"level {level}/1 done") == 1, text
        assert text.count(f"level {level}/1:") == 1, text  # the printed line, not also its log record
    assert "HTTP Request" not in text and "httpx" not in text
    again = subprocess.run(cmd, capture_output=True, text=True, env=subprocess_env(), timeout=600)  # resumes
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("INFO lottery_rg.training.trainer: level 0 already complete") == 1, again.stderr
