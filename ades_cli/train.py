"""``ades run``: train one defense, or resume a run (the command and the config it builds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.console import Console

from ades_cli.options import config_options, option_for_field, overrides_from_options
from ades_cli.user_errors import one_line
from ades_core.errors import AdesError

PRESET_NAMES = ("paper", "quick", "fast-at", "free-at", "awp-at", "awp-trades", "mma")
"""The names of ``ades_core.presets.PRESETS`` (written out so ``ades --help`` imports no torch; a test keeps them equal)."""


def _fail(exc: AdesError) -> click.ClickException:
    """One ``Error: ...`` line; a config field's error names the option that sets it.

    Only user errors (:class:`~ades_core.errors.AdesError`) are caught and
    shown this way; anything else keeps its traceback.
    """
    from ades_core.config import ConfigError

    option = option_for_field(exc.field) if isinstance(exc, ConfigError) else None
    if option is not None:
        return click.ClickException(f"{option}: {exc.reason}".strip().splitlines()[0])
    return one_line(exc)


def _warn_plugin_failures() -> None:
    """Plugins that failed to load, as warnings on stderr; the command goes on without them."""
    import ades_core

    for failure in ades_core.PLUGIN_FAILURES:
        click.echo(f"warning: {failure}", err=True)


def _run_options(fn):
    """The options of ``ades run``: the hand-written ones (not config fields) around the options
    generated from the config fields' metadata (:func:`~ades_cli.options.config_options`); every
    one defaults to "not given" so presets apply."""
    before = [
        click.option("--preset", type=click.Choice(PRESET_NAMES), help="Start from a named setting or a defense's own recipe (fast-at, free-at, awp-at, awp-trades, mma; docs/defenses.md); --config and explicit options override it."),
        click.option("--config", "config_file", type=click.Path(path_type=Path), help="A TOML or JSON file of config sections (as --print-config writes); over --preset, under explicit options."),
        click.option("--print-config", is_flag=True, help="Write the resolved config as TOML to stdout and exit (a file to start from with --config)."),
    ]
    after = [
        click.option("--out", type=click.Path(path_type=Path), help="Run folder (default runs/<defense>-<backbone>-seed<seed>)."),
        click.option("--overwrite", is_flag=True, help="Replace a run already in --out."),
        click.option("--resume", type=click.Path(path_type=Path), help="Continue the run in this folder from its last saved state (its config.json fixes the setting)."),
        click.option("--quiet", is_flag=True, help="No progress bar or epoch lines."),
    ]
    for option in reversed(after):
        fn = option(fn)
    fn = config_options(fn)
    for option in reversed(before):
        fn = option(fn)
    return fn


def config_from_options(preset: str | None, options: dict[str, Any], config_file: Path | None = None):
    """Defaults <- preset <- config file <- explicit options, validated into a RunConfig."""
    from ades_cli.config_file import read_config_file
    from ades_core import RunConfig
    from ades_core.presets import PRESETS, merge

    raw = PRESETS[preset] if preset else {}
    if config_file is not None:
        raw = merge(raw, read_config_file(config_file))
    raw = merge(raw, overrides_from_options(options))
    return RunConfig.from_dict(raw)


def _print_config(config: Any, preset: str | None, config_file: Path | None) -> None:
    from ades_cli.config_file import to_toml

    made_from = ", ".join(
        part for part in (f"--preset {preset}" if preset else "", f"--config {config_file}" if config_file else "") if part
    )
    header = f"ades run config{f' (from {made_from} and the options given)' if made_from else ''}; start from it with --config FILE"
    click.echo(to_toml(config.to_dict(), header=header), nl=False)


def _say_recipe(preset: str | None, console: Console) -> None:
    """The recipe a defense's preset follows, and what still differs, before the run starts."""
    from ades_core.recipes import recipe_for_preset

    recipe = recipe_for_preset(preset)
    if recipe is None:
        return
    console.print(recipe.describe(), highlight=False, soft_wrap=True)
    for deviation in recipe.deviations:
        console.print(f"  differs: {deviation}", highlight=False, soft_wrap=True)


def _resumed_config(resume: Path, preset: str | None, out: Path | None, overwrite: bool, options: dict[str, Any]):
    """The config of the run in ``resume`` with the explicitly given (resumable) options applied."""
    from ades_core.engine.runfolder import (
        RESUMABLE_FIELDS,
        ResumeConflictError,
        resume_config,
    )

    if overwrite:
        raise click.UsageError("--resume and --overwrite exclude each other: resume continues a run, overwrite replaces it")
    if preset is not None:
        raise click.UsageError("--preset cannot be combined with --resume: the run's config.json fixes its setting")
    if out is not None and Path(out).resolve() != Path(resume).resolve():
        raise click.UsageError(f"--out {out} differs from --resume {resume}; a resumed run stays in its folder")
    try:
        return resume_config(Path(resume), overrides_from_options(options))
    except ResumeConflictError as exc:
        option = option_for_field(exc.field) or exc.field
        may_change = ", ".join(option_for_field(f) or f for f in RESUMABLE_FIELDS)
        raise click.ClickException(
            f"{option} {exc.given!r} conflicts with {exc.stored!r} in {exc.config_file}, the run being "
            f"resumed; on --resume only {may_change} may change"
        ) from None


