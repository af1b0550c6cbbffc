"""Tests for lottery_rg.tasks.text: embedded corpus, tokenizer + cache, data loading, MLM blocks, metrics."""

from __future__ import annotations

import collections
import hashlib
import json
import math
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers

from lottery_rg.models.bert import perplexity
from lottery_rg.tasks import text as td


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tokcache")


@pytest.fixture(scope="module")
def tokenizer(tokenizer_dir):
    return td.embedded_tokenizer(cache_dir=tokenizer_dir)


def _tiny_config(tokenizer, **kw):
    kw = {"num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64, **kw}
    return td.small_bert_config(tokenizer, **kw)


def _corpus_digest(paragraphs) -> str:
    return hashlib.sha256("\n".join(paragraphs).encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Embedded corpus
# ---------------------------------------------------------------------------------------------------------------


def test_embedded_corpus_is_sizeable_english_prose():
    stats = td.embedded_corpus_stats()
    assert stats["paragraphs"] >= 2000
    assert stats["characters"] >= 400_000
    assert stats["words"] >= 70_000
    paragraphs = td.embedded_paragraphs()
    words = collections.Counter(w.lower().strip('.,;:()"') for p in paragraphs for w in p.split())
    top = {w for w, _ in words.most_common(20)}
    assert {"the", "a", "of", "to", "is"} <= top
    text = "".join(paragraphs)
    assert sum(c.isascii() for c in text) > 0.995 * len(text)
    assert not any(">>>" in p or p.startswith(" ") for p in paragraphs)
    assert len(set(p.lower() for p in paragraphs)) == len(paragraphs)  # deduplicated
    lengths = sorted(len(p) for p in paragraphs)
    assert lengths[0] >= 60 and 100 < lengths[len(lengths) // 2] < 600
    assert sum(n > 1200 for n in lengths) < 10  # long paragraphs are split at sentences


def test_embedded_corpus_is_deterministic_and_independent_of_this_process(monkeypatch):
    # Each call below collects in a fresh interpreter with its own random str hash seed.
    first = td.embedded_paragraphs.__wrapped__()  # bypass the per-process cache: really rebuild it
    second = td.embedded_paragraphs.__wrapped__()
    assert first == second
    # Libraries patch stdlib classes at import time (transformers adds Logger.warning_once); such patches in
    # this process must not leak into the corpus, as they would if it were collected here.
    import logging

    def patched_in(self):
        """This sentence was patched into the logging module by some library and is not part of Python."""

    monkeypatch.setattr(logging.Logger, "patched_in", patched_in, raising=False)
    monkeypatch.setattr(patched_in, "__module__", "logging")
    marker = "This sentence was patched into the logging module by some library and is not part of Python."
    assert marker in td._collect_paragraphs(60, 1200)  # what in-process collection would see
    assert marker not in td.embedded_paragraphs.__wrapped__()
    assert _corpus_digest(td.embedded_paragraphs.__wrapped__()) == _corpus_digest(first)


def test_embedded_text_dataset_splits_are_disjoint_and_deterministic():
    a = td.embedded_text_dataset()
    b = td.embedded_text_dataset()
    assert set(a) == {"train", "test"}
    assert a["train"].column_names == ["text"] and a["test"].column_names == ["text"]
    assert list(a["train"]["text"]) == list(b["train"]["text"]) and list(a["test"]["text"]) == list(b["test"]["text"])
    train, test = set(a["train"]["text"]), set(a["test"]["text"])
    assert not train & test
    n = len(td.embedded_paragraphs())
    assert len(train) + len(test) == n
    assert abs(len(test) / n - 0.1) < 0.01
    other = td.embedded_text_dataset(seed=1)
    assert set(other["test"]["text"]) != test
    with pytest.raises(ValueError, match="test_fraction"):
        td.embedded_text_dataset(test_fraction=1.5)


# ---------------------------------------------------------------------------------------------------------------
# Tokenizer and cache
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_round_trips_and_has_bert_special_tokens(tokenizer):
    assert isinstance(tokenizer, transformers.BertTokenizerFast)
    assert 2000 < len(tokenizer) <= 8192
    for name, token, idx in [("pad", "[PAD]", 0), ("unk", "[UNK]", 1), ("cls", "[CLS]", 2), ("sep", "[SEP]", 3),
                             ("mask", "[MASK]", 4)]:
        assert getattr(tokenizer, f"{name}_token") == token
        assert getattr(tokenizer, f"{name}_token_id") == idx
    sentence = "The function returns a new list, sorted in ascending order."
    ids = tokenizer(sentence)["input_ids"]
    assert ids[0] == tokenizer.cls_token_id and ids[-1] == tokenizer.sep_token_id
    assert tokenizer.unk_token_id not in ids
    assert len(ids) < len(sentence.split()) + 6  # common words are whole tokens, not characters
    assert tokenizer.decode(ids, skip_special_tokens=True) == sentence.lower()
    pair = tokenizer("first part", "second part")
    assert pair["input_ids"].count(tokenizer.sep_token_id) == 2 and 1 in pair["token_type_ids"]


def test_train_tokenizer_saves_and_reloads_with_auto_tokenizer(tmp_path):
    texts = ["the quick brown fox jumps over the lazy dog"] * 50 + ["a lazy dog sleeps all day long"] * 50
    tok = td.train_tokenizer(texts, vocab_size=200, save_dir=tmp_path / "tok")
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    assert loaded.get_vocab() == tok.get_vocab()
    assert loaded("the lazy fox")["input_ids"] == tok("the lazy fox")["input_ids"]
    assert loaded.mask_token == "[MASK]"
    with pytest.raises(ValueError, match="vocab_size"):
        td.train_tokenizer(texts, vocab_size=3)


def test_tokenizer_cache_is_fast_identical_and_atomic(tokenizer, tokenizer_dir):
    t = time.perf_counter()
    again = td.embedded_tokenizer(cache_dir=tokenizer_dir)
    elapsed = time.perf_counter() - t
    assert elapsed < 0.5
    assert again.get_vocab() == tokenizer.get_vocab()
    entries = sorted(p.name for p in Path(tokenizer_dir).iterdir())
    version = ".".join(map(str, sys.version_info[:3]))
    assert len(entries) == 1 and f"py{version}" in entries[0] and "vocab8192" in entries[0]  # no temp dirs left


def test_tokenizer_cache_honours_env_var_and_vocab_size(tmp_path, monkeypatch):
    monkeypatch.setenv("LOTTERY_RG_CACHE", str(tmp_path / "envcache"))
    assert td.default_cache_dir() == tmp_path / "envcache"
    t = time.perf_counter()
    tok = td.embedded_tokenizer(vocab_size=1000)
    first = time.perf_counter() - t
    assert len(tok) == 1000
    (entry,) = (tmp_path / "envcache").iterdir()
    assert "vocab1000" in entry.name and (entry / "tokenizer.json").is_file()
    t = time.perf_counter()
    again = td.embedded_tokenizer(vocab_size=1000)
    assert time.perf_counter() - t < first
    assert again.get_vocab() == tok.get_vocab()


def test_small_bert_config_matches_tokenizer(tokenizer):
    cfg = td.small_bert_config(tokenizer)
    assert cfg.vocab_size == len(tokenizer)
    assert cfg.pad_token_id == tokenizer.pad_token_id
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads) == (4, 256, 4)
    assert (cfg.intermediate_size, cfg.max_position_embeddings) == (1024, 128)
    assert td.small_bert_config(tokenizer, hidden_dropout_prob=0.0).hidden_dropout_prob == 0.0


# ---------------------------------------------------------------------------------------------------------------
# load_text_datasets
# ---------------------------------------------------------------------------------------------------------------


def test_load_text_datasets_defaults_to_embedded_corpus():
    ds = td.load_text_datasets()
    assert list(ds["test"]["text"]) == list(td.embedded_text_dataset()["test"]["text"])


def test_load_text_datasets_from_txt_file_splits_off_test(tmp_path):
    lines = [f"line number {i} of a small local text file." for i in range(40)]
    path = tmp_path / "train.txt"
    path.write_text("\n\n".join(lines) + "\n")  # blank lines between texts must be dropped
    ds = td.load_text_datasets(train_file=path, test_fraction=0.25, seed=3, cache_dir=str(tmp_path / "hf"))
    assert set(ds) == {"train", "test"}
    assert len(ds["train"]) + len(ds["test"]) == 40 and len(ds["test"]) == 10
    assert sorted(list(ds["train"]["text"]) + list(ds["test"]["text"])) == sorted(lines)
    assert not set(list(ds["train"]["text"])) & set(list(ds["test"]["text"]))


def test_load_text_datasets_from_csv_picks_only_string_column(tmp_path):
    path = tmp_path / "data.csv"
    rows = ["id,body,score"] + [f'{i},"review number {i}, which is fine",{i * 0.5}' for i in range(20)]
    path.write_text("\n".join(rows) + "\n")
    ds = td.load_text_datasets(train_file=str(path), cache_dir=str(tmp_path / "hf"))
    assert ds["train"].column_names == ["text"] and ds["test"].column_names == ["text"]
    assert all(t.startswith("review number") for t in list(ds["train"]["text"]))


def test_load_text_datasets_json_with_validation_file_and_text_column(tmp_path):
    train, valid = tmp_path / "train.jsonl", tmp_path / "valid.jsonl"
    train.write_text("".join(json.dumps({"title": f"t{i}", "content": f"train doc {i}", "n": i}) + "\n"
                             for i in range(12)))
    valid.write_text("".join(json.dumps({"title": f"v{i}", "content": f"valid doc {i}", "n": i}) + "\n"
                             for i in range(3)))
    ds = td.load_text_datasets(train_file=train, validation_file=valid, text_column="content",
                               cache_dir=str(tmp_path / "hf"))
    assert list(ds["train"]["text"]) == [f"train doc {i}" for i in range(12)]
    assert list(ds["test"]["text"]) == [f"valid doc {i}" for i in range(3)]
    with pytest.raises(ValueError, match=r"\['title', 'content', 'n'\]"):  # two string columns: ambiguous
        td.load_text_datasets(train_file=train, cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="'body' not found"):
        td.load_text_datasets(train_file=train, text_column="body", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(ValueError, match="not a string column"):
        td.load_text_datasets(train_file=train, text_column="n", cache_dir=str(tmp_path / "hf"))


def test_load_text_datasets_without_text_column_names_the_columns(tmp_path):
    path = tmp_path / "numbers.csv"
    path.write_text("a,b\n" + "".join(f"{i},{i * 2}\n" for i in range(10)))
    with pytest.raises(ValueError) as err:
        td.load_text_datasets(train_file=path, cache_dir=str(tmp_path / "hf"))
    assert "['a', 'b']" in str(err.value) and "text_column" in str(err.value)


def test_load_text_datasets_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="extensions"):
        td.load_text_datasets(train_file=tmp_path / "data.parquetx")
    with pytest.raises(ValueError, match="not both"):
        td.load_text_datasets(dataset_name="x", train_file=tmp_path / "a.txt")
    with pytest.raises(ValueError, match="needs a train_file"):
        td.load_text_datasets(validation_file=tmp_path / "a.txt")


def test_select_text_column_on_in_memory_dataset():
    ds = datasets.Dataset.from_dict({"label": [0, 1], "sentence": ["a b", "c d"]})
    assert td.select_text_column(ds) == "sentence"
    ds = datasets.Dataset.from_dict({"label": [0, 1], "text": ["a", "b"], "other": ["x", "y"]})
    assert td.select_text_column(ds) == "text"


# ---------------------------------------------------------------------------------------------------------------
# prepare_mlm_datasets and compatibility checks
# ---------------------------------------------------------------------------------------------------------------


def test_prepare_mlm_datasets_makes_exact_blocks(tokenizer):
    raw = td.embedded_text_dataset()
    raw = datasets.DatasetDict({k: v.select(range(200)) for k, v in raw.items()})
    cfg = td.small_bert_config(tokenizer, max_position_embeddings=64)
    mlm = td.prepare_mlm_datasets(raw, tokenizer, max_seq_length=64, model_config=cfg)
    assert set(mlm) == {"train", "test"}
    for split in mlm.values():
        assert set(split.column_names) == {"input_ids", "token_type_ids", "attention_mask", "special_tokens_mask"}
        ids = np.array(list(split["input_ids"]))
        special = np.array(list(split["special_tokens_mask"]))
        assert ids.shape[1] == 64 and ids.shape[0] > 0
        assert (ids[:, 0] == tokenizer.cls_token_id).all() and (ids[:, -1] == tokenizer.sep_token_id).all()
        assert np.array_equal(special == 1, np.isin(ids, [tokenizer.cls_token_id, tokenizer.sep_token_id]))
        assert tokenizer.pad_token_id not in ids
        assert (np.array(list(split["attention_mask"])) == 1).all()
    # Nearly all tokens survive grouping: only each map batch's tail (< one block) is dropped.
    n_tokens = sum(len(x) + 1 for x in tokenizer(list(raw["train"]["text"]), add_special_tokens=False)["input_ids"])
    assert len(mlm["train"]) == n_tokens // 62
    # The text reads back in order: the first block is [CLS], then the first paragraph's tokens, then [SEP].
    first = tokenizer(raw["train"][0]["text"], add_special_tokens=False)["input_ids"]
    block = mlm["train"][0]["input_ids"]
    n = min(len(first), 62)
    assert block[1:1 + n] == first[:n]
    if len(first) < 62:
        assert block[1 + n] == tokenizer.sep_token_id


def test_prepare_mlm_datasets_too_little_text_is_a_clear_error(tokenizer):
    raw = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": ["only a few words"]})})
    with pytest.raises(ValueError, match="fewer than"):
        td.prepare_mlm_datasets(raw, tokenizer, max_seq_length=64)


def test_compatibility_errors_are_clear(tokenizer):
    cfg = td.small_bert_config(tokenizer, max_position_embeddings=128)
    td.check_mlm_compatibility(cfg, tokenizer, 128)  # fine
    td.check_mlm_compatibility(None, tokenizer, 512)  # no model: only the tokenizer's limit applies
    with pytest.raises(ValueError, match=r"max_seq_length=256 .* max_position_embeddings=128"):
        td.check_mlm_compatibility(cfg, tokenizer, 256)
    with pytest.raises(ValueError, match=r"max_seq_length=600 .* model_max_length=512"):
        td.check_mlm_compatibility(None, tokenizer, 600)
    small_vocab = td.small_bert_config(tokenizer, vocab_size=100)
    with pytest.raises(ValueError, match=rf"{len(tokenizer)} tokens .* vocab_size is 100.*resize_token_embeddings"):
        td.check_mlm_compatibility(small_vocab, tokenizer, 64)
    no_mask = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend_tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
        sep_token="[SEP]",
    )
    assert no_mask.mask_token is None
    with pytest.raises(ValueError, match="no mask token"):
        td.check_mlm_compatibility(cfg, no_mask, 64)
    with pytest.raises(ValueError, match="max_seq_length must be"):
        td.check_mlm_compatibility(cfg, tokenizer, 2)
    roberta = transformers.RobertaConfig(vocab_size=len(tokenizer), max_position_embeddings=130, pad_token_id=1)
    td.check_mlm_compatibility(roberta, tokenizer, 128)
    with pytest.raises(ValueError, match=r"max_position_embeddings=130 \(of which 128 usable\)"):
        td.check_mlm_compatibility(roberta, tokenizer, 129)
    # A model (not only its config) is accepted too.
    model = transformers.BertForMaskedLM(_tiny_config(tokenizer, max_position_embeddings=32))
    with pytest.raises(ValueError, match="max_position_embeddings=32"):
        td.check_mlm_compatibility(model, tokenizer, 64)


def test_prepare_mlm_datasets_checks_before_any_work(tokenizer):
    class Exploding(dict):  # any access to the data would raise something else than a ValueError
        def items(self):
            raise AssertionError("data touched before the compatibility checks")

    cfg = td.small_bert_config(tokenizer, max_position_embeddings=32)
    with pytest.raises(ValueError, match="max_position_embeddings"):
        td.prepare_mlm_datasets(Exploding(), tokenizer, max_seq_length=64, model_config=cfg)


def test_saved_tiny_bert_round_trip_through_pipeline_and_collator(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(_tiny_config(tokenizer, max_position_embeddings=64))
    model.save_pretrained(tmp_path / "tiny")
    tokenizer.save_pretrained(tmp_path / "tiny")
    loaded_model = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path / "tiny")
    loaded_tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "tiny")
    assert type(loaded_model).__name__ == "BertForMaskedLM"
    lines = [f"Paragraph {i}: the module returns a value when the argument is valid." for i in range(60)]
    (tmp_path / "train.txt").write_text("\n".join(lines) + "\n")
    raw = td.load_text_datasets(train_file=tmp_path / "train.txt", test_fraction=0.2,
                                 cache_dir=str(tmp_path / "hf"))
    td.check_mlm_compatibility(loaded_model.config, loaded_tok, 32)
    mlm = td.prepare_mlm_datasets(raw, loaded_tok, max_seq_length=32, model_config=loaded_model.config)
    collator = transformers.DataCollatorForLanguageModeling(loaded_tok, mlm_probability=0.3, seed=0)
    batch = collator([mlm["train"][i] for i in range(4)])
    assert batch["input_ids"].shape == (4, 32) and batch["labels"].shape == (4, 32)
    special = torch.tensor([mlm["train"][i]["special_tokens_mask"] for i in range(4)], dtype=torch.bool)
    assert (batch["labels"][special] == -100).all()  # [CLS]/[SEP] are never masked
    assert (batch["labels"] != -100).any()
    assert (batch["input_ids"] == loaded_tok.mask_token_id).any()
    inputs = {k: v for k, v in batch.items() if k != "special_tokens_mask"}
    with torch.no_grad():
        out = loaded_model(**inputs)
    assert out.logits.shape == (4, 32, len(loaded_tok))
    assert math.isfinite(out.loss.item())
    preds = td.preprocess_logits_for_metrics(out.logits, batch["labels"])
    metrics = td.compute_mlm_metrics((preds.numpy(), batch["labels"].numpy()))
    assert 0.0 <= metrics["accuracy"] <= 1.0 and metrics["masked_tokens"] == (batch["labels"] != -100).sum()


