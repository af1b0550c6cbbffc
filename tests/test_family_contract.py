"""The model-family contract, run for every registered family (docs/families.md).

Adding a family is one module in ``lottery_rg/models``, one registry line in ``lottery_rg/models/__init__.py`` and
one entry in ``CASES`` below; ``test_every_registered_family_is_in_the_contract`` fails until that entry exists.
Each entry builds a small member of the family, names two other depths for elastic transfer (``None`` where the
family has no depth siblings), and prepares one short IMP run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import timm
import torch
from utils import training_args

from lottery_rg import LotteryArguments, LotteryTicket, LotteryTrainer
from lottery_rg.hub.schema import validate_ticket_config
from lottery_rg.models import families, family_of, get_family, prunable_parameters
from lottery_rg.run import RunDir
from lottery_rg.training.arguments import DataArguments, ModelArguments


def _image_setup(model):
    from lottery_rg.tasks.image import accuracy_metrics, prepare_data_for_model

    data = DataArguments(image_size=16, max_train_samples=32, max_eval_samples=16)
    train, test, _, collator = prepare_data_for_model(model, data, with_collator=True)
    return dict(model=model, train_dataset=train, eval_dataset=test, data_collator=collator,
                compute_metrics=accuracy_metrics), {}


def _bert_setup(_model):
    from lottery_rg.tasks.mlm import prepare_mlm_task

    setup = prepare_mlm_task(ModelArguments(model_name_or_path="embedded-bert",
                                            model_kwargs={"num_hidden_layers": 2, "hidden_size": 32}),
                             DataArguments(max_seq_length=32, max_train_samples=32, max_eval_samples=16), seed=0)
    return setup.trainer_kwargs(), {"optim": "adamw_torch", "optim_args": None, "learning_rate": 1e-3}


def _tiny_bert():
    from transformers import BertConfig, BertForMaskedLM

    return BertForMaskedLM(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                      intermediate_size=64, max_position_embeddings=64))


@dataclass
class Case:
    family: str
    build: Callable[[], torch.nn.Module]  # a small member, built the way users build one
    depths: tuple[tuple[int, ...], tuple[int, ...]] | None  # a deeper and a shallower sibling (elastic transfer)
    setup: Callable  # model -> (LotteryTrainer keyword arguments, TrainingArguments changes) for one IMP level
    plain_load: str  # how a user without lottery_rg's API loads the ticket folder: "timm" or "transformers"


CASES = [
    Case("resnet", lambda: timm.create_model("resnet14_cifar", num_classes=10), ((3, 3, 3), (1, 1, 1)),
         _image_setup, "timm"),
    Case("vgg", lambda: timm.create_model("vgg13_cifar", num_classes=10, channels=(8, 16, 16, 32, 32)),
         ((2, 2, 3, 3, 3), (1, 1, 1, 1, 1)), _image_setup, "timm"),
    Case("vit", lambda: timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, patch_size=4, depth=3,
                                          embed_dim=32, num_heads=2), ((5,), (2,)), _image_setup, "timm"),
    Case("bert", _tiny_bert, ((3,), (1,)), _bert_setup, "transformers"),
]
BY_NAME = {c.family: c for c in CASES}


def test_every_registered_family_is_in_the_contract():
    assert sorted(f.name for f in families()) == sorted(BY_NAME)


@pytest.fixture(params=sorted(BY_NAME), scope="module")
def case(request):
    return BY_NAME[request.param]


@pytest.fixture(scope="module")
def model(case):
    torch.manual_seed(0)
    m = case.build()
    assert family_of(m).name == case.family
    return m


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def test_the_layout_partitions_the_prunable_tensors(case, model):
    family = get_family(case.family)
    layout = family.layout(model)
    names = prunable_parameters(model)
    assert names and len(layout.blocks) >= 2 and layout.num_stages >= 1
    assert all(layout.part_of(n) in ("stem", "block", "head") for n in names), \
        [n for n in names if layout.part_of(n) not in ("stem", "block", "head")]
    params = dict(model.named_parameters())
    assert all(layout.part_of(n) != "other" for n in params), [n for n in params if layout.part_of(n) == "other"]
    for granularity in ("tensor", "block", "stage"):
        flat = [p for u in layout.units(names, granularity) for p in u.params]
        assert sorted(flat) == sorted(names) and len(flat) == len(set(flat)), granularity
    entries = [b for b in layout.blocks if b.index == 0]
    assert len(entries) == layout.num_stages  # every stage has one entry block
    assert sum(layout.depths()) == len(layout.blocks)


def test_build_config_build_round_trips(case, model):
    family = get_family(case.family)
    arch = json.loads(json.dumps(family.architecture(model)))  # as a ticket's or a run's JSON holds it
    family.check_architecture(arch)  # a family accepts what it writes
    again = family.build(arch)
    assert json.loads(json.dumps(family.architecture(again))) == arch
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert family.layout(again).depths() == family.layout(model).depths()


def test_with_depths_builds_depth_siblings(case, model):
    family = get_family(case.family)
    if case.depths is None:
        with pytest.raises(NotImplementedError):
            family.with_depths(model, family.layout(model).depths())
        return
    for depths in case.depths:
        sibling = family.build(family.with_depths(model, depths))
        assert family.layout(sibling).depths() == tuple(depths)
        assert family.signature(sibling) == family.signature(model)
    with pytest.raises(ValueError):
        family.with_depths(model, (1,) * (family.layout(model).num_stages + 1))


def test_a_ticket_saves_loads_and_equals(case, model, tmp_path):
    names = prunable_parameters(model)
    gen = torch.Generator().manual_seed(0)
    params = dict(model.named_parameters())
    mask = {n: torch.rand(params[n].shape, generator=gen) > 0.3 for n in names}
    ticket = LotteryTicket(model, mask, level=2, lottery={"prune_fraction": 0.2})
    ticket.save_pretrained(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    validate_ticket_config(cfg, "config.json")
    loaded = LotteryTicket.from_pretrained(tmp_path / "t")
    assert loaded.family.name == case.family and loaded.level == 2
    assert loaded.architecture() == ticket.architecture()
    assert sorted(loaded.mask) == sorted(mask) and all(torch.equal(loaded.mask[n], mask[n]) for n in mask)
    assert _state_equal(loaded.model, ticket.model)


def test_plain_timm_or_transformers_loads_the_ticket(case, model, tmp_path):
    names = prunable_parameters(model)
    mask = {n: torch.ones_like(p, dtype=torch.bool) for n, p in model.named_parameters() if n in names}
    mask[names[0]].view(-1)[::2] = False
    LotteryTicket(model, mask).save_pretrained(tmp_path / "t")
    if case.plain_load == "timm":  # the card's recipe: timm (after `import lottery_rg.models` for CIFAR models)
        plain = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    else:
        from transformers import AutoModelForMaskedLM

        plain = AutoModelForMaskedLM.from_pretrained(tmp_path / "t")
    assert type(plain) is type(model)
    assert _state_equal(plain, model)
    assert torch.count_nonzero(dict(plain.named_parameters())[names[0]].detach().view(-1)[::2]) == 0


def test_one_short_imp_level_runs(case, model, tmp_path):
    kwargs, changes = case.setup(case.build())
    args = training_args(tmp_path / "run", max_steps=2, per_device_train_batch_size=8, **changes)
    trainer = LotteryTrainer(args=args, lottery_args=LotteryArguments(levels=1, prune_fraction=0.5), **kwargs)
    result = trainer.run_imp()
    assert [r["level"] for r in result.levels] == [0, 1]
    assert result.levels[1]["density"] == pytest.approx(0.5, abs=0.01)
    ticket = LotteryTicket.from_run(tmp_path / "run", level=1)
    assert ticket.family.name == case.family and RunDir(tmp_path / "run").flow.is_file()
    assert len(trainer.flow.get_units("block")) >= 2


def test_channels_last_is_the_convolutional_families_choice(case, model, tmp_path):
    """``ModelFamily.convolutional``: such a model computes the same in channels-last (``--channels_last``,
    ``--fast auto``) and still writes contiguous tensors; any other family refuses ``--channels_last``."""
    from lottery_rg.training.precision import choose_precision, to_channels_last

    family = get_family(case.family)
    args = training_args(tmp_path)
    if not family.convolutional:
        assert choose_precision(args, model, fast="auto")[1].channels_last is False
        with pytest.raises(ValueError, match=f"{case.family} family"):
            choose_precision(args, model, channels_last=True)
        return
    assert choose_precision(args, model, fast="auto")[1].channels_last is True
    import copy

    x = torch.randn(4, 3, 16, 16)
    reference = copy.deepcopy(model).eval()(x)
    cl = to_channels_last(copy.deepcopy(model)).eval()
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for p in cl.parameters())
    torch.testing.assert_close(cl(x.contiguous(memory_format=torch.channels_last)), reference, rtol=1e-4, atol=1e-5)
    assert all(t.is_contiguous() for t in cl.state_dict().values())
