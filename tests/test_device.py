"""The core on whatever device is available (CUDA if present, else the CPU).

Pruning on the device must give the CPU's mask bit for bit (ties included), the
``MaskEnforcer`` must keep pruned weights at zero on the device in fp32 and bf16, and a tiny
``LotteryTrainer`` run must leave its masks zero there. Tests marked ``gpu`` say something
only on CUDA and are skipped without it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lottery_rg.pruning.masks import (
    RADIX_DIGITS,
    MaskEnforcer,
    _kth_smallest_magnitude,
    load_mask,
    magnitude_prune,
    mask_digest,
    next_mask,
    removal_counts,
    save_mask,
)

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def tied_weights(seed: int = 0) -> dict[str, torch.Tensor]:
    """Weights with many equal magnitudes (values from a small grid, both signs) plus exact zeros."""
    g = torch.Generator().manual_seed(seed)
    shapes = {"a.weight": (64, 32), "b.weight": (16, 3, 3, 3), "c.weight": (10, 64), "d.weight": (7,)}
    out = {}
    for n, shape in shapes.items():
        grid = torch.randint(0, 9, shape, generator=g).float() * 0.125
        sign = torch.randint(0, 2, shape, generator=g).float() * 2 - 1
        out[n] = grid * sign
    return out


def cpu_masks(weights, levels=3, scope="global"):
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    out = []
    for _ in range(levels):
        mask = next_mask(weights, mask, 0.2, scope=scope)
        out.append(mask)
    return out


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_prune_on_device_equals_cpu(scope, dtype):
    weights = {n: w.to(dtype) for n, w in tied_weights().items()}
    expected = cpu_masks(weights, scope=scope)
    on_dev = {n: w.to(DEVICE) for n, w in weights.items()}
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in on_dev.items()}
    for level, ref in enumerate(expected, 1):
        counts = removal_counts(mask, 0.2, scope=scope)
        mask = next_mask(on_dev, mask, 0.2, scope=scope)
        assert all(m.device.type == DEVICE.type for m in mask.values()), "the mask must stay on the weights' device"
        for n in ref:
            assert torch.equal(mask[n].cpu(), ref[n]), f"level {level}, {n}: device mask differs from the CPU's"
        assert mask_digest(mask) == mask_digest(ref)
        removed = sum(counts.values()) if isinstance(counts, dict) else counts
        assert removed > 0


def test_cpu_mask_with_device_weights_and_radix_digits():
    """A CPU mask with device weights, and every radix-digit split, select the same threshold."""
    weights = tied_weights(1)
    mask = cpu_masks(weights, levels=1)[0]
    names = list(weights)
    for k in (1, 17, 500, 1500):
        ref = _kth_smallest_magnitude(weights, mask, names, k, digits=RADIX_DIGITS["cpu"])
        for digits in RADIX_DIGITS.values():
            dev = {n: w.to(DEVICE) for n, w in weights.items()}
            assert _kth_smallest_magnitude(dev, mask, names, k, digits=digits) == ref
    dev_mask = magnitude_prune({n: w.to(DEVICE) for n, w in weights.items()}, mask, 300)
    cpu_mask = magnitude_prune(weights, mask, 300)
    assert all(torch.equal(dev_mask[n].cpu(), cpu_mask[n]) for n in names)


def test_mask_io_on_device(tmp_path):
    mask = {n: m.to(DEVICE) for n, m in cpu_masks(tied_weights(2), levels=2)[-1].items()}
    save_mask(mask, tmp_path / "m.safetensors")
    back = load_mask(tmp_path / "m.safetensors")
    assert all(m.device.type == "cpu" for m in back.values())
    on_dev = load_mask(tmp_path / "m.safetensors", device=DEVICE)
    assert all(m.device.type == DEVICE.type for m in on_dev.values())
    assert mask_digest(back) == mask_digest(on_dev) == mask_digest(mask)


def _digest_reference(mask):  # the digest trainer.py has always written to metrics.json
    import hashlib

    h = hashlib.sha256()
    for name in sorted(mask):
        h.update(name.encode())
        h.update(mask[name].cpu().to(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16]


def test_mask_digest_matches_the_recorded_one():
    mask = cpu_masks(tied_weights(3), levels=2)[-1]
    mask["b.weight"] = mask["b.weight"].transpose(0, 1)  # non-contiguous
    assert mask_digest(mask) == _digest_reference(mask)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 8 * 8, 10)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_enforcer_keeps_zeros_on_device(dtype, optim):
    torch.manual_seed(0)
    model = Net().to(DEVICE, dtype)
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    full = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    mask = next_mask(weights, full, 0.6)
    enforcer = MaskEnforcer(model, mask)
    assert all(f.device.type == DEVICE.type and f.dtype == dtype for f in enforcer.factors)
    enforcer.apply()
    opt = (torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4) if optim == "sgd"
           else torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01))
    x = torch.randn(16, 3, 8, 8, device=DEVICE, dtype=dtype)
    y = torch.randint(0, 10, (16,), device=DEVICE)
    for _ in range(5):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x).float(), y).backward()
        opt.step()
        enforcer.apply()
        params = dict(model.named_parameters())
        for n, m in mask.items():
            assert not params[n][~m.to(DEVICE)].any(), f"{n}: a pruned weight came back after {optim}"
            assert params[n][m.to(DEVICE)].any()


def test_enforcer_follows_a_moved_or_cast_model():
    model = Net()
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    mask = next_mask(weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, 0.5)
    enforcer = MaskEnforcer(model, mask)
    model.to(DEVICE, torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    enforcer.apply()
    assert all(f.device.type == DEVICE.type and f.dtype == torch.bfloat16 for f in enforcer.factors)
    params = dict(model.named_parameters())
    assert all(not params[n][~m.to(DEVICE)].any() for n, m in mask.items())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: pruning CUDA weights on the GPU")
def test_cuda_pruning_stays_on_the_gpu():
    """No copy of the weights to the host: the host memory in use does not grow by the weights' size."""
    g = torch.Generator(device="cuda").manual_seed(0)
    weights = {f"w{i}": torch.randn(1024, 4096, device="cuda", generator=g) for i in range(8)}  # 128 MiB
    mask = {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}
    torch.cuda.synchronize()
    out = next_mask(weights, mask, 0.2)
    out = next_mask(weights, out, 0.2)
    torch.cuda.synchronize()
    assert all(m.is_cuda for m in out.values())
    ref = next_mask({n: w.cpu() for n, w in weights.items()}, {n: m.cpu() for n, m in mask.items()}, 0.2)
    ref = next_mask({n: w.cpu() for n, w in weights.items()}, ref, 0.2)
    assert all(torch.equal(out[n].cpu(), ref[n]) for n in ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: mixed precision on the GPU")
def test_cuda_enforcer_under_autocast():
    torch.manual_seed(0)
    model = Net().cuda()
    weights = {n: p.detach() for n, p in model.named_parameters() if n.endswith("weight")}
    mask = next_mask(weights, {n: torch.ones_like(w, dtype=torch.bool) for n, w in weights.items()}, 0.8)
    enforcer = MaskEnforcer(model, mask)
    enforcer.apply()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 3, 8, 8, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
    for _ in range(5):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        opt.zero_grad()
        enforcer.apply()
    params = dict(model.named_parameters())
    assert all(not params[n][~m.cuda()].any() for n, m in mask.items())


def test_tiny_lottery_run_on_device(tmp_path):
    from utils import make_trainer

    trainer = make_trainer(tmp_path / "run", lottery={"levels": 2}, train_samples=64,
                           use_cpu=DEVICE.type == "cpu", per_device_eval_batch_size=64)
    assert trainer.args.device.type == DEVICE.type
    result = trainer.run_imp()
    assert [round(r["density"], 4) for r in result.levels] == [1.0, 0.8, 0.64]
    from lottery_rg.io import state_from_file

    for level in (1, 2):
        d = tmp_path / "run" / f"level_{level:02d}"
        mask = load_mask(d / "mask.safetensors")
        state = state_from_file(d / "model.safetensors", list(mask))
        assert all(not state[n][~m].any() for n, m in mask.items()), f"level {level}: pruned weights not zero"
    params = dict(trainer.model.named_parameters())
    assert all(p.device.type == DEVICE.type for p in params.values())
    assert all(not params[n][~m.to(DEVICE)].any() for n, m in mask.items())


# ---------------------------------------------------------------------------- branches and flow on the device
def _small_ticket(device, arch="resnet14_cifar", levels=2):
    import timm

    from lottery_rg import LotteryTicket, prunable_parameters

    torch.manual_seed(0)
    model = timm.create_model(arch).to(device)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    mask = {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}
    for _ in range(levels):
        mask = next_mask({n: params[n].detach() for n in names}, mask, 0.2)
    return LotteryTicket(model, mask, level=levels)


def _batch(n=8, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"pixel_values": torch.randn(n, 3, size, size, generator=g),
            "labels": torch.randint(0, 10, (n,), generator=g)}


@pytest.mark.parametrize("kind", ["random", "magnitude", "snip", "grasp"])
def test_baselines_on_device_equal_the_cpu(kind):
    """Model on the device, batches from a CPU loader: masks on the device, bit for bit the CPU's."""
    import copy

    from lottery_rg.branches.baselines import baseline_mask, layerwise_counts

    ticket = _small_ticket("cpu")
    ref = baseline_mask(kind, copy.deepcopy(ticket.model), ticket.mask, batches=[_batch()], seed=1)
    model = copy.deepcopy(ticket.model).to(DEVICE)
    got = baseline_mask(kind, model, {n: m.to(DEVICE) for n, m in ticket.mask.items()}, batches=[_batch()], seed=1)
    assert all(m.device.type == DEVICE.type for m in got.values())
    assert layerwise_counts(got) == layerwise_counts(ticket.mask)
    if kind in ("random", "magnitude"):  # exact: same permutation / same weights
        assert all(torch.equal(got[n].cpu(), ref[n]) for n in ref)
    else:  # gradients on another device may differ in the last bits: nearly the same mask
        agree = sum(int((got[n].cpu() == ref[n]).sum()) for n in ref) / sum(m.numel() for m in ref.values())
        assert agree > 0.99


def test_elastic_transfer_stays_on_the_source_device():
    from lottery_rg.branches.elastic import ElasticTicket

    ticket = _small_ticket(DEVICE)
    for target in ("resnet20_cifar", "resnet14_cifar"):
        out = ElasticTicket(ticket).to(target, target_density=0.5) if target == "resnet20_cifar" else \
            ElasticTicket(ticket).squeeze(target)
        params = dict(out.model.named_parameters())
        assert all(p.device.type == DEVICE.type for p in params.values())
        assert all(m.device.type == DEVICE.type for m in out.mask.values())
        assert all(not params[n][~m].any() for n, m in out.mask.items())


def test_interpolation_on_the_device():
    from lottery_rg.stability import interpolate_state

    a = {"w": torch.randn(5, device=DEVICE), "n": torch.tensor(3, device=DEVICE)}
    b = {"w": torch.randn(5), "n": torch.tensor(7)}  # a state read onto the CPU
    mid = interpolate_state(a, b, 0.75)
    assert mid["w"].device.type == DEVICE.type and mid["n"].device.type == DEVICE.type and int(mid["n"]) == 7
    assert torch.equal(interpolate_state(a, b, 1.0)["w"].cpu(), b["w"])


def test_flow_counts_device_masks():
    from lottery_rg import IMPFlow
    from lottery_rg.pruning.masks import surviving

    ticket = _small_ticket(DEVICE)
    flow = IMPFlow.from_model(ticket.model, list(ticket.mask))
    rec = flow.add_level(1, ticket.mask)
    flow.add_level(2, surviving(ticket.mask))  # counts: one host transfer for every tensor together
    assert flow.levels[0]["surviving"] == flow.levels[1]["surviving"] == rec["surviving"]


@pytest.mark.parametrize("precision", [
    "bf16",
    pytest.param("fp16", marks=[pytest.mark.gpu, pytest.mark.skipif(DEVICE.type != "cuda",
                                                                      reason="fp16 with a grad scaler needs CUDA")]),
])
def test_tiny_lottery_run_in_mixed_precision(tmp_path, precision):
    """bf16 autocast (CPU or CUDA) and fp16 with the grad scaler (CUDA only): the Trainer calls
    ``on_optimizer_step`` after ``optimizer.step()``, i.e. after the scaler's (possibly skipped) step, so the
    MaskCallback's multiply is the last write to the weights in every step."""
    from utils import make_trainer

    from lottery_rg.io import state_from_file

    trainer = make_trainer(tmp_path / "run", lottery={"levels": 1}, train_samples=64,
                           use_cpu=DEVICE.type == "cpu", per_device_eval_batch_size=64, **{precision: True})
    result = trainer.run_imp()
    assert [round(r["density"], 4) for r in result.levels] == [1.0, 0.8]
    mask = load_mask(tmp_path / "run" / "level_01" / "mask.safetensors")
    state = state_from_file(tmp_path / "run" / "level_01" / "model.safetensors", list(mask))
    assert all(not state[n][~m].any() for n, m in mask.items())


def test_sync_batchnorm_option(monkeypatch):
    import timm

    from lottery_rg import family_of, prunable_parameters
    from lottery_rg.tasks.image import sync_batchnorm, wants_sync_bn

    model = timm.create_model("resnet20_cifar")
    assert sync_batchnorm(model, world_size=1) is model  # one process: nothing to synchronise
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs GPUs"):
            sync_batchnorm(model, world_size=2)
    converted = torch.nn.SyncBatchNorm.convert_sync_batchnorm(timm.create_model("resnet20_cifar"))
    assert any(isinstance(m, torch.nn.SyncBatchNorm) for m in converted.modules())
    # masks, checkpoints and tickets see the same network
    assert family_of(converted).name == family_of(model).name
    assert prunable_parameters(converted) == prunable_parameters(model)
    assert converted.state_dict().keys() == model.state_dict().keys()
    assert family_of(converted).layout(converted).depths() == family_of(model).layout(model).depths()
    monkeypatch.setenv("LOTTERY_RG_SYNC_BN", "1")
    assert wants_sync_bn(None)
    monkeypatch.delenv("LOTTERY_RG_SYNC_BN")
    assert not wants_sync_bn(object()) and wants_sync_bn(type("A", (), {"sync_bn": True})())