def test_metrics_with_trainer_evaluate(tokenizer, tmp_path):
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(_tiny_config(tokenizer, max_position_embeddings=32))
    raw = datasets.DatasetDict({"test": td.embedded_text_dataset()["test"].select(range(40))})
    mlm = td.prepare_mlm_datasets(raw, tokenizer, max_seq_length=32, model_config=model.config)
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), per_device_eval_batch_size=8,
                                          report_to=[], use_cpu=True, disable_tqdm=True)
    trainer = transformers.Trainer(
        model=model, args=args, eval_dataset=mlm["test"],
        data_collator=transformers.DataCollatorForLanguageModeling(tokenizer, seed=0),
        compute_metrics=td.compute_mlm_metrics, preprocess_logits_for_metrics=td.preprocess_logits_for_metrics,
    )
    metrics = trainer.evaluate()
    assert 0.0 <= metrics["eval_accuracy"] < 0.05  # an untrained model is near chance
    n_maskable = (np.array(list(mlm["test"]["special_tokens_mask"])) == 0).sum()
    assert 0.1 * n_maskable < metrics["eval_masked_tokens"] < 0.2 * n_maskable  # ~15% of the non-special tokens
    assert perplexity(metrics["eval_loss"]) == pytest.approx(math.exp(metrics["eval_loss"]))


