"""Tickets and flows loaded by repo id and revision from olah, a real Hub-compatible server that is not ours.

tests/hub_server.py is our own server, so tests against it alone could share a misreading of the Hub protocol
with the library. Here the server is olah (PyPI, a read-only Hugging Face mirror) serving a plain local git
repository offline: ``main`` holds the level-2 ticket of a tiny IMP run, branch ``level-01`` the level-1 ticket
as the trainer's ``push_levels`` would have pushed it mid-run (its flow stops at level 1). Everything is
downloaded by the unmodified ``huggingface_hub`` client, in a subprocess, because tests/conftest.py freezes this
process's HF_ENDPOINT to our own server. The subprocess saves what it loaded; this process compares it tensor
by tensor with the tickets it built.

olah 0.5.4 quirks this file works around:
- ``GET /`` answers 500 (its index template breaks on this Starlette), so readiness is probed on an API route.
- Even offline it forwards some calls (``whoami``) upstream, so ``hf-netloc`` points at a loopback port that is
  bound but never listening (connections are refused at once, nothing on the machine can answer).
- Files of 121-149 bytes are sniffed as git-lfs pointers with a strict UTF-8 decode: a binary file of that size
  makes the tree listing and its resolve route answer 500, so the ticket files are checked for it up front.
- ``model_info`` without a revision, and any missing file, answer 401 "Repository not found"; nothing here needs
  either (``snapshot_download`` and ``hf_hub_download`` always name the revision).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from utils import make_trainer, subprocess_env

from lottery_rg import IMPFlow, LotteryTicket

ORG, NAME = "lottery-org", "resnet14-ticket"
REPO_ID = f"{ORG}/{NAME}"
BRANCH = "level-01"
REVISIONS = ("main", BRANCH)


# ---------------------------------------------------------------------------------------------------------- tickets
@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    """{revision: ticket}: the level-2 ticket for ``main``, the level-1 ticket (flow up to level 1) for the branch."""
    run = tmp_path_factory.mktemp("olah_run")
    make_trainer(run, {"levels": 2, "rewind_steps": 1}, train_samples=64).run_imp()
    final = LotteryTicket.from_run(run, level=2)
    early = LotteryTicket.from_run(run, level=1)
    data = early.flow.to_dict()
    data["levels"] = [r for r in data["levels"] if r["level"] <= 1]
    early.flow = IMPFlow.from_dict(data)
    assert final.flow.level_numbers == [0, 1, 2] and early.flow.level_numbers == [0, 1]
    assert any(not torch.equal(final.mask[n], early.mask[n]) for n in final.mask), "revisions would not differ"
    return {"main": final, BRANCH: early}


# ---------------------------------------------------------------------------------------------- git mirror of them
def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="lottery_rg tests",
               GIT_AUTHOR_EMAIL="tests@lottery-rg.invalid", GIT_COMMITTER_NAME="lottery_rg tests",
               GIT_COMMITTER_EMAIL="tests@lottery-rg.invalid")
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"git {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout.strip()


def _check_olah_can_serve(folder: Path) -> None:
    """olah 0.5.4 decodes any 121-149-byte file as UTF-8 to look for a git-lfs pointer and crashes on binary ones."""
    for path in folder.iterdir():
        size = path.stat().st_size
        if 120 < size < 150:
            try:
                path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                pytest.fail(f"{path.name} is a {size}-byte binary file: olah 0.5.4 answers 500 for binary files of "
                            f"121-149 bytes (it sniffs them as git-lfs pointers); change the test ticket's size")


@pytest.fixture(scope="module")
def mirror(tickets, tmp_path_factory):
    """olah's ``mirrors-path``: a plain git repo at ``models/<org>/<name>``, one commit per revision.

    Returns ``(mirrors_path, {revision: commit sha})``.
    """
    assert shutil.which("git"), "git is needed to build the repository olah serves"
    root = tmp_path_factory.mktemp("olah_mirror")
    repo = root / "models" / ORG / NAME
    repo.mkdir(parents=True)
    _git(repo, "init", "-q")
    _git(repo, "symbolic-ref", "HEAD", "refs/heads/main")
    saved = tmp_path_factory.mktemp("olah_tickets")
    shas = {}
    for revision in REVISIONS:
        folder = saved / revision
        tickets[revision].save_pretrained(folder)
        _check_olah_can_serve(folder)
        if revision != "main":
            _git(repo, "checkout", "-q", "--orphan", revision)
            _git(repo, "rm", "-rfq", ".")
        for f in folder.iterdir():
            shutil.copy2(f, repo / f.name)
        _git(repo, "add", "-A")
        _git(repo, "commit", "-q", "-m", f"level-{tickets[revision].level} ticket")
        shas[revision] = _git(repo, "rev-parse", "HEAD")
    _git(repo, "checkout", "-q", "main")
    assert len(set(shas.values())) == len(REVISIONS)
    return root, shas


# ------------------------------------------------------------------------------------------------------------- olah
def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0):
    """(status, body) without any proxy; (None, error) when nothing answers."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError as e:
        return None, repr(e).encode()


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def olah(mirror, tmp_path_factory):
    """olah serving ``mirror`` offline on a free loopback port; yields its endpoint, stops it at module end."""
    mirrors_path, shas = mirror
    try:
        version = importlib.metadata.version("olah")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("olah is a test dependency (setup.cfg [options.extras_require] test): pip install olah==0.5.4")
    cli = Path(sys.executable).parent / "olah-cli"
    assert cli.is_file(), f"olah {version} is installed but {cli} is missing"
    work = tmp_path_factory.mktemp("olah_server")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_HOME=str(work / "hf_home"), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")

    # Upstream for whatever olah forwards even offline: bound, never listening -> connection refused at once.
    upstream = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    upstream.bind(("127.0.0.1", 0))
    dead = f"127.0.0.1:{upstream.getsockname()[1]}"
    proc = log = None
    try:
        for attempt in range(3):  # another process may grab the free port before olah binds it
            port = _free_loopback_port()
            endpoint = f"http://127.0.0.1:{port}"
            config = work / f"olah-{attempt}.toml"
            config.write_text(textwrap.dedent(f"""\
                [basic]
                host = "127.0.0.1"
                port = {port}
                repos-path = {json.dumps(str(work / "cache"))}
                hf-scheme = "http"
                hf-netloc = "{dead}"
                hf-lfs-netloc = "{dead}"
                mirror-scheme = "http"
                mirror-netloc = "127.0.0.1:{port}"
                mirror-lfs-netloc = "127.0.0.1:{port}"
                mirrors-path = [{json.dumps(str(mirrors_path))}]

                [accessibility]
                offline = true
                """))
            log_path = work / f"olah-{attempt}.out"
            log = open(log_path, "wb")
            proc = subprocess.Popen([str(cli), "-c", str(config), "--log-path", str(work / "logs")], cwd=work,
                                    env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            probe = f"{endpoint}/api/models/{REPO_ID}/revision/main"
            deadline = time.monotonic() + 60
            status = body = None
            while proc.poll() is None and time.monotonic() < deadline:
                status, body = _get(probe, timeout=2)
                if status is not None:
                    break
                time.sleep(0.05)
            if status is not None or proc.poll() is None:
                break
            log.close()
            if "address already in use" not in log_path.read_text(errors="replace").lower():
                break
        output = log_path.read_text(errors="replace")[-4000:]
        assert proc.poll() is None, f"olah {version} exited with code {proc.returncode}:\n{output}"
        assert status == 200, f"olah {version} did not serve {probe} ({status}: {body[:500]!r}):\n{output}"
        served = json.loads(body)["sha"]
        assert served == shas["main"], f"olah serves {served} as main, the git repo has {shas['main']}"
        yield endpoint
    finally:
        if proc is not None:
            _stop(proc)
        if log is not None:
            log.close()
        upstream.close()


# ------------------------------------------------------------------------------------- downloads, in a subprocess
_DOWNLOAD = """
import json, sys
from pathlib import Path

out, repo, branch = Path(sys.argv[1]), sys.argv[2], sys.argv[3]

import huggingface_hub.constants as constants
import timm
from huggingface_hub import HfApi
from safetensors.torch import save_file

from lottery_rg import IMPFlow, LotteryTicket


def tensors(d):
    return {k: v.detach().clone().contiguous() for k, v in d.items()}


report = {"endpoint": constants.ENDPOINT, "offline": constants.HF_HUB_OFFLINE, "cache": constants.HF_HUB_CACHE,
          "revisions": {}}
for name, revision in (("main", None), (branch, branch)):
    if revision is None:  # exactly what a user types: no revision argument at all
        ticket = LotteryTicket.from_pretrained(repo)
        flow = IMPFlow.from_pretrained(repo)
        model = timm.create_model(f"hf-hub:{repo}", pretrained=True)
    else:
        ticket = LotteryTicket.from_pretrained(repo, revision=revision)
        flow = IMPFlow.from_pretrained(repo, revision=revision)
        model = timm.create_model(f"hf-hub:{repo}@{revision}", pretrained=True)
    save_file(tensors(ticket.model.state_dict()), out / f"{name}.ticket_model.safetensors")
    save_file(tensors(ticket.mask), out / f"{name}.ticket_mask.safetensors")
    ticket.flow.save(out / f"{name}.ticket_flow.json")
    flow.save(out / f"{name}.flow.json")
    save_file(tensors(model.state_dict()), out / f"{name}.timm.safetensors")
    # olah 0.5.4 answers 401 to model_info without a revision: name it
    report["revisions"][name] = {"level": ticket.level, "density": ticket.density, "lottery": ticket.lottery,
                                 "info": ticket.info, "sha": HfApi().model_info(repo, revision=name).sha}
(out / "report.json").write_text(json.dumps(report))
"""


@pytest.fixture(scope="module")
def downloaded(olah, tmp_path_factory):
    """Run the downloads against olah in a fresh process and cache; returns (output dir, report)."""
    work = tmp_path_factory.mktemp("olah_client")
    out, cwd = work / "out", work / "cwd"  # cwd is empty: "org/name" must not resolve to a local folder
    out.mkdir()
    cwd.mkdir()
    env = subprocess_env()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HF_TOKEN",
                "HUGGING_FACE_HUB_TOKEN", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_XET_CACHE"):
        env.pop(var, None)
    env.update(HF_ENDPOINT=olah, HF_HOME=str(work / "hf_home"), HF_HUB_DISABLE_XET="1")
    done = subprocess.run([sys.executable, "-c", _DOWNLOAD, str(out), REPO_ID, BRANCH], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"downloads from olah failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    report = json.loads((out / "report.json").read_text())
    assert report["endpoint"] == olah and report["offline"] is False
    assert Path(report["cache"]).is_relative_to(work / "hf_home")
    return out, report


def _assert_same_tensors(got: dict, expected: dict, what: str) -> None:
    assert got.keys() == expected.keys(), f"{what}: keys differ ({sorted(set(got) ^ set(expected))[:5]})"
    for k in expected:
        assert got[k].dtype == expected[k].dtype and got[k].shape == expected[k].shape, f"{what}: {k}"
        assert torch.equal(got[k], expected[k]), f"{what}: {k} differs"


# ------------------------------------------------------------------------------------------------------------ tests
def test_each_revision_resolves_to_its_git_commit_and_is_cached_under_it(downloaded, mirror):
    _, shas = mirror
    out, report = downloaded
    assert {r: report["revisions"][r]["sha"] for r in REVISIONS} == shas
    snapshots = Path(report["cache"]) / f"models--{ORG}--{NAME}" / "snapshots"
    for revision in REVISIONS:
        folder = snapshots / shas[revision]
        assert {"config.json", "model.safetensors", "mask.safetensors", "flow.json"} <= {p.name for p in
                                                                                          folder.iterdir()}


@pytest.mark.parametrize("revision", REVISIONS)
def test_lottery_ticket_from_pretrained_by_revision(downloaded, tickets, revision):
    out, report = downloaded
    ticket = tickets[revision]
    _assert_same_tensors(load_file(out / f"{revision}.ticket_model.safetensors"), ticket.model.state_dict(),
                         f"{revision} model")
    _assert_same_tensors(load_file(out / f"{revision}.ticket_mask.safetensors"), ticket.mask, f"{revision} mask")
    got = report["revisions"][revision]
    assert got["level"] == ticket.level and got["density"] == ticket.density
    assert got["lottery"] == ticket.lottery and got["info"] == ticket.info
    assert IMPFlow.load(out / f"{revision}.ticket_flow.json") == ticket.flow


@pytest.mark.parametrize("revision", REVISIONS)
def test_imp_flow_from_pretrained_by_revision(downloaded, tickets, revision):
    out, _ = downloaded
    flow = IMPFlow.load(out / f"{revision}.flow.json")
    assert flow == tickets[revision].flow
    assert flow.level_numbers == list(range(tickets[revision].level + 1))


@pytest.mark.parametrize("revision", REVISIONS)
def test_timm_loads_each_revision_without_lottery_rg(downloaded, tickets, revision):
    out, _ = downloaded
    ticket = tickets[revision]
    weights = load_file(out / f"{revision}.timm.safetensors")  # model.safetensors: the level's trained weights
    _assert_same_tensors(weights, ticket.trained_weights(), f"{revision} timm model")
    assert all(torch.count_nonzero(weights[n][~m]) == 0 for n, m in ticket.mask.items())
