"""BERT masked-LM tickets: the BERT-tickets prunable set, exact masks, local checkpoints, clear errors."""

import json

import pytest
import torch
from safetensors.torch import load_file
from utils import reference_global_prune, training_args

from lottery_rg import LotteryArguments, LotteryTicket, LotteryTrainer
from lottery_rg.models.families import prunable_parameters
from lottery_rg.pruning.masks import load_mask
from lottery_rg.run import RunDir
from lottery_rg.tasks.mlm import prepare_mlm_task
from lottery_rg.training.arguments import DataArguments, ModelArguments

TINY = dict(model_name_or_path="embedded-bert", model_kwargs={"num_hidden_layers": 2, "hidden_size": 64})
DATA = dict(max_seq_length=64, max_train_samples=96, max_eval_samples=32)


def mlm_trainer(out, lottery=None, model=None, data=None, **kw):
    setup = prepare_mlm_task(ModelArguments(**(model or TINY)), DataArguments(**(data or DATA)), seed=0)
    args = training_args(out, **{"learning_rate": 1e-3, "optim": "adamw_torch", "optim_args": None,
                                 "per_device_train_batch_size": 16, **kw})
    return LotteryTrainer(args=args, lottery_args=LotteryArguments(**(lottery or {})), **setup.trainer_kwargs())


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bert")
    trainer = mlm_trainer(out, {"levels": 2})
    trainer.run_imp()
    return out, trainer


def test_prunable_set_is_the_bert_tickets_choice(bert_run):
    _, trainer = bert_run
    names = trainer.prunable
    assert len(names) == 2 * 6  # Q, K, V, attention output, intermediate, output per layer (no pooler in MLM)
    for n in names:
        assert n.endswith("weight") and ".encoder.layer." in n
        assert any(k in n for k in ("query", "key", "value", "attention.output.dense", "intermediate.dense",
                                    "output.dense"))
    assert not any("embeddings" in n or "LayerNorm" in n or n.startswith("cls.") for n in names)


def test_masks_are_global_magnitude_pruning_and_the_rest_is_untouched(bert_run):
    out, trainer = bert_run
    densities = []
    for level in range(3):
        d = RunDir(out).level(level)
        mask = load_mask(d / "mask.safetensors")
        rec = json.loads((d / "metrics.json").read_text())
        densities.append(rec["density"])
        m = rec["metrics"]
        assert {"eval_loss", "eval_accuracy", "eval_perplexity"} <= set(m)
        assert m["eval_perplexity"] == pytest.approx(float(torch.tensor(m["eval_loss"]).exp()), rel=1e-5)
        trained = load_file(d / "model.safetensors")
        for n, v in trained.items():
            if n in mask:
                assert torch.count_nonzero(v[~mask[n]]) == 0
            elif "LayerNorm.weight" in n or "embeddings.word_embeddings" in n:
                assert torch.count_nonzero(v) == v.numel(), f"{n} must not be pruned"
        if level:
            prev = RunDir(out).level(level - 1)
            expected = reference_global_prune(load_file(prev / "model.safetensors"),
                                              load_mask(prev / "mask.safetensors"), 0.2)
            assert all(torch.equal(mask[n], expected[n]) for n in mask)
    assert densities == pytest.approx([1.0, 0.8, 0.64], abs=1e-5)


def test_bert_ticket_round_trip_and_transformers_interop(bert_run, tmp_path):
    from transformers import AutoModelForMaskedLM

    out, _ = bert_run
    ticket = LotteryTicket.from_run(out, level=2)
    ticket.save_pretrained(tmp_path / "t")
    back = LotteryTicket.from_pretrained(tmp_path / "t")
    a, b = ticket.model.state_dict(), back.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(ticket.mask[n], back.mask[n]) for n in ticket.mask)
    plain = AutoModelForMaskedLM.from_pretrained(tmp_path / "t")
    p = dict(plain.named_parameters())
    t = ticket.trained_weights()  # what transformers loads is the trained level the card describes
    for n, m in ticket.mask.items():
        assert torch.equal(p[n].detach(), t[n]) and torch.count_nonzero(p[n].detach()[~m]) == 0


def test_local_checkpoint_and_text_files_by_path(tmp_path):
    from transformers import BertForMaskedLM

    from lottery_rg.tasks.text import embedded_tokenizer, small_bert_config

    tok = embedded_tokenizer()
    model = BertForMaskedLM(small_bert_config(tok, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                              intermediate_size=64, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "tiny-bert")
    tok.save_pretrained(tmp_path / "tiny-bert")
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(f"The lottery ticket number {i} trains as well as the dense network does." * 3
                              for i in range(80)))
    trainer = mlm_trainer(tmp_path / "run", {"levels": 1, "schedule": "linear", "prune_fraction": 0.1},
                          model={"model_name_or_path": str(tmp_path / "tiny-bert")},
                          data={"train_file": str(text), "max_seq_length": 32})
    trainer.run_imp()
    cfg = json.loads((tmp_path / "run" / "lottery_config.json").read_text())
    assert cfg["lottery"]["schedule"] == "linear" and cfg["model"]["family"] == "bert"
    rec = json.loads((RunDir(tmp_path / "run").level(1) / "metrics.json").read_text())
    assert rec["density"] == pytest.approx(0.9, abs=1e-4)


def test_mlm_bad_input_is_refused_before_training(tmp_path):
    from transformers import BertConfig, BertForMaskedLM

    from lottery_rg.tasks.text import embedded_tokenizer

    tok = embedded_tokenizer()
    small = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=64))
    small.save_pretrained(tmp_path / "small-vocab")
    tok.save_pretrained(tmp_path / "small-vocab")
    with pytest.raises(ValueError, match="vocab_size is 100"):
        prepare_mlm_task(ModelArguments(model_name_or_path=str(tmp_path / "small-vocab")),
                         DataArguments(max_seq_length=32))
    short = BertForMaskedLM(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, max_position_embeddings=64))
    short.save_pretrained(tmp_path / "short")
    tok.save_pretrained(tmp_path / "short")
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        prepare_mlm_task(ModelArguments(model_name_or_path=str(tmp_path / "short")), DataArguments(max_seq_length=128))
    table = tmp_path / "numbers.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    with pytest.raises(ValueError, match=r"which column holds the text.*\[.a., .b.\]"):
        prepare_mlm_task(ModelArguments(**TINY), DataArguments(train_file=str(table), max_seq_length=32))


def test_prunable_set_includes_the_pooler_when_present():
    from transformers import BertConfig, BertForSequenceClassification

    model = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64))
    names = prunable_parameters(model)
    assert "bert.pooler.dense.weight" in names and len(names) == 13


def test_a_finished_bert_run_is_recognised_on_rerun(bert_run):
    out, _ = bert_run
    before = (RunDir(out).level(2) / "mask.safetensors").read_bytes()
    mlm_trainer(out, {"levels": 2}).run_imp()  # same settings: nothing to redo, no "different settings" error
    assert (RunDir(out).level(2) / "mask.safetensors").read_bytes() == before
