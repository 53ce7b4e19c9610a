"""The ``ades`` command group: every subcommand registered; ``ades list`` shows what is registered."""

from __future__ import annotations

import sys

import click
from rich.console import Console
from rich.table import Table

from ades_cli.train import _warn_plugin_failures, run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ades", prog_name="ades")
def cli() -> None:
    """ades: instance-adaptive adversarial training (ADES) and the standard defenses."""


cli.add_command(run)


@cli.command("list")
def list_components() -> None:
    """Show every registered defense, cue, scheduler, objective, attack, dataset and backbone."""
    import ades_core
    from ades_core.backbones import ades_backbone_names, backbone_description

    console = Console()
    families = [
        ("defenses", ades_core.DEFENSES),
        ("cues", ades_core.CUES),
        ("schedulers", ades_core.SCHEDULERS),
        ("scheduler objectives", ades_core.SCHEDULER_OBJECTIVES),
        ("attacks", ades_core.ATTACKS),
        ("datasets", ades_core.DATASETS),
    ]
    for title, registry in families:
        table = Table(title=title, title_justify="left", show_edge=False)
        for column in ("name", "description", "paper", "from"):
            table.add_column(column)
        for entry in registry.entries():
            table.add_row(entry.name, entry.description, entry.paper, entry.source)
        console.print(table)
    table = Table(title="backbones (timm registry)", title_justify="left", show_edge=False)
    table.add_column("name")
    table.add_column("description")
    for name in ades_backbone_names():
        table.add_row(name, backbone_description(name))
    table.add_row("<any timm model>", "e.g. resnet18, where it accepts the input size")
    console.print(table)
    _warn_plugin_failures()


from ades_cli.bench import bench_command  # noqa: E402  (commands in their own modules)

cli.add_command(bench_command)


from ades_cli.compare import compare_command  # noqa: E402
from ades_cli.evaluate import eval_command  # noqa: E402
from ades_cli.plot import plot_command  # noqa: E402

cli.add_command(eval_command, "eval")
cli.add_command(compare_command, "compare")
cli.add_command(plot_command, "plot")


from ades_cli.export import export_command  # noqa: E402

cli.add_command(export_command, "export")
from ades_cli.study import study_command  # noqa: E402

cli.add_command(study_command, "study")


def main() -> None:  # pragma: no cover - console entry
    cli(prog_name="ades")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
