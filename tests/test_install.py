"""The package states version ranges that admit the torch builds users already have, and pip accepts it; a wheel
holds what the package needs and works outside the clone; installing it leaves the user's torch alone."""

import configparser
import os
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


# ---------------------------------------------------------------------------- what the wheel holds
def _setup_cfg() -> configparser.ConfigParser:
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    return cfg


def test_setup_cfg_lists_every_package_and_maps_the_card_templates_into_it():
    """setup.cfg names the packages one by one (the templates' folder is mapped in from the top level): a package
    added to the source tree and forgotten there would be missing from every wheel."""
    cfg = _setup_cfg()
    listed = {p.strip() for p in cfg["options"]["packages"].splitlines() if p.strip()}
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "lottery_rg").rglob("__init__.py")}
    data = {"lottery_rg.assets.embedded_tokenizer", "lottery_rg.model_cards"}
    assert listed == found | data, f"not listed: {sorted(found - listed)}; listed but absent: {sorted(listed - found)}"
    package_dir = dict(line.split("=") for line in cfg["options"]["package_dir"].splitlines() if line.strip())
    assert {k.strip(): v.strip() for k, v in package_dir.items()} == {"lottery_rg.model_cards": "model_cards"}
    assert sorted(p.name for p in (ROOT / "model_cards").glob("*.md")) == ["flow_card.md", "ticket_card.md"]


def test_card_templates_are_read_as_package_data():
    import importlib.resources

    from lottery_rg.io import card_template

    folder = importlib.resources.files("lottery_rg.model_cards")
    for name in ("ticket_card.md", "flow_card.md"):
        assert Path(card_template(name)) == Path(str(folder / name))
        assert Path(card_template(name)).read_text() == (ROOT / "model_cards" / name).read_text()
    with pytest.raises(FileNotFoundError, match="no_such_card.md"):
        card_template("no_such_card.md")


def test_every_requirement_has_a_floor_the_floor_environment_installs():
    out = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py")], capture_output=True, text=True, check=True)
    pins = dict(line.split("==") for line in out.stdout.split())
    cfg = _setup_cfg()
    names = [Requirement(r).name for section in (cfg["options"]["install_requires"],
                                                 cfg["options.extras_require"]["test"])
             for r in section.splitlines() if r.strip()]
    assert sorted(pins) == sorted(names)
    assert pins["transformers"] == "5.17" and pins["accelerate"] == "1.15" and pins["torch"] == "2.11"


# ---------------------------------------------------------------------------- a wheel, outside the clone
def _run(cmd, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=kw.pop("timeout", 900), **kw)
    assert p.returncode == 0, f"{cmd}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}"
    return p


_OUTSIDE_SCRIPT = """
import sys
from pathlib import Path

import lottery_rg
from lottery_rg import IMPFlow, LotteryTicket

run, repo, flow_repo, token, site = sys.argv[1:6]
assert lottery_rg.__file__.startswith(site), lottery_rg.__file__
ticket = LotteryTicket.from_run(run)
ticket.save_pretrained("ticket")
card = Path("ticket/README.md").read_text()
assert "## How it was made" in card and "{{" not in card and "run_imp.py" in card, card[:500]
again = LotteryTicket.from_pretrained("ticket")
assert again.level == ticket.level == 2 and abs(again.density - ticket.density) < 1e-12
print("ticket", ticket.push_to_hub(repo, token=token))
print("flow", IMPFlow.from_run_dir(run).push_to_hub(flow_repo, token=token))
pulled = LotteryTicket.from_pretrained(repo, token=token)
assert pulled.level == ticket.level
"""


@pytest.mark.slow
def test_a_wheel_installed_outside_the_clone_runs_the_main_job_and_shares_tickets(tmp_path, hub):
    """``pip wheel --no-deps .``, installed (not editable) into a target folder; from a folder outside the clone:
    a 2-level main job with checkpoints, a ticket saved and loaded with its rendered card, the ticket and the
    flow pushed to the local Hub."""
    import shutil
    import zipfile

    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", ROOT])
    (wheel,) = (tmp_path / "dist").glob("lottery_rg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {"lottery_rg/model_cards/ticket_card.md", "lottery_rg/model_cards/flow_card.md",
            "lottery_rg/assets/embedded_tokenizer/tokenizer.json"} <= set(names)
    assert not [n for n in names if n.split("/")[0] in ("model_cards", "tests", "examples", "benchmarks")]
    site = tmp_path / "site"
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", site, wheel])
    work = tmp_path / "outside"
    work.mkdir()
    shutil.copy(ROOT / "examples" / "run_imp.py", work)
    shutil.copy(ROOT / "examples" / "configs" / "resnet20_digits.json", work)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(site), OMP_NUM_THREADS="1")
    _run([sys.executable, "run_imp.py", "resnet20_digits.json", "--model_name_or_path", "resnet14_cifar",
          "--levels", "2", "--num_train_epochs", "1", "--max_train_samples", "256", "--max_eval_samples", "64",
          "--rewind_steps", "2", "--save_steps", "4", "--eval_strategy", "epoch", "--output_dir", "run"],
         cwd=work, env=env)
    for level in (0, 1, 2):
        assert (work / "run" / f"level_{level:02d}" / "mask.safetensors").is_file()
    repo, flow_repo = hub.new_repo_id("wheel"), hub.new_repo_id("wheel-flow")
    (work / "outside.py").write_text(_OUTSIDE_SCRIPT)
    _run([sys.executable, "outside.py", "run", repo, flow_repo, hub.token, site], cwd=work, env=env)
    api = hub.api()
    assert {"README.md", "model.safetensors", "rewind.safetensors", "mask.safetensors", "config.json"} <= \
        set(api.list_repo_files(repo))
    assert {"README.md", "flow.json"} <= set(api.list_repo_files(flow_repo, repo_type="dataset"))
    _run([site / "bin" / "lottery-rg", "--help"], cwd=work, env=env)


# ---------------------------------------------------------------------------- the user's torch stays
def _planned(report: Path) -> dict[str, str]:
    import json

    return {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}


@pytest.mark.slow
def test_installing_beside_a_users_torch_plans_no_change_to_it(tmp_path):
    """An environment holding torch 2.13.0+cpu: ``pip install --dry-run`` of lottery_rg plans no other torch (nor
    its CUDA libraries). With torchvision not yet there, naming the installed torch (the README's recipe) makes pip
    pick the torchvision made for it; with the pair installed, neither is touched."""
    venv = tmp_path / "user-env"
    _run([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", "torch==2.13.0+cpu"])
    version = _run([python, "-c", "import torch; print(torch.__version__)"]).stdout.strip()
    assert version == "2.13.0+cpu"

    def plan(*extra) -> dict[str, str]:
        report = tmp_path / f"plan{len(list(tmp_path.glob('plan*')))}.json"
        _run([python, "-m", "pip", "install", "--dry-run", "-q", "--report", report, ROOT, *extra])
        planned = _planned(report)
        assert "lottery-rg" in planned or "lottery_rg" in planned
        assert "torch" not in planned, planned
        assert not [n for n in planned if n.startswith("nvidia") or n in ("triton", "cuda-toolkit")], planned
        return planned

    assert plan(f"torch=={version}").get("torchvision") == "0.28.0"  # README: pip install . "torch==$(...)"
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "torchvision==0.28.0"])
    assert "torchvision" not in plan()  # a supported pair already there: a plain install keeps both
