"""``ades eval`` and ``ades compare``: thin commands over :mod:`ades_core.evaluation` (``ades plot``: plot.py)."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from ades_cli.model_source import external_model_options, external_request
from ades_cli.options import COMMA_LIST, EPS

if TYPE_CHECKING:
    from ades_core.distributed import DistributedContext

_USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, KeyError, TypeError, FileNotFoundError, ImportError)


def _fail(exc: BaseException) -> click.ClickException:
    message = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else str(exc)
    first = message.strip().splitlines()[0] if message.strip() else type(exc).__name__
    return click.ClickException(first)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


class EpsList(click.ParamType):
    """``4/255,8/255`` -> ``(0.0157, 0.0314)``; ``0.25,0.5`` (L2). The range is checked per ``--norm``."""

    name = "eps-list"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = COMMA_LIST.convert(value, param, ctx)
        return tuple(EPS.convert(part, param, ctx) for part in parts)


EPS_LIST = EpsList()


def _rows_table(title: str, rows, norm: str = "linf") -> Table:
    from ades_core.config import format_eps

    table = Table(title=title, title_justify="left", show_edge=False)
    for column in ("attack", f"eps ({norm})", "n", "clean", "robust", "seconds"):
        table.add_column(column, justify="left" if column == "attack" else "right")
    for row in rows:
        table.add_row(
            row.name, format_eps(row.eps, norm), str(row.n), _pct(row.clean_acc), _pct(row.robust_acc),
            f"{row.seconds:.1f}",
        )
    return table


def _trained_norm(model_path: Path | None) -> str | None:
    """The norm the run in ``model_path`` trained in (``linf`` for runs from before L2), or ``None``
    when there is no readable run there (the evaluation then reports that itself)."""
    from ades_core.evaluation import describe_run

    try:
        info = describe_run(model_path)
    except _USER_ERRORS:
        return None
    return (info.config.get("attack") or {}).get("norm", "linf")


def check_eval_budgets(
    norm: str, eps: float | None, sweep: tuple[float, ...] | None
) -> tuple[float, tuple[float, ...] | None]:
    """``--eps`` (its norm's default when not given) and ``--eps-sweep``, each within ``norm``'s range.

    Raises:
        click.BadParameter: one line naming the option, the budget and the range.
    """
    from ades_core.config import DEFAULT_EVAL_EPS
    from ades_core.norms import NORMS

    threat = NORMS.get(norm)
    eps = DEFAULT_EVAL_EPS[norm] if eps is None else eps
    for option, values in (("--eps", (eps,)), ("--eps-sweep", sweep or ())):
        for value in values:
            try:
                threat.check_budget(value, threat.format(value))
            except ValueError as exc:
                raise click.BadParameter(f"{exc} for --norm {norm}", param_hint=f"'{option}'") from None
    return eps, sweep


@click.command("eval")
@click.argument("model_path", metavar="[RUN_DIR_OR_MODEL]", type=click.Path(path_type=Path), required=False)
@click.option("--attack", "attacks", type=COMMA_LIST, default="pgd20,cw,autoattack", show_default=True,
              help="Comma-separated attacks: pgd20, pgd100 (pgdN), cw (cwN), fgsm, autoattack, square, "
                   "or any registered attack (`ades list`).")
@click.option("--norm", type=click.Choice(["linf", "l2"]), default=None,
              help="Threat model of every attack, the sweep and the checks: linf or l2 "
                   "[default: the norm the run trained in, else linf].")
@click.option("--eps", type=EPS, default=None,
              help="Budget in --norm: L-inf in [0, 1] pixel scale (8/255 or 0.0314), L2 a Euclidean radius in "
                   "pixel space (0.5) [default: 8/255 for linf, 0.5 for l2].")
@click.option("--eps-sweep", type=EPS_LIST, default=None,
              help="Also run PGD-20 at each of these budgets, e.g. 4/255,6/255,8/255,10/255 (linf) or "
                   "0.25,0.5,0.75,1.0 (l2).")
@click.option("--n", "n", type=click.IntRange(min=1), default=None,
              help="Evaluate on this many test images (a random subset drawn from --seed); default all.")
@click.option("--order", type=click.Choice(["random", "first"]), default="random", show_default=True,
              help="Which --n test images: a random subset drawn from --seed, or the first N in dataset "
                   "order (as RobustBench).")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the test subset and of every attack's randomness.")
@click.option("--dataset", default=None, help="Dataset name (default: the one recorded in the run).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Dataset folder (default: the one recorded in the run).")
@click.option("--image-size", type=click.IntRange(min=1), default=None,
              help="Resize test images (default: as trained).")
@click.option("--checks/--no-checks", default=True, show_default=True, help="Run the gradient-masking checks.")
@click.option("--check-n", type=click.IntRange(min=1), default=200, show_default=True,
              help="Samples the gradient-masking checks use: a seeded random draw of clean-correct samples.")
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="Where to write the report (default: eval.json beside the model; "
                   "<stem>.eval.json beside --weights).")
@click.option("--plot", "plot_path", type=click.Path(path_type=Path), default=None,
              help="Write the eps-sweep plot (PNG) here; needs --eps-sweep.")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads for torch (default: torch's own choice).")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]), default="fp32", show_default=True,
              help="Arithmetic of the evaluation's forward passes: fp32 (TF32 off on CUDA, whatever training "
                   "used) or an autocast dtype; written into the report. AutoAttack and Square always run in fp32.")
@click.option("--resume", is_flag=True,
              help="Continue an interrupted evaluation from the state kept beside the report "
                   "(<report stem>.resume.json; one per rank under torchrun); refused if the model, data or "
                   "settings differ.")
@click.option("--quiet", is_flag=True, help="Only the final tables and warnings.")
@external_model_options
def eval_command(
    model_path: Path | None,
    attacks: tuple[str, ...],
    eps: float | None,
    eps_sweep: tuple[float, ...] | None,
    n: int | None,
    batch_size: int,
    device: str,
    seed: int,
    dataset: str | None,
    data_dir: Path | None,
    image_size: int | None,
    checks: bool,
    check_n: int,
    out: Path | None,
    plot_path: Path | None,
    threads: int | None,
    quiet: bool,
    order: str = "random",
    precision: str = "fp32",
    resume: bool = False,
    arch: str | None = None,
    weights: str | None = None,
    num_classes: int | None = None,
    mean: tuple[str, ...] | None = None,
    std: tuple[str, ...] | None = None,
    norm: str | None = None,
) -> None:
    """Evaluate a trained model: attacks, worst case, eps sweep, masking checks -> eval.json.

    \b
    Robust accuracy counts a sample only when it is correct clean and under
    the attack; the worst-case row, only when it survives every attack run.
    \b
    Example:
      ades eval runs/ades --attack pgd20,cw,autoattack --eps 8/255 --n 1000 \\
                --eps-sweep 4/255,6/255,8/255,10/255 --plot runs/ades/sweep.png

    \b
    In L2 (budgets are Euclidean radii in pixel space; see docs/l2.md):
      ades eval runs/ades-l2 --norm l2 --attack pgd20,cw,autoattack --eps 0.5 \\
                --eps-sweep 0.25,0.5,0.75,1.0

    A run's best (--val-split) or averaged (--ema) weights, reported beside
    the last (model-best.eval.json, model-ema.eval.json; `ades compare RUN`
    shows each with its weights):
      ades eval runs/ades --weights best

    \b
    On several GPUs (the test set is sharded over the ranks; the numbers are
    those of one process; rank 0 writes the report; see docs/distributed.md):
      torchrun --nproc-per-node 8 -m ades_cli eval runs/ades --attack pgd20,cw,autoattack

    \b
    A model ades did not train (see docs/evaluation.md, "Evaluating any model"):
      ades eval --arch resnet18 --weights resnet18.pt --num-classes 10 \\
                --mean 0.4914,0.4822,0.4465 --std 0.2470,0.2435,0.2616 \\
                --dataset cifar10 --data-dir ~/data --order first --n 1000
    """
    from ades_core.distributed import init_from_env, shutdown

    if plot_path is not None and not eps_sweep:
        raise click.UsageError("--plot needs --eps-sweep (the plot shows robust accuracy against eps)")
    run_weights = str(weights) if model_path is not None and weights is not None else "last"
    external = external_request(
        model_path, arch=arch, weights=weights, num_classes=num_classes, mean=mean, std=std,
        dataset=dataset, data_dir=data_dir,
    )
    try:
        dist = init_from_env(device)
    except _USER_ERRORS as exc:
        raise _fail(exc) from None
    try:
        _evaluate_and_report(
            dist, model_path, attacks=attacks, eps=eps, eps_sweep=eps_sweep, n=n, batch_size=batch_size,
            device=device, seed=seed, dataset=dataset, data_dir=data_dir, image_size=image_size, checks=checks,
            check_n=check_n, out=out, plot_path=plot_path, threads=threads, quiet=quiet,
            order=order, external=external, precision=precision, resume=resume, norm=norm, run_weights=run_weights,
        )
    except BaseException as exc:
        if dist is not None and dist.world_size > 1:
            end_every_rank(dist, exc)  # never returns: the other ranks must not wait in a collective
        raise
    finally:
        shutdown()


@contextlib.contextmanager
def terminate_as_exit() -> Iterator[None]:
    """SIGTERM (a batch scheduler's or torchrun's stop) raises ``SystemExit(143)`` inside, so
    ``finally`` blocks run and the resume state is written; the old handler is restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def end_every_rank(dist: DistributedContext, exc: BaseException) -> None:
    """Report ``exc`` of this rank and end the process now, without entering another collective.

    A rank that raised must not wait in ``destroy_process_group`` or leave the
    others waiting in an all-reduce: it exits at once with status 1 (a user
    error as one line, anything else with its traceback); ``torchrun`` then
    ends the other ranks, and gloo peers fail on the closed connection.
    """
    import os
    import sys
    import traceback

    code = exc.code if isinstance(exc, SystemExit) else 1
    if isinstance(exc, SystemExit) and code in (0, None):
        return
    if isinstance(exc, click.ClickException):
        print(f"Error (rank {dist.rank} of {dist.world_size}): {exc.format_message()}", file=sys.stderr)
    elif not isinstance(exc, SystemExit):
        print(f"rank {dist.rank} of {dist.world_size} failed:", file=sys.stderr)
        traceback.print_exception(exc, file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code if isinstance(code, int) and code else 1)


def open_resume_store(
    report_path: Path,
    *,
    info,
    source,
    specs,
    eps: float,
    sweep: tuple[float, ...],
    seed: int,
    batch_size: int,
    precision: str,
    checks,
    dist: DistributedContext | None,
    resume: bool,
    norm: str = "linf",
):
    """The resume state of this evaluation (this rank's), fingerprinted by everything its results depend on."""
    import attrs

    from ades_core.evaluation.resume import ResumeStore, file_sha256, state_path, tensor_sha256

    rank, world_size = (0, 1) if dist is None else (dist.rank, dist.world_size)
    fingerprint = {
        "model_sha256": file_sha256(info.model_file),
        "data_sha256": tensor_sha256(source.data.images, source.data.labels),
        "dataset": source.describe() | {"data_dir": None},
        "attacks": [{"label": s.label, "attack": s.attack, "options": attrs.asdict(s.options)} for s in specs],
        "norm": norm,
        "eps": eps,
        "sweep": sorted(set(sweep)),
        "seed": seed,
        "batch_size": batch_size,
        "precision": precision,
        "checks": None if checks is None else attrs.asdict(checks),
        "world_size": world_size,
    }
    return ResumeStore(state_path(report_path, rank, world_size), fingerprint, resume=resume)


def _evaluate_and_report(
    dist: DistributedContext | None,
    model_path: Path | None,
    *,
    attacks: tuple[str, ...],
    eps: float | None,
    eps_sweep: tuple[float, ...] | None,
    n: int | None,
    batch_size: int,
    device: str,
    seed: int,
    dataset: str | None,
    data_dir: Path | None,
    image_size: int | None,
    checks: bool,
    check_n: int,
    out: Path | None,
    plot_path: Path | None,
    threads: int | None,
    quiet: bool,
    order: str = "random",
    external: dict[str, Any] | None = None,
    precision: str = "fp32",
    resume: bool = False,
    norm: str | None = None,
    run_weights: str = "last",
) -> None:
    """``ades eval`` on every rank (``dist``: the torchrun context or ``None``); rank 0 writes and prints.

    ``external``: the arguments of ``load_external_model`` for a model ades did not
    train (``model_path`` is then ``None``), else ``None``.
    """
    from ades_core import load_model
    from ades_core.builder import resolve_device
    from ades_core.config import format_eps
    from ades_core.evaluation import (
        MaskingCheckConfig, build_report, describe_run, evaluate, load_test_data, plot_sweeps,
        resolve_attacks, series_from_report, write_report,
    )

    main_rank = dist is None or dist.is_main
    console = Console(stderr=True, quiet=quiet or not main_rank)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    try:
        trained_norm = None if external is not None else _trained_norm(model_path)
        norm = norm or trained_norm or "linf"
        eps, eps_sweep = check_eval_budgets(norm, eps, eps_sweep)
        specs = resolve_attacks(attacks, norm)
        for spec in specs:  # fail on a missing optional dependency before loading anything
            spec.build()
        torch_device = resolve_device(device) if dist is None else dist.device
        if external is None:
            info = describe_run(model_path, run_weights)
        else:
            from ades_core.evaluation.external import load_external_model

            model, info = load_external_model(**external, device=torch_device)
        source = load_test_data(
            info, dataset=dataset, data_dir=data_dir, n=n, seed=seed, order=order, image_size=image_size
        )
        if external is None:
            model = load_model(info.model_file, device=torch_device)
    except _USER_ERRORS as exc:
        raise _fail(exc) from None

    world_size = 1 if dist is None else dist.world_size
    trained = f", trained in {trained_norm}" if trained_norm and trained_norm != norm else ""
    console.print(
        f"[bold]ades eval[/bold] {info.model_file} ({info.defense or 'model'}, {info.backbone or '?'}{trained}"
        f"{f', {info.weights} weights' if info.weights else ''}) on "
        f"{source.n} {source.dataset} test images, norm {norm}, eps {format_eps(eps, norm)}, "
        f"attacks {', '.join(s.label for s in specs)}"
        f"{', sweep ' + ','.join(format_eps(e, norm) for e in eps_sweep) if eps_sweep else ''}, device {torch_device}"
        f"{f' x {world_size} ranks' if world_size > 1 else ''}",
        highlight=False,
    )
    check_config = MaskingCheckConfig(n=check_n) if checks else None
    coverage = source.coverage_warning()
    if coverage is not None:
        console.print(f"[yellow]warning:[/yellow] {coverage}", highlight=False)

    def progress(text: str) -> None:
        console.print(f"  {text} ...", highlight=False, style="dim")

    def on_row(row) -> None:
        console.print(
            f"  {row.name} @ {norm} {format_eps(row.eps, norm)}: robust {_pct(row.robust_acc)} ({row.seconds:.1f} s)",
            highlight=False,
        )

    report_path = out or info.default_eval_file
    try:
        store = open_resume_store(
            report_path, info=info, source=source, specs=specs, eps=eps, sweep=eps_sweep or (), seed=seed,
            batch_size=batch_size, precision=precision, checks=check_config, dist=dist, resume=resume, norm=norm,
        )
        if store.loaded:
            console.print(f"  resuming: {store.resumed_batches} attacked batches kept in {store.path}", highlight=False)
        elif resume:
            console.print(f"  --resume: no state at {store.path}; starting from the beginning", highlight=False)
        try:
            with terminate_as_exit():
                result = evaluate(
                    model, source.data, specs, eps, device=torch_device, batch_size=batch_size, seed=seed,
                    sweep=eps_sweep or (), checks=check_config, precision=precision, progress=progress,
                    on_row=on_row, distributed=dist, resume=store, norm=norm,
                )
        except BaseException:
            store.save(force=True)  # keep every finished batch for --resume
            raise
    except _USER_ERRORS as exc:
        raise _fail(exc) from None
    if not main_rank:
        store.remove()
        return  # every rank holds the same result; rank 0 alone writes and prints it
    payload = build_report(result, info, source, device=torch_device, batch_size=batch_size, world_size=world_size)
    target = write_report(report_path, payload)
    store.remove()

    stdout = Console()
    rows = list(result.attacks) + ([result.worst_case] if result.worst_case is not None else [])
    stdout.print(_rows_table(f"clean {_pct(result.clean_acc)} on n={result.n}, norm {norm}", rows, norm))
    if result.sweep:
        stdout.print(_rows_table(f"eps sweep ({norm} PGD-20)", result.sweep, norm))
    marks = {"passed": "[green]ok[/green]", "failed": "[bold yellow]WARNING[/bold yellow]", "not-run": "[dim]not run[/dim]"}
    for check in result.checks:
        stdout.print(f"{marks[check.status]} {check.name}: {check.message}", highlight=False)
    if plot_path is not None:
        plot_sweeps([series_from_report(payload)], plot_path)
        stdout.print(f"plot: {plot_path}", highlight=False)
    stdout.print(f"report: {target}  ({result.seconds:.1f} s)", highlight=False)


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

    try:
        rows = compare_rows(paths)
    except _USER_ERRORS as exc:
        raise _fail(exc) from None
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
