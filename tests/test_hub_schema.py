"""A ticket folder is data, never instructions: config.json against the schema, masks against the family's
prunable tensors, old folders still load, and one call keeps a ticket's zeros in a hand-written loop."""

import json
import shutil

import pytest
import timm
import torch
from safetensors.torch import load_file, save_file

from lottery_rg import LotteryTicket, prunable_parameters


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    torch.manual_seed(0)
    model = timm.create_model("resnet14_cifar", num_classes=10)
    mask = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n in prunable_parameters(model)}
    out = tmp_path_factory.mktemp("ticket") / "t"
    LotteryTicket(model, mask, level=1).save_pretrained(out)
    return out


def _variant(folder, tmp_path, edit_config=None, edit_mask=None):
    d = tmp_path / "v"
    shutil.copytree(folder, d)
    if edit_config:
        cfg = json.loads((d / "config.json").read_text())
        edit_config(cfg)
        (d / "config.json").write_text(json.dumps(cfg))
    if edit_mask:
        mask = load_file(d / "mask.safetensors")
        edit_mask(mask)
        save_file(mask, d / "mask.safetensors")
    return d


def _set(path, value):
    def edit(cfg):
        node = cfg
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return edit


@pytest.mark.parametrize("path, value, message", [
    (("lottery_rg", "model_args", "checkpoint_path"), "/etc/passwd", "checkpoint_path"),
    (("lottery_rg", "model_args", "pretrained_cfg_overlay"), {"file": "/tmp/x.pth"}, "pretrained_cfg_overlay"),
    (("lottery_rg", "model_args", "drop_rate"), 0.5, r"may only set \[.layers.\]"),
    (("lottery_rg", "model_args", "layers"), [5000, 2, 2], r"layers\[i\] must be an integer in \[1, 1000\]"),
    (("lottery_rg", "num_classes"), 10**9, "num_classes must be an integer"),
    (("lottery_rg", "in_chans"), 100, "in_chans must be an integer"),
    (("lottery_rg", "architecture"), "os.system", "must be a timm model name"),
    (("lottery_rg", "format"), 99, "format must be an integer"),
    (("lottery_rg", "run_this"), "rm -rf", "unknown keys"),
    (("pretrained_cfg", "file"), "/tmp/other.safetensors", "pretrained_cfg.file"),
    (("auto_map",), {"AutoModel": "evil.Model"}, "auto_map"),
])
def test_hostile_configs_are_refused_before_anything_is_built(folder, tmp_path, path, value, message):
    d = _variant(folder, tmp_path, edit_config=_set(path, value))
    with pytest.raises(ValueError, match=message) as err:
        LotteryTicket.from_pretrained(d)
    assert "config.json" in str(err.value)


def test_masks_must_name_exactly_the_prunable_tensors(folder, tmp_path):
    d = _variant(folder, tmp_path, edit_mask=lambda m: m.update({"bn1.weight": torch.ones(16, dtype=torch.bool)}))
    with pytest.raises(ValueError, match=r"not name exactly the prunable tensors.*extra \['bn1\.weight'\]"):
        LotteryTicket.from_pretrained(d)
    shutil.rmtree(d)
    d = _variant(folder, tmp_path, edit_mask=lambda m: m.pop("fc.weight"))
    with pytest.raises(ValueError, match=r"missing \['fc\.weight'\]"):
        LotteryTicket.from_pretrained(d)
    shutil.rmtree(d)
    d = _variant(folder, tmp_path, edit_config=lambda c: c["lottery_rg"]["prunable"].append("nope.weight"))
    with pytest.raises(ValueError, match=r"prunable names tensors that are not parameters.*nope\.weight"):
        LotteryTicket.from_pretrained(d)


def test_a_ticket_with_its_own_prunable_set_loads(tmp_path):
    """--prune_include chooses tensors the family would not prune (here BatchNorm weights too): the recorded
    prunable set, not the family's default, is what the mask is checked against."""
    torch.manual_seed(0)
    model = timm.create_model("resnet14_cifar", num_classes=10)
    names = prunable_parameters(model, include=[r"conv\d\.weight$", r"bn\d\.weight$"])
    assert "bn1.weight" in names and "fc.weight" not in names
    mask = {n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if n in names}
    LotteryTicket(model, mask, level=1).save_pretrained(tmp_path / "t")
    loaded = LotteryTicket.from_pretrained(tmp_path / "t")
    assert sorted(loaded.mask) == sorted(names) and all(torch.equal(loaded.mask[n], mask[n]) for n in names)


def test_bert_sizes_are_bounded():
    from lottery_rg.hub.schema import validate_ticket_config

    meta = {"family": "bert", "library": "transformers", "architecture": "BertForMaskedLM"}
    ok = {"model_type": "bert", "hidden_size": 64, "num_hidden_layers": 2, "lottery_rg": meta}
    validate_ticket_config(ok, "config.json")
    for key, value in (("hidden_size", 10**6), ("num_hidden_layers", 5000), ("vocab_size", 10**9),
                       ("max_position_embeddings", 10**8)):
        with pytest.raises(ValueError, match=key):
            validate_ticket_config({**ok, key: value}, "config.json")
    with pytest.raises(ValueError, match="architecture"):
        validate_ticket_config({**ok, "lottery_rg": {**meta, "architecture": "GPT2LMHeadModel"}}, "config.json")


def test_format_1_folders_still_load(folder, tmp_path):
    """lottery_rg 0.1 folders: model.safetensors = rewind weights, no rewind.safetensors, no format key."""
    d = _variant(folder, tmp_path, edit_config=lambda c: [c["lottery_rg"].pop(k) for k in ("format",
                                                                                           "model_weights")])
    (d / "model.safetensors").unlink()
    (d / "rewind.safetensors").rename(d / "model.safetensors")
    old = LotteryTicket.from_pretrained(d)
    new = LotteryTicket.from_pretrained(folder)
    assert all(torch.equal(v, new.model.state_dict()[k]) for k, v in old.model.state_dict().items())
    with pytest.raises(ValueError, match="no trained weights"):
        LotteryTicket.from_pretrained(d, weights="trained")


def test_without_trained_weights_the_card_claims_no_metrics(folder):
    ticket = LotteryTicket.from_pretrained(folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["lottery_rg"]["format"] == 2 and cfg["lottery_rg"]["model_weights"] == "rewind"
    assert "import lottery_rg" in (folder / "README.md").read_text()
    assert not ticket.generate_model_card().data.eval_results


def test_keep_masked_in_a_plain_pytorch_loop(folder):
    ticket = LotteryTicket.from_pretrained(folder)
    model = ticket.model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    handle = ticket.keep_masked(optimizer)
    x, y = torch.randn(8, 3, 16, 16), torch.randint(0, 10, (8,))
    for _ in range(3):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in ticket.mask.items())
    handle.remove()
    optimizer.step()  # momentum moves the pruned weights once the hook is gone: the hook was what kept them at zero
    assert any(torch.count_nonzero(params[n].detach()[~m]) > 0 for n, m in ticket.mask.items())
