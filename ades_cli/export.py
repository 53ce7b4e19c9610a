"""``ades export``: a thin command over :mod:`ades_core.evaluation.robustbench`."""

from __future__ import annotations

from pathlib import Path

import click

from ades_cli.user_errors import user_errors


@click.command("export")
@click.argument("run", metavar="RUN_DIR_OR_MODEL", type=click.Path(path_type=Path))
@click.option("--robustbench", "out", type=click.Path(path_type=Path), required=True,
              help="Folder to write the RobustBench entry into: <name>.json (model_info), <name>.pt "
                   "(state_dict with the normalisation inside) and README.md.")
@click.option("--eval", "eval_file", type=click.Path(path_type=Path), default=None,
              help="The evaluation to export (default: the run's eval.json).")
@click.option("--name", default=None,
              help="File name of the entry, RobustBench style <Author><Year><FirstWord> (default: the run folder's name).")
@click.option("--dataset", type=click.Choice(["cifar10", "cifar100"]), default=None,
              help="The RobustBench dataset an imagefolder evaluation ran on (default: the evaluated dataset).")
@click.option("--title", default=None, help="model_info 'name': the paper's title (default: defense and architecture).")
@click.option("--authors", default="", help="model_info 'authors'.")
@click.option("--link", default="", help="model_info 'link': the paper or code.")
@click.option("--venue", default="", help="model_info 'venue'.")
@click.option("--overwrite", is_flag=True, help="Replace files already in the --robustbench folder.")
def export_command(
    run: Path,
    out: Path,
    eval_file: Path | None,
    name: str | None,
    dataset: str | None,
    title: str | None,
    authors: str,
    link: str,
    venue: str,
    overwrite: bool,
) -> None:
    """Export an evaluated run as a RobustBench entry (CIFAR-10/100, Linf or L2: the norm of its eval.json).

    Needs an eval.json with the official AutoAttack (pyautoattack, standard
    version) on the whole test split; anything else is refused in one line.

    \b
    Example:
      ades eval runs/ades --attack autoattack --eps 8/255
      ades export runs/ades --robustbench export/ --name Doe2025Adaptive
    """
    from ades_core.evaluation.robustbench import export_robustbench

    with user_errors():
        files = export_robustbench(
            run, out, eval_file=eval_file, name=name, dataset=dataset, title=title, authors=authors,
            link=link, venue=venue, overwrite=overwrite,
        )
    for path in (files.model_info, files.state_dict, files.readme):
        click.echo(str(path))
