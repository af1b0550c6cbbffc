import pytest
import timm
import torch

import lottery_rg  # noqa: F401  (registers the CIFAR ResNets)
from lottery_rg.models.families import family_of, get_family, prunable_parameters
from lottery_rg.models.resnet import CIFAR_RESNET_DEPTHS


@pytest.mark.parametrize("depth", sorted(CIFAR_RESNET_DEPTHS))
def test_cifar_resnets_are_in_timms_registry(depth):
    model = timm.create_model(f"resnet{depth}_cifar")
    layout = family_of(model).layout(model)
    n = CIFAR_RESNET_DEPTHS[depth]
    assert layout.depths() == (n, n, n)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) + 1 == depth  # 6n + 1 3x3 convolutions + the linear head
    assert [f["num_chs"] for f in model.feature_info[1:]] == [16, 32, 64]
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


def test_resnet20_has_the_published_parameter_count():
    model = timm.create_model("resnet20_cifar")
    # He et al. report 0.27M; the projection shortcuts add 2 1x1 convolutions (+BN)
    assert 0.26e6 < sum(p.numel() for p in model.parameters()) < 0.28e6


def test_layout_of_imagenet_resnets():
    r18 = timm.create_model("resnet18", num_classes=10)
    layout = family_of(r18).layout(r18)
    assert layout.depths() == (2, 2, 2, 2)
    assert [b.prefix for b in layout.blocks if b.downsample] == ["layer2.0", "layer3.0", "layer4.0"]
    assert layout.part_of("conv1.weight") == "stem" and layout.part_of("fc.weight") == "head"
    with torch.device("meta"):
        r50 = timm.create_model("resnet50")
    assert family_of(r50).layout(r50).depths() == (3, 4, 6, 3)
    assert family_of(r50).signature(r50)["block_type"] == ["Bottleneck"]


def test_default_prunable_set_is_conv_and_linear_weights():
    model = timm.create_model("resnet20_cifar")
    names = prunable_parameters(model)
    assert "conv1.weight" in names and "fc.weight" in names and "layer2.0.downsample.0.weight" in names
    assert not any(n.endswith("bias") or ".bn" in n or n.startswith("bn") for n in names)
    assert len(names) == 19 + 2 + 1  # 19 3x3 convs, 2 projection shortcuts, the head


def test_units_partition_the_prunable_tensors():
    model = timm.create_model("resnet32_cifar")
    layout = family_of(model).layout(model)
    names = prunable_parameters(model)
    for granularity in ("tensor", "block", "stage"):
        units = layout.units(names, granularity)
        flat = [p for u in units for p in u.params]
        assert sorted(flat) == sorted(names)
    stages = layout.units(names, "stage")
    assert [u.name for u in stages] == ["stem", "layer1", "layer2", "layer3", "head"]
    blocks = [u for u in layout.units(names, "block") if u.kind == "block"]
    assert len(blocks) == 15 and sum(u.downsample for u in blocks) == 2


def test_architecture_round_trip_and_depth_siblings():
    family = get_family("resnet")
    model = timm.create_model("resnet20_cifar", num_classes=7)
    arch = family.architecture(model)
    assert arch == {"library": "timm", "architecture": "resnet20_cifar", "num_classes": 7, "in_chans": 3}
    assert family.build(arch).fc.out_features == 7
    assert family.with_depths(model, [9, 9, 9])["architecture"] == "resnet56_cifar"
    odd = family.with_depths(model, [4, 4, 4])
    assert family.layout(family.build(odd)).depths() == (4, 4, 4)
    with pytest.raises(ValueError, match="stages"):
        family.with_depths(model, [3, 3])


def test_unknown_models_get_a_clear_error():
    with pytest.raises(ValueError, match="no model-family description for Sequential"):
        family_of(torch.nn.Sequential(torch.nn.Linear(2, 2)))
    with pytest.raises(ValueError, match="unknown model family"):
        get_family("no_such_family")
    with pytest.raises(ValueError, match="unknown timm model"):
        get_family("resnet").build({"architecture": "resnet21_cifar"})
