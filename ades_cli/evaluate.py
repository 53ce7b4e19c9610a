"""``ades eval``: its options as one ``EvalRequest``, carried out by :mod:`ades_core.evaluation.pipeline`.

A thin command: it builds one :class:`~ades_core.evaluation.request.EvalRequest`,
prints what runs and the tables (``ades compare``: compare.py; ``ades plot``: plot.py).
"""

from __future__ import annotations

import contextlib
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
from ades_cli.user_errors import one_line
from ades_core.errors import AdesError

if TYPE_CHECKING:
    from ades_core.distributed import DistributedContext
    from ades_core.evaluation.pipeline import PreparedEvaluation
    from ades_core.evaluation.request import EvalRequest, ExternalModel


@contextlib.contextmanager
def eval_errors() -> Iterator[None]:
    """An :class:`AdesError` as one ``Error:`` line; a request field out of range (a budget
    outside ``--norm``'s range) as click's ``Invalid value for '--eps'``; anything else unchanged."""
    from ades_core.evaluation.request import EvalRequestError

    try:
        yield
    except EvalRequestError as exc:
        raise click.BadParameter(exc.reason, param_hint=f"'--{exc.field.replace('_', '-')}'") from None
    except AdesError as exc:
        raise one_line(exc) from None


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
    plot_path: Path | None,
    threads: int | None,
    quiet: bool,
    arch: str | None,
    weights: str | None,
    num_classes: int | None,
    mean: tuple[str, ...] | None,
    std: tuple[str, ...] | None,
    **options: Any,
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

    if plot_path is not None and not options["eps_sweep"]:
        raise click.UsageError("--plot needs --eps-sweep (the plot shows robust accuracy against eps)")
    run_weights = str(weights) if model_path is not None and weights is not None else "last"
    external = external_request(
        model_path, arch=arch, weights=weights, num_classes=num_classes, mean=mean, std=std,
        dataset=options["dataset"], data_dir=options["data_dir"],
    )
    request = eval_request(model_path, run_weights, external, options)
    with eval_errors():
        dist = init_from_env(request.device)
    try:
        _evaluate_and_report(dist, request, plot_path=plot_path, threads=threads, quiet=quiet)
    except BaseException as exc:
        if dist is not None and dist.world_size > 1:
            end_every_rank(dist, exc)  # never returns: the other ranks must not wait in a collective
        raise
    finally:
        shutdown()


def eval_request(
    model_path: Path | None, weights: str, external: ExternalModel | None, options: dict[str, Any]
) -> EvalRequest:
    """The one :class:`EvalRequest` of ``ades eval``'s options (those named like its fields)."""
    from ades_core.evaluation.request import EvalRequest

    with eval_errors():
        return EvalRequest(
            model=model_path, weights=weights, external=external,
            **{**options, "eps_sweep": options["eps_sweep"] or ()},
        )


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


def _evaluate_and_report(
    dist: DistributedContext | None, request: EvalRequest, *, plot_path: Path | None, threads: int | None,
    quiet: bool,
) -> None:
    """``ades eval`` on every rank (``dist``: the torchrun context or ``None``); rank 0 prints."""
    from ades_core.config import format_eps
    from ades_core.evaluation import plot_sweeps, series_from_report
    from ades_core.evaluation.pipeline import prepare_evaluation, run_evaluation

    main_rank = dist is None or dist.is_main
    console = Console(stderr=True, quiet=quiet or not main_rank)
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    with eval_errors():
        prepared = prepare_evaluation(request, dist=dist)
    _say_what_runs(console, prepared, 1 if dist is None else dist.world_size)
    norm = prepared.norm

    def progress(text: str) -> None:
        console.print(f"  {text} ...", highlight=False, style="dim")

    def on_row(row) -> None:
        console.print(
            f"  {row.name} @ {norm} {format_eps(row.eps, norm)}: robust {_pct(row.robust_acc)} ({row.seconds:.1f} s)",
            highlight=False,
        )

    def notice(text: str) -> None:
        console.print(f"  {text}", highlight=False)

    with eval_errors(), terminate_as_exit():
        outcome = run_evaluation(prepared, dist=dist, progress=progress, on_row=on_row, notice=notice)
    if outcome.payload is None:
        return  # every rank holds the same result; rank 0 alone writes and prints it

    result = outcome.result
    stdout = Console()
    rows = list(result.attacks) + ([result.worst_case] if result.worst_case is not None else [])
    stdout.print(_rows_table(f"clean {_pct(result.clean_acc)} on n={result.n}, norm {norm}", rows, norm))
    if result.sweep:
        stdout.print(_rows_table(f"eps sweep ({norm} PGD-20)", result.sweep, norm))
    marks = {"passed": "[green]ok[/green]", "failed": "[bold yellow]WARNING[/bold yellow]", "not-run": "[dim]not run[/dim]"}
    for check in result.checks:
        stdout.print(f"{marks[check.status]} {check.name}: {check.message}", highlight=False)
    if plot_path is not None:
        plot_sweeps([series_from_report(outcome.payload)], plot_path)
        stdout.print(f"plot: {plot_path}", highlight=False)
    stdout.print(f"report: {outcome.report_file}  ({result.seconds:.1f} s)", highlight=False)


def _say_what_runs(console: Console, prepared: PreparedEvaluation, world_size: int) -> None:
    """The model, data, budget and attacks about to run, and a warning when the test split is partial."""
    from ades_core.config import format_eps

    info, source, norm, sweep = prepared.info, prepared.source, prepared.norm, prepared.sweep
    trained = prepared.trained_norm
    trained_text = f", trained in {trained}" if trained and trained != norm else ""
    console.print(
        f"[bold]ades eval[/bold] {info.model_file} ({info.defense or 'model'}, {info.backbone or '?'}{trained_text}"
        f"{f', {info.weights} weights' if info.weights else ''}) on "
        f"{source.n} {source.dataset} test images, norm {norm}, eps {format_eps(prepared.eps, norm)}, "
        f"attacks {', '.join(s.label for s in prepared.specs)}"
        f"{', sweep ' + ','.join(format_eps(e, norm) for e in sweep) if sweep else ''}, device {prepared.device}"
        f"{f' x {world_size} ranks' if world_size > 1 else ''}",
        highlight=False,
    )
    coverage = source.coverage_warning()
    if coverage is not None:
        console.print(f"[yellow]warning:[/yellow] {coverage}", highlight=False)
