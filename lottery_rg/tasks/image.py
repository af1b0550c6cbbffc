"""Image-classification data in the Hub's schema (``image`` + ``label``), embedded or loaded.

The embedded default is scikit-learn's handwritten digits (1,797 real 8x8 scans that ship
inside scikit-learn), up-sampled and turned into RGB PIL images so that it looks exactly
like a Hub image-classification data set. Anything ``datasets.load_dataset`` can open
(a Hub name, an ``imagefolder``, a folder written by ``save_to_disk`` …) goes through the
same transform.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from .base import TaskSetup, truncate_splits
from .metrics import ImageMetrics

__all__ = ["embedded_digits", "load_image_datasets", "ImageTransform", "accuracy_metrics", "load_image_splits",
           "prepare_data_for_model", "prepare_image_task", "sync_batchnorm", "wants_sync_bn"]


def embedded_digits(image_size: int = 32, test_fraction: float = 0.2, seed: int = 0):
    """scikit-learn's digits as a ``DatasetDict`` with ``train``/``test`` (stratified split)."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = [
        Image.fromarray((img * (255.0 / 16.0)).astype(np.uint8), mode="L")
        .resize((image_size, image_size), Image.Resampling.BILINEAR).convert("RGB")
        for img in digits.images
    ]
    features = datasets.Features({
        "image": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)]),
    })
    ds = datasets.Dataset.from_dict({"image": images, "label": digits.target.tolist()}, features=features)
    return ds.train_test_split(test_size=test_fraction, seed=seed, stratify_by_column="label")


_IMAGE_COLUMNS = ("image", "img", "pixel_values", "images")
_LABEL_COLUMNS = ("label", "labels", "fine_label", "coarse_label", "class")


def _pick(columns, wanted, candidates, what, dataset_name):
    if wanted is not None:
        if wanted not in columns:
            raise ValueError(f"{dataset_name}: no {what} column {wanted!r}; columns are {list(columns)}")
        return wanted
    for c in candidates:
        if c in columns:
            return c
    raise ValueError(f"{dataset_name}: cannot find the {what} column among {list(columns)}; "
                     f"pass --{what}_column")


def load_image_datasets(
    dataset_name: str | None = None, dataset_config_name: str | None = None, *, image_column: str | None = None,
    label_column: str | None = None, test_fraction: float = 0.2, seed: int = 0, image_size: int = 32,
    revision: str | None = None,
):
    """``train``/``test`` splits with columns ``image`` and ``label`` (a ``ClassLabel``).

    Without ``dataset_name`` the embedded digits; otherwise ``datasets.load_dataset`` (a
    folder saved with ``save_to_disk`` is opened with ``load_from_disk``). A data set
    without a test split gets one held out with ``test_fraction``.
    """
    import datasets

    if dataset_name is None:
        return embedded_digits(image_size=image_size, test_fraction=test_fraction, seed=seed)
    saved = ("dataset_dict.json", "state.json")  # save_to_disk of a DatasetDict, of a single Dataset
    if os.path.isdir(dataset_name) and any(os.path.isfile(os.path.join(dataset_name, f)) for f in saved):
        dsd = datasets.load_from_disk(dataset_name)
    else:
        try:
            dsd = datasets.load_dataset(dataset_name, dataset_config_name, revision=revision)
        except (FileNotFoundError, datasets.exceptions.DatasetNotFoundError) as e:
            raise ValueError(f"--dataset_name {dataset_name}: {e} (give a Hub data set, a local imagefolder or a "
                             f"folder saved with save_to_disk)") from None
    if isinstance(dsd, datasets.Dataset):
        dsd = datasets.DatasetDict({"train": dsd})
    if "train" not in dsd:
        raise ValueError(f"{dataset_name} has no 'train' split (splits: {list(dsd)})")
    test = next((s for s in ("test", "validation", "valid", "val") if s in dsd), None)
    if test is None:
        dsd = dsd["train"].train_test_split(test_size=test_fraction, seed=seed)
    else:
        dsd = datasets.DatasetDict({"train": dsd["train"], "test": dsd[test]})
    columns = dsd["train"].column_names
    img = _pick(columns, image_column, _IMAGE_COLUMNS, "image", dataset_name)
    lab = _pick(columns, label_column, _LABEL_COLUMNS, "label", dataset_name)
    dsd = dsd.select_columns([img, lab])
    if img != "image":
        dsd = dsd.rename_column(img, "image")
    if lab != "label":
        dsd = dsd.rename_column(lab, "label")
    if not isinstance(dsd["train"].features["label"], datasets.ClassLabel):
        dsd = dsd.class_encode_column("label")
    return dsd


