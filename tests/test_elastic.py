"""ElasticTicket and the baselines: mappings block by block, inverses, RG policy, invariants, errors."""

import pytest
import timm
import torch

from lottery_rg import IMPFlow, LotteryTicket, prunable_parameters
from lottery_rg.branches.baselines import baseline_mask, layerwise_counts, reinit_model
from lottery_rg.branches.elastic import (
    ElasticTicket,
    inverse_mapping,
    rg_mapping,
    squeeze_mapping,
    stretch_mapping,
)
from lottery_rg.models.families import family_of
from lottery_rg.pruning.masks import mask_density, next_mask


def make_ticket(arch="resnet20_cifar", levels=3, seed=0, with_flow=False, model_kwargs=None):
    torch.manual_seed(seed)
    model = timm.create_model(arch, **(model_kwargs or {}))
    with torch.no_grad():  # give BatchNorm buffers distinct values so that travelling buffers are visible
        for _, buf in model.named_buffers():
            if buf.dtype.is_floating_point:
                buf.copy_(torch.rand_like(buf) + 0.5)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    mask = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    flow = IMPFlow.from_model(model, names) if with_flow else None
    for level in range(levels + 1):
        if flow is not None:
            flow.add_level(level, mask)
        if level < levels:
            mask = next_mask({n: params[n].detach() for n in names}, mask, 0.2)
    return LotteryTicket(model, mask, level=levels, flow=flow)


def block_tensors(model, prefix, mask=None):
    state = {k[len(prefix) + 1:]: v for k, v in model.state_dict().items() if k.startswith(prefix + ".")}
    masks = {k[len(prefix) + 1:]: v for k, v in (mask or {}).items() if k.startswith(prefix + ".")}
    return state, masks


def assert_block_equal(src, s_prefix, dst, d_prefix):
    s_state, s_mask = block_tensors(src.model, s_prefix, src.mask)
    d_state, d_mask = block_tensors(dst.model, d_prefix, dst.mask)
    assert s_state.keys() == d_state.keys() and s_mask.keys() == d_mask.keys()
    for k in s_state:
        assert torch.equal(s_state[k], d_state[k]), f"{d_prefix}.{k} is not {s_prefix}.{k}"
    for k in s_mask:
        assert torch.equal(s_mask[k], d_mask[k]), f"mask of {d_prefix}.{k}"


def test_elth_mappings_resnet32_to_56():
    assert stretch_mapping(5, 9, "interpolation") == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert stretch_mapping(5, 9, "appending") == [0, 1, 2, 3, 4, 1, 2, 3, 4]
    assert stretch_mapping(3, 5, "interpolation") == [0, 1, 1, 2, 2]
    assert stretch_mapping(3, 5, "appending") == [0, 1, 2, 1, 2]
    assert stretch_mapping(5, 9, "interpolation", replicate=[1, 2]) == [0, 1, 1, 1, 2, 2, 2, 3, 4]
    assert stretch_mapping(5, 9, "appending", replicate=[1]) == [0, 1, 2, 3, 4, 1, 1, 1, 1]
    assert stretch_mapping(3, 4) == [0, 1, 1, 2]  # uneven: the earlier block gets the extra copy
    assert squeeze_mapping(9, 5, "later") == [0, 1, 2, 3, 4]
    assert squeeze_mapping(9, 5, "interleaved") == [0, 1, 3, 5, 7]
    assert squeeze_mapping(5, 3, "earlier") == [0, 3, 4]
    with pytest.raises(ValueError, match="entry block 0 is never replicated"):
        stretch_mapping(5, 9, replicate=[0])


