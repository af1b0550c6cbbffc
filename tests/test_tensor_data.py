"""The tensor data path gives the PIL path's pixels, and its batch augmentation is torchvision's crop + flip."""

from __future__ import annotations

import pytest
import torch
from utils import digits

from lottery_rg.models.resnet import CIFAR_MEAN, CIFAR_STD
from lottery_rg.tasks.image import ImageTransform
from lottery_rg.tasks.tensor_images import TensorImageCollator, crop_flip, tensor_image_splits


def pil_batch(ds, indices, size, **kw):
    t = ImageTransform(size, CIFAR_MEAN, CIFAR_STD, **kw)
    rows = ds.select(indices)
    return t({"image": rows["image"], "label": rows["label"]})


@pytest.mark.parametrize("size", [16, 24])  # 24: the PIL resize happens once, at decode time
@pytest.mark.parametrize("normalize_once", [True, False])
def test_same_pixels_as_image_transform(size, normalize_once):
    dsd = digits(16)
    train, test, collate = tensor_image_splits(dsd, size, CIFAR_MEAN, CIFAR_STD, normalize_once=normalize_once)
    assert len(train) == len(dsd["train"]) and len(test) == len(dsd["test"])
    for ds, split in ((train, "train"), (test, "test")):
        idx = list(range(0, len(ds), 7))
        ours = collate(ds.__getitems__(idx))
        ref = pil_batch(dsd[split], idx, size)
        assert ours["pixel_values"].dtype == torch.float32 and ours["pixel_values"].shape == ref["pixel_values"].shape
        torch.testing.assert_close(ours["pixel_values"], ref["pixel_values"], atol=1e-6, rtol=0)
        assert torch.equal(ours["labels"], ref["labels"])
        item = ds[idx[1]]
        torch.testing.assert_close(item["pixel_values"], ref["pixel_values"][1], atol=1e-6, rtol=0)


def test_crop_flip_equals_torchvision():
    from torchvision.transforms import functional as TF

    dsd = digits(16)
    size, pad = 16, 2
    train, _, _ = tensor_image_splits(dsd, size, CIFAR_MEAN, CIFAR_STD)
    idx = list(range(8))
    x = train.batch(idx)["pixel_values"]
    top = torch.tensor([0, 4, 2, 1, 3, 0, 4, 2])
    left = torch.tensor([4, 0, 2, 3, 1, 0, 4, 1])
    flip = torch.tensor([True, False, True, False, True, True, False, False])
    ours = crop_flip(x, top, left, flip, pad, train.fill)
    images = dsd["train"].select(idx)["image"]
    ref = []
    for img, t, lf, f in zip(images, top.tolist(), left.tolist(), flip.tolist()):
        img = TF.crop(TF.pad(img.convert("RGB"), pad, fill=0), t, lf, size, size)
        img = TF.hflip(img) if f else img
        ref.append(TF.normalize(TF.to_tensor(img), CIFAR_MEAN, CIFAR_STD))
    torch.testing.assert_close(ours, torch.stack(ref), atol=1e-6, rtol=0)


def test_augmentation_is_seeded_and_varies():
    dsd = digits(16)
    train, _, collate = tensor_image_splits(dsd, 16, CIFAR_MEAN, CIFAR_STD, augment=True)
    idx = list(range(64))
    torch.manual_seed(1)
    a = collate(train.__getitems__(idx))["pixel_values"]
    torch.manual_seed(1)
    b = collate(train.__getitems__(idx))["pixel_values"]
    c = collate(train.__getitems__(idx))["pixel_values"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    plain = train.pixels[idx]
    assert not torch.equal(a, plain)
    # the padding is black: every pixel value is an image value or the normalised 0
    allowed = torch.cat([plain.flatten(), train.fill]).unique()
    assert torch.isin(a.flatten(), allowed).all()


def test_plugs_into_trainer_dataloader(tmp_path):
    import timm
    from transformers import Trainer, TrainingArguments

    from lottery_rg import LotteryArguments, LotteryTrainer

    dsd = digits(16)
    train, test, collate = tensor_image_splits(dsd, 16, CIFAR_MEAN, CIFAR_STD, augment=True)
    args = TrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=32, use_cpu=True,
                             report_to="none", dataloader_pin_memory=False, max_steps=2, save_strategy="no",
                             disable_tqdm=True)
    trainer = LotteryTrainer(model=timm.create_model("resnet14_cifar"), args=args, lottery_args=LotteryArguments(),
                             train_dataset=train, eval_dataset=test, data_collator=collate)
    batch = next(iter(trainer.get_train_dataloader()))
    assert batch["pixel_values"].shape == (32, 3, 16, 16) and batch["labels"].shape == (32,)
    assert len(trainer.get_train_dataloader()) == -(-len(train) // 32)
    trainer.train()
    assert isinstance(trainer, Trainer)
    # items work without the batched fetch too (a plain list of dicts)
    items = [test[i] for i in range(4)]
    assert TensorImageCollator()(items)["pixel_values"].shape == (4, 3, 16, 16)
