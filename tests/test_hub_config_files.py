"""Config files for the example scripts: JSON and YAML, dict/list/bool/None values, flags override the file."""

import json

import pytest
import yaml
from transformers import TrainingArguments

from lottery_rg import LotteryArguments
from lottery_rg.training.arguments import DataArguments, ModelArguments, parse_args

TYPES = (ModelArguments, DataArguments, LotteryArguments, TrainingArguments)
CONFIG = {
    "model_name_or_path": "resnet14_cifar", "output_dir": "runs/x", "levels": 3, "rewind_steps": 2,
    "lr_scheduler_type": "cosine_with_min_lr", "lr_scheduler_kwargs": {"min_lr": 1e-4},
    "stability_levels": [0, 2], "augment": True, "max_train_samples": None, "report_to": "none",
}


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_config_files_with_dict_list_and_bool_values(tmp_path, suffix):
    path = tmp_path / f"c{suffix}"
    path.write_text(json.dumps(CONFIG) if suffix == ".json" else yaml.safe_dump(CONFIG))
    model, data, lottery, training = parse_args(TYPES, [str(path)])
    assert training.lr_scheduler_kwargs == {"min_lr": 1e-4}
    assert lottery.levels == 3 and lottery.stability_levels == [0, 2] and data.augment is True
    assert data.max_train_samples is None and model.model_name_or_path == "resnet14_cifar"
    model, data, lottery, training = parse_args(TYPES, [str(path), "--levels", "2", "--augment", "false",
                                                        "--lr_scheduler_kwargs", '{"min_lr": 0.001}'])
    assert lottery.levels == 2 and data.augment is False and training.lr_scheduler_kwargs == {"min_lr": 0.001}


def test_unknown_keys_in_a_config_file_are_named(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"output_dir": "x", "levelz": 3}))
    with pytest.raises(ValueError, match=r"unknown arguments \['levelz'\]"):
        parse_args(TYPES, [str(path)])
    path.write_text("{not json")
    with pytest.raises(ValueError, match="c.json"):
        parse_args(TYPES, [str(path)])


def test_use_cpu_defaults_to_true_without_cuda(tmp_path):
    import torch

    *_, training = parse_args(TYPES, ["--output_dir", str(tmp_path)])
    assert training.use_cpu is (not torch.cuda.is_available())
