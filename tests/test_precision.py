"""bf16 autocast, channels-last and ``--fast auto``: IMP's promises hold in every precision and layout.

Pruned weights stay exactly zero, rewinds restore θ_k ⊙ m exactly, pruning and the flow see the fp32 master
weights, files stay plain contiguous tensors that timm loads, the choice is recorded and locked, and fp16 on a
CPU is refused before anything runs. Runs on CUDA when present (the GPU check runs this file), else the CPU.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback, TrainingArguments
from utils import PYTHON, ROOT, digits, image_setup, reference_global_prune, subprocess_env, training_args

from lottery_rg import IMPFlow, LotteryArguments, LotteryTrainer, RunDir
from lottery_rg.models.resnet import CIFAR_MEAN, CIFAR_STD
from lottery_rg.pruning.masks import MaskEnforcer, load_mask, surviving
from lottery_rg.tasks.tensor_images import crop_flip, is_channels_last, tensor_image_splits
from lottery_rg.training import precision
from lottery_rg.training.arguments import DataArguments, ModelArguments, parse_args

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
CL = torch.channels_last


def lottery_trainer(out, *, levels=2, rewind_steps=3, callbacks=None, fast="off", channels_last=False, **train_kw):
    setup = image_setup(train_samples=128)
    args = training_args(out, use_cpu=DEVICE.type == "cpu", per_device_eval_batch_size=64, **train_kw)
    return LotteryTrainer(args=args, lottery_args=LotteryArguments(levels=levels, rewind_steps=rewind_steps),
                          callbacks=callbacks, run_info=setup.info, fast=fast, channels_last=channels_last,
                          **{k: v for k, v in setup.trainer_kwargs().items() if k not in ("fast", "channels_last")})


class Watch(TrainerCallback):
    """Checks every optimizer step (pruned weights 0, fp32 parameters, memory format) and records each level's
    starting state; a hook on the classifier records the dtype the forward pass computed in."""

    def __init__(self):
        self.trainer, self.steps, self.starts, self.logit_dtypes = None, 0, {}, set()

    def attach(self, trainer):
        self.trainer = trainer
        trainer.model.fc.register_forward_hook(lambda m, i, out: self.logit_dtypes.add(out.dtype))

    def on_train_begin(self, args, state, control, **kwargs):
        t = self.trainer
        self.starts[t.current_level] = {k: v.detach().clone() for k, v in t.model.state_dict().items()}

    def on_step_end(self, args, state, control, **kwargs):
        t = self.trainer
        params = dict(t.model.named_parameters())
        for n, m in t.mask.items():
            assert torch.count_nonzero(params[n].detach()[~m.to(params[n].device)]) == 0, \
                f"pruned weights of {n} revived at step {state.global_step}"
        assert {p.dtype for p in params.values()} == {torch.float32}, "the master weights must stay fp32"
        assert params["conv1.weight"].is_contiguous(memory_format=CL) == t.precision.channels_last
        self.steps += 1


@pytest.mark.parametrize("channels_last", [False, True], ids=["bf16", "bf16-channels-last"])
def test_bf16_levels_keep_masks_rewinds_and_fp32_master_weights(tmp_path, channels_last):
    import timm

    watch = Watch()
    trainer = lottery_trainer(tmp_path, callbacks=[watch], bf16=True, channels_last=channels_last,
                              save_strategy="steps", save_steps=2)  # Trainer checkpoints of a channels-last model
    watch.attach(trainer)
    result = trainer.run_imp()
    run = RunDir(tmp_path)
    assert watch.logit_dtypes == {torch.bfloat16}, "the forward pass must run under bf16 autocast"
    assert watch.steps == 3 * trainer.training_steps() - 2 * 3
    assert [round(r["density"], 4) for r in result.levels] == [1.0, 0.8, 0.64]
    theta_k = load_file(run.rewind)
    plain = timm.create_model("resnet14_cifar", num_classes=10).state_dict()
    for level in range(3):
        mask = load_mask(run.mask(level))
        weights = load_file(run.model(level))
        # files as a contiguous fp32 run writes them: same names, shapes, dtypes; plain timm loads them
        assert {k: (v.shape, v.dtype) for k, v in weights.items()} == {k: (v.shape, v.dtype) for k, v in plain.items()}
        timm.create_model("resnet14_cifar", num_classes=10).load_state_dict(weights, strict=True)
        assert all(torch.count_nonzero(weights[n][~m]) == 0 for n, m in mask.items())
        if level:
            # the rewind: θ_k ⊙ m exactly, BatchNorm statistics included
            start = {k: v.cpu() for k, v in watch.starts[level].items()}
            for name, value in theta_k.items():
                assert torch.equal(start[name], value * mask[name] if name in mask else value), (level, name)
            # pruning saw the previous level's fp32 weights
            prev = run.level(level - 1)
            expected = reference_global_prune(load_file(prev / "model.safetensors"), load_mask(run.mask(level - 1)),
                                              0.2)
            assert all(torch.equal(mask[n], expected[n]) for n in mask), f"level {level} is not IMP's mask"
    flow = IMPFlow.load(run.flow)
    assert [r["surviving"] for r in flow.levels] == [surviving(load_mask(run.mask(n))) for n in range(3)]
    config = json.loads(run.config.read_text())
    assert config["precision"]["bf16"] is True and config["precision"]["channels_last"] is channels_last
    assert config["settings"]["training"]["bf16"] is True
    assert config["settings"]["precision"] == {"channels_last": channels_last}
    if channels_last:  # the choice is locked like any other result-changing setting
        with pytest.raises(ValueError, match="--channels_last: True recorded, False now"):
            lottery_trainer(tmp_path, bf16=True, channels_last=False).run_imp()
        with pytest.raises(ValueError, match="--bf16: True recorded, False now"):
            lottery_trainer(tmp_path, channels_last=True).run_imp()


def test_fp16_on_a_cpu_is_refused_while_parsing_and_building(tmp_path):
    from transformers import TrainingArguments

    kinds = (ModelArguments, DataArguments, LotteryArguments, TrainingArguments)
    with pytest.raises(ValueError, match="--fp16 needs a GPU.*--bf16"):
        parse_args(kinds, ["--output_dir", str(tmp_path / "p"), "--fp16", "true", "--use_cpu", "true"])
    setup = image_setup(train_samples=32)
    args = training_args(tmp_path / "t", fp16=True)  # TrainingArguments itself accepts it, and would train fp32
    with pytest.raises(ValueError, match="--fp16 needs a GPU"):
        LotteryTrainer(args=args, run_info=setup.info, **setup.trainer_kwargs())
    assert not (tmp_path / "t").exists() and not (tmp_path / "p").exists()


def test_fast_auto_chooses_by_device_and_model(tmp_path, monkeypatch):
    import timm
    from transformers import BertConfig, BertForMaskedLM

    resnet = timm.create_model("resnet14_cifar", num_classes=10)
    vgg = timm.create_model("vgg11_cifar", num_classes=10)
    # a ViT has one 2-D convolution (the patch embedding), but its family is not a convolutional network
    vit = timm.create_model("vit_tiny_patch16_224", img_size=16, patch_size=4, num_classes=10)
    bert = BertForMaskedLM(BertConfig(num_hidden_layers=1, hidden_size=32, intermediate_size=64,
                                      num_attention_heads=2, vocab_size=100))
    args = training_args(tmp_path)
    for native in (True, False):
        monkeypatch.setattr(precision, "bf16_support", lambda device, n=native: (n, "test says so"))
        new, p = precision.choose_precision(args, resnet, fast="auto")
        assert (new.bf16, new.mixed_precision == "bf16", p.bf16, p.channels_last) == (native, native, native, True)
        assert "test says so" in p.reason and ("bf16 because" if native else "fp32 because") in p.reason
        assert args.bf16 is False, "the caller's arguments are left as they were"
        assert precision.choose_precision(args, vgg, fast="auto")[1].channels_last is True
        for model in (bert, vit):
            _, p = precision.choose_precision(args, model, fast="auto")
            assert p.channels_last is False and "not a convolutional network" in p.reason
    # explicit choices stay; "off" changes nothing
    new, p = precision.choose_precision(training_args(tmp_path, bf16=True), resnet, fast="auto")
    assert new.bf16 and p.bf16 and "asked for" in p.reason
    new, p = precision.choose_precision(args, resnet, fast="off")
    assert (new.bf16, p.bf16, p.channels_last) == (False, False, False) and new is args
    for model, family in ((bert, "bert"), (vit, "vit")):
        with pytest.raises(ValueError, match=f"--channels_last applies to convolutional families.*{family} family"):
            precision.choose_precision(args, model, channels_last=True)
    with pytest.raises(ValueError, match="--fast must be one of"):
        ModelArguments(fast="max")


def test_cpu_bf16_hazard_is_found_by_geometry_and_the_probe_changes_nothing():
    """A strided 3x3 convolution on 1-pixel maps (oneDNN's bf16 weight gradient there can be NaN) is found from one
    blank forward pass; the model's mode, BatchNorm statistics, weights and the RNG are untouched by it."""
    import timm

    r18 = timm.create_model("resnet18", num_classes=10)
    before = {k: v.clone() for k, v in r18.state_dict().items()}
    rng = torch.get_rng_state()
    assert precision.cpu_bf16_hazards(r18, (16, 16)) == ["layer4.0.conv1"]
    assert r18.training and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in r18.state_dict().items())
    assert precision.cpu_bf16_hazards(r18, (32, 32)) == []  # layer4's input is 2x2 there
    assert precision.cpu_bf16_hazards(r18, (16, 64)) == ["layer4.0.conv1"]  # 1 pixel high is enough
    r50 = timm.create_model("resnet50", num_classes=10)  # its stride is in the bottleneck's 3x3 conv2
    assert precision.cpu_bf16_hazards(r50, (16, 16)) == ["layer4.0.conv2"]
    for name in ("resnet20_cifar", "resnet14_cifar", "vgg11_cifar"):  # CIFAR nets stop at 4x4 maps for 16 px
        assert precision.cpu_bf16_hazards(timm.create_model(name, num_classes=10), (16, 16)) == [], name


