"""Tickets: save_pretrained / from_pretrained / push_to_hub round trips, interop, refusals, cards."""

import json
import shutil

import pytest
import timm
import torch
from huggingface_hub import ModelCard
from safetensors.torch import load_file, save_file
from utils import make_trainer

from lottery_rg import LotteryTicket
from lottery_rg.pruning.masks import load_mask


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    make_trainer(out, {"levels": 3, "rewind_steps": 2}).run_imp()
    return out


@pytest.fixture(scope="module")
def ticket(run_dir):
    return LotteryTicket.from_run(run_dir, level=3)


def assert_same_ticket(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k
    assert a.mask.keys() == b.mask.keys()
    assert all(torch.equal(a.mask[n], b.mask[n]) for n in a.mask)
    assert a.level == b.level and a.density == b.density and a.lottery == b.lottery


def test_from_run_holds_rewind_weights_times_mask(run_dir, ticket):
    rewind = load_file(run_dir / "rewind.safetensors")
    mask = load_mask(run_dir / "level_03" / "mask.safetensors")
    state = ticket.model.state_dict()
    for name, value in rewind.items():
        assert torch.equal(state[name], value * mask[name] if name in mask else value), name
    assert ticket.density == pytest.approx(0.512, abs=1e-4)
    assert ticket.flow is not None and len(ticket.flow.levels) == 4


def test_default_level_is_the_sparsest_within_one_point(run_dir):
    records = [json.loads((run_dir / f"level_{i:02d}" / "metrics.json").read_text()) for i in range(4)]
    dense = records[0]["metrics"]["eval_accuracy"]
    ok = [r["level"] for r in records if r["metrics"]["eval_accuracy"] >= dense - 0.01]
    assert LotteryTicket.from_run(run_dir).level == max(ok)


def test_save_and_load_back_identically(ticket, tmp_path):
    ticket.save_pretrained(tmp_path / "t")
    files = {p.name for p in (tmp_path / "t").iterdir()}
    assert {"config.json", "model.safetensors", "mask.safetensors", "flow.json", "README.md"} <= files
    assert not any(n.endswith((".bin", ".pt", ".pkl")) or n.startswith(".ticket") for n in files)
    back = LotteryTicket.from_pretrained(tmp_path / "t")
    assert_same_ticket(ticket, back)
    assert back.flow.to_dict() == ticket.flow.to_dict()
    cfg = json.loads((tmp_path / "t" / "config.json").read_text())
    assert cfg["architecture"] == "resnet14_cifar" and cfg["lottery_rg"]["level"] == 3
    assert cfg["lottery_rg"]["density"] == pytest.approx(ticket.density)


def test_timm_loads_the_ticket_without_lottery_rg(ticket, tmp_path):
    ticket.save_pretrained(tmp_path / "t")
    expected = ticket.trained_weights()  # model.safetensors: the trained weights the card describes
    overlay = timm.create_model("resnet14_cifar", pretrained=True, num_classes=10,
                                pretrained_cfg_overlay=dict(file=str(tmp_path / "t" / "model.safetensors")))
    local = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    for model in (overlay, local):
        for k, v in model.state_dict().items():
            assert torch.equal(v, expected[k]), k
    w = overlay.state_dict()
    assert all(torch.count_nonzero(w[n][~m]) == 0 for n, m in ticket.mask.items())


def test_corrupt_and_mismatched_files_are_refused_with_the_file_named(ticket, tmp_path):
    good = tmp_path / "good"
    ticket.save_pretrained(good)

    def variant(name):
        d = tmp_path / name
        shutil.copytree(good, d)
        return d

    d = variant("corrupt")
    (d / "mask.safetensors").write_bytes((good / "mask.safetensors").read_bytes()[:100])
    with pytest.raises(ValueError, match="mask.safetensors"):
        LotteryTicket.from_pretrained(d)

    d = variant("float-mask")
    save_file({k: v.float() for k, v in load_file(good / "mask.safetensors").items()}, d / "mask.safetensors")
    with pytest.raises(ValueError, match="mask.safetensors.*torch.bool"):
        LotteryTicket.from_pretrained(d)

    d = variant("shape")
    mask = load_file(good / "mask.safetensors")
    mask["fc.weight"] = torch.ones(3, 3, dtype=torch.bool)
    save_file(mask, d / "mask.safetensors")
    with pytest.raises(ValueError, match="mask.safetensors.*does not fit"):
        LotteryTicket.from_pretrained(d)

    d = variant("family")
    cfg = json.loads((d / "config.json").read_text())
    cfg["lottery_rg"]["family"] = "no_such_family"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json.*unknown model family 'no_such_family'"):
        LotteryTicket.from_pretrained(d)

    d = variant("other-family")
    cfg = json.loads((d / "config.json").read_text())
    cfg["lottery_rg"]["family"] = "vgg"
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="config.json.*family says 'vgg'.*CifarResNet"):
        LotteryTicket.from_pretrained(d)

    d = variant("pickle")
    torch.save(ticket.model.state_dict(), d / "pytorch_model.bin")
    (d / "model.safetensors").unlink()
    with pytest.raises(ValueError, match="only pickle files.*pytorch_model.bin"):
        LotteryTicket.from_pretrained(d)

    d = variant("weights")
    state = load_file(good / "model.safetensors")
    state.pop("fc.weight")
    save_file(state, d / "model.safetensors")
    with pytest.raises(ValueError, match="model.safetensors does not fit"):
        LotteryTicket.from_pretrained(d)

    for name, cut in (("rewind.safetensors", 300), ("model.safetensors", 300), ("config.json", 50)):
        d = variant(f"truncated-{name}")
        (d / name).write_bytes((good / name).read_bytes()[:cut])
        with pytest.raises(ValueError, match=f"{d / name}"):
            LotteryTicket.from_pretrained(d)