@pytest.mark.parametrize("strategy", ["interpolation", "appending"])
def test_stretch_copies_blocks_in_the_documented_order(strategy):
    src = make_ticket("resnet32_cifar")
    tgt = ElasticTicket(src).stretch("resnet56_cifar", strategy=strategy)
    expected = stretch_mapping(5, 9, strategy)
    for stage in (1, 2, 3):
        for j, i in enumerate(expected):
            assert_block_equal(src, f"layer{stage}.{i}", tgt, f"layer{stage}.{j}")
    for prefix in ("conv1", "bn1", "fc"):  # stem and head copied unchanged
        assert_block_equal(src, prefix, tgt, prefix)
    assert family_of(tgt.model).layout(tgt.model).depths() == (9, 9, 9)
    # every prunable tensor of the target has a mask and pruned weights are zero
    params = dict(tgt.model.named_parameters())
    assert set(tgt.mask) == set(prunable_parameters(tgt.model))
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in tgt.mask.items())


def test_stretch_then_inverse_squeeze_gives_back_the_source_exactly():
    src = make_ticket("resnet20_cifar")
    et = ElasticTicket(src)
    big = et.stretch("resnet44_cifar", strategy="appending")
    back = ElasticTicket(big).transform("resnet20_cifar", inverse_mapping(et.last_result.mapping))
    a, b = src.model.state_dict(), back.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(src.mask[n], back.mask[n]) for n in src.mask)


def test_density_is_reported_and_reprune_hits_the_request():
    src = make_ticket("resnet20_cifar", levels=4)
    et = ElasticTicket(src)
    tgt = et.stretch("resnet32_cifar")
    res = et.last_result
    assert res.source_density == pytest.approx(src.density) and res.target_density == pytest.approx(tgt.density)
    assert abs(res.target_density - res.source_density) < 0.05 and res.target_density != res.source_density
    exact = et.stretch("resnet32_cifar", target_density=0.3)
    assert exact.density == pytest.approx(0.3, abs=1e-5)
    with pytest.raises(ValueError, match="cannot be restored"):
        et.stretch("resnet32_cifar", target_density=0.9)


def test_rg_policy_keeps_each_stages_class_mix():
    mixed = ["entry", "irrelevant", "irrelevant", "irrelevant", "irrelevant", "relevant", "relevant", "relevant",
             "relevant"]
    assert rg_mapping(mixed, 5) == [0, 1, 2, 5, 6]  # half irrelevant, half relevant, early blocks of each class
    assert rg_mapping(["entry"] + ["relevant"] * 8, 5) == [0, 1, 2, 3, 4]
    # stretching: ResNet-32-like stage with one irrelevant block of four -> 2 irrelevant slots of 8
    assert rg_mapping(["entry", "irrelevant", "relevant", "relevant", "relevant"], 9) == [0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert rg_mapping(["entry", "irrelevant", "irrelevant", "irrelevant", "relevant"], 9, "appending") == \
        [0, 1, 2, 3, 4, 1, 2, 3, 4]


def designed_flow_ticket(fast_blocks, arch="resnet32_cifar", levels=5):
    """A ticket whose flow has known classes: blocks in ``fast_blocks`` lose weights slowly (relevant),
    the others fast (irrelevant); stem and head are untouched by the design."""
    model = timm.create_model(arch)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    layout = family_of(model).layout(model)
    flow = IMPFlow.from_model(model, names)
    for level in range(levels + 1):
        mask = {}
        for n in names:
            block = layout.block_of(n)
            f = 0.9 if block is None or block.prefix in fast_blocks else 0.6
            keep = max(1, round(params[n].numel() * f ** level))
            m = torch.zeros(params[n].numel(), dtype=torch.bool)
            m[:keep] = True
            mask[n] = m.view_as(params[n])
        flow.add_level(level, mask)
    return LotteryTicket(model, mask, level=levels, flow=flow)


def test_rg_guided_ticket_follows_the_source_flow():
    early = {f"layer{s}.{i}" for s in (1, 2, 3) for i in (0, 1, 2)}
    everything = {f"layer{s}.{i}" for s in (1, 2, 3) for i in range(5)}
    et_a, et_b = ElasticTicket(designed_flow_ticket(early)), ElasticTicket(designed_flow_ticket(everything))
    ca, cb = et_a.block_classes(), et_b.block_classes()
    assert ca[1] == ["relevant", "relevant", "relevant", "irrelevant", "irrelevant"]
    assert cb[1] == ["marginal"] * 5  # every unit shrinks alike: M is constant, λ = 1
    # squeezing 32 -> 20 keeps 2 of 4 non-entry blocks: one relevant and one irrelevant for A,
    # the first two for B (a single class): the policy reads the flow
    et_a.rg_guided("resnet20_cifar")
    et_b.rg_guided("resnet20_cifar")
    assert et_a.last_result.mapping == {s: [0, 1, 3] for s in (1, 2, 3)}
    assert et_b.last_result.mapping == {s: [0, 1, 2] for s in (1, 2, 3)}
    assert et_a.last_result.class_counts()[1] == {"relevant": 1, "irrelevant": 1}
    # stretching 32 -> 56: each class gets its share of the 8 slots, spread over its blocks
    et_a.rg_guided("resnet56_cifar")
    assert et_a.last_result.class_counts()[1] == {"relevant": 4, "irrelevant": 4}
    assert et_a.last_result.mapping[1] == [0, 1, 1, 2, 2, 3, 3, 4, 4]


def test_incompatible_targets_are_refused_before_any_copy():
    src = make_ticket("resnet20_cifar", levels=1)
    et = ElasticTicket(src)
    with pytest.raises(ValueError, match="not a depth variant"):
        et.stretch("resnet18")
    with pytest.raises(ValueError, match="use squeeze"):
        et.stretch("resnet14_cifar")
    with pytest.raises(ValueError, match="use stretch"):
        et.squeeze("resnet56_cifar")
    with pytest.raises(ValueError, match="unknown timm model"):
        et.stretch("resnet21_cifar")
    with pytest.raises(ValueError, match="entry .*block must map to source block 0"):
        et.transform("resnet20_cifar", [1, 1, 2])
    with pytest.raises(ValueError, match="source blocks \\[5\\] do not exist"):
        et.transform("resnet32_cifar", [0, 1, 2, 5, 1])
    from transformers import BertConfig, BertForMaskedLM
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                                      intermediate_size=64, vocab_size=50))
    with pytest.raises(ValueError, match="families differ"):
        et.transform(bert, [0])


