"""Images/s of the data path vs images/s of training: is training bound by its data?

Measured side by side on the same machine (interleaved, medians of ``--repeats``):

* ``pil``: the current path, ``Dataset.with_transform(ImageTransform(...))`` read by a
  ``DataLoader`` (per-image PIL decode, resize, crop/flip, ``ToTensor``, ``Normalize``);
* ``tensor``: ``lottery_rg.tasks.tensor_images`` (decoded once; one gather + batch crop/flip per batch),
  on ``--device`` (the pixels are kept there);
* ``train step``: forward + backward + SGD step + ``MaskEnforcer.apply()`` of resnet20_cifar on
  one batch already on ``--device``.

each with and without augmentation (random crop, padding size/8, horizontal flip). A data
path faster than the training step by a wide margin (ratio >> 1) no longer limits training.

    .venv/bin/python benchmarks/bench_data_path.py                  # CPU, 1 thread, ~1 minute
    python benchmarks/bench_data_path.py --device cuda --batch-size 256 --image-size 32
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def loader_rate(make_loader, batches: int, device: str) -> float:
    """Images/s of the first ``batches`` batches of a fresh loader, moved to ``device``."""
    loader = make_loader()
    sync(device)
    t0 = time.perf_counter()
    n = 0
    for i, b in enumerate(loader):
        x = b["pixel_values"].to(device, non_blocking=True)
        n += len(x)
        if i + 1 >= batches:
            break
    sync(device)
    return n / (time.perf_counter() - t0)


def measure(a) -> dict:
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader, RandomSampler

    import lottery_rg  # noqa: F401
    from lottery_rg.models.families import prunable_parameters
    from lottery_rg.models.resnet import CIFAR_MEAN, CIFAR_STD
    from lottery_rg.pruning.masks import MaskEnforcer, next_mask
    from lottery_rg.tasks.image import ImageTransform, embedded_digits
    from lottery_rg.tasks.tensor_images import tensor_image_splits

    dsd = embedded_digits(image_size=a.image_size)
    train = dsd["train"]
    t0 = time.perf_counter()
    tensor = {aug: tensor_image_splits(dsd, a.image_size, CIFAR_MEAN, CIFAR_STD, augment=aug, device=a.device)
              for aug in (False, True)}
    decode_s = (time.perf_counter() - t0) / 2
    g = torch.Generator().manual_seed(0)

    def pil_loader(aug):
        ds = train.with_transform(ImageTransform(a.image_size, CIFAR_MEAN, CIFAR_STD, train=True, augment=aug))
        return lambda: DataLoader(ds, batch_size=a.batch_size, sampler=RandomSampler(ds, generator=g),
                                  num_workers=a.workers)

    def tensor_loader(aug):
        ds, _, collate = tensor[aug]
        return lambda: DataLoader(ds, batch_size=a.batch_size, sampler=RandomSampler(ds, generator=g),
                                  collate_fn=collate)

    torch.manual_seed(0)
    model = timm.create_model(a.model).to(a.device)
    names = prunable_parameters(model)
    params = dict(model.named_parameters())
    mask = next_mask({n: params[n].detach() for n in names},
                     {n: torch.ones_like(params[n], dtype=torch.bool) for n in names}, 0.2)
    enforcer = MaskEnforcer(model, mask)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    batch = next(iter(tensor_loader(False)()))
    x, y = batch["pixel_values"].to(a.device), batch["labels"].to(a.device)

    def train_rate(steps):
        model.train()
        sync(a.device)
        t = time.perf_counter()
        for _ in range(steps):
            with torch.autocast(a.device.split(":")[0], dtype=torch.bfloat16, enabled=a.bf16):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            enforcer.apply()
            opt.zero_grad(set_to_none=True)
        sync(a.device)
        return steps * len(x) / (time.perf_counter() - t)

    train_rate(2)  # warm-up
    ops = {"pil": pil_loader(False), "pil + augment": pil_loader(True), "tensor": tensor_loader(False),
           "tensor + augment": tensor_loader(True)}
    rates = {k: [] for k in [*ops, "train step"]}
    for r in range(a.repeats):
        keys = list(ops)
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            rates[k].append(loader_rate(ops[k], a.batches, a.device))
        rates["train step"].append(train_rate(a.train_steps))
    return {"rates": {k: statistics.median(v) for k, v in rates.items()}, "decode_s": decode_s, "n": len(train)}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="resnet20_cifar")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=8, help="batches per data-path measurement")
    p.add_argument("--train-steps", type=int, default=4, help="training steps per measurement")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the PIL path")
    p.add_argument("--device", default="cpu")
    p.add_argument("--bf16", action="store_true", help="train steps under bf16 autocast")
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    res = measure(a)
    r = res["rates"]
    train = r["train step"]
    print(f"{a.model}, {res['n']} digits at {a.image_size}px, batch {a.batch_size}, device {a.device}, "
          f"{a.threads} thread(s), {a.workers} PIL workers, {a.repeats} interleaved repeats (medians); tensor decode "
          f"once: {res['decode_s']:.2f} s; load average {os.getloadavg()[0]:.2f}\n")
    print("| path | images/s | vs training images/s |")
    print("|---|---:|---:|")
    for k, v in r.items():
        print(f"| {k} | {v:,.0f} | {v / train:.2f}× |")
    print(f"\ntensor / PIL: {r['tensor'] / r['pil']:.1f}× without augmentation, "
          f"{r['tensor + augment'] / r['pil + augment']:.1f}× with augmentation")
    return res


if __name__ == "__main__":
    main()
