"""Pushing from LotteryTrainer: trainer.push_to_hub(), save_pretrained(push_to_hub=True), what a plain timm loader
gets against what the card claims, a BERT ticket through pipeline("fill-mask"), pushes that survive a Hub outage,
per-level tracker logs, arguments left as the caller made them, refused parallelism."""

import dataclasses
import json

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from utils import make_trainer, training_args

from lottery_rg import LotteryArguments, LotteryTicket, LotteryTrainer


def _accuracy(model, trainer) -> float:
    model.eval()
    right = total = 0
    with torch.no_grad():
        for batch in trainer.get_eval_dataloader():
            right += int((model(batch["pixel_values"]).argmax(-1) == batch["labels"]).sum())
            total += len(batch["labels"])
    return right / total


@pytest.fixture(scope="module")
def pushed_run(hub, tmp_path_factory):
    out = tmp_path_factory.mktemp("pushed")
    repo = hub.new_repo_id("trainer-push")
    trainer = make_trainer(out, {"levels": 1, "prune_fraction": 0.5}, hub_model_id=repo, hub_token=hub.token)
    trainer.run_imp()
    return trainer, repo


def test_trainer_push_to_hub_pushes_the_ticket_whose_weights_score_what_the_card_says(pushed_run, hub):
    trainer, repo = pushed_run
    trainer.push_to_hub()
    files = set(hub.api().list_repo_files(repo))
    assert {"model.safetensors", "rewind.safetensors", "mask.safetensors", "config.json", "README.md"} <= files
    assert not any(f.endswith((".bin", ".pt", ".pkl")) or f.startswith(("checkpoint", "level_")) for f in files)
    ticket = LotteryTicket.from_pretrained(repo)
    assert ticket.level == LotteryTicket.from_run(trainer.run_dir).level
    card = ModelCard.load(repo)
    claimed = card.data.eval_results[0].metric_value
    plain = timm.create_model(f"hf-hub:{repo}", pretrained=True)  # model.safetensors, as anyone would load it
    assert _accuracy(plain, trainer) == pytest.approx(claimed, abs=1e-6)
    assert "import lottery_rg" in card.text and "rewind.safetensors" in card.text
    from huggingface_hub import hf_hub_download

    cfg = json.loads(open(hf_hub_download(repo, "config.json")).read())
    assert cfg["pretrained_cfg"]["input_size"] == [3, 16, 16]
    assert cfg["pretrained_cfg"]["mean"] == pytest.approx(trainer.run_info["mean"])
    # the ticket proper and the trained weights both come back
    trained = LotteryTicket.from_pretrained(repo, weights="trained")
    assert _accuracy(trained.model, trainer) == pytest.approx(claimed, abs=1e-6)
    assert not torch.equal(trained.model.state_dict()["fc.weight"], ticket.model.state_dict()["fc.weight"])


def test_save_pretrained_with_push_to_hub_and_mixin_arguments(pushed_run, hub, tmp_path):
    trainer, _ = pushed_run
    ticket = LotteryTicket.from_run(trainer.run_dir)
    repo = hub.new_repo_id("mixin-push")
    ticket.save_pretrained(tmp_path / "t", push_to_hub=True, repo_id=repo, token=hub.token)
    ticket.push_to_hub(repo, config={"note": "ignored"}, token=hub.token, commit_message="again")
    back = LotteryTicket.from_pretrained(repo)
    assert all(torch.equal(back.mask[n], ticket.mask[n]) for n in ticket.mask)
    card = ticket.generate_model_card()
    assert card.data.library_name == "lottery_rg" and "| level | density |" in card.text


def test_the_callers_arguments_are_not_changed(hub, tmp_path):
    args = training_args(tmp_path, push_to_hub=True, hub_model_id=hub.new_repo_id("args"), hub_token=hub.token)
    before = dataclasses.asdict(args)
    from utils import image_setup

    setup = image_setup()
    trainer = LotteryTrainer(args=args, lottery_args=LotteryArguments(levels=1), **setup.trainer_kwargs())
    assert dataclasses.asdict(args) == before and args.push_to_hub is True
    assert trainer.args.push_to_hub is False and trainer.push_tickets
    assert trainer.args.ddp_find_unused_parameters is False  # timm model, left at None by the user


def test_a_refused_token_fails_before_training(hub, tmp_path):
    with pytest.raises(ValueError, match="did not accept the token.*nothing was trained"):
        make_trainer(tmp_path, {"levels": 1}, push_to_hub=True, hub_model_id=hub.new_repo_id("bad"),
                     hub_token="hf_wrong")
    assert not (tmp_path / "level_00").exists()


