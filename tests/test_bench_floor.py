"""``benchmarks/bench_imp_floor.py --demo``: the demo script and the plain loop do the same IMP work.

Timings are printed, never asserted; what is checked is that both sides ran the same number of
optimizer steps to the same density, so that the ratio the benchmark prints compares like with like.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_and_floor_do_the_same_work(tmp_path):
    config = json.loads((ROOT / "examples" / "configs" / "resnet20_digits.json").read_text())
    config.update(num_train_epochs=1, max_train_samples=128, rewind_steps=1, save_steps=1, levels=1)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(config))
    p = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_imp_floor.py"), "--demo", str(path),
                        "--levels", "2", "--repeats", "1", "--side-by-side"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    steps = re.search(r"\| optimizer steps \| (\d+) \| (\d+) \|", p.stdout)
    density = re.search(r"\| final density \| ([\d.]+) \| ([\d.]+) \|", p.stdout)
    assert steps and steps.group(1) == steps.group(2) == str(2 + 1 + 1), p.stdout  # 2 steps, then 1 after rewind
    assert density and density.group(1) == density.group(2) == "0.6400", p.stdout
    assert "whole-run ratio demo/floor" in p.stdout
