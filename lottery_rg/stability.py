"""Linear mode connectivity: is a ticket stable to SGD noise? (Frankle et al. 2020, SCIENCE §1)

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

:meth:`lottery_rg.LotteryTrainer.linear_mode_connectivity` trains the second copy (the
level's own training is the first) and fills an :class:`InstabilityResult`.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn

__all__ = ["InstabilityResult", "interpolate_state", "recalibrate_batchnorm", "plot_instability",
           "stability_table", "load_results", "record_name", "STABLE_THRESHOLD", "STABILITY_FILE"]

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
            out[name] = torch.lerp(x, y.to(x.dtype), float(alpha))
        else:
            out[name] = (x if alpha < 0.5 else y).clone()
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
    def from_dict(cls, data: Mapping) -> "InstabilityResult":
        if int(data.get("schema_version", 0)) != SCHEMA_VERSION:
            raise ValueError(f"not a lottery_rg stability record (schema_version {data.get('schema_version')!r})")
        keys = ("level", "density", "rewind_steps", "seeds", "alphas", "accuracy", "loss", "metric",
                "bn_batches", "label")
        return cls(**{k: data[k] for k in keys if k in data})

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record to ``path`` (a ``.json`` file, or a folder: ``stability.json`` / ``stability_bn.json``)."""
        from .io import json_path, write_json

        path = json_path(path, record_name(self.bn_batches))
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, self.to_dict())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "InstabilityResult":
        from .io import json_path, read_json

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
                f"{self.instability:.2f} points ({verdict} at ≤ {STABLE_THRESHOLD:g}), loss barrier {self.loss_barrier:.4f}")
        return head + "\n\n" + "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()


def stability_table(results: Iterable[InstabilityResult]) -> str:
    """One markdown row per analysed level."""
    lines = ["| level | density | rewind step | BatchNorm statistics | error at α=0 / 1 (%) | max error (%) | "
             "instability (points) | loss barrier | stable |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r.rewind_steps, r.level, r.bn_batches)):
        e = r.error
        bn = f"recalibrated ({r.bn_batches} batches)" if r.bn_batches else "interpolated"
        lines.append(f"| {r.level} | {100 * r.density:.2f}% | {r.rewind_steps} | {bn} | {e[0]:.2f} / {e[-1]:.2f} | "
                     f"{max(e):.2f} | {r.instability:.2f} | {r.loss_barrier:.4f} | {'yes' if r.stable() else 'no'} |")
    return "\n".join(lines)


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
    from .summary import save_figure

    return save_figure(fig, path)


def load_results(run_dir: str | os.PathLike) -> list[InstabilityResult]:
    """Every stability record of a run directory (``stability/level_XX/stability{,_bn}.json``)."""
    root = Path(run_dir) / "stability"
    if not root.is_dir():
        return []
    return [InstabilityResult.load(p) for p in sorted(root.glob("level_*/stability*.json"))]


def main(argv=None) -> int:
    """``python -m lottery_rg.stability RUN_DIR [RUN_DIR ...]``: the table and plot of the runs' analyses."""
    import argparse
    import sys

    ap = argparse.ArgumentParser(prog="python -m lottery_rg.stability",
                                 description="Linear-mode-connectivity results of one or more IMP runs (computed by "
                                             "run_imp.py --stability_levels): a table and a plot.")
    ap.add_argument("runs", nargs="+", help="IMP run directories")
    ap.add_argument("--levels", type=int, nargs="*", default=None, help="only these levels")
    ap.add_argument("--plot", metavar="PNG", default=None, help="write the plot here")
    args = ap.parse_args(argv)
    results = []
    for run in args.runs:
        found = load_results(run)
        if not found:
            print(f"error: {run} holds no stability analysis (run_imp.py ... --stability_levels L ...)", file=sys.stderr)
            return 2
        results += [r for r in found if args.levels is None or r.level in args.levels]
    print(stability_table(results))
    if args.plot:
        print(f"\nwrote {plot_instability(results, args.plot)}")
    return 0


if __name__ == "__main__":
    from lottery_rg.stability import main as _main  # the package's copy of this module

    raise SystemExit(_main())
