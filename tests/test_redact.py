"""No secret is ever written: a token given on the command line, in TrainingArguments or in HF_TOKEN appears in no
file of a run, of its ticket or of what is pushed; the settings lock ignores secret arguments."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest
from utils import PYTHON, ROOT, make_trainer, subprocess_env, training_args

from lottery_rg import DataArguments, IMPFlow, LotteryArguments, LotteryTicket, LotteryTrainer, ModelArguments, RunDir
from lottery_rg.redact import (
    MASK,
    RedactingFilter,
    is_secret_name,
    redact,
    redact_arguments,
    redact_argv,
    redact_command,
    without_secrets,
)
from lottery_rg.tasks import prepare_task


def marker() -> str:
    return f"hf_MARKER{uuid.uuid4().hex}"


def files_holding(text: str, *folders: Path) -> list[str]:
    """Every file under ``folders`` whose bytes contain ``text`` (binary files too: safetensors, event files)."""
    needle = text.encode()
    return [str(p) for folder in folders for p in Path(folder).rglob("*") if p.is_file() and needle in p.read_bytes()]


# ---------------------------------------------------------------------------- names and values
@pytest.mark.parametrize("name", ["hub_token", "--hub_token", "HF_TOKEN", "token", "use_auth_token", "api_key",
                                  "wandb-api-key", "db_password", "client_secret", "push_token_file"])
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize("name", ["tokenizer_name", "include_tokens_per_second", "pad_token_id", "token_type_ids",
                                  "output_dir", "max_seq_length", "monitor", "push_to_hub"])
def test_names_that_hold_no_secret(name):
    assert not is_secret_name(name)


def test_a_command_line_keeps_every_flag_and_loses_every_secret():
    token, key = marker(), marker()
    argv = ["run_imp.py", "cfg.json", "--hub_token", token, "--push_to_hub", f"--api-key={key}", "--tokenizer_name",
            "bert-base-uncased", "--use_auth_token", "--output_dir", "runs/x", "--run_name", f"copy of {token}"]
    out = redact_argv(argv)
    assert out == ["run_imp.py", "cfg.json", "--hub_token", MASK, "--push_to_hub", f"--api-key={MASK}",
                   "--tokenizer_name", "bert-base-uncased", "--use_auth_token", "--output_dir", "runs/x",
                   "--run_name", f"copy of {MASK}"]  # the value is known from now on, wherever it appears
    command = redact_command(["python", *argv])
    assert token not in command and key not in command and "--hub_token *** --push_to_hub" in command
    assert redact_command(f"accelerate launch run_imp.py --hub_token={token} --seed 1") == \
        "accelerate launch run_imp.py --hub_token=*** --seed 1"


def test_hf_token_value_is_redacted_everywhere(monkeypatch):
    secret = marker()
    monkeypatch.setenv("HF_TOKEN", secret)
    record = {"command": f"python x.py --note {secret}", "levels": [{"text": f"a{secret}b"}], "n": 3}
    assert json.dumps(redact(record)).count(secret) == 0 and redact(record)["n"] == 3
    assert redact(f"HF_TOKEN={secret} python x.py") == f"HF_TOKEN={MASK} python x.py"


def test_arguments_by_name_and_the_settings_lock():
    args = {"model_arguments": {"tokenizer_name": "tok", "token": "abcdefgh", "hub_token": None},
            "training": {"hub_token": "<HUB_TOKEN>", "seed": 0, "pad_token_id": 0}}
    assert redact_arguments(args) == {"model_arguments": {"tokenizer_name": "tok", "token": MASK, "hub_token": None},
                                      "training": {"hub_token": MASK, "seed": 0, "pad_token_id": 0}}
    assert without_secrets(args) == {"model_arguments": {"tokenizer_name": "tok"},
                                     "training": {"seed": 0, "pad_token_id": 0}}


def test_log_records_are_redacted():
    import logging

    secret = marker()
    redact_argv(["--hub_token", secret])
    record = logging.LogRecord("lottery_rg", logging.WARNING, __file__, 1, "could not push with %s", (secret,), None)
    assert RedactingFilter().filter(record) and secret not in record.getMessage()


# ---------------------------------------------------------------------------- a run, its ticket, its cards
def run_with_secrets(out, levels: int, token: str, command: str, **train_kw):
    """A trainer built like run_imp.py builds it, with a secret among its model arguments and in its command."""
    setup = prepare_task(ModelArguments(model_name_or_path="resnet14_cifar"),
                         DataArguments(max_train_samples=128, max_eval_samples=64, image_size=16), seed=0)
    arguments = {**setup.info["arguments"], "model_arguments": {**setup.info["arguments"]["model_arguments"],
                                                                "token": token}}
    info = {**setup.info, "arguments": arguments, "command": command}
    trainer = LotteryTrainer(args=training_args(out, hub_token=token, **train_kw),
                             lottery_args=LotteryArguments(levels=levels), run_info=info, **setup.trainer_kwargs())
    trainer.run_imp()


def test_a_run_records_no_token_and_its_lock_ignores_it(tmp_path, monkeypatch):
    token, env_token = marker(), marker()
    monkeypatch.setenv("HF_TOKEN", env_token)
    out = tmp_path / "run"
    run_with_secrets(out, 1, token, f"python run_imp.py --hub_token {token} --output_dir {out} --note {env_token}",
                     report_to="tensorboard", save_strategy="steps", save_steps=2)
    config = RunDir(out).read_config()
    assert "--hub_token *** --output_dir" in config["command"] and config["info"]["command"] == config["command"]
    assert "token" not in config["settings"]["model_arguments"]
    # another token is no other run: the settings lock ignores secret arguments
    run_with_secrets(out, 2, marker(), "python run_imp.py --hub_token x --levels 2")
    assert RunDir(out).is_complete(2)
    ticket_dir = tmp_path / "ticket"
    ticket = LotteryTicket.from_run(out)
    ticket.save_pretrained(ticket_dir)
    IMPFlow.from_run_dir(out).save_pretrained(tmp_path / "flow")
    assert "--hub_token ***" in (ticket_dir / "README.md").read_text()
    assert json.loads((ticket_dir / "config.json").read_text())["lottery_rg"]["info"]["command"] == config["command"]
    assert list((out / "runs").rglob("events.out.tfevents*")), "TensorBoard wrote nothing to scan"
    for secret in (token, env_token):
        assert not files_holding(secret, out, ticket_dir, tmp_path / "flow")


def test_the_trainer_keeps_the_token_out_of_its_arguments(tmp_path):
    """``training_args.bin`` in every checkpoint is a pickle of the Trainer's arguments: the token is not in it."""
    token = marker()
    trainer = make_trainer(tmp_path / "run", {"levels": 1}, hub_token=token)
    assert trainer.args.hub_token is None
    trainer.args.output_dir = str(tmp_path / "ckpt")
    trainer.save_model(str(tmp_path / "ckpt"))
    assert (tmp_path / "ckpt" / "training_args.bin").is_file()
    assert not files_holding(token, tmp_path / "ckpt")


