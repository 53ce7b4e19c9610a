"""The figures of one training run, from its ``metrics.jsonl`` and ``telemetry.jsonl``.

Three PNGs (matplotlib's object API on the Agg canvas, as :mod:`ades_core.evaluation.plots`):

* :data:`CURVES_FILE`: train loss, train clean/adversarial accuracy, test
  clean/PGD accuracy and the budget's mean +- std against the epoch;
* :data:`HISTOGRAM_FILE`: the eps histogram of every epoch as a heat map
  (epoch on x, eps on y, colour: the fraction of the samples);
* :data:`CUES_FILE`: eps against each cue for the fixed sample of the last
  epoch, with Spearman's rho over all samples in each title (only for runs
  whose defense has cues).

Budgets are drawn in the run's norm (``attack.norm`` of its ``config.json``):
L-inf in x/255, L2 as the Euclidean radius in pixel space (:func:`budget_axis`).
"""

from __future__ import annotations

from pathlib import Path
import json
from typing import Any

from ades_core.engine.runfolder import CONFIG_FILE, METRICS_FILE
from ades_core.engine.runfolder.atomic_files import read_jsonl
from ades_core.engine.telemetry import TelemetryError, read_telemetry
from ades_core.errors import AdesError

CURVES_FILE = "training_curves.png"
HISTOGRAM_FILE = "eps_histogram.png"
CUES_FILE = "eps_vs_cues.png"
PLOTS_DIR = "plots"
"""Where ``ades plot training RUN_DIR`` writes without ``--out``: ``RUN_DIR/plots/``."""


class TrainingPlotError(AdesError, ValueError):
    """A run folder that cannot be plotted; one line saying what is missing."""


def budget_axis(norm: str) -> tuple[float, str]:
    """``(scale, label)`` of a budget axis: L-inf budgets drawn as x/255, L2 radii as they are."""
    return (255.0, "eps (x/255)") if norm == "linf" else (1.0, f"eps ({norm} radius, pixel space)")


def run_norm(run_dir: str | Path) -> str:
    """The norm the run in ``run_dir`` trained in (``attack.norm`` of its ``config.json``; linf if unrecorded)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        return str(json.loads(path.read_text()).get("attack", {}).get("norm", "linf"))
    except (OSError, ValueError) as exc:
        raise TrainingPlotError(f"cannot read {path} ({exc}); it names the run's norm") from None


def read_metrics(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``run_dir/metrics.jsonl``.

    Raises:
        TrainingPlotError: no such file, no finished epoch, or a line that is not JSON.
    """
    path = Path(run_dir) / METRICS_FILE
    if not Path(run_dir).is_dir():
        raise TrainingPlotError(f"{run_dir} is not a folder; give a training run folder (ades run --out)")
    if not path.is_file():
        raise TrainingPlotError(f"{run_dir} holds no {METRICS_FILE}: it is not a training run folder")
    return read_jsonl(path, TrainingPlotError)


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    return path


def _integer_epochs(axes) -> None:
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))


def _series(records: list[dict[str, Any]], key: str, scale: float = 1.0) -> tuple[list[int], list[float]]:
    """(epochs, values) of the records that hold a number under ``key``."""
    pairs = [(r["epoch"], scale * r[key]) for r in records if isinstance(r.get(key), (int, float))]
    return [e for e, _ in pairs], [v for _, v in pairs]


def plot_training_curves(
    metrics: list[dict[str, Any]], path: str | Path, *, title: str | None = None, norm: str = "linf"
) -> Path:
    """Four panels against the epoch: train loss; train clean/adv accuracy (%); test clean/PGD
    accuracy (%); eps mean +- std in ``norm``'s units (:func:`budget_axis`) with the epoch's min and max."""
    scale, label = budget_axis(norm)
    figure = _figure(10.0, 7.0)
    loss, train_acc, test_acc, budget = (figure.add_subplot(2, 2, k) for k in range(1, 5))
    loss.plot(*_series(metrics, "train_loss"), marker="o", label="train loss (adversarial)")
    loss.set_ylabel("loss")
    train_acc.plot(*_series(metrics, "train_clean_acc", 100), marker="o", label="train clean")
    train_acc.plot(*_series(metrics, "train_adv_acc", 100), marker="o", label="train adversarial")
    train_acc.set_ylabel("accuracy (%)")
    steps = next((r.get("test_pgd_steps") for r in reversed(metrics) if r.get("test_pgd_steps")), None)
    test_acc.plot(*_series(metrics, "test_clean_acc", 100), marker="o", label="test clean")
    test_acc.plot(*_series(metrics, "test_pgd_acc", 100), marker="o", label=f"test PGD-{steps or '?'}")
    test_acc.set_ylabel("accuracy (%)")
    epochs, mean = _series(metrics, "eps_mean", scale)
    _, std = _series(metrics, "eps_std", scale)
    if epochs and len(std) == len(mean):
        budget.plot(epochs, mean, marker="o", label="eps mean")
        budget.fill_between(epochs, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            alpha=0.3, label="mean ± std")
        for key, style in (("eps_min", ":"), ("eps_max", "--")):
            budget.plot(*_series(metrics, key, scale), linestyle=style, color="grey", label=key.replace("_", " "))
    budget.set_ylabel(label)
    for axes in (loss, train_acc, test_acc, budget):
        axes.set_xlabel("epoch")
        _integer_epochs(axes)
        axes.grid(True, alpha=0.3)
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize="small")
    if title:
        figure.suptitle(title)
    return _save(figure, Path(path))


