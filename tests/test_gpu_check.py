"""The prepared device check runs end to end as a CPU dry run and writes the report its reader expects."""

from __future__ import annotations

import json
import subprocess

import pytest
from utils import PYTHON, ROOT, subprocess_env

SECTIONS = ("pytest", "imp_resume", "step_ratio", "global_prune", "imp_throughput", "fast_switches")


@pytest.mark.slow
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """Through ``gpu_check.sh`` (its install step, then gpu_check.py) with this environment's Python: the floor
    environment runs it too, at the GPU image's transformers 5.17 and accelerate 1.15."""
    env = {**subprocess_env(), "PYTHON": PYTHON, "OUT": str(tmp_path), "GPU_CHECK_TIMEOUT": "880"}
    p = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--device", "cpu", "--quick"], cwd=ROOT,
                       env=env, capture_output=True, text=True, timeout=900)
    assert "MISSING" not in (tmp_path / "install.log").read_text()
    assert (tmp_path / "gpu_check.json").is_file(), p.stdout[-3000:] + p.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert (tmp_path / "gpu_check.md").read_text().startswith("# lottery_rg GPU check")
    assert set(report) >= {"environment", "sizes", "checks", "passed", "seconds"}
    assert report["environment"]["device"] == "cpu" and report["environment"]["quick"] is True
    assert tuple(report["checks"]) == SECTIONS
    for name, sec in report["checks"].items():
        assert sec["status"] in ("pass", "fail", "error") and isinstance(sec["seconds"], (int, float))
        assert sec["status"] != "error", f"{name} crashed:\n{sec.get('error')}"
    c = report["checks"]
    # correctness checks must pass even on a CPU; the speed targets are for the GPU and only recorded here
    assert c["pytest"]["status"] == "pass", c["pytest"]
    imp = c["imp_resume"]["result"]
    assert [round(d, 3) for d in imp["densities"]] == [1.0, 0.8, 0.64, 0.512]
    assert imp["pruned_weights_zero"] and imp["masks_identical_after_kill"] and imp["final_models_identical_after_kill"]
    assert imp["kill_happened_mid_level_1"]
    for kind in ("resnet20", "bert_mlm"):
        assert c["step_ratio"]["result"][kind]["ratio"] > 0
    gp = c["global_prune"]["result"]
    assert gp["removed"]["ours"] == gp["removed_expected"] and gp["masks_on_device"]
    assert c["imp_throughput"]["result"]["ratio"] > 0
    fast = c["fast_switches"]["result"]
    assert fast["fast_auto_choice"]["channels_last"] is True and fast["fast_auto_choice"]["bf16"] == fast["native_bf16"]
    # a bf16 variant that diverged would be named, not crash the check; the known CPU case (timm's ResNet-18 at
    # 16 px: a strided conv on 1-pixel maps) is not run in bf16 at all, and says so
    assert {r["model"] for r in fast["results"] + fast["diverged"]} == {"resnet20_cifar", "resnet18"}
    assert not fast["diverged"] and fast["passed"], fast["diverged"]
    four = {"fp32", "channels_last", "bf16", "bf16+channels_last"}
    for r in fast["results"]:
        assert set(r["variants"]) | set(r["skipped"]) == four
        assert bool(r["skipped"]) == (r["model"] == "resnet18" and r["image_size"] == 16), r["skipped"]
        assert all("layer4.0.conv1" in why for why in r["skipped"].values())
    assert p.returncode == (0 if report["passed"] else 1)
