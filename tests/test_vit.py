"""The Vision Transformer family: a timm ViT built at the data's image size, one stage of transformer blocks,
the blocks' linear layers pruned, tickets plain timm rebuilds, and depth siblings for elastic transfer."""

import json

import pytest
import timm
import torch

from lottery_rg import LotteryTicket
from lottery_rg.branches.elastic import ElasticTicket, inverse_mapping
from lottery_rg.models import family_of, prunable_parameters
from lottery_rg.models.loading import load_model

TINY = dict(patch_size=4, depth=4, embed_dim=32, num_heads=2)


def test_vit_tiny_is_built_at_the_datas_image_size():
    model = load_model("vit_tiny_patch16_224", num_labels=10, image_size=16, model_kwargs={"patch_size": 4})
    assert tuple(model.patch_embed.img_size) == (16, 16) and model.patch_embed.num_patches == 16
    family = family_of(model)
    assert family.name == "vit"
    layout = family.layout(model)
    assert layout.depths() == (12,) and layout.stage_names == {1: "blocks"}
    assert {"patch_embed", "cls_token", "pos_embed"} <= set(layout.stem) and "head" in layout.head
    names = prunable_parameters(model)
    assert len(names) == 12 * 4 + 1 and names[-1] == "head.weight"
    assert all(n.endswith(("qkv.weight", "proj.weight", "fc1.weight", "fc2.weight")) for n in names[:-1])
    assert family.architecture(model)["model_args"] == {"img_size": 16, "patch_size": 4}
    assert model(torch.randn(2, 3, 16, 16)).shape == (2, 10)


def test_an_image_size_the_patches_do_not_tile_is_refused():
    with pytest.raises(ValueError, match="not a multiple of the ViT's patch size"):
        load_model("vit_tiny_patch16_224", num_labels=10, image_size=18, model_kwargs={"patch_size": 4})


def test_a_ticket_is_a_plain_timm_checkpoint_of_the_same_shape(tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, **TINY)
    mask = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n in prunable_parameters(model)}
    LotteryTicket(model, mask).save_pretrained(tmp_path / "t")
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert {k: cfg["model_args"][k] for k in TINY} == TINY and cfg["model_args"]["img_size"] in (16, [16, 16])
    plain = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    assert len(plain.blocks) == 4 and torch.equal(plain.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)
    assert "import lottery_rg" not in (tmp_path / "t" / "README.md").read_text().split("Without lottery_rg")[-1]


def test_elastic_transfer_between_vit_depths():
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, **TINY)
    mask = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n in prunable_parameters(model)}
    et = ElasticTicket(LotteryTicket(model, mask))
    deep = et.to("6")
    assert et.last_result.mapping == {1: [0, 1, 1, 2, 2, 3]} and len(deep.model.blocks) == 6
    assert torch.equal(deep.model.blocks[2].mlp.fc1.weight, model.blocks[1].mlp.fc1.weight)
    assert torch.equal(deep.model.pos_embed, model.pos_embed) and torch.equal(deep.model.head.weight, model.head.weight)
    shallow = ElasticTicket(deep).transform("vit-4", inverse_mapping(et.last_result.mapping))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in shallow.model.state_dict().items())


def test_every_constructor_argument_that_shapes_the_model_is_recorded():
    family_model = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=16, class_token=False,
                                     global_pool="avg", qkv_bias=False, reg_tokens=2, **TINY)
    family = family_of(family_model)
    arch = family.architecture(family_model)
    assert {k: arch["model_args"][k] for k in ("class_token", "global_pool", "qkv_bias", "reg_tokens")} == \
        {"class_token": False, "global_pool": "avg", "qkv_bias": False, "reg_tokens": 2}
    family.check_architecture(arch)
    again = family.build(arch)
    assert {k: v.shape for k, v in again.state_dict().items()} == \
        {k: v.shape for k, v in family_model.state_dict().items()}
    with pytest.raises(ValueError, match="global_pool"):
        family.check_architecture({**arch, "model_args": {**arch["model_args"], "global_pool": "os.system"}})
