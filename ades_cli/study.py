"""``ades study``: a grid of arms x seeds from one study file, run, evaluated and tabulated.

A thin command over :mod:`ades_core.study`. Before anything runs, every
arm's options are parsed by ``ades run``'s own click options (and resolved
into a run config), and the evaluation options by ``ades eval``'s, so a typo
or a bad value fails with one line naming the arm and the option.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import click

from ades_cli.options import COMMA_LIST
from ades_cli.user_errors import user_errors
from ades_core.errors import AdesError

# ``ades run`` parameters that do not go into the run config (the study sets or ignores them).
_NOT_CONFIG = ("preset", "out", "overwrite", "resume", "quiet", "sync_bn")


def _parse(command: click.Command, name: str, args: Sequence[str], where: str) -> dict[str, Any]:
    """Let ``command``'s click options parse ``args`` (nothing runs); its params, or one-line StudyFileError."""
    from ades_core.study import StudyFileError

    try:
        with command.make_context(name, list(args)) as ctx:
            return dict(ctx.params)
    except click.exceptions.Exit:
        raise StudyFileError(f"{where}: options of `{name}` only, not --help or --version") from None
    except click.ClickException as exc:
        message = exc.format_message().strip().splitlines()[0]
        raise StudyFileError(f"{where}: {message} (accepted: the options of `{name} --help`, without the dashes)") from None


def check_study_options(spec) -> None:
    """Check every arm's ``ades run`` options and the ``ades eval`` options against the commands.

    Raises:
        StudyFileError: the first option the commands reject (unknown, wrong
            type, out of range, an unknown defense or attack), naming its arm.
    """
    from ades_cli.evaluate import eval_command
    from ades_cli.train import _fail, config_from_options, run
    from ades_core.evaluation.specs import resolve_attacks
    from ades_core.study import StudyFileError
    from ades_core.study.plan import autoattack_args, eval_args, option_args

    for arm in spec.arm_names:
        where = f"arm {arm!r}"
        params = _parse(run, "ades run", [*option_args(spec.arm_options(arm)), "--seed", str(spec.seeds[0])], where)
        preset = params.get("preset")
        options = {k: v for k, v in params.items() if k not in _NOT_CONFIG}
        try:
            config_from_options(preset, options)
        except AdesError as exc:
            raise StudyFileError(f"{where}: {_fail(exc).format_message()}") from None
    seed = spec.seeds[0]
    _parse(eval_command, "ades eval", eval_args(spec, spec.reference, seed, threads=1, resume=False)[1:], "eval")
    try:
        resolve_attacks(list(spec.attacks))
    except AdesError as exc:
        raise StudyFileError(f"eval.attack: {exc.one_line()}") from None
    if spec.autoattack is not None:
        arm = spec.autoattack.arms[0]
        _parse(eval_command, "ades eval", autoattack_args(spec, arm, seed, threads=1, resume=False)[1:], "autoattack")


def load_study(path: Path):
    """Read ``path`` into a :class:`~ades_core.study.StudySpec` and check its options against the commands."""
    from ades_core.study import StudyFileError, StudySpec

    spec = StudySpec.from_file(path)
    try:
        check_study_options(spec)
    except StudyFileError as exc:
        raise StudyFileError(f"{path}: {exc}") from None
    return spec


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGTERM and SIGINT into ``KeyboardInterrupt`` while the study runs, so that ``kill PID``
    (or Ctrl-C) stops the runs it started, even where a background launch left SIGINT ignored."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _chosen_arms(spec, only: tuple[str, ...] | None) -> tuple[str, ...] | None:
    if only is None:
        return None
    for arm in only:
        if arm not in spec.arm_names:
            raise click.BadParameter(f"no arm named {arm!r}; arms: {', '.join(spec.arm_names)}", param_hint="--only")
    return only


@click.command("study")
@click.argument("study_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--parallel", type=click.IntRange(min=1), default=None,
              help="Runs side by side (default: the file's parallel); each gets max(1, cores // N) threads.")
@click.option("--dry-run", is_flag=True, help="Print the commands that would run now, run nothing.")
@click.option("--only", type=COMMA_LIST, default=None,
              help="Run only these arms (comma-separated names); the table still covers every arm.")
@click.option("--table-only", is_flag=True, help="Only rebuild study.md, study.json and study.png from the run folders.")
def study_command(
    study_file: Path, parallel: int | None, dry_run: bool, only: tuple[str, ...] | None, table_only: bool
) -> None:
    """Run a study: every arm x seed of STUDY_FILE trained, evaluated, tabulated.

    Each (arm, seed) trains in <out>/<arm>/seed<k>/ (`ades run ... --seed k`)
    and is evaluated there (`ades eval`); finished runs are skipped, interrupted
    ones resumed. The table (<out>/study.md, study.json, study.png) is
    rewritten after every finished run. A failed run is reported with its log
    and the others go on; the exit status is 1 if any failed.

    \b
    Example:
      ades study studies/adaptive-budget.toml --dry-run
      ades study studies/adaptive-budget.toml --parallel 2
    """
    from ades_core.study import plan_study, threads_per_run, write_table
    from ades_core.study.execute import StudyRunner, shell_line

    if dry_run and table_only:
        raise click.UsageError("--dry-run and --table-only exclude each other")
    with user_errors():
        spec = load_study(study_file)
    arms = _chosen_arms(spec, only)
    if table_only:
        write_table(spec)
        click.echo(f"table: {spec.out / 'study.md'}")
        return
    side_by_side = parallel or spec.parallel
    threads = threads_per_run(side_by_side)
    jobs = plan_study(spec, arms=arms, parallel=side_by_side)
    todo = [job for job in jobs if job.steps]
    click.echo(
        f"study {spec.name}: {len(jobs)} runs, {len(jobs) - len(todo)} finished, {len(todo)} to run; "
        f"{side_by_side} side by side, {threads} threads each -> {spec.out}"
    )
    if dry_run:
        for job in jobs:
            if not job.steps:
                click.echo(f"# skip {job.label}: finished ({job.folder})")
            for step in job.steps:
                click.echo(shell_line(step, threads))
        return
    runner = StudyRunner(
        parallel=side_by_side, threads=threads, on_event=click.echo, on_job_done=lambda outcome: write_table(spec)
    )
    with stop_on_signals():
        outcomes = runner.run(jobs)
    write_table(spec)
    click.echo(f"table: {spec.out / 'study.md'}  ({len(runner.launched)} commands launched)")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        listed = "; ".join(f"{o.job.label} ({o.failed}, log {o.log})" for o in failed)
        raise click.ClickException(f"{len(failed)} of {len(todo)} runs failed: {listed}")