def test_fast_auto_keeps_a_hazardous_model_in_fp32_on_a_cpu(tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(precision, "bf16_support", lambda device: (True, "the CPU has AVX512-BF16 (test)"))
    r18 = timm.create_model("resnet18", num_classes=10)
    args = training_args(tmp_path, use_cpu=True)
    new, p = precision.choose_precision(args, r18, fast="auto", image_size=(16, 16))
    assert not new.bf16 and not p.bf16 and p.channels_last
    assert "fp32 although the CPU has AVX512-BF16 (test): layer4.0.conv1 is a strided convolution" in p.reason
    assert precision.choose_precision(args, r18, fast="auto", image_size=(32, 32))[1].bf16  # safe size: bf16
    assert precision.choose_precision(args, r18, fast="auto")[1].bf16  # size unknown: no probe
    warned = []  # the module's own logger (another library's logging config may have disabled capture)
    monkeypatch.setattr(precision.logger, "warning", lambda msg, *a: warned.append(msg % a))
    new, p = precision.choose_precision(training_args(tmp_path, use_cpu=True, bf16=True), r18, fast="off",
                                        image_size=(16, 16))  # asked for: kept, and warned
    assert new.bf16 and p.bf16 and len(warned) == 1
    assert "layer4.0.conv1" in warned[0] and "--fast auto would" in warned[0]
    # a LotteryTrainer reads the size from its first training image (16 px here) and records the reason
    setup = image_setup(model="resnet18", train_samples=32, image_size=16)
    trainer = LotteryTrainer(args=training_args(tmp_path / "run", use_cpu=True), run_info=setup.info, fast="auto",
                             **{k: v for k, v in setup.trainer_kwargs().items() if k not in ("fast", "channels_last")})
    assert not trainer.args.bf16 and not trainer.precision.bf16 and "layer4.0.conv1" in trainer.precision.reason
    # an augmenting data set gives its size without drawing random numbers training would see
    from lottery_rg.tasks.tensor_images import TensorImageDataset

    augmenting = TensorImageDataset(torch.zeros(4, 3, 12, 20), torch.zeros(4, dtype=torch.long), CIFAR_MEAN,
                                    CIFAR_STD, normalized=True, augment=True)
    rng = torch.get_rng_state()
    assert precision.first_image_size(augmenting) == (12, 20) and torch.equal(torch.get_rng_state(), rng)
    assert precision.first_image_size(None) is None and precision.first_image_size([{"input_ids": [1]}]) is None


@pytest.mark.skipif(DEVICE.type == "cpu" and not sys.platform.startswith("linux"), reason="reads /proc/cpuinfo")
def test_bf16_detection_agrees_with_the_hardware():
    native, why = precision.bf16_support(DEVICE)
    if DEVICE.type == "cuda":
        assert native == (torch.cuda.get_device_capability(DEVICE)[0] >= 8), why
        return
    flags = set()
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    assert native == bool(flags & {"avx512_bf16", "amx_bf16"}), why  # what the kernel reports


def test_demo_config_uses_fast_auto():
    kinds = (ModelArguments, DataArguments, LotteryArguments, TrainingArguments)
    model_args, *_ = parse_args(kinds, [str(ROOT / "examples" / "configs" / "resnet20_digits.json")])
    assert model_args.fast == "auto" and model_args.channels_last is False


def test_masks_follow_the_weights_memory_format():
    import timm

    model = timm.create_model("resnet14_cifar", num_classes=10).to(DEVICE)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(0)
    mask = {n: (torch.rand(p.shape, generator=g) > 0.5).to(DEVICE) for n, p in params.items() if p.dim() > 1}
    enforcer = MaskEnforcer(model, mask)
    model.to(memory_format=CL)  # converted after the enforcer was built: the factors follow
    enforcer.apply()
    for p, f in zip(enforcer.params, enforcer.factors):
        assert f.stride() == p.stride() and f.dtype == p.dtype
    assert params["conv1.weight"].is_contiguous(memory_format=CL)
    assert all(torch.count_nonzero(params[n].detach()[~m]) == 0 for n, m in mask.items())
    kept = {n: params[n].detach()[m] for n, m in mask.items()}
    assert all(torch.count_nonzero(v) == v.numel() for v in kept.values()), "surviving weights were changed"


@pytest.mark.parametrize("augment", [False, True])
def test_tensor_batches_come_channels_last_with_the_same_pixels(augment):
    dsd = digits(16)
    ref, _, collate = tensor_image_splits(dsd, 16, CIFAR_MEAN, CIFAR_STD, augment=augment,
                                          generator=torch.Generator().manual_seed(1))
    cl, test, _ = tensor_image_splits(dsd, 16, CIFAR_MEAN, CIFAR_STD, augment=augment,
                                      generator=torch.Generator().manual_seed(1), channels_last=True)
    idx = list(range(0, 200, 3))
    a, b = collate(ref.__getitems__(idx)), collate(cl.__getitems__(idx))
    assert is_channels_last(b["pixel_values"]) and not is_channels_last(a["pixel_values"])
    assert torch.equal(a["pixel_values"], b["pixel_values"]) and torch.equal(a["labels"], b["labels"])
    assert is_channels_last(collate(test.__getitems__(idx))["pixel_values"])


def test_crop_flip_keeps_the_layout_and_the_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(6, 3, 8, 8, generator=g)
    top, left = torch.randint(0, 5, (6,), generator=g), torch.randint(0, 5, (6,), generator=g)
    flip = torch.rand(6, generator=g) < 0.5
    fill = torch.tensor([0.1, -0.2, 0.3])
    a = crop_flip(x, top, left, flip, 2, fill)
    b = crop_flip(x.contiguous(memory_format=CL), top, left, flip, 2, fill)
    assert is_channels_last(b) and a.is_contiguous() and torch.equal(a, b)


def test_a_channels_last_trainer_takes_any_batch_layout(tmp_path):
    """The PIL path hands out contiguous batches: the trainer converts them for a channels-last model."""
    trainer = lottery_trainer(tmp_path, levels=1, rewind_steps=0, channels_last=True, max_steps=2)
    batch = next(iter(trainer.get_train_dataloader()))
    assert not is_channels_last(batch["pixel_values"])
    trainer.train()
    assert trainer.model.conv1.weight.is_contiguous(memory_format=CL)
    state = trainer.model.state_dict()
    assert all(v.is_contiguous() for v in state.values()), "state_dict() of a channels-last model is contiguous"


# ---------------------------------------------------------------------------- kill -9 and resume in bf16
SCRIPT = str(ROOT / "examples" / "run_imp.py")
ARGS = ["--model_name_or_path", "resnet14_cifar", "--image_size", "16", "--tensor_data", "true",
        "--max_train_samples", "256", "--max_eval_samples", "64", "--levels", "2", "--rewind_steps", "2",
        "--num_train_epochs", "3", "--per_device_train_batch_size", "32", "--learning_rate", "0.05",
        "--optim", "sgd", "--optim_args", "momentum=0.9", "--report_to", "none", "--save_strategy", "steps",
        "--save_steps", "3", "--logging_steps", "50", "--disable_tqdm", "true", "--dataloader_pin_memory", "false",
        "--seed", "0", "--bf16", "true", "--channels_last", "true"]


@pytest.mark.slow
def test_kill_9_and_resume_in_bf16_is_bit_identical(tmp_path):
    ref, out = tmp_path / "uninterrupted", tmp_path / "killed"
    done = subprocess.run([PYTHON, SCRIPT, "--output_dir", str(ref), *ARGS], env=subprocess_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    proc = subprocess.Popen([PYTHON, SCRIPT, "--output_dir", str(out), *ARGS], env=subprocess_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = out / "checkpoints" / "level_01"
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        if target.is_dir() and any(p.name.startswith("checkpoint-") and p.name.split("-")[1].isdigit()
                                   and int(p.name.split("-")[1]) > 2 and (p / "trainer_state.json").is_file()
                                   for p in target.iterdir()):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not RunDir(out).is_complete(1)
    resumed = subprocess.run([PYTHON, SCRIPT, "--output_dir", str(out), *ARGS], env=subprocess_env(),
                             capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "autocast bf16" in resumed.stderr
    a, b = RunDir(ref), RunDir(out)
    for level in range(3):
        ma, mb = load_file(a.mask(level)), load_file(b.mask(level))
        assert all(torch.equal(ma[n], mb[n]) for n in ma), f"level {level}: masks differ"
        wa, wb = load_file(a.model(level)), load_file(b.model(level))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"level {level}: weights differ"
        assert a.record(level)["metrics"]["eval_accuracy"] == b.record(level)["metrics"]["eval_accuracy"]
    assert json.loads(b.config.read_text())["precision"]["autocast"] == "bf16"
