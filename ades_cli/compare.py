"""``ades compare``: the paper-style table across evaluated runs (:mod:`ades_core.evaluation.compare`)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from ades_cli.user_errors import user_errors


@click.command("compare")
@click.argument("paths", metavar="RUN_DIR_OR_EVAL_JSON...", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--markdown", "markdown_path", type=click.Path(path_type=Path), default=None,
              help="Also write the table as Markdown to this file.")
@click.option("--json", "json_output", is_flag=True, help="Print the rows as JSON instead of a table.")
def compare_command(paths: tuple[Path, ...], markdown_path: Path | None, json_output: bool) -> None:
    """Compare evaluated runs: method, clean, PGD-20, CW, AutoAttack, worst case, s/epoch, checks.

    Reads each run's eval.json (from `ades eval`) and metrics.jsonl. The
    checks column counts the gradient-masking checks that passed, failed or
    did not run; a note says which attacks and how many images the worst case
    covers.
    """
    from ades_core.evaluation import compare_rows, to_markdown
    from ades_core.evaluation.compare import COLUMNS, as_dicts, cell, check_notes, mixed_norms_note, worst_case_notes

    with user_errors():
        rows = compare_rows(paths)
    if json_output:
        click.echo(json.dumps(as_dicts(rows), indent=2))
    else:
        table = Table(show_edge=False)
        # the weights column only when some row is not a run's last weights (the Markdown keeps it)
        shown = [(key, title) for key, title in COLUMNS
                 if key != "weights" or any(cell(row, "weights") not in ("last", "—") for row in rows)]
        for key, title in shown:
            table.add_column(title, justify="left" if key in ("method", "run") else "right")
        for row in rows:
            table.add_row(*(cell(row, key) for key, _ in shown))
        console = Console()
        console.print(table)
        for note in [*worst_case_notes(rows), *check_notes(rows)]:
            console.print(note, highlight=False)
        mixed = mixed_norms_note(rows)
        if mixed is not None:
            console.print(f"[yellow]warning[/yellow]: {mixed}", highlight=False)
        for row in rows:
            for warning in row.warnings:
                console.print(f"[yellow]warning[/yellow] ({row.run}): {warning}", highlight=False)
    if markdown_path is not None:
        markdown_path.parent.mkdir(parents=True, exist_ok=True)
        markdown_path.write_text(to_markdown(rows))
        if not json_output:
            click.echo(f"markdown: {markdown_path}")
