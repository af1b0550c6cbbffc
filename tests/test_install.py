"""The package states version ranges that admit the torch builds users already have, and pip accepts it."""

import configparser
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def _requirements() -> list[Requirement]:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return [Requirement(line) for line in cfg["options"]["install_requires"].splitlines() if line.strip()]


def test_ranges_not_pins_and_every_torch_build_fits():
    reqs = _requirements()
    assert reqs
    pinned = [str(r) for r in reqs if any(s.operator in ("==", "===") for s in r.specifier)]
    assert not pinned, f"exact pins in install_requires: {pinned}"
    by_name = {r.name: r for r in reqs}
    for version in ("2.11.0", "2.14.1", "2.11.0+cu130", "2.14.1+cu128", "2.12.0+cpu"):
        assert by_name["torch"].specifier.contains(Version(version), prereleases=True), version
    for version in ("0.26.0", "0.29.1+cu130"):
        assert by_name["torchvision"].specifier.contains(Version(version), prereleases=True), version


def test_every_declared_dependency_is_imported_somewhere():
    import re

    source = "\n".join(p.read_text() for p in (ROOT / "lottery_rg").rglob("*.py"))
    modules = {"huggingface-hub": "huggingface_hub", "scikit-learn": "sklearn", "pyyaml": "yaml"}
    used_by_others = {"accelerate"}  # transformers.Trainer needs it (and `accelerate launch` runs the jobs)
    unused = [r.name for r in _requirements() if r.name not in used_by_others
              and not re.search(rf"^\s*(import|from)\s+{modules.get(r.name, r.name)}\b", source, re.M)]
    assert not unused, f"declared but never imported: {unused}"


@pytest.mark.slow
def test_pip_resolves_the_package_offline_against_this_environment(tmp_path):
    """``pip install --dry-run`` of the source tree: every requirement is satisfied by what is installed here."""
    out = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--no-build-isolation", "--no-index",
                          "--report", str(tmp_path / "report.json"), str(ROOT)], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    import json

    report = json.loads((tmp_path / "report.json").read_text())
    names = [item["metadata"]["name"] for item in report["install"]]
    assert names == ["lottery_rg"], names  # nothing else to download: the ranges admit the installed versions