# ---------------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------------


def test_masked_token_accuracy_hand_made():
    labels = np.array([[-100, 5, -100, 7], [3, -100, -100, 9]])
    preds = np.array([[5, 5, 1, 2], [3, 9, 9, 9]])  # masked positions: 5 ok, 7 wrong, 3 ok, 9 ok
    assert td.masked_token_accuracy(preds, labels) == (0.75, 4)
    metrics = td.compute_mlm_metrics(transformers.EvalPrediction(predictions=preds, label_ids=labels))
    assert metrics == {"accuracy": 0.75, "masked_tokens": 4.0}
    acc, n = td.masked_token_accuracy(preds, np.full_like(labels, -100))
    assert n == 0 and math.isnan(acc)
    with pytest.raises(ValueError, match="shape"):
        td.masked_token_accuracy(np.zeros((2, 4, 10)), labels)


def test_preprocess_logits_reduces_to_argmax():
    logits = torch.zeros(2, 3, 6)
    logits[0, 0, 4] = logits[0, 1, 2] = logits[0, 2, 5] = logits[1, 0, 1] = logits[1, 1, 3] = logits[1, 2, 0] = 1.0
    expected = torch.tensor([[4, 2, 5], [1, 3, 0]])
    assert torch.equal(td.preprocess_logits_for_metrics(logits, None), expected)
    assert torch.equal(td.preprocess_logits_for_metrics((logits, torch.ones(1)), None), expected)