# ---------------------------------------------------------------------------- the main job, pushed
@pytest.mark.slow
def test_a_pushed_run_given_a_marker_token_writes_it_nowhere(tmp_path, hub):
    """run_imp.py with ``--hub_token MARKER`` (and HF_TOKEN set to another marker) pushes every level and the ticket
    to the local Hub; the run directory, a saved ticket, a pushed flow, the pushed repositories, the Hub's
    storage and the job's output hold neither marker."""
    from hub_server import TEST_USER

    token, env_token = marker(), marker()
    hub.server.tokens[token] = TEST_USER  # the marker is a token the Hub accepts
    repo = hub.new_repo_id("secret")
    out = tmp_path / "run"
    env = {**subprocess_env(), "HF_TOKEN": env_token}
    cmd = [PYTHON, str(ROOT / "examples" / "run_imp.py"), str(ROOT / "examples" / "configs" / "resnet20_digits.json"),
           "--model_name_or_path", "resnet14_cifar", "--levels", "1", "--num_train_epochs", "1", "--rewind_steps", "2",
           "--max_train_samples", "256", "--max_eval_samples", "64", "--eval_strategy", "epoch",
           "--save_steps", "4", "--logging_steps", "2", "--report_to", "tensorboard", "--output_dir", str(out),
           "--push_to_hub", "--push_levels", "--hub_model_id", repo, "--hub_token", token]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    pushed = {r[1] for r in hub.server.requests if r[0] == "POST" and "/commit/" in r[1]}
    assert any("level-01" in r for r in pushed) and any("/commit/main" in r for r in pushed), sorted(pushed)
    config = RunDir(out).read_config()
    assert "--hub_token *** " in config["command"] + " "
    # a ticket saved and a flow pushed from the run (the flow as a data set), then everything pulled back
    from huggingface_hub import snapshot_download

    LotteryTicket.from_run(out).save_pretrained(tmp_path / "ticket")
    flow_repo = hub.new_repo_id("secret-flow")
    IMPFlow.from_run_dir(out).push_to_hub(flow_repo, token=token)
    pulled = tmp_path / "pulled"
    for rev in ("main", "level-01"):
        snapshot_download(repo, revision=rev, local_dir=pulled / rev, token=hub.token)
    snapshot_download(flow_repo, repo_type="dataset", local_dir=pulled / "flow", token=hub.token)
    assert "--hub_token ***" in (pulled / "main" / "README.md").read_text()
    assert list((out / "runs").rglob("events.out.tfevents*")) and (out / "hub_pushes.json").is_file()
    for secret in (token, env_token):
        assert secret not in p.stdout + p.stderr
        assert not files_holding(secret, out, tmp_path / "ticket", pulled, hub.storage)