def test_model_card_metadata_and_body(ticket, tmp_path):
    ticket.save_pretrained(tmp_path / "t")
    card = ModelCard.load(tmp_path / "t" / "README.md")
    assert card.data.library_name == "lottery_rg"
    assert {"lottery-ticket", "pruning", "sparsity", "imp-flow"} <= set(card.data.tags)
    assert card.data.eval_results[0].metric_type == "accuracy"
    assert "| level | density |" in card.text and "51.20%" in card.text
    assert "relevant" in card.text or "marginal" in card.text or "irrelevant" in card.text
    for plot in ("accuracy_vs_density.png", "flow_M_block.png", "eigenvalues_block.png"):
        assert f"]({plot})" in card.text and (tmp_path / "t" / plot).stat().st_size > 1000


def test_push_to_local_hub_and_load_by_repo_id(ticket, run_dir, hub):
    repo = hub.new_repo_id("resnet14-ticket")
    ticket.push_to_hub(repo, token=hub.token)
    lvl1 = LotteryTicket.from_run(run_dir, level=1)
    lvl1.push_to_hub(repo, branch="level-01", token=hub.token)
    back = LotteryTicket.from_pretrained(repo)
    assert_same_ticket(ticket, back)
    back1 = LotteryTicket.from_pretrained(repo, revision="level-01")
    assert_same_ticket(lvl1, back1)
    card = ModelCard.load(repo)
    assert card.data.library_name == "lottery_rg" and repo in card.text
    model = timm.create_model(f"hf-hub:{repo}", pretrained=True)
    assert torch.equal(model.state_dict()["fc.weight"], ticket.trained_weights()["fc.weight"])


def test_push_requires_a_token(ticket, hub):
    from huggingface_hub.errors import HfHubHTTPError

    with pytest.raises(HfHubHTTPError):
        ticket.push_to_hub(hub.new_repo_id("anon"), token=False)


def test_a_ticket_retrains_with_lottery_trainer_and_its_mask_enforced(run_dir, tmp_path):
    from utils import image_setup, training_args

    from lottery_rg import LotteryTrainer

    fresh = LotteryTicket.from_run(run_dir, level=2)
    setup = image_setup("resnet14_cifar")
    kwargs = {**setup.trainer_kwargs(), "model": fresh.model}
    trainer = LotteryTrainer(args=training_args(tmp_path, max_steps=3), mask=fresh.mask, **kwargs)
    trainer.train()
    params = dict(fresh.model.named_parameters())
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in fresh.mask.items())
    with pytest.raises(ValueError, match="does not fit"):
        LotteryTrainer(args=training_args(tmp_path), mask={"fc.weight": torch.ones(2, 2, dtype=torch.bool)}, **kwargs)