def test_perplexity_caps_overflow():
    assert perplexity(0.0) == 1.0
    assert perplexity(math.log(20.0)) == pytest.approx(20.0)
    assert perplexity(1e6) == math.inf
    assert math.isnan(perplexity(float("nan")))


def test_majority_token_accuracy():
    ds = datasets.Dataset.from_dict({
        "input_ids": [[2, 7, 7, 8, 3], [2, 7, 9, 3, 3]],
        "special_tokens_mask": [[1, 0, 0, 0, 1], [1, 0, 0, 1, 1]],
    })
    assert td.majority_token_accuracy(ds) == pytest.approx(3 / 5)  # non-special: 7 7 8 7 9


def test_load_text_datasets_by_name_uses_load_dataset_and_its_test_split(tmp_path):
    # No hub here: a local directory is the offline stand-in for a hub name; it goes through
    # datasets.load_dataset(dataset_name, dataset_config_name) just the same.
    data = tmp_path / "my_corpus"
    data.mkdir()
    (data / "train.csv").write_text("sentence,label\n" + "".join(f"train sentence {i},{i % 2}\n" for i in range(8)))
    (data / "test.csv").write_text("sentence,label\n" + "".join(f"test sentence {i},{i % 2}\n" for i in range(3)))
    ds = td.load_text_datasets(dataset_name=str(data), cache_dir=str(tmp_path / "hf"))
    assert list(ds["train"]["text"]) == [f"train sentence {i}" for i in range(8)]
    assert list(ds["test"]["text"]) == [f"test sentence {i}" for i in range(3)]


