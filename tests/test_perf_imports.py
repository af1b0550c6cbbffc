"""``import lottery_rg`` is cheap and lazy; the API, the old module paths and the CIFAR ResNets in timm still work.

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


def test_cifar_resnets_registered_when_timm_comes_after():
    out = run("import lottery_rg, timm\n"
              "m = timm.create_model('resnet20_cifar')\n"
              "print(sorted(timm.list_models('*_cifar')))")
    assert "resnet20_cifar" in out and "resnet110_cifar" in out


def test_cifar_resnets_registered_when_timm_came_first():
    out = run("import timm, lottery_rg\nprint(timm.list_models('resnet20_cifar'))")
    assert "resnet20_cifar" in out


def test_building_a_model_registers_them():
    out = run("from lottery_rg.models.loading import load_model\n"
              "m = load_model('resnet20_cifar', num_labels=10)\n"
              "print(type(m).__name__, sum(p.numel() for p in m.parameters()))")
    assert out == "CifarResNet 272474"


def test_old_module_paths_still_work():
    out = run("import warnings\n"
              "with warnings.catch_warnings(record=True) as w:\n"
              "    warnings.simplefilter('always')\n"
              "    from lottery_rg.masks import next_mask\n"
              "    import lottery_rg.trainer as t\n"
              "from lottery_rg.pruning.masks import next_mask as n2\n"
              "assert next_mask is n2 and t.LotteryTrainer.__name__ == 'LotteryTrainer'\n"
              "print(sum(issubclass(x.category, DeprecationWarning) for x in w))")
    assert int(out) >= 2


@pytest.mark.parametrize("name", ["LotteryTrainer", "LotteryTicket", "IMPFlow"])
def test_unknown_attribute_is_an_attribute_error(name):
    import lottery_rg

    assert getattr(lottery_rg, name).__name__ == name
    with pytest.raises(AttributeError):
        lottery_rg.no_such_thing  # noqa: B018


def test_the_trainer_loads_no_plotting_library():
    """matplotlib (0.4 s) is imported by the first figure, not by a training run or a ticket load."""
    assert loaded_packages("from lottery_rg import LotteryTrainer, LotteryTicket, IMPFlow", ("matplotlib",)) == []


def test_imports_without_collection_pauses_and_restores_the_collector():
    out = run("import gc, json\n"
              "from lottery_rg import imports_without_collection\n"
              "seen = []\n"
              "gc.callbacks.append(lambda phase, info: seen.append(info['generation']) if phase == 'start' else None)\n"
              "def cycles(n):\n"
              "    for _ in range(n):\n"
              "        a = []; a.append(a)\n"
              "with imports_without_collection():\n"
              "    before = len(seen)\n"
              "    cycles(200_000)\n"
              "    inside = len(seen) - before\n"
              "enabled_after = gc.isenabled()\n"
              "cycles(200_000)\n"
              "outside = len(seen) - before\n"
              "gc.disable()\n"
              "with imports_without_collection(freeze=True):\n"
              "    import json as _  # noqa\n"
              "print(json.dumps([inside, enabled_after, outside > inside, gc.isenabled(), gc.get_freeze_count() > 0]))")
    assert json.loads(out) == [0, True, True, False, True]