def test_trainer_pushes_every_level_and_the_final_ticket(hub, tmp_path):
    repo = hub.new_repo_id("imp-run")
    trainer = make_trainer(tmp_path, {"levels": 2, "push_levels": True}, push_to_hub=True, hub_model_id=repo,
                           hub_token=hub.token)
    assert trainer.args.push_to_hub is False, "the Trainer itself must not push checkpoint folders"
    trainer.run_imp()
    refs = hub.api().list_repo_refs(repo)
    assert {b.name for b in refs.branches} == {"main", "level-00", "level-01", "level-02"}
    for level in range(3):
        t = LotteryTicket.from_pretrained(repo, revision=f"level-{level:02d}")
        expected = load_mask(tmp_path / f"level_{level:02d}" / "mask.safetensors")
        assert t.level == level and all(torch.equal(t.mask[n], expected[n]) for n in expected)
    main = LotteryTicket.from_pretrained(repo)
    assert main.level == LotteryTicket.from_run(tmp_path).level
    files = hub.api().list_repo_files(repo)
    assert not any(f.startswith("checkpoint") or f.endswith((".bin", ".pt")) for f in files)


def test_flow_alone_round_trips_through_the_hub_as_a_dataset(run_dir, hub, tmp_path):
    import datasets
    from huggingface_hub import DatasetCard

    from lottery_rg import IMPFlow

    local = IMPFlow.from_run_dir(run_dir)
    repo = hub.new_repo_id("resnet14-flow")
    local.push_to_hub(repo, token=hub.token)
    files = set(hub.api().list_repo_files(repo, repo_type="dataset"))
    assert {"flow.json", "data/flow_table.csv", "README.md", "eigenvalues_block.png"} <= files
    remote = IMPFlow.from_pretrained(repo)
    assert remote == local
    cmp = remote.compare(local)
    assert cmp.summary["agreement"] == 1.0 and cmp.summary["all_agree"]
    card = DatasetCard.load(repo, repo_type="dataset")
    assert "imp-flow" in card.data.tags and "IMP-flow eigenvalues" in card.text
    table = local.to_dataframe()
    ds = datasets.load_dataset(repo, split="train")  # the Hub's own data-set loader, through the local Hub
    assert ds.num_rows == len(table) and set(table.columns) <= set(ds.column_names)


def test_flows_pushed_as_model_repos_still_load(run_dir, hub, tmp_path):
    from lottery_rg import IMPFlow

    local = IMPFlow.from_run_dir(run_dir)
    repo = hub.create_repo("old-flow")
    folder = tmp_path / "old"
    folder.mkdir()
    local.save(folder / "flow.json")
    hub.api().upload_folder(repo_id=repo, folder_path=folder)
    assert IMPFlow.from_pretrained(repo) == local


def test_imagenet_style_timm_resnet_runs_imp_and_round_trips(tmp_path):
    """Any timm ResNet by name: resnet18 through IMP, a ticket folder, and timm's own loader."""
    run = tmp_path / "r18"
    make_trainer(run, {"levels": 1, "prune_fraction": 0.5}, model="resnet18", train_samples=64).run_imp()
    ticket = LotteryTicket.from_run(run, level=1)
    assert ticket.architecture()["architecture"] == "resnet18" and ticket.density == pytest.approx(0.5, abs=1e-6)
    ticket.save_pretrained(tmp_path / "t")
    back = LotteryTicket.from_pretrained(tmp_path / "t")
    assert_same_ticket(ticket, back)
    plain = timm.create_model(f"local-dir:{tmp_path / 't'}", pretrained=True)
    assert type(plain).__name__ == "ResNet" and plain.fc.out_features == 10
    expected = ticket.trained_weights()
    assert all(torch.equal(v, expected[k]) for k, v in plain.state_dict().items())