def _cache_entry(root: Path, vocab_size: int) -> Path:
    version = ".".join(map(str, sys.version_info[:3]))
    return root / f"tokenizer-py{version}-corpus{td.CORPUS_VERSION}-vocab{vocab_size}"


def test_tokenizer_cache_race_keeps_the_entry_that_landed(tmp_path, monkeypatch):
    real_train = td.train_tokenizer
    winner = real_train(["alpha beta gamma delta epsilon"] * 20, vocab_size=40)

    def racing_train(texts, vocab_size, save_dir=None, **kw):
        tok = real_train(texts, vocab_size=vocab_size, save_dir=save_dir, **kw)
        winner.save_pretrained(_cache_entry(tmp_path, vocab_size))  # another process finishes first
        return tok

    monkeypatch.setattr(td, "train_tokenizer", racing_train)
    got = td.embedded_tokenizer(cache_dir=tmp_path, vocab_size=500)
    assert got.get_vocab() == winner.get_vocab()  # everyone uses the entry on disk, not their own
    assert [p.name for p in tmp_path.iterdir()] == [_cache_entry(tmp_path, 500).name]  # temp dir removed


def test_tokenizer_cache_rebuilds_an_unreadable_entry(tmp_path):
    entry = _cache_entry(tmp_path, 500)
    entry.mkdir(parents=True)
    (entry / "tokenizer.json").write_text("{ not json")
    with pytest.warns(UserWarning, match="rebuilding the cached tokenizer"):
        tok = td.embedded_tokenizer(cache_dir=tmp_path, vocab_size=500)
    assert len(tok) == 500
    assert td.embedded_tokenizer(cache_dir=tmp_path, vocab_size=500).get_vocab() == tok.get_vocab()
