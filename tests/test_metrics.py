"""Evaluation metrics through `evaluate`: the shipped modules load offline by path and give exactly the values
lottery_rg computed itself before; --metric_name adds any evaluate metric by name or path."""

import subprocess
import sys

import numpy as np
import pytest
from utils import ROOT, image_setup, make_trainer, subprocess_env

from lottery_rg.tasks.metrics import ImageMetrics, MLMMetrics
from lottery_rg.tasks.text import compute_mlm_metrics, masked_token_accuracy

ERROR_RATE = '''
import datasets
import evaluate
import numpy as np


class ErrorRate(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(description="1 - accuracy", citation="", inputs_description="",
                                   features=datasets.Features({"predictions": datasets.Value("int64"),
                                                               "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        return {"error_rate": float((np.asarray(predictions) != np.asarray(references)).mean())}
'''


def _old_accuracy(logits, labels):  # what lottery_rg computed before it used evaluate
    return float((np.asarray(logits).argmax(-1) == np.asarray(labels)).mean())


def test_image_accuracy_is_the_same_number_as_before():
    rng = np.random.default_rng(0)
    for n, classes in ((1, 10), (64, 10), (1000, 100), (333, 2)):
        logits = rng.normal(size=(n, classes)).astype(np.float32)
        labels = rng.integers(0, classes, size=n)
        got = ImageMetrics()((logits, labels))
        assert got == {"accuracy": _old_accuracy(logits, labels)}
        assert ImageMetrics()(((logits,), labels)) == got  # logits as the first of a tuple


def test_masked_token_accuracy_is_the_same_number_as_before():
    rng = np.random.default_rng(1)
    for rows, length in ((1, 8), (16, 64), (50, 128)):
        preds = rng.integers(0, 30, size=(rows, length))
        labels = np.where(rng.random((rows, length)) < 0.15, rng.integers(0, 30, size=(rows, length)), -100)
        labels[0, 0] = preds[0, 0]  # at least one masked token
        accuracy, count = masked_token_accuracy(preds, labels)
        assert MLMMetrics()((preds, labels)) == {"accuracy": accuracy, "masked_tokens": float(count)}
        assert compute_mlm_metrics((preds, labels)) == {"accuracy": accuracy, "masked_tokens": float(count)}
    nothing = MLMMetrics()((np.zeros((2, 4), int), np.full((2, 4), -100)))
    assert np.isnan(nothing["accuracy"]) and nothing["masked_tokens"] == 0.0


def test_a_trainers_eval_accuracy_is_the_accuracy_of_its_predictions(tmp_path):
    trainer = make_trainer(tmp_path, {"levels": 1})
    out = trainer.predict(trainer.eval_dataset)
    assert out.metrics["test_accuracy"] == _old_accuracy(out.predictions, out.label_ids)


def test_metric_name_adds_a_local_evaluate_metric(tmp_path):
    from lottery_rg.tasks import prepare_image_task
    from lottery_rg.training.arguments import DataArguments, ModelArguments

    folder = tmp_path / "error_rate"
    folder.mkdir()
    (folder / "error_rate.py").write_text(ERROR_RATE)
    setup = prepare_image_task(ModelArguments(model_name_or_path="resnet14_cifar"),
                               DataArguments(max_train_samples=64, max_eval_samples=64, image_size=16,
                                             metric_name=str(folder)), seed=0)
    rng = np.random.default_rng(2)
    logits, labels = rng.normal(size=(40, 10)), rng.integers(0, 10, size=40)
    got = setup.compute_metrics((logits, labels))
    assert got["accuracy"] == _old_accuracy(logits, labels)
    assert got["error_rate"] == pytest.approx(1 - got["accuracy"], abs=1e-12)
    # masked-LM: the extra metric sees the masked positions only
    preds = rng.integers(0, 5, size=(4, 16))
    mlm_labels = np.where(rng.random((4, 16)) < 0.3, rng.integers(0, 5, size=(4, 16)), -100)
    got = MLMMetrics(str(folder))((preds, mlm_labels))
    assert got["error_rate"] == pytest.approx(1 - got["accuracy"], abs=1e-12)


def test_an_unknown_metric_is_refused_naming_the_flag():
    with pytest.raises(ValueError, match="--metric_name /no/such/metric: evaluate cannot load it"):
        ImageMetrics("/no/such/metric")((np.zeros((2, 3)), np.zeros(2, int)))


def test_the_shipped_modules_load_offline_from_an_installed_package(tmp_path):
    """No Hub, no network: HF_HUB_OFFLINE and an endpoint nobody listens on."""
    code = ("import numpy as np\n"
            "from lottery_rg.tasks.metrics import ImageMetrics, MLMMetrics\n"
            "print(ImageMetrics()((np.eye(3), np.array([0, 1, 1]))))\n"
            "print(MLMMetrics()((np.array([[1, 2]]), np.array([[1, -100]]))))\n")
    env = subprocess_env()
    env.update(HF_HUB_OFFLINE="1", HF_ENDPOINT="http://127.0.0.1:9", HF_HOME=str(tmp_path / "home"))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == ["{'accuracy': 0.6666666666666666}", "{'accuracy': 1.0, 'masked_tokens': 1.0}"]
    assert (ROOT / "lottery_rg" / "evaluate_modules" / "accuracy" / "accuracy.py").is_file()


def test_image_setup_uses_the_evaluate_metrics():
    assert isinstance(image_setup().compute_metrics, ImageMetrics)
