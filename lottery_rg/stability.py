"""Linear mode connectivity: is a ticket stable to SGD noise? (Frankle et al. 2020, "Linear mode connectivity and
the lottery ticket hypothesis", §3)

Two copies of a network are trained from the same rewind point θ_k with the same mask
but different SGD noise (data order, augmentation, dropout), giving θ_a and θ_b. The
error is evaluated along the straight line θ(α) = (1 − α) θ_a + α θ_b, α ∈ [0, 1]; the
**instability** is the largest rise of the error above the mean of the two end points::

    instability = max_α ε(α) − (ε(0) + ε(1)) / 2        (percentage points)

A network is *stable* when the instability is near 0 (Frankle et al. use 2 points).
Frankle et al. found that IMP finds matching sparse networks exactly when the network
is stable at its rewind point, which is why rewinding to k > 0 (rather than to
initialisation) helps deeper networks.

What is interpolated: every floating-point tensor of the state — weights, normalization
parameters and BatchNorm running statistics — as θ(α) is defined on the whole state;
integer buffers (``num_batches_tracked``) are taken from the nearer end point. Pruned
weights are zero in both copies, so every θ(α) keeps the mask. Interpolated running
statistics are not the statistics of the interpolated network; ``recalibrate_bn``
recomputes them from training batches at every α (Jordan et al. 2022, REPAIR) for the
variant in which BatchNorm is taken out of the question.

:func:`linear_mode_connectivity` (also :meth:`lottery_rg.LotteryTrainer.linear_mode_connectivity`) trains
the second copy (the level's own training is the first) and fills an :class:`InstabilityResult`.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from .io import json_path, load_state, read_json, save_state, write_json
from .plotting import markdown_table, save_figure
from .run import RunDir

__all__ = ["InstabilityResult", "interpolate_state", "recalibrate_batchnorm", "plot_instability",
           "stability_table", "load_results", "record_name", "linear_mode_connectivity", "second_seed",
           "STABLE_THRESHOLD", "STABILITY_FILE"]

logger = logging.getLogger(__name__)

STABLE_THRESHOLD = 2.0  # percentage points of error (Frankle et al. 2020)
STABILITY_FILE = "stability.json"
SCHEMA_VERSION = 1


def record_name(bn_batches: int = 0, suffix: str = ".json") -> str:
    """``stability.json`` (interpolated BatchNorm statistics) or ``stability_bn.json`` (recalibrated)."""
    return ("stability_bn" if bn_batches else "stability") + suffix


def interpolate_state(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor], alpha: float) -> dict:
    """θ(α) = (1 − α) a + α b for floating tensors; integer tensors come from the nearer end point.

    ``torch.lerp`` returns ``a`` exactly at α = 0 and ``b`` exactly at α = 1, so the end
    points of the path are the two trained networks bit for bit.
    """
    if set(a) != set(b):
        extra, missing = sorted(set(b) - set(a))[:5], sorted(set(a) - set(b))[:5]
        raise ValueError(f"the two states hold different tensors (only in b: {extra}; only in a: {missing})")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    out = {}
    for name, x in a.items():
        y = b[name]
        if x.shape != y.shape:
            raise ValueError(f"{name}: shapes {tuple(x.shape)} and {tuple(y.shape)} differ")
        if x.is_floating_point():
            out[name] = torch.lerp(x, y.to(x.device, x.dtype), float(alpha))  # on a's device
        else:
            out[name] = (x if alpha < 0.5 else y.to(x.device)).clone()
    return out


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable, forward) -> int:
    """Recompute BatchNorm running statistics of ``model`` as exact averages over ``batches``.

    ``forward(model, batch)`` runs one forward pass. Returns the number of BatchNorm
    layers reset (0: nothing to do, e.g. for BERT's LayerNorms).
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return 0
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: the exact mean over the batches seen
    model.train()
    try:
        n = 0
        for batch in batches:
            forward(model, batch)
            n += 1
        if n == 0:
            raise ValueError("recalibrating BatchNorm needs at least one batch")
    finally:
        for m, mom in zip(norms, momenta):
            m.momentum = mom
        model.train(was_training)
    return len(norms)


@dataclass
class InstabilityResult:
    """Error along the linear path between two copies of one ticket trained with different SGD noise.

    ``accuracy`` and ``loss`` hold one value per ``alphas`` entry (accuracy as a fraction);
    ``error`` is 100 − accuracy in percent. ``seeds`` are the SGD-noise seeds of copy a (the
    level's own training) and copy b. ``bn_batches``: 0 when BatchNorm running statistics were
    interpolated like every other tensor, else the number of training batches they were
    recomputed from at every point.
    """

    level: int
    density: float
    rewind_steps: int
    seeds: tuple[int, int]
    alphas: list[float]
    accuracy: list[float]
    loss: list[float]
    metric: str = "eval_accuracy"
    bn_batches: int = 0
    label: str = ""

    def __post_init__(self):
        self.seeds = tuple(int(s) for s in self.seeds)
        self.alphas = [float(a) for a in self.alphas]
        if not (len(self.alphas) == len(self.accuracy) == len(self.loss)):
            raise ValueError("alphas, accuracy and loss must have one entry per point of the path")
        if len(self.alphas) < 2 or self.alphas[0] != 0.0 or self.alphas[-1] != 1.0:
            raise ValueError("the path must start at alpha = 0 and end at alpha = 1")

    @property
    def error(self) -> list[float]:
        return [100.0 * (1.0 - a) for a in self.accuracy]

    @property
    def instability(self) -> float:
        """Largest rise of the error (percentage points) above the mean of the end points."""
        err = self.error
        return max(err) - 0.5 * (err[0] + err[-1])

    @property
    def loss_barrier(self) -> float:
        """The same for the evaluation loss (nats)."""
        return max(self.loss) - 0.5 * (self.loss[0] + self.loss[-1])

    def stable(self, threshold: float = STABLE_THRESHOLD) -> bool:
        return self.instability <= threshold

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(schema_version=SCHEMA_VERSION, seeds=list(self.seeds), error=self.error,
                 instability=self.instability, loss_barrier=self.loss_barrier)
        return d

    @classmethod
    def from_dict(cls, data: Mapping) -> InstabilityResult:
        if int(data.get("schema_version", 0)) != SCHEMA_VERSION:
            raise ValueError(f"not a lottery_rg stability record (schema_version {data.get('schema_version')!r})")
        keys = ("level", "density", "rewind_steps", "seeds", "alphas", "accuracy", "loss", "metric",
                "bn_batches", "label")
        return cls(**{k: data[k] for k in keys if k in data})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record to ``path`` (a ``.json`` file, or a folder: ``stability.json`` / ``stability_bn.json``)."""
        path = json_path(path, record_name(self.bn_batches))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> InstabilityResult:
        path = json_path(path, STABILITY_FILE)
        if not path.is_file():
            raise FileNotFoundError(f"no stability record at {path}")
        return cls.from_dict(read_json(path))

    def to_markdown(self) -> str:
        lines = ["| α | " + " | ".join(f"{a:.2f}" for a in self.alphas) + " |",
                 "|---|" + "---|" * len(self.alphas),
                 "| error (%) | " + " | ".join(f"{e:.2f}" for e in self.error) + " |",
                 "| loss | " + " | ".join(f"{x:.4f}" for x in self.loss) + " |"]
        verdict = "stable" if self.stable() else "unstable"
        head = (f"Linear mode connectivity at level {self.level} ({100 * self.density:.2f} % density, rewind step "
                f"{self.rewind_steps}, SGD-noise seeds {self.seeds[0]} and {self.seeds[1]}"
                f"{f', BatchNorm recalibrated on {self.bn_batches} batches' if self.bn_batches else ''}): instability "
                f"{self.instability:.2f} points ({verdict} at ≤ {STABLE_THRESHOLD:g}), "
                f"loss barrier {self.loss_barrier:.4f}")
        return head + "\n\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def stability_table(results: Iterable[InstabilityResult]) -> str:
    """One markdown row per analysed level."""
    rows = []
    for r in sorted(results, key=lambda r: (r.rewind_steps, r.level, r.bn_batches)):
        e = r.error
        bn = f"recalibrated ({r.bn_batches} batches)" if r.bn_batches else "interpolated"
        rows.append([r.level, f"{100 * r.density:.2f}%", r.rewind_steps, bn, f"{e[0]:.2f} / {e[-1]:.2f}",
                     f"{max(e):.2f}", f"{r.instability:.2f}", f"{r.loss_barrier:.4f}", "yes" if r.stable() else "no"])
    return markdown_table(["level", "density", "rewind step", "BatchNorm statistics", "error at α=0 / 1 (%)",
                           "max error (%)", "instability (points)", "loss barrier", "stable"], rows)


def plot_instability(results: Iterable[InstabilityResult], path: str | os.PathLike | None, title: str | None = None):
    """Error along the linear path: one panel per level, one line per rewind step and BatchNorm treatment.

    Solid lines interpolate the BatchNorm statistics, dashed ones recalibrate them; the colour
    is the rewind step. Writes a PNG to ``path`` (``None``: returns the ``Figure``).
    """
    from matplotlib.figure import Figure

    results = list(results)
    if not results:
        raise ValueError("nothing to plot: no stability results")
    levels = sorted({r.level for r in results})
    steps = sorted({r.rewind_steps for r in results})
    fig = Figure(figsize=(5.5 * len(levels), 4))
    for ax, level in zip(fig.subplots(1, len(levels), squeeze=False)[0], levels):
        mine = sorted((r for r in results if r.level == level), key=lambda r: (r.rewind_steps, r.bn_batches))
        for r in mine:
            bn = "BN recalibrated" if r.bn_batches else "BN statistics interpolated"
            ax.plot(r.alphas, r.error, "s--" if r.bn_batches else "o-", color=f"C{steps.index(r.rewind_steps) % 10}",
                    alpha=0.75 if r.bn_batches else 1.0,
                    label=r.label or f"rewind k={r.rewind_steps}, {bn}: {r.instability:.1f} pts")
        ax.set_title(f"level {level} ({100 * mine[0].density:.1f} % density)")
        ax.set_xlabel("α  (θ = (1−α)·θ_a + α·θ_b)")
        ax.set_ylabel("test error (%)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title or "linear mode connectivity: error between two copies trained with different SGD noise")
    fig.tight_layout()
    return save_figure(fig, path)


def load_results(run_dir: str | os.PathLike) -> list[InstabilityResult]:
    """Every stability record of a run directory (``stability/level_XX/stability{,_bn}.json``)."""
    return [InstabilityResult.load(p) for p in RunDir(run_dir).stability_records()]


def second_seed(seed: int | None, run_seed: int) -> int:
    """The SGD-noise seed of the second copy (default: the run's ``--seed`` + 1), which must differ from the run's."""
    seed = run_seed + 1 if seed is None else int(seed)
    if seed == run_seed:
        raise ValueError(f"the second copy of the stability analysis needs SGD noise of its own: --stability_seed "
                         f"{seed} equals --seed; choose another")
    return seed


def linear_mode_connectivity(trainer, level: int, *, seed_b: int, num_points: int = 11, recalibrate_bn: int = 0):
    """Instability of ``level``'s ticket of ``trainer``'s run (a ``LotteryTrainer``) to SGD noise.

    Both copies start from the rewind point θ_k ⊙ m at step k with a fresh optimizer: copy a
    with the run's SGD noise (``--seed``) — that is the level's own training, reused, except
    for the dense level 0 with k > 0, which trained through step k and gets a copy of its
    own — and copy b with the noise of ``seed_b``. The error is evaluated at ``num_points``
    evenly spaced points of the line between them; ``recalibrate_bn`` > 0 recomputes BatchNorm
    statistics from that many training batches at every point. Results go to
    ``RUN/stability/level_XX/`` (``stability.json``, the plot, the copies' weights); a finished
    analysis with the same settings is read back, an interrupted copy b resumes from its
    Trainer checkpoints. The model is left at copy a.
    """
    run, level = trainer.run, int(level)
    if not run.is_complete(level):
        raise ValueError(f"level {level} of {run.root} is not complete: the stability analysis starts from a "
                         f"finished level (run IMP first)")
    density = float(run.record(level)["density"])
    if trainer.eval_dataset is None:
        raise ValueError("the stability analysis evaluates the path between the copies: give an eval_dataset")
    if int(num_points) < 3:
        raise ValueError(f"the path needs at least 3 points (both ends and one between), got {num_points}")
    seed_a, k = trainer.args.seed, trainer.settings.rewind_steps
    out, bn_batches = run.stability(level), int(recalibrate_bn)
    record = out / record_name(bn_batches)
    if record.is_file():
        old = InstabilityResult.load(record)
        if old.seeds == (seed_a, seed_b) and len(old.alphas) == int(num_points) and old.bn_batches == bn_batches:
            logger.info("stability of level %d already analysed: %.2f points", level, old.instability)
            return old
    # Every rewound level (and level 0 with k = 0) *is* such a copy, reproduced bit for bit by retrain_level;
    # the dense level 0 with k > 0 is not (it trained through step k with its optimizer state): it gets a copy a.
    copy_a = run.model(level)
    if level == 0 and k > 0:
        copy_a = _stability_copy(trainer, level, seed_a, out / "copy_a.safetensors", "a")
    copy_b = _stability_copy(trainer, level, seed_b, out / "copy_b.safetensors", "b")
    model = trainer.model
    load_state(model, copy_b)
    state_b = {key: v.detach().clone() for key, v in model.state_dict().items()}
    load_state(model, copy_a)
    state_a = {key: v.detach().clone() for key, v in model.state_dict().items()}

    n = int(num_points)
    alphas = [i / (n - 1) for i in range(n)]
    accuracy, loss = [], []
    forward = lambda m, batch: trainer.compute_loss(m, batch)  # noqa: E731
    for alpha in alphas:
        model.load_state_dict(interpolate_state(state_a, state_b, alpha))
        if bn_batches:
            recalibrate_batchnorm(model, trainer.calibration_batches(bn_batches), forward)
        metrics = trainer.evaluate()
        accuracy.append(float(metrics["eval_accuracy"]))
        loss.append(float(metrics["eval_loss"]))
    model.load_state_dict(state_a)
    result = InstabilityResult(level=level, density=density, rewind_steps=k, seeds=(seed_a, seed_b), alphas=alphas,
                               accuracy=accuracy, loss=loss, bn_batches=bn_batches)
    if trainer.is_world_process_zero():
        result.save(record)
        plot_instability([result], out / record_name(bn_batches, ".png"))
        logger.info("stability of level %d: instability %.2f points (%s)", level, result.instability,
                    "stable" if result.stable() else "unstable")
    trainer.accelerator.wait_for_everyone()
    return result


def _stability_copy(trainer, level: int, seed: int, path: Path, name: str) -> Path:
    """``path`` holding ``level`` retrained with ``seed`` (trained now unless already there)."""
    if _file_seed(path) != seed:  # missing, unreadable, or trained with other SGD noise
        if trainer.is_world_process_zero():
            logger.info("stability of level %d: training copy %s (seed %d) from the rewind point", level, name, seed)
        work = trainer.run.checkpoints(f"stability_{level:02d}_{name}")
        trainer.retrain_level(level, seed, work=work)
        if trainer.is_world_process_zero():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_state(trainer.model, path, metadata={"level": level, "seed": seed})
            shutil.rmtree(work, ignore_errors=True)
        trainer.accelerator.wait_for_everyone()
    return path


def _file_seed(path: Path) -> int | None:
    """The ``seed`` a stability copy was trained with (safetensors metadata)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return int((f.metadata() or {}).get("seed"))
    except (OSError, ValueError, TypeError, SafetensorError):  # missing, corrupt, or without a seed: train again
        return None
