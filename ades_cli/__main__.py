"""``python -m ades_cli``: the ``ades`` command."""

from ades_cli.main import cli

cli(prog_name="ades")