@pytest.mark.parametrize("kind", ["random", "reinit", "magnitude", "snip", "grasp"])
def test_baselines_keep_layerwise_densities_exactly(kind):
    from utils import image_setup

    src = make_ticket("resnet14_cifar", levels=3)
    setup = image_setup("resnet14_cifar", train_samples=32)
    batch = {k: torch.stack([setup.train_dataset[i][k] for i in range(16)]) for k in ("pixel_values", "labels")}
    model = timm.create_model("resnet14_cifar")
    mask = baseline_mask(kind, model, src.mask, batches=[batch], seed=1)
    assert layerwise_counts(mask) == layerwise_counts(src.mask)
    assert mask_density(mask) == pytest.approx(src.density)
    if kind in ("random", "magnitude", "snip", "grasp"):
        assert any(not torch.equal(mask[n], src.mask[n]) for n in mask)
    if kind == "magnitude":
        params = dict(model.named_parameters())
        n = "layer2.1.conv1.weight"
        assert params[n].abs()[~mask[n]].max() <= params[n].abs()[mask[n]].min()


def test_reinit_gives_fresh_weights_of_the_same_architecture():
    src = make_ticket("resnet14_cifar", levels=1)
    fresh = reinit_model(src.model, seed=3)
    a, b = src.model.state_dict(), fresh.state_dict()
    assert a.keys() == b.keys()
    assert not torch.equal(a["layer1.0.conv1.weight"], b["layer1.0.conv1.weight"])
    assert torch.equal(reinit_model(src.model, seed=3).state_dict()["fc.weight"], b["fc.weight"])


