"""``import lottery_rg`` is cheap and lazy; the API works; ``import lottery_rg.models`` registers the CIFAR models in
timm the way ``import timm`` registers timm's own; no old module path and no import hook is left.

Each check runs in a fresh interpreter (what is imported depends on what was imported before).
No wall-clock times are asserted: only *which* modules an import loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return p.stdout.strip().splitlines()[-1]


def loaded_packages(code: str, packages: tuple[str, ...]) -> list[str]:
    """Which of ``packages`` (top-level names) a fresh interpreter has imported after running ``code``."""
    return json.loads(run(f"{code}\nimport sys, json\n"
                          f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {set(packages)!r})))"))


def test_import_lottery_rg_loads_no_heavy_library():
    assert loaded_packages("import lottery_rg",
                           ("torch", "timm", "transformers", "matplotlib", "pandas", "datasets")) == []


def test_public_api_and_star_import():
    out = run("import lottery_rg\n"
              "from lottery_rg import *\n"
              "missing = [n for n in lottery_rg.__all__ if n not in globals()]\n"
              "import lottery_rg.pruning.masks as m\n"
              "assert lottery_rg.next_mask is m.next_mask and lottery_rg.pruning.masks is m\n"
              "assert set(lottery_rg.__all__) <= set(dir(lottery_rg))\n"
              "print(missing, lottery_rg.__version__)")
    assert out.startswith("[]")


def test_cifar_models_registered_when_timm_comes_after():
    out = run("import lottery_rg.models, timm\n"
              "m = timm.create_model('resnet20_cifar')\n"
              "print(sorted(timm.list_models('*_cifar')))")
    assert "resnet20_cifar" in out and "resnet110_cifar" in out


def test_cifar_models_registered_when_timm_came_first():
    out = run("import timm, lottery_rg.models\nprint(timm.list_models('resnet20_cifar'))")
    assert "resnet20_cifar" in out


def test_import_lottery_rg_leaves_the_import_system_and_the_collector_alone():
    out = run("import gc, sys\n"
              "finders = list(sys.meta_path)\n"
              "frozen = gc.get_freeze_count()\n"  # 0 on Python 3.11; 3.12 starts with a few hundred
              "import lottery_rg\n"
              "untouched = sys.meta_path == finders\n"
              "lottery_rg.IMPFlow, lottery_rg.LotteryTicket, lottery_rg.LotteryTrainer\n"
              "ours = [f for f in sys.meta_path + sys.path_hooks if type(f).__module__.startswith('lottery_rg')]\n"
              "print(untouched, ours, gc.isenabled(), gc.get_freeze_count() - frozen)")
    assert out == "True [] True 0"


def test_building_a_model_registers_them():
    out = run("from lottery_rg.models.loading import load_model\n"
              "m = load_model('resnet20_cifar', num_labels=10)\n"
              "print(type(m).__name__, sum(p.numel() for p in m.parameters()))")
    assert out == "CifarResNet 272474"


@pytest.mark.parametrize("old", ["lottery_rg.masks", "lottery_rg.trainer", "lottery_rg.branches.stability",
                                 "lottery_rg.models.cifar_resnet", "lottery_rg.flow.__main__"])
def test_old_module_paths_are_gone(old):
    assert run(f"import importlib.util\nprint(importlib.util.find_spec({old!r}) is None)") == "True"


@pytest.mark.parametrize("name", ["LotteryTrainer", "LotteryTicket", "IMPFlow"])
def test_unknown_attribute_is_an_attribute_error(name):
    import lottery_rg

    assert getattr(lottery_rg, name).__name__ == name
    with pytest.raises(AttributeError):
        lottery_rg.no_such_thing  # noqa: B018


def test_the_trainer_loads_no_plotting_library():
    """matplotlib (0.4 s) is imported by the first figure, not by a training run or a ticket load."""
    assert loaded_packages("from lottery_rg import LotteryTrainer, LotteryTicket, IMPFlow", ("matplotlib",)) == []