def plot_eps_histograms(
    telemetry: list[dict[str, Any]], path: str | Path, *, title: str | None = None, norm: str = "linf"
) -> Path:
    """Heat map of the per-epoch eps histograms (fraction of the samples per bin), mean eps on top;
    eps in ``norm``'s units (:func:`budget_axis`)."""
    scale, label = budget_axis(norm)
    ranges = {(r["histogram"]["low"], r["histogram"]["high"], len(r["histogram"]["counts"])) for r in telemetry}
    if len(ranges) != 1:
        raise TrainingPlotError("the epochs of telemetry.jsonl have different histogram bins; they cannot share a map")
    (low, high, bins), = ranges
    columns = []
    for record in telemetry:
        counts = record["histogram"]["counts"]
        total = sum(counts)
        columns.append([c / total if total else 0.0 for c in counts])
    grid = [[column[b] for column in columns] for b in range(bins)]  # (bins, epochs)
    epochs = [r["epoch"] for r in telemetry]
    figure = _figure(7.0, 4.5)
    axes = figure.add_subplot(1, 1, 1)
    image = axes.imshow(
        grid, origin="lower", aspect="auto", cmap="viridis", interpolation="nearest",
        extent=(min(epochs) - 0.5, max(epochs) + 0.5, scale * low, scale * high),
    )
    figure.colorbar(image, ax=axes, label="fraction of samples")
    means = [(r["epoch"], scale * r["eps"]["mean"]) for r in telemetry if r.get("eps")]
    if means:
        axes.plot([e for e, _ in means], [m for _, m in means], color="white", marker=".", label="mean")
        axes.legend(fontsize="small", loc="upper right")
    axes.set_xlabel("epoch")
    _integer_epochs(axes)
    axes.set_ylabel(label)
    axes.set_title(title or "Distribution of the per-sample budgets")
    return _save(figure, Path(path))


def plot_eps_vs_cues(
    record: dict[str, Any], path: str | Path, *, title: str | None = None, norm: str = "linf"
) -> Path:
    """Scatter of eps (``norm``'s units, :func:`budget_axis`) against each normalised cue for the
    fixed sample of ``record`` (one epoch)."""
    scale, label = budget_axis(norm)
    sample = record["sample"]
    names = list(sample["cues"])
    if not names:
        raise TrainingPlotError("this run's defense has no cues: there is nothing to plot eps against")
    figure = _figure(3.6 * len(names), 3.6)
    eps = [scale * e for e in sample["eps"]]
    low, high = scale * record["histogram"]["low"], scale * record["histogram"]["high"]
    margin = 0.03 * (high - low)
    for k, name in enumerate(names, start=1):
        axes = figure.add_subplot(1, len(names), k)
        axes.scatter(sample["cues"][name], eps, s=8, alpha=0.6)
        rho = record["cues"].get(name, {}).get("spearman")
        axes.set_title(f"{name}: Spearman {'n/a' if rho is None else f'{rho:.2f}'}")
        axes.set_ylim(low - margin, high + margin)
        axes.set_xlabel(f"{name} (normalised, [0, 1])")
        axes.set_ylabel(label if k == 1 else "")
        axes.grid(True, alpha=0.3)
    figure.suptitle(title or f"eps against the cues, epoch {record['epoch']} (n={len(eps)} fixed samples)")
    return _save(figure, Path(path))


def plot_training_run(
    run_dir: str | Path, out_dir: str | Path | None = None, *, title: str | None = None
) -> list[Path]:
    """Write the figures of the training run in ``run_dir`` to ``out_dir`` (default ``run_dir/plots``).

    Returns the paths written; the cue figure only for runs with cues.

    Raises:
        TrainingPlotError: ``run_dir`` has no ``metrics.jsonl`` or no ``telemetry.jsonl``.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    try:
        telemetry = read_telemetry(run_dir)
    except TelemetryError as exc:
        raise TrainingPlotError(str(exc)) from None
    norm = run_norm(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / PLOTS_DIR
    written = [
        plot_training_curves(metrics, out / CURVES_FILE, title=title, norm=norm),
        plot_eps_histograms(telemetry, out / HISTOGRAM_FILE, title=title, norm=norm),
    ]
    if telemetry[-1]["sample"]["cues"]:
        written.append(plot_eps_vs_cues(telemetry[-1], out / CUES_FILE, title=title, norm=norm))
    return written


__all__ = [
    "CUES_FILE",
    "CURVES_FILE",
    "HISTOGRAM_FILE",
    "PLOTS_DIR",
    "TrainingPlotError",
    "budget_axis",
    "plot_eps_histograms",
    "plot_eps_vs_cues",
    "plot_training_curves",
    "plot_training_run",
    "run_norm",
    "read_metrics",
]