class ImageTransform:
    """Batch transform for ``Dataset.with_transform``: PIL images -> normalised ``pixel_values``."""

    def __init__(self, image_size: int, mean, std, train: bool = False, augment: bool = False):
        from torchvision import transforms as T

        steps = [T.Resize((image_size, image_size))]
        if train and augment:
            steps += [T.RandomCrop(image_size, padding=max(1, image_size // 8)), T.RandomHorizontalFlip()]
        steps += [T.ToTensor(), T.Normalize(mean, std)]
        self.transform = T.Compose(steps)

    def __call__(self, batch: dict) -> dict:
        pixels = torch.stack([self.transform(img.convert("RGB")) for img in batch["image"]])
        return {"pixel_values": pixels, "labels": torch.as_tensor(batch["label"], dtype=torch.long)}


def accuracy_metrics(eval_pred) -> dict:
    """Top-1 accuracy (a fraction) for ``Trainer(compute_metrics=...)``, through the ``evaluate`` module shipped
    with lottery_rg (:class:`lottery_rg.tasks.metrics.ImageMetrics`)."""
    return ImageMetrics()(eval_pred)


def load_image_splits(data_args):
    """Train/test image splits for ``data_args``; the split depends on ``split_seed`` only, never on ``--seed``."""
    return load_image_datasets(data_args.dataset_name, data_args.dataset_config_name,
                               image_column=data_args.image_column, label_column=data_args.label_column,
                               test_fraction=data_args.test_fraction, seed=data_args.split_seed,
                               image_size=data_args.image_size or 32)


def prepare_data_for_model(model, data_args, dsd=None, with_collator: bool = False, channels_last: bool = False):
    """Train and test splits of an image data set, transformed to the input ``model`` expects.

    Returns ``(train, test, size)``, and the data collator as a fourth item with ``with_collator`` (None for the
    PIL path; the batch collator of :mod:`lottery_rg.tasks.tensor_images` with ``--tensor_data``).
    ``channels_last``: the tensor path hands out channels-last batches (the trainer converts any other).
    """
    from timm.data import resolve_data_config

    data_cfg = resolve_data_config({}, model=model)
    size = data_args.image_size or int(data_cfg["input_size"][-1])
    dsd = load_image_splits(data_args) if dsd is None else dsd
    dsd = truncate_splits(dsd, data_args.max_train_samples, data_args.max_eval_samples)
    mean, std = data_cfg["mean"], data_cfg["std"]
    collator = None
    if getattr(data_args, "tensor_data", False):
        from .tensor_images import tensor_image_splits

        train, test, collator = tensor_image_splits(dsd, size, mean, std, augment=data_args.augment,
                                                    channels_last=channels_last)
    else:
        train = dsd["train"].with_transform(ImageTransform(size, mean, std, train=True, augment=data_args.augment))
        test = dsd["test"].with_transform(ImageTransform(size, mean, std))
    return (train, test, size, collator) if with_collator else (train, test, size)


def prepare_image_task(model_args, data_args, seed: int = 42) -> TaskSetup:
    """A timm image classifier (new, pretrained, or from a folder / Hub repo) and its image data."""
    from transformers import set_seed

    from ..models.loading import load_model
    from ..models.memory_format import is_convolutional

    dsd = load_image_splits(data_args)
    labels = dsd["train"].features["label"].names
    set_seed(seed)  # the initial weights θ_0 depend only on the seed
    model = load_model(model_args.model_name_or_path, num_labels=len(labels), pretrained=model_args.pretrained,
                       revision=model_args.revision, model_kwargs=model_args.model_kwargs,
                       image_size=data_args.image_size)
    # --fast auto trains convolutional families channels-last (the trainer decides the same way)
    channels_last = model_args.channels_last or (model_args.fast == "auto" and is_convolutional(model))
    train, test, size, collator = prepare_data_for_model(model, data_args, dsd, with_collator=True,
                                                         channels_last=channels_last)
    if wants_sync_bn(model_args, data_args):
        model = sync_batchnorm(model)
    info = {"dataset": data_args.dataset_name or "sklearn-digits (embedded)", "image_size": size,
            "num_labels": len(labels), "labels": labels, "model_name_or_path": model_args.model_name_or_path,
            "mean": list(model.pretrained_cfg.get("mean", ())), "std": list(model.pretrained_cfg.get("std", ()))}
    if collator is not None:  # augmentation draws differ between the two paths: a run must not mix them
        info["data_path"] = "tensor"
    return TaskSetup("image-classification", model, train, test, data_collator=collator,
                     compute_metrics=ImageMetrics(getattr(data_args, "metric_name", None)), info=info)


def wants_sync_bn(*arguments) -> bool:
    """``--sync_bn``: a ``sync_bn`` field of any of the argument dataclasses, or ``LOTTERY_RG_SYNC_BN=1``."""
    if any(getattr(a, "sync_bn", False) for a in arguments if a is not None):
        return True
    return os.environ.get("LOTTERY_RG_SYNC_BN", "").strip().lower() in ("1", "true", "yes")


def sync_batchnorm(model: torch.nn.Module, world_size: int | None = None) -> torch.nn.Module:
    """``model`` with every BatchNorm a ``torch.nn.SyncBatchNorm`` when the run has several processes.

    With ``accelerate launch --multi_gpu`` each process normalises with the statistics of its own
    per-device batch; SyncBatchNorm computes them over the whole global batch instead, so that N
    GPUs at per-device batch B/N train like one GPU at batch B. One process: ``model`` unchanged.
    SyncBatchNorm runs only on GPUs (NCCL); on CPU processes (gloo) torch refuses it in training,
    so this raises instead of letting every rank fail at its first step. Names, shapes and the
    state dict are those of ``BatchNorm2d``: masks, checkpoints and tickets are unaffected.
    """
    world = int(os.environ.get("WORLD_SIZE", "1")) if world_size is None else int(world_size)
    if world <= 1:
        return model
    if not torch.cuda.is_available():
        raise ValueError(f"--sync_bn with {world} processes needs GPUs: torch's SyncBatchNorm does not run on the "
                         f"CPU (gloo); drop --sync_bn (each process then uses its own batch statistics)")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
