"""The CIFAR VGG family: open_lth's shape in timm's registry, layers and stages, and elastic transfer between
depths by replicating and dropping layers (Chen et al. 2021, E-LTH)."""

import pytest
import timm
import torch
from test_elastic import assert_block_equal, make_ticket

from lottery_rg.branches.elastic import ElasticTicket
from lottery_rg.models import family_of, prunable_parameters
from lottery_rg.models.loading import load_model
from lottery_rg.models.vgg import VGG_DEPTHS

NARROW = {"channels": (8, 16, 16, 32, 32)}


@pytest.mark.parametrize("depth", sorted(VGG_DEPTHS))
def test_vggs_are_in_timms_registry_with_open_lths_shape(depth):
    model = timm.create_model(f"vgg{depth}_cifar")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) + 3 == depth  # VGG-n: n - 3 convolutions here, the three linear layers replaced by one
    assert [c.kernel_size for c in convs] == [(3, 3)] * len(convs) and all(c.bias is not None for c in convs)
    assert [c.out_channels for c in convs][-1] == 512 and model.fc.in_features == 512
    layout = family_of(model).layout(model)
    assert layout.depths() == VGG_DEPTHS[depth] and layout.stem == []
    assert prunable_parameters(model) == [f"{b.prefix}.conv.weight" for b in layout.blocks]  # convolutions only
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg16_has_the_cifar_parameter_count():
    assert 14.7e6 < sum(p.numel() for p in timm.create_model("vgg16_cifar").parameters()) < 14.8e6


def test_images_too_small_for_the_poolings_are_refused():
    with pytest.raises(ValueError, match="at least 16 pixels"):
        load_model("vgg11_cifar", num_labels=10, image_size=8)
    assert load_model("vgg11_cifar", num_labels=10, image_size=16, model_kwargs=NARROW).channels == NARROW["channels"]


def test_stretch_13_to_19_replicates_layers_inside_stages_and_squeeze_undoes_it():
    source = make_ticket_vgg("vgg13_cifar")
    et = ElasticTicket(source)
    deep = et.stretch("vgg19_cifar")
    assert et.last_result.mapping == {1: [0, 1], 2: [0, 1], 3: [0, 1, 1, 1], 4: [0, 1, 1, 1], 5: [0, 1, 1, 1]}
    assert family_of(deep.model).layout(deep.model).depths() == VGG_DEPTHS[19]
    assert deep.model.channels == NARROW["channels"]  # the target keeps the source's widths
    for stage in range(3):
        for j in range(4 if stage >= 2 else 2):
            assert_block_equal(source, f"stages.{stage}.{min(j, 1)}", deep, f"stages.{stage}.{j}")
    assert_block_equal(source, "fc", deep, "fc")
    back = ElasticTicket(deep).squeeze("vgg13_cifar")  # drop the later layers: the replicas
    assert all(torch.equal(v, source.model.state_dict()[k]) for k, v in back.model.state_dict().items())
    assert all(torch.equal(back.mask[n], source.mask[n]) for n in source.mask)


def test_vgg11_has_no_layer_to_replicate_in_its_first_stages():
    with pytest.raises(ValueError, match="nothing to replicate"):
        ElasticTicket(make_ticket_vgg("vgg11_cifar")).stretch("vgg13_cifar")


def test_depths_of_one_width_only():
    source = make_ticket_vgg("vgg13_cifar")
    with pytest.raises(ValueError, match="not a depth variant"):
        ElasticTicket(source).to(timm.create_model("vgg19_cifar", num_classes=10))  # the full-width VGG-19


def make_ticket_vgg(arch):
    torch.manual_seed(0)
    return make_ticket(arch, levels=2, model_kwargs=dict(NARROW, num_classes=10))
