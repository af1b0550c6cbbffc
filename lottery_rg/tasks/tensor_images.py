"""Small image data sets as one tensor: decode once, augment whole batches.

The PIL path (:class:`lottery_rg.tasks.image.ImageTransform`) decodes, resizes, crops, flips
and normalises every image again at every epoch, one image at a time; for digits or CIFAR
with a CIFAR ResNet on a GPU that is slower than the training step. Here every image is
decoded once, with exactly the same PIL resize, into one ``[N, 3, H, W]`` tensor (normalised
float32 by default, or uint8), optionally kept on the GPU. Random crop with zero padding and
horizontal flip are applied to whole batches by one gather in the collator.

Without augmentation the pixel values equal the PIL path's (same resize, same ``/255``,
same float32 normalisation). With augmentation the distribution is the same as
``RandomCrop(size, padding=size // 8)`` + ``RandomHorizontalFlip()`` (padding pixels are
black, i.e. the normalised value of 0), drawn from a per-batch seed.

Use with ``transformers.Trainer``::

    train, test, collator = tensor_image_splits(dsd, 32, mean, std, augment=True, device="cuda")
    Trainer(..., train_dataset=train, eval_dataset=test, data_collator=collator,
            args=TrainingArguments(..., dataloader_pin_memory=False))  # tensors on the GPU cannot be pinned

The datasets define ``__getitems__``: the ``DataLoader`` hands the collator the whole index
list at once (one indexing operation per batch instead of one ``__getitem__`` per image).
Augmentation randomness: by default each batch draws one seed from torch's global CPU
generator, so ``set_seed`` makes it reproducible and the Trainer's saved RNG state makes a
resumed run draw the same crops; pass ``generator=`` for an independent stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["decode_images", "TensorImageDataset", "TensorImageCollator", "tensor_image_splits", "crop_flip",
           "is_channels_last"]


def decode_images(dataset, image_size: int, batch_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Every image of a ``datasets.Dataset`` (columns ``image``, ``label``) as uint8 ``[N, 3, S, S]``, and the labels.

    The same operations as ``ImageTransform`` up to ``ToTensor``: ``img.convert("RGB")``, then
    torchvision's ``Resize((S, S))`` on the PIL image (a no-op when the size already fits).
    """
    import numpy as np
    from torchvision import transforms as T

    resize = T.Resize((image_size, image_size))
    images, labels = [], []
    for batch in dataset.iter(batch_size=batch_size):
        for img in batch["image"]:
            images.append(np.asarray(resize(img.convert("RGB")), dtype=np.uint8))
        labels.extend(int(v) for v in batch["label"])
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous() if images else \
        torch.zeros(0, 3, image_size, image_size, dtype=torch.uint8)
    return x, torch.tensor(labels, dtype=torch.long)


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32, exactly as ``ToTensor`` + ``Normalize`` (``/255``, ``- mean``, ``/ std``)."""
    return x.to(torch.float32).div(255).sub(mean.view(1, -1, 1, 1)).div(std.view(1, -1, 1, 1))


def crop_flip(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, pad: int,
              fill: torch.Tensor | float = 0) -> torch.Tensor:
    """Per-image crop of the zero-padded batch at (``top``, ``left``) in [0, 2·pad], mirrored where ``flip``.

    One gather over the batch; ``fill`` is the padding value (per channel or a scalar).
    Equals ``hflip(crop(pad(img, pad, fill), top, left, H, W))`` image by image. A channels-last batch gives a
    channels-last result (gathered in [B, H, W, C] order), any other a contiguous one.
    """
    b, c, h, w = x.shape
    dev = x.device
    nhwc = is_channels_last(x)
    padded = torch.empty((b, c, h + 2 * pad, w + 2 * pad), dtype=x.dtype, device=dev,
                         memory_format=torch.channels_last if nhwc else torch.contiguous_format)
    padded[:] = (fill.to(dev, x.dtype).view(1, c, 1, 1) if isinstance(fill, torch.Tensor) else fill)
    padded[:, :, pad:pad + h, pad:pad + w] = x
    top, left, flip = top.to(dev), left.to(dev), flip.to(dev)
    rows = top.view(b, 1) + torch.arange(h, device=dev).view(1, h)                      # [B, H]
    cols = torch.arange(w, device=dev).view(1, w)
    cols = left.view(b, 1) + torch.where(flip.view(b, 1), (w - 1) - cols, cols)         # [B, W]
    bi = torch.arange(b, device=dev).view(b, 1, 1, 1)
    ci = torch.arange(c, device=dev)
    if nhwc:  # [B, H, W, C], viewed as [B, C, H, W]: channels-last without a copy
        return padded[bi, ci.view(1, 1, 1, c), rows.view(b, h, 1, 1), cols.view(b, 1, w, 1)].permute(0, 3, 1, 2)
    return padded[bi, ci.view(1, c, 1, 1), rows.view(b, 1, h, 1), cols.view(b, 1, 1, w)]


def is_channels_last(x: torch.Tensor) -> bool:
    """Whether a 4-D tensor is laid out channels-last (and not also plain contiguous, as 1-channel ones are)."""
    return x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


class TensorImageDataset(torch.utils.data.Dataset):
    """Images held as one tensor; items ``{"pixel_values": [3, H, W] float32, "labels": int64}``.

    ``pixels`` is normalised float32 (``normalized=True``) or raw uint8, normalised per
    batch with ``mean``/``std``. ``augment``: random crop (padding ``pad``) and horizontal flip.
    ``channels_last``: the images are held, and batches come out, in channels-last memory format
    (for a channels-last model: no conversion per batch); the values are the same.
    """

    def __init__(self, pixels: torch.Tensor, labels: torch.Tensor, mean: Sequence[float], std: Sequence[float], *,
                 normalized: bool, augment: bool = False, pad: int | None = None,
                 generator: torch.Generator | None = None, channels_last: bool = False):
        if pixels.ndim != 4 or len(pixels) != len(labels):
            raise ValueError(f"pixels must be [N, C, H, W] with one label per image, got {tuple(pixels.shape)} "
                             f"and {len(labels)} labels")
        if channels_last:
            pixels = pixels.contiguous(memory_format=torch.channels_last)
        self.pixels, self.labels = pixels, labels.to(pixels.device)
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=pixels.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=pixels.device)
        self.normalized, self.augment = normalized, augment
        self.pad = max(1, pixels.shape[-1] // 8) if pad is None else int(pad)
        self.generator = generator
        # the padding is black: 0 before normalisation, its normalised value after
        self.fill = _normalize(torch.zeros(1, len(self.mean), 1, 1, dtype=torch.uint8, device=pixels.device),
                               self.mean, self.std).view(-1) if normalized else torch.zeros(len(self.mean))

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, indices) -> dict:
        """The batch at ``indices``: one gather, then augmentation and normalisation on the whole batch."""
        idx = torch.as_tensor(indices, dtype=torch.long).to(self.device)
        x = self.pixels[idx]
        if self.augment and self.pad > 0:
            g = self.generator
            if g is None:  # one seed per batch from the global RNG: set_seed and Trainer RNG checkpoints cover it
                g = torch.Generator().manual_seed(int(torch.randint(0, 2 ** 62, (1,))))
            n = len(idx)
            top = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            left = torch.randint(0, 2 * self.pad + 1, (n,), generator=g)
            flip = torch.rand(n, generator=g) < 0.5
            x = crop_flip(x, top, left, flip, self.pad, self.fill)
        if not self.normalized:
            x = _normalize(x, self.mean, self.std)
        return {"pixel_values": x, "labels": self.labels[idx]}

    def __getitem__(self, i: int) -> dict:
        b = self.batch([int(i)])
        return {"pixel_values": b["pixel_values"][0], "labels": b["labels"][0]}

    def __getitems__(self, indices: list[int]) -> list:
        # DataLoader passes the whole index list; the collator gathers it in one operation
        return [_Rows(self, list(indices))]


class _Rows:
    """A batch of indices into a :class:`TensorImageDataset`, resolved by :class:`TensorImageCollator`."""

    __slots__ = ("dataset", "indices")

    def __init__(self, dataset: TensorImageDataset, indices: list[int]):
        self.dataset, self.indices = dataset, indices


class TensorImageCollator:
    """Data collator for :class:`TensorImageDataset` (batched fetch) and for lists of its items."""

    def __call__(self, features) -> dict:
        if len(features) == 1 and isinstance(features[0], _Rows):
            rows = features[0]
            return rows.dataset.batch(rows.indices)
        rows = [f for f in features if isinstance(f, _Rows)]
        if rows:  # several index batches (should not happen with a DataLoader): fetch each
            parts = [r.dataset.batch(r.indices) for r in rows]
            return {k: torch.cat([p[k] for p in parts]) for k in ("pixel_values", "labels")}
        return {"pixel_values": torch.stack([f["pixel_values"] for f in features]),
                "labels": torch.stack([torch.as_tensor(f["labels"], dtype=torch.long) for f in features])}


def _place(x: torch.Tensor, device) -> torch.Tensor:
    if device is None:
        return x
    if device == "auto":
        if not torch.cuda.is_available():
            return x
        free, _ = torch.cuda.mem_get_info()
        if x.numel() * x.element_size() > free // 4:  # leave the GPU to the model
            return x
        device = "cuda"
    return x.to(device)


def tensor_image_splits(dsd, image_size: int, mean, std, augment: bool = False, device=None, *,
                        normalize_once: bool = True, generator: torch.Generator | None = None,
                        channels_last: bool = False):
    """``(train, test, collator)`` from a ``DatasetDict`` with ``train``/``test`` (columns ``image``, ``label``).

    The drop-in for ``dsd[split].with_transform(ImageTransform(...))``: same pixel values
    without augmentation, decoded once. ``device``: None (CPU), a device, or ``"auto"`` (CUDA
    when the pixels take under a quarter of its free memory). ``normalize_once``: store
    normalised float32 (4 bytes a pixel) instead of uint8 normalised per batch. ``channels_last``: batches in
    channels-last memory format, for a model trained that way (``--channels_last``).
    """
    out = []
    for split, aug in (("train", augment), ("test", False)):
        x, y = decode_images(dsd[split], image_size)
        m = torch.as_tensor(mean, dtype=torch.float32)
        s = torch.as_tensor(std, dtype=torch.float32)
        if normalize_once:
            x = _normalize(x, m, s)
        x = _place(x, device)
        out.append(TensorImageDataset(x, y, mean, std, normalized=normalize_once, augment=aug, generator=generator,
                                      channels_last=channels_last))
    return out[0], out[1], TensorImageCollator()
