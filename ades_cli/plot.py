"""``ades plot``: one subcommand per kind of figure.

* ``ades plot sweep RUN... --out FILE.png``: robust accuracy against eps of
  evaluated runs (each needs an ``eval.json`` with an eps sweep);
* ``ades plot training RUN [--out DIR]``: the figures of one training run
  from its ``metrics.jsonl`` and ``telemetry.jsonl`` (docs/telemetry.md).
"""

from __future__ import annotations

from pathlib import Path

import click

from ades_cli.user_errors import user_errors


@click.group("plot")
def plot_command() -> None:
    """Draw figures: `sweep` (robust accuracy against eps of evaluated runs) or `training` (one run's figures)."""


@plot_command.command("sweep")
@click.argument("paths", metavar="RUN_DIR_OR_EVAL_JSON...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True, help="The figure to write (.png).")
@click.option("--label", "labels", multiple=True,
              help="Line label, once per run in order (default: defense and folder).")
@click.option("--title", default=None, help="Plot title.")
def sweep_command(paths: tuple[Path, ...], out: Path, labels: tuple[str, ...], title: str | None) -> None:
    """Robust accuracy against eps for one or several evaluated runs, on the same axes.

    Each run needs an eval.json with an eps sweep (`ades eval --eps-sweep ...`).

    \b
    Example:
      ades plot sweep runs/pgd-at runs/ades --out sweep.png
    """
    from ades_core.evaluation import plot_sweeps, read_report, series_from_report

    if out.suffix.lower() != ".png":
        raise click.BadParameter(f"{out} is not a .png file; give the figure's file name, e.g. sweep.png",
                                 param_hint="--out")
    if labels and len(labels) != len(paths):
        raise click.UsageError(f"{len(labels)} --label values for {len(paths)} runs; give one per run or none")
    with user_errors():
        series = [
            series_from_report(read_report(p), labels[i] if labels else None) for i, p in enumerate(paths)
        ]
        plot_sweeps(series, out, title=title)
    click.echo(f"plot: {out}")


@plot_command.command("training")
@click.argument("run_dir", metavar="RUN_DIR", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Folder for the figures (default RUN_DIR/plots).")
@click.option("--title", default=None, help="Title prefix of the figures.")
def training_command(run_dir: Path, out: Path | None, title: str | None) -> None:
    """The figures of one training run: training_curves.png, eps_histogram.png
    (the budgets' distribution per epoch) and eps_vs_cues.png (docs/telemetry.md).

    \b
    Example:
      ades plot training runs/ades --out runs/ades/plots
    """
    from ades_core.evaluation.training_plots import plot_training_run

    with user_errors():
        written = plot_training_run(run_dir, out, title=title)
    for path in written:
        click.echo(f"plot: {path}")