@pytest.mark.parametrize("kind", ["snip", "grasp"])
def test_saliency_scoring_uses_batch_statistics_and_restores_buffers(kind):
    from utils import image_setup

    setup = image_setup("resnet14_cifar", train_samples=32)
    batch = {k: torch.stack([setup.train_dataset[i][k] for i in range(16)]) for k in ("pixel_values", "labels")}
    model = timm.create_model("resnet14_cifar").eval()
    before = {n: b.clone() for n, b in model.named_buffers()}
    src = make_ticket("resnet14_cifar", levels=2)
    baseline_mask(kind, model, src.mask, batches=[batch])
    assert not model.training, "the model's mode is restored"
    assert all(torch.equal(before[n], b) for n, b in model.named_buffers()), "BatchNorm statistics are restored"
    assert all(p.grad is None for p in model.parameters())


def test_bert_encoders_stretch_and_squeeze_layer_by_layer():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    model = BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=4, num_attention_heads=2,
                                       intermediate_size=64, max_position_embeddings=32))
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    mask = next_mask({n: params[n].detach() for n in names}, {n: torch.ones_like(params[n], dtype=torch.bool)
                                                             for n in names}, 0.5)
    src = LotteryTicket(model, mask, level=1)
    deep = ElasticTicket(src).stretch("bert-8")
    assert deep.model.config.num_hidden_layers == 8
    for j, i in enumerate([0, 1, 1, 1, 2, 2, 3, 3]):  # 7 slots over 3 replicable layers, earlier ones first
        assert_block_equal(src, f"bert.encoder.layer.{i}", deep, f"bert.encoder.layer.{j}")
    assert_block_equal(src, "bert.embeddings", deep, "bert.embeddings")
    shallow = ElasticTicket(src).squeeze("2")
    assert shallow.model.config.num_hidden_layers == 2
    assert_block_equal(src, "bert.encoder.layer.1", shallow, "bert.encoder.layer.1")
    with pytest.raises(ValueError, match="not a depth variant"):
        ElasticTicket(src).transform(BertForMaskedLM(BertConfig(vocab_size=60, hidden_size=48, num_hidden_layers=4,
                                                                num_attention_heads=2, intermediate_size=64,
                                                                max_position_embeddings=32)), [0, 1, 2, 3])


def test_imagenet_resnets_stretch_and_squeeze_within_one_block_type():
    """resnet18 ⇄ resnet34 (BasicBlock) and resnet50 → resnet101 (Bottleneck), block by block."""
    r18 = make_ticket("resnet18", levels=2)
    r34 = ElasticTicket(r18).stretch("resnet34")
    assert family_of(r34.model).layout(r34.model).depths() == (3, 4, 6, 3)
    for stage, depth in zip((1, 2, 3, 4), (3, 4, 6, 3)):
        for j, i in enumerate(stretch_mapping(2, depth)):  # one replicable block per stage: [0, 1, 1, ...]
            assert_block_equal(r18, f"layer{stage}.{i}", r34, f"layer{stage}.{j}")
    for prefix in ("conv1", "bn1", "fc"):
        assert_block_equal(r18, prefix, r34, prefix)
    back = ElasticTicket(r34).squeeze("resnet18")  # dropping the later copies gives back the source
    a, b = r18.model.state_dict(), back.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a) and all(torch.equal(r18.mask[n], back.mask[n]) for n in r18.mask)

    r50 = make_ticket("resnet50", levels=1)
    r101 = ElasticTicket(r50).stretch("resnet101", strategy="appending")
    assert family_of(r101.model).layout(r101.model).depths() == (3, 4, 23, 3)
    for j, i in enumerate(stretch_mapping(6, 23, "appending")):
        assert_block_equal(r50, f"layer3.{i}", r101, f"layer3.{j}")
    for j in range(4):
        assert_block_equal(r50, f"layer2.{j}", r101, f"layer2.{j}")
    assert set(r101.mask) == set(prunable_parameters(r101.model))
    with pytest.raises(ValueError, match="block_type"):
        ElasticTicket(r18).stretch("resnet50")  # BasicBlock -> Bottleneck is not a depth variant
