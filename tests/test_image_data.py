import datasets
import numpy as np
import pytest
from PIL import Image

from lottery_rg.tasks import prepare_image_task
from lottery_rg.tasks.image import embedded_digits, load_image_datasets
from lottery_rg.training.arguments import DataArguments, ModelArguments


def test_embedded_digits_in_the_hub_schema():
    dsd = embedded_digits(image_size=32)
    assert set(dsd) == {"train", "test"}
    assert len(dsd["train"]) + len(dsd["test"]) == 1797
    assert isinstance(dsd["train"].features["image"], datasets.Image)
    assert dsd["train"].features["label"].names == [str(i) for i in range(10)]
    img = dsd["train"][0]["image"]
    assert img.size == (32, 32) and img.mode == "RGB"
    counts = np.bincount(dsd["test"]["label"], minlength=10)
    assert counts.min() >= 30  # stratified: every digit is in the test split


def _write_imagefolder(root, classes=("cat", "dog"), per_class=6):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in classes:
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(per_class):
                arr = rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)
                Image.fromarray(arr).save(d / f"{i}.png")


def test_local_imagefolder_goes_through_load_dataset(tmp_path):
    _write_imagefolder(tmp_path / "pets")
    dsd = load_image_datasets(str(tmp_path / "pets"))
    assert set(dsd) == {"train", "test"} and len(dsd["train"]) == 12
    assert dsd["train"].features["label"].names == ["cat", "dog"]


def test_saved_dataset_with_other_column_names(tmp_path):
    imgs = [Image.fromarray(np.full((8, 8, 3), i * 20, dtype=np.uint8)) for i in range(10)]
    ds = datasets.Dataset.from_dict({"img": imgs, "fine_label": [i % 3 for i in range(10)], "extra": list(range(10))},
                                    features=datasets.Features({"img": datasets.Image(),
                                                                "fine_label": datasets.Value("int64"),
                                                                "extra": datasets.Value("int64")}))
    datasets.DatasetDict({"train": ds}).save_to_disk(tmp_path / "saved")
    dsd = load_image_datasets(str(tmp_path / "saved"), test_fraction=0.3)
    assert dsd["train"].column_names == ["image", "label"]
    assert isinstance(dsd["train"].features["label"], datasets.ClassLabel)
    assert len(dsd["test"]) == 3


def test_missing_image_column_is_a_clear_error(tmp_path):
    ds = datasets.Dataset.from_dict({"text": ["a", "b"], "label": [0, 1]})
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(tmp_path / "text")
    with pytest.raises(ValueError, match="cannot find the image column among \\['text', 'label'\\]"):
        load_image_datasets(str(tmp_path / "text"))


def test_image_task_batches_have_model_sized_pixels(tmp_path):
    _write_imagefolder(tmp_path / "pets")
    setup = prepare_image_task(ModelArguments(model_name_or_path="resnet14_cifar"),
                               DataArguments(dataset_name=str(tmp_path / "pets")))
    batch = setup.train_dataset[:4]
    assert batch["pixel_values"].shape == (4, 3, 32, 32)
    assert batch["labels"].tolist() == [0, 0, 0, 0]
    assert setup.model.fc.out_features == 2


def test_the_split_depends_on_split_seed_not_on_the_training_seed():
    from lottery_rg.tasks import load_image_splits

    a = prepare_image_task(ModelArguments(model_name_or_path="resnet14_cifar"), DataArguments(image_size=16), seed=0)
    b = prepare_image_task(ModelArguments(model_name_or_path="resnet14_cifar"), DataArguments(image_size=16), seed=1)
    assert a.eval_dataset[:]["pixel_values"].equal(b.eval_dataset[:]["pixel_values"])
    assert not a.model.state_dict()["fc.weight"].equal(b.model.state_dict()["fc.weight"])  # θ_0 follows --seed
    other = load_image_splits(DataArguments(image_size=16, split_seed=1))["test"]["label"]
    assert other != load_image_splits(DataArguments(image_size=16))["test"]["label"]