@click.command("run")
@_run_options
def run(
    preset: str | None,
    config_file: Path | None,
    print_config: bool,
    out: Path | None,
    overwrite: bool,
    resume: Path | None,
    quiet: bool,
    **options: Any,
) -> None:
    """Train a model with adversarial training and write its run folder.

    The training state is saved after every epoch (and every --checkpoint-every
    steps); `ades run --resume DIR` continues an interrupted run. On --resume
    only --device, --data-dir, --download, --log-every, --checkpoint-every and
    --on-nonfinite may differ from the run's config.json.

    \b
    `--config FILE` (TOML or JSON) sets any config field; `--print-config`
    writes the resolved config to start from. Outside a terminal (a batch
    job's log) each epoch is one plain line.

    \b
    Example (CPU, minutes):
      ades run --preset quick --defense ades --cue grad,entropy,mcdropout \\
               --dataset imagefolder --data-dir ~/.cache/ades/cifar10-imagefolder

    \b
    On several GPUs (--batch-size is the global batch; see docs/distributed.md):
      torchrun --nproc-per-node 8 -m ades_cli run --preset paper ...
    """
    from ades_core.distributed import init_from_env, launched_by_torchrun, shutdown
    from ades_core.engine.runfolder import check_new_run

    if resume is not None and launched_by_torchrun():
        raise click.UsageError(
            "--resume is not supported under torchrun; resume in one process (ades run --resume DIR) or start again"
        )
    _warn_plugin_failures()
    if resume is not None and (config_file is not None or print_config):
        raise click.UsageError("--config and --print-config cannot be combined with --resume: the run's config.json fixes its setting")
    try:
        if print_config:
            _print_config(config_from_options(preset, options, config_file), preset, config_file)
            return
        if resume is not None:
            config = _resumed_config(resume, preset, out, overwrite, options)
            out = Path(resume)
        else:
            config = config_from_options(preset, options, config_file)
            out = out or Path("runs") / f"{config.defense}-{config.model.backbone}-seed{config.seed}"
        if config.logging.tensorboard:
            from ades_core.engine.tensorboard import check_available

            check_available()  # before anything is built or written
        dist = init_from_env(config.device)
        main_rank = dist is None or dist.is_main
        if resume is None and main_rank:
            check_new_run(out, config, overwrite=overwrite)  # reads only: refused before anything is built
    except AdesError as exc:
        raise _fail(exc) from None
    _say_recipe(preset, Console(stderr=True, quiet=quiet or not main_rank))
    try:
        _train(config, out, overwrite=overwrite, resume=resume, quiet=quiet or not main_rank, main_rank=main_rank)
    finally:
        shutdown()


def _train(config: Any, out: Path, *, overwrite: bool, resume: Path | None, quiet: bool, main_rank: bool) -> None:
    """Build and train ``config`` into ``out`` (on every rank under torchrun; rank 0 prints)."""
    import ades_core
    from ades_core.config import format_eps
    from ades_core.engine.trainer import Trainer

    console = Console(stderr=True, quiet=quiet)
    from ades_core.registries import DEFENSES

    budget, info, norm = config.budget, DEFENSES.entry(config.defense).info, config.norm
    if info.budget_note:
        budget_text = info.budget_note
    elif info.uses_cues:
        budget_text = (
            f"eps in [{format_eps(budget.eps_min, norm)}, {format_eps(budget.eps_max, norm)}] (eps_min + lam*sigma)"
        )
    else:
        budget_text = f"eps {format_eps(budget.eps, norm)}"
    if info.attack_note is not None:
        attack_text = info.attack_note(config)
    else:
        alpha = config.attack.alpha
        attack_text = f"PGD-{config.attack.steps} alpha " + ("2.5*eps/steps" if alpha is None else format_eps(alpha, norm))
    console.print(
        f"[bold]ades run[/bold] {config.defense} on {config.data.dataset} with {config.model.backbone}, "
        f"norm {norm}, {budget_text}, {attack_text}, "
        f"{config.optim.epochs} epochs -> {out}",
        highlight=False,
        soft_wrap=True,
    )
    try:
        setup = ades_core.build(config)
        trainer = Trainer(setup, console=console, progress=not quiet, overwrite=overwrite, resume=resume is not None)
        history = trainer.fit(out)
    except AdesError as exc:  # NonFiniteError too: the run stopped on a NaN/Inf, in one line
        raise _fail(exc) from None
    last = history[-1]
    if not main_rank:
        return
    click.echo(
        f"done: {out}  test clean {100 * last['test_clean_acc']:.2f}%  "
        f"{config.norm} PGD-{last['test_pgd_steps']}@{format_eps(last['test_eps'], config.norm)} "
        f"{100 * last['test_pgd_acc']:.2f}%  "
        f"(n={last['test_n']}, {last['train_seconds']:.1f} s/epoch)"
    )


