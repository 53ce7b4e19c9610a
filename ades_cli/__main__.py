from ades_cli.main import cli

cli(prog_name="ades")
