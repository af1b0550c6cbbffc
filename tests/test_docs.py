"""The README and the documentation pages say what the repository does: their commands, paths and names exist,
and the README's tour runs as written. (`make docs` builds the site itself with `mkdocs build --strict`.)"""

import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from utils import ROOT, make_trainer, subprocess_env

README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").rglob("*.md"))
TEXTS = {path.relative_to(ROOT).as_posix(): path.read_text(encoding="utf-8") for path in [README, *PAGES]}


def _code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


def _expand_braces(word: str) -> list[str]:
    """``a{0,1,2}b`` -> ``a0b a1b a2b`` (shell brace expansion, one level, as the docs use it)."""
    m = re.search(r"\{([^{}]*,[^{}]*)\}", word)
    if not m:
        return [word]
    return [out for part in m[1].split(",") for out in _expand_braces(word[:m.start()] + part + word[m.end():])]


def test_readme_is_a_front_page():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 250, f"README.md has {len(lines)} lines: move detail to a page under docs/"
    headings = [line for line in lines if line.startswith("## ")]
    for heading in ("## Install", "## Documentation"):
        assert heading in headings, f"README.md lost its {heading!r} section"


def test_every_make_target_named_in_the_docs_exists():
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M))
    named = {(page, t) for page, text in TEXTS.items() for t in re.findall(r"(?:`|^)make ([a-z][\w-]*)", text, re.M)}
    missing = sorted((page, t) for page, t in named if t not in targets)
    assert not missing, f"`make TARGET` in the docs without a Makefile target: {missing}"


def test_every_repository_path_named_in_the_docs_exists():
    pattern = re.compile(r"(?<![\w./-])((?:examples|benchmarks|tests|docs|lottery_rg|model_cards|\.ci)/[\w./{},-]*)")
    missing = []
    for page, text in TEXTS.items():
        for raw in pattern.findall(text):
            for path in _expand_braces(raw.rstrip(".,")):
                if not (ROOT / path).exists():
                    missing.append((page, path))
    assert not missing, f"paths in the docs that the repository does not have: {sorted(set(missing))}"


def test_every_lottery_rg_name_in_the_docs_resolves():
    """``lottery_rg.a.b.c`` in prose or in a ``::: name`` directive names a module or an object that exists."""
    names = {(page, name.rstrip(".")) for page, text in TEXTS.items()
             for name in re.findall(r"(?<![\w./-])lottery_rg(?:\.[A-Za-z_]\w*)+", text)}
    unresolved = []
    for page, name in sorted(names):
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            try:
                obj = importlib.import_module(".".join(parts[:cut]))
                break
            except ModuleNotFoundError:
                continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            unresolved.append((page, name))
    assert not unresolved, f"names in the docs that lottery_rg does not have: {unresolved}"


def test_the_config_shown_in_the_running_guide_is_the_demo_config():
    guide = TEXTS["docs/running.md"]
    shown = next(json.loads(block) for block in _code_blocks(guide, "json"))
    assert shown == json.loads((ROOT / "examples/configs/resnet20_digits.json").read_text())


def test_getting_started_takes_the_readme_tour():
    (tour,) = _code_blocks(TEXTS["README.md"], "python")
    assert tour in _code_blocks(TEXTS["docs/getting-started.md"], "python")


def test_the_readme_tour_runs(tmp_path, hub, monkeypatch):
    """The README's tour, as written, on a short ResNet-20 run in runs/resnet20-digits (what `make demo` leaves)."""
    make_trainer(tmp_path / "runs" / "resnet20-digits", {"levels": 3, "rewind_steps": 2},
                 model="resnet20_cifar").run_imp()
    (tour,) = _code_blocks(README.read_text(encoding="utf-8"), "python")
    repo = hub.new_repo_id("resnet20-digits-ticket")
    assert '"your-name/resnet20-digits-ticket"' in tour
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_TOKEN", hub.token)  # what `hf auth login` provides
    exec(compile(tour.replace("your-name/resnet20-digits-ticket", repo), "README.md", "exec"), {})

    import torch

    from lottery_rg import LotteryTicket

    ticket = LotteryTicket.from_run(tmp_path / "runs" / "resnet20-digits")
    pushed = LotteryTicket.from_pretrained(repo)
    assert pushed.level == ticket.level
    assert pushed.mask.keys() == ticket.mask.keys()
    assert all(torch.equal(pushed.mask[n], ticket.mask[n]) for n in ticket.mask)
    deeper = LotteryTicket.from_pretrained(tmp_path / "resnet32-ticket")
    assert deeper.architecture()["architecture"] == "resnet32_cifar"

    # the command-line half of the tour: the RG analysis of the same run (`lottery-rg flow RUN --granularity stage`)
    script = Path(sys.executable).with_name("lottery-rg")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "lottery_rg.flow"]
    out = subprocess.run([*command, *(["flow"] if script.is_file() else []), "runs/resnet20-digits",
                          "--granularity", "stage"], cwd=tmp_path, env=subprocess_env(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert re.search(r"^\| layer3 \| stage \|", out.stdout, re.M), out.stdout


@pytest.mark.parametrize("page", [p.relative_to(ROOT).as_posix() for p in PAGES])
def test_images_are_linked_relative_to_the_page(page):
    """``![…](img/…)`` works both on GitHub and in the built site only as a path relative to the page."""
    for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", TEXTS[page]):
        assert not target.startswith(("/", "http")), target
        assert ((ROOT / page).parent / target).is_file(), f"{page}: image {target} not found"
