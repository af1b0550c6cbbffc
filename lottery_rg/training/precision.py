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
           "is_convolutional", "to_channels_last", "channels_last_batch"]

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


def choose_precision(args, model: nn.Module, *, fast: str = "off", channels_last: bool = False):
    """``(args, Precision)``: the training arguments to use (a copy with ``bf16`` turned on where ``fast='auto'``
    chose it) and the precision and layout of the run. Raises ``ValueError`` for choices that cannot work."""
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
    reason = ""
    if fast == "auto":
        native, why = bf16_support(device)
        parts = []
        if fp16:
            parts.append("fp16 was asked for: kept")
        elif bf16:
            parts.append("bf16 was asked for: kept")
        elif native:
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
    return args, Precision(fast=fast, bf16=bf16, fp16=fp16, channels_last=bool(channels_last), device=str(device),
                           reason=reason)