def test_fsdp_and_deepspeed_are_refused(monkeypatch, tmp_path):
    from lottery_rg.training.launch import check_parallelism

    ns = type("A", (), {"fsdp": "full_shard", "deepspeed": None})()
    with pytest.raises(ValueError, match="FSDP.*sharded"):
        check_parallelism(ns)
    ns = type("A", (), {"fsdp": [], "deepspeed": "ds.json"})()
    with pytest.raises(ValueError, match="DeepSpeed.*sharded"):
        check_parallelism(ns)
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ValueError, match="FSDP"):
        make_trainer(tmp_path, {"levels": 1})


def test_pushes_survive_a_hub_outage_and_resume(hub, tmp_path):
    from transformers import TrainerCallback

    repo = hub.new_repo_id("outage")

    class StopHub(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            if trainer.current_level == 1:
                from huggingface_hub.utils import close_session

                hub.server.stop()
                close_session()  # kept-alive connections would still reach the stopped server's handler threads

    kw = dict(push_to_hub=True, hub_model_id=repo, hub_token=hub.token)
    trainer = make_trainer(tmp_path, {"levels": 2, "push_levels": True}, callbacks=[StopHub()], **kw)
    try:
        result = trainer.run_imp()  # levels 1, 2 and the final ticket cannot be pushed: training goes on
    finally:
        hub.server.start()
    assert [r["level"] for r in result.levels] == [0, 1, 2]
    assert set(trainer.push_failures) == {"level-01", "level-02", "main"}
    ledger = json.loads((tmp_path / "hub_pushes.json").read_text())
    assert set(ledger["repos"][repo]) == {"level-00"}
    again = make_trainer(tmp_path, {"levels": 2, "push_levels": True}, **kw)
    again.run_imp()  # nothing to train; every level not on the Hub is pushed
    assert again.push_failures == []
    refs = {b.name for b in hub.api().list_repo_refs(repo).branches}
    assert refs == {"main", "level-00", "level-01", "level-02"}
    assert LotteryTicket.from_pretrained(repo, revision="level-02").level == 2


def test_levels_reach_tensorboard_at_growing_steps(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    trainer = make_trainer(tmp_path, {"levels": 2}, report_to=["tensorboard"], logging_steps=2)
    trainer.run_imp()
    runs = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]
    scalars = []
    for run in runs:
        acc = EventAccumulator(str(run))
        acc.Reload()
        tags = [t for t in acc.Tags()["scalars"] if t.endswith("/density")]
        scalars += [(e.step, e.value) for t in tags for e in acc.Scalars(t)]
    scalars.sort()
    assert len(scalars) == 3, scalars
    steps = [s for s, _ in scalars]
    assert steps == sorted(set(steps)) and steps[0] > 0
    assert [round(v, 4) for _, v in scalars] == [round(r["density"], 4) for r in trainer.run.records()]
    assert sorted(trainer.level_log_history) == [0, 1, 2]
    assert all(any("loss" in h for h in hist) for hist in trainer.level_log_history.values())


def test_a_bert_ticket_carries_its_tokenizer(tmp_path):
    from transformers import AutoTokenizer, pipeline

    from lottery_rg.tasks.mlm import prepare_mlm_task
    from lottery_rg.training.arguments import DataArguments, ModelArguments

    setup = prepare_mlm_task(ModelArguments(model_name_or_path="embedded-bert",
                                            model_kwargs={"num_hidden_layers": 2, "hidden_size": 64}),
                             DataArguments(max_seq_length=64, max_train_samples=64, max_eval_samples=16), seed=0)
    args = training_args(tmp_path / "run", learning_rate=1e-3, optim="adamw_torch", optim_args=None,
                         per_device_train_batch_size=16)
    trainer = LotteryTrainer(args=args, lottery_args=LotteryArguments(levels=1), **setup.trainer_kwargs())
    trainer.run_imp()
    assert (tmp_path / "run" / "tokenizer" / "tokenizer_config.json").is_file()
    ticket = LotteryTicket.from_run(tmp_path / "run")
    ticket.save_pretrained(tmp_path / "t")
    tok = AutoTokenizer.from_pretrained(tmp_path / "t")
    assert tok.vocab_size == setup.processing_class.vocab_size > 100
    fill = pipeline("fill-mask", model=str(tmp_path / "t"))
    out = fill(f"The function returns a {tok.mask_token}.")
    assert out and all(o["token_str"].strip() for o in out)
    back = LotteryTicket.from_pretrained(tmp_path / "t", weights="trained")
    assert back.tokenizer is not None and back.tokenizer.vocab_size == tok.vocab_size
