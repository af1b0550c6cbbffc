"""How a run computes: bf16 autocast, channels-last memory format, and ``--fast auto``, which picks them.

Every IMP level is a full training run, so the speed of one training step is multiplied by the number of
levels and seeds. Two switches give most of it on current hardware: bf16 autocast (the Trainer's own
``--bf16``; the weights stay fp32 master weights, only the arithmetic is bf16) and the channels-last
(NHWC) memory format for convolutional networks (``--channels_last``). Both change the numbers a level
computes, so a run records them and refuses to continue with others.

``--fast auto`` chooses for the user: bf16 where the device computes it natively (a CPU with AVX512-BF16 or
AMX, a CUDA GPU of compute capability 8.0 or newer), fp32 elsewhere, and channels-last for networks with 2-D
convolutions. It only turns switches on: ``--bf16 true`` or ``--channels_last true`` given explicitly stay on.

fp16 on a CPU is refused: torch has no fp16 autocast path on the CPU that the Trainer uses, so the run
would silently train in fp32 while recording fp16.

bf16 on a CPU has one known bad geometry (:func:`cpu_bf16_hazards`): a strided convolution with a kernel larger
than 1 on a feature map 1 pixel high or wide — timm's ResNet-18 at 16 px reaches one in ``layer4.0.conv1``.
oneDNN's bf16 weight gradient there is NaN in a fifth to two-thirds of the calls (torch 2.14.1; fp32 is exact), so
``--fast auto`` keeps such a model in fp32 on a CPU and says why, and an explicit ``--bf16`` is warned.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass

import torch
from torch import nn

from ..models.families import family_of
from ..models.memory_format import channels_last_batch, is_convolutional, to_channels_last

__all__ = ["FAST_CHOICES", "Precision", "bf16_support", "choose_precision", "check_training_precision",
           "cpu_bf16_hazards", "first_image_size", "is_convolutional", "to_channels_last", "channels_last_batch"]

logger = logging.getLogger(__name__)

FAST_CHOICES = ("off", "auto")

# torch has no public "does this CPU do bf16" query: torch.backends.cpu.get_cpu_capability() names the vector
# ISA ("AVX512") but not its bf16 extension. These torch.cpu functions (the same checks torch's own CPU tests
# and inductor use) answer it; if a torch version lacks them, the CPU counts as not native.
_CPU_BF16_CHECKS = (("AMX", "_is_amx_tile_supported"), ("AVX512-BF16", "_is_avx512_bf16_supported"))


def bf16_support(device: str | torch.device) -> tuple[bool, str]:
    """Whether ``device`` computes bf16 natively, and what that was decided from (for the log and the record)."""
    device = torch.device(device)
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        name = torch.cuda.get_device_name(device)
        native = major >= 8
        return native, f"{name}, compute capability {major}.{minor} ({'>=' if native else '<'} 8.0)"
    if device.type == "cpu":
        found = [label for label, fn in _CPU_BF16_CHECKS if _cpu_check(fn)]
        if found:
            return True, f"the CPU has {' and '.join(found)}"
        return False, (f"the CPU has neither AVX512-BF16 nor AMX (vector ISA: "
                       f"{torch.backends.cpu.get_cpu_capability()})")
    return False, f"no bf16 rule for {device.type} devices"


def _cpu_check(name: str) -> bool:
    fn = getattr(torch.cpu, name, None)
    try:
        return bool(fn()) if callable(fn) else False
    except RuntimeError:
        return False


@dataclass(frozen=True)
class Precision:
    """The precision and memory layout a run trains in, and why (recorded in ``lottery_config.json``)."""

    fast: str = "off"
    bf16: bool = False
    fp16: bool = False
    channels_last: bool = False
    device: str = "cpu"
    reason: str = ""

    @property
    def autocast(self) -> str:
        return "bf16" if self.bf16 else "fp16" if self.fp16 else "none (fp32)"

    def describe(self) -> str:
        layout = "channels-last" if self.channels_last else "contiguous (NCHW)"
        text = f"precision: autocast {self.autocast}, fp32 master weights; memory format {layout}; device {self.device}"
        return text + (f" (--fast auto: {self.reason})" if self.fast == "auto" else "")

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "autocast": self.autocast}

    def locked(self) -> dict:
        """The part that changes what a level computes beyond ``TrainingArguments`` (which records bf16/fp16)."""
        return {"channels_last": self.channels_last}


_FP16_ON_CPU = ("--fp16 needs a GPU: on a CPU the Trainer has no fp16 autocast, so the run would train in fp32 "
                "while recording fp16. Use --bf16 true (bf16 autocast works on CPUs; {bf16}), or drop --fp16")


def check_training_precision(args) -> None:
    """Refuse settings that would not compute what they record (fp16 on a CPU); the flag check
    (:func:`lottery_rg.training.flags.precision_refusal`) asks it while parsing and when a ``LotteryTrainer`` is
    built, before any model or data work."""
    if args is None:
        return
    device = args.device
    if args.fp16 and device.type == "cpu":
        native, why = bf16_support(device)
        raise ValueError(_FP16_ON_CPU.format(bf16=f"natively here: {why}" if native else f"emulated here: {why}"))


def cpu_bf16_hazards(model: nn.Module, image_size: tuple[int, int]) -> list[str]:
    """The 2-D convolutions of ``model`` where bf16 on a CPU is unreliable for ``image_size`` (H, W) inputs.

    A convolution with stride > 1 and a kernel larger than 1 along a dimension in which its input is 1 pixel wide
    (its window is then mostly padding): oneDNN's bf16 weight gradient for it is NaN in a fifth to two-thirds of
    the calls with torch 2.14.1 on an AVX512-BF16 CPU, a kernel defect rather than a value problem (the same inputs
    pass and fail), and exact in fp32. Found with one forward pass of a blank image in eval mode (no statistics or
    RNG change)."""
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        return []
    found: list[str] = []

    def probe(name: str, module: nn.Conv2d, inputs) -> None:
        x = inputs[0]
        if x.dim() == 4 and any(x.shape[2 + d] == 1 and module.stride[d] > 1 and module.kernel_size[d] > 1
                                for d in (0, 1)):
            found.append(name)

    hooks = [m.register_forward_pre_hook(lambda mod, inputs, n=name: probe(n, mod, inputs)) for name, m in convs]
    training = model.training
    weight = convs[0][1].weight
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, convs[0][1].in_channels, *image_size, dtype=weight.dtype, device=weight.device))
    finally:
        for h in hooks:
            h.remove()
        model.train(training)
    return found


def first_image_size(dataset) -> tuple[int, int] | None:
    """(H, W) of the first training example's ``pixel_values``; None for data without images (text, iterable).
    Reading it draws no random numbers that training would see (an augmenting transform runs under a forked RNG)."""
    if dataset is None or not hasattr(dataset, "__getitem__"):
        return None
    try:
        with torch.random.fork_rng(devices=[]):
            example = dataset[0]
    except (IndexError, KeyError, TypeError, ValueError):
        return None
    pixels = example.get("pixel_values") if isinstance(example, dict) else None
    shape = getattr(pixels, "shape", None)
    return (int(shape[-2]), int(shape[-1])) if shape is not None and len(shape) == 3 else None


def _hazard_text(hazards: list[str], image_size) -> str:
    more = f" and {len(hazards) - 1} more" if len(hazards) > 1 else ""
    return (f"{hazards[0]}{more} is a strided convolution on 1-pixel maps at {image_size[0]}x{image_size[1]} "
            f"input, where the CPU's bf16 weight gradient can be NaN")


def choose_precision(args, model: nn.Module, *, fast: str = "off", channels_last: bool = False,
                     image_size: tuple[int, int] | None = None):
    """``(args, Precision)``: the training arguments to use (a copy with ``bf16`` turned on where ``fast='auto'``
    chose it) and the precision and layout of the run. Raises ``ValueError`` for choices that cannot work.

    ``image_size`` (H, W of the training images), when known, lets bf16 on a CPU be checked against
    :func:`cpu_bf16_hazards` first."""
    if fast not in FAST_CHOICES:
        raise ValueError(f"--fast must be one of {FAST_CHOICES}, got {fast!r}")
    if args is None:  # what Trainer would use
        from transformers import TrainingArguments

        args = TrainingArguments(output_dir="tmp_trainer")
    # fp16 on a CPU was refused already, with every other flag (training.flags, while parsing and in LotteryTrainer)
    conv = is_convolutional(model)
    if channels_last and not conv:
        raise ValueError(f"--channels_last applies to convolutional families (ResNet, VGG), and "
                         f"{type(model).__name__} is of the {family_of(model).name} family; drop --channels_last")
    device = args.device
    bf16, fp16 = bool(args.bf16), bool(args.fp16)
    asked_bf16, reason = bf16, ""
    if fast == "auto":
        native, why = bf16_support(device)
        parts = []
        if fp16:
            parts.append("fp16 was asked for: kept")
        elif bf16:
            parts.append("bf16 was asked for: kept")
        elif native:
            hazards = cpu_bf16_hazards(model, image_size) if device.type == "cpu" and conv and image_size else []
            if hazards:
                parts.append(f"fp32 although {why}: {_hazard_text(hazards, image_size)}")
            else:
                bf16 = True
                parts.append(f"bf16 because {why}")
        else:
            parts.append(f"fp32 because {why}")
        if channels_last:
            parts.append("channels-last was asked for: kept")
        else:
            channels_last = conv
            parts.append("channels-last because the model is a convolutional network" if conv else
                         "contiguous because the model is not a convolutional network")
        reason = "; ".join(parts)
        if bf16 and not args.bf16:
            args = dataclasses.replace(args, bf16=True)  # re-runs TrainingArguments' checks and derived fields
    elif bf16 and device.type == "cpu" and not bf16_support(device)[0]:
        logger.warning("--bf16 on a CPU without native bf16 (%s): torch emulates it, slower than fp32",
                       bf16_support(device)[1])
    if asked_bf16 and device.type == "cpu" and conv and image_size:
        hazards = cpu_bf16_hazards(model, image_size)
        if hazards:
            logger.warning("--bf16 on a CPU: %s (layers %s); a NaN stops the level at once — --fast auto would "
                           "train this model in fp32 here", _hazard_text(hazards, image_size), ", ".join(hazards))
    return args, Precision(fast=fast, bf16=bf16, fp16=fp16, channels_last=bool(channels_last), device=str(device),
                           reason=reason)
